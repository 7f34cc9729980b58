"""The cluster definitions in cluster/ are valid for the tools that read them.

The launcher YAML is checked against Ray's own cluster-config schema (``ray/autoscaler/ray-schema.json``,
the one ``ray up`` applies) and run through the launcher's own default filling; the KubeRay manifest is
parsed and checked for what KubeRay and sourcetrace need (string rayStartParams, GPU limits, the shared
volume, one Ray version). The docs' ``sourcetrace`` command lines are parsed by the real CLI parser.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER = CLUSTER / "ray-cluster-gpu.yaml"
KUBERAY = CLUSTER / "kuberay-raycluster.yaml"


def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


@pytest.fixture(scope="module")
def kuberay() -> list[dict]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]


@pytest.fixture(scope="module")
def raycluster(kuberay) -> dict:
    (rc,) = [d for d in kuberay if d["kind"] == "RayCluster"]
    return rc


# -- Ray cluster launcher -------------------------------------------------------------------------


def test_launcher_matches_rays_schema(launcher):
    jsonschema.validate(launcher, ray_schema())


def test_launcher_passes_rays_own_validation_and_default_filling(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(copy.deepcopy(launcher))
    prepared = prepare_config(copy.deepcopy(launcher))  # merges the AWS defaults like `ray up` does
    validate_config(prepared)
    assert set(prepared["available_node_types"]) == set(launcher["available_node_types"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.update(setup_comands=[]),  # typo of a top-level key
        lambda c: c["available_node_types"]["gpu_a100"]["resources"].update(GPU=0.5),  # non-integer
        lambda c: c["available_node_types"]["gpu_h100"].pop("node_config"),
    ],
    ids=["unknown-key", "fractional-node-resource", "missing-node-config"],
)
def test_schema_check_has_teeth(launcher, mutate):
    broken = copy.deepcopy(launcher)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema())


def test_launcher_node_types(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "no trials on the head"
    gpu_models = {}
    for name, node in types.items():
        if name == launcher["head_node_type"]:
            continue
        res = node["resources"]
        assert res["GPU"] >= 1 and res["CPU"] >= res["GPU"], name
        assert 0 <= node["min_workers"] <= node["max_workers"] <= launcher["max_workers"], name
        (accel,) = [k for k in res if k.startswith("accelerator_type:")]
        gpu_models[accel.split(":", 1)[1]] = node["node_config"]["InstanceType"]
    assert {"A100", "H100"} <= set(gpu_models), gpu_models


def test_launcher_commands(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    worker = " ".join(launcher["worker_start_ray_commands"])
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head and "--num-cpus=0" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "$RAY_HEAD_IP:6379" in worker
    for cmd in (head, worker):
        assert "RAY_USAGE_STATS_ENABLED=0" in cmd and "RAY_AUTH_MODE=token" in cmd
    setup = " ".join(launcher["setup_commands"])
    # the project is installed, pinned (a git tag/commit or a wheel file), with the trials' extra, on every node
    assert re.search(r"pip install .*sourcetrace(\[sweep\]\s*@\s*git\+\S+@[\w.\-]+|\S*\.whl\[sweep\])", setup), setup
    assert "mount -t nfs4" in setup and "/mnt/shared" in setup
    assert "RAY_USAGE_STATS_ENABLED=0" in setup
    # the autoscaler on the head needs the AWS SDK; MLflow needs the PostgreSQL driver
    head_setup = " ".join(launcher["head_setup_commands"])
    assert "boto3" in head_setup and "psycopg2" in head_setup


def test_no_cuda_visible_devices_anywhere():
    for path in CLUSTER.iterdir():
        text = path.read_text()
        # the docs may say not to set it; no config may set it
        assert not re.search(r"CUDA_VISIBLE_DEVICES\s*[=:]", text), path.name


# -- KubeRay ----------------------------------------------------------------------------------------


def _groups(rc):
    spec = rc["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def _ray_container(group):
    return group["template"]["spec"]["containers"][0]


def test_kuberay_cluster_shape(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__, "image, manifest and the venv run one Ray"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and head["dashboard-host"] == "127.0.0.1"
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(names) == len(set(names)) and {"gpu-a100", "gpu-h100"} <= set(names)


def test_kuberay_rayStartParams_are_strings(raycluster):
    for name, group in _groups(raycluster):
        for key, value in group["rayStartParams"].items():
            assert isinstance(value, str), f"{name}: rayStartParams.{key} must be a string"


def test_kuberay_gpu_workers(raycluster):
    for group in raycluster["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        res = _ray_container(group)["resources"]
        gpus = int(res["limits"]["nvidia.com/gpu"])
        assert gpus >= 1 and res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        # KubeRay's format for custom resources: a JSON object inside a quoted string
        custom = json.loads(json.loads(group["rayStartParams"]["resources"]))
        (accel,) = custom
        assert accel.startswith("accelerator_type:") and custom[accel] >= 1


def test_kuberay_environment_and_storage(kuberay, raycluster):
    claims = {d["metadata"]["name"]: d for d in kuberay if d["kind"] == "PersistentVolumeClaim"}
    images = set()
    for name, group in _groups(raycluster):
        pod = group["template"]["spec"]
        container = _ray_container(group)
        images.add(container["image"])
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0", name
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"], name
        assert "CUDA_VISIBLE_DEVICES" not in env, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        shared = volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in claims[shared]["spec"]["accessModes"], name
    assert len(images) == 1, f"head and workers must run one image: {images}"


def test_kuberay_mlflow_sidecar(raycluster):
    containers = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    (mlflow,) = [c for c in containers if c["name"] == "mlflow"]
    cmd = " ".join(mlflow.get("command", []) + mlflow.get("args", []))
    assert "mlflow server" in cmd and "--host 127.0.0.1" in cmd and "--artifacts-destination s3://" in cmd
    env = {e["name"]: e for e in mlflow["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"], "no DB password in the manifest"


# -- docs ---------------------------------------------------------------------------------------


def _doc_commands(name: str) -> list[list[str]]:
    """Every ``sourcetrace ...`` command line of a doc's code blocks, continuation lines joined."""
    text = (CLUSTER / name).read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        m = re.search(r"(?:^|[\s'\"])(?:[^\s'\"]*/)?sourcetrace\s+(sweep|report|ui)\b(.*)$", line)
        if m:  # the command ends where a quote closes or a pipe/redirection/background starts
            rest = re.split(r"\s\d?>|[|&;'\"]", m.group(2))[0]
            out.append([m.group(1)] + shlex.split(rest))
    return out


@pytest.mark.parametrize("doc", ["README.md", "mlflow-server.md"])
def test_doc_commands_parse(doc):
    from sourcetrace.cli import build_parser

    commands = _doc_commands(doc)
    if doc == "README.md":
        assert any(c[0] == "sweep" and "--address" in c for c in commands), commands
        assert any(c[0] == "report" for c in commands), commands
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (a failure) on an unknown flag


def test_ray_address_in_the_environment_means_a_cluster(monkeypatch):
    """RAY_ADDRESS without --address joins that cluster with the cluster's settings (runtime env, node checks)."""
    from sourcetrace.sweep.run import cluster_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster_address(None) == "10.0.0.5:6379"
    assert cluster_address("head:6379") == "head:6379"
