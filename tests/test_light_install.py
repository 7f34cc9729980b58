"""The light install: ``pip install sourcetrace`` (the core dependencies, no extra) in a fresh virtual
environment traces, enrols, evaluates and loads a bundle; a command of an extra that is not installed says
in one line which extra to install (exit 2) instead of a traceback."""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from test_bundle import TRAIN  # the model trained for seconds on the tiny corpus, as in test_bundle

from sourcetrace.cli import main, missing_extra
from sourcetrace.data.protocol import read_protocol

REPO = Path(__file__).resolve().parents[1]
# what the light set must leave out: the sweep, SSL and corpus stacks
HEAVY = ("ray", "mlflow", "optuna", "transformers", "matplotlib", "umap", "onnx", "onnxruntime", "pyworld", "piper")


def _without(modules: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    """``sourcetrace ARGV`` in this environment, with ``modules`` made unimportable."""
    code = (
        f"import sys\nfor m in {modules!r}: sys.modules[m] = None\n"
        f"from sourcetrace.cli import main\nsys.exit(main({argv!r}))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_command_whose_extra_is_missing_names_the_extra_in_one_line(tmp_path):
    # sweep: checked before the sweep file is imported (its own import errors are wrapped)
    out = _without(("ray",), ["sweep", str(REPO / "sweeps" / "demo.py"), "--root", str(tmp_path)])
    assert out.returncode == 2
    assert (
        out.stderr == "sourcetrace sweep needs the 'sweep' extra (no module 'ray'): pip install 'sourcetrace[sweep]'\n"
    )
    # report: the handler's module fails to import
    out = _without(("ray",), ["report", str(tmp_path)])
    assert out.returncode == 2
    assert out.stderr == (
        "sourcetrace report needs the 'sweep' extra (no module 'ray'): pip install 'sourcetrace[sweep]'\n"
    )
    out = _without(("onnxscript",), ["export", "--model", str(tmp_path), "--out", str(tmp_path / "b"), "--onnx"])
    assert out.returncode == 2 and "needs the 'sweep' extra (no module 'onnxscript')" in out.stderr
    assert not (tmp_path / "b").exists()


def test_only_an_absent_module_of_an_extra_is_blamed_on_it(monkeypatch):
    assert missing_extra("sweep", "ray") is None  # installed here: a failing import of it is a real error
    assert missing_extra("trace", "no_such_module") is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert missing_extra("sweep", "ray.tune") == "sweep"
    assert missing_extra("trace", "transformers") == "ssl"
    assert missing_extra("corpus build", "onnxruntime") == "corpus"
    assert missing_extra("export", "onnxruntime") == "sweep"
    assert missing_extra("trace", "numpy") is None  # core: never an extra's


def _run(cmd: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """A fresh venv (no system site packages) holding ``pip install sourcetrace`` of this tree and no extra;
    removed afterwards (it holds torch: gigabytes)."""
    root = tmp_path_factory.mktemp("light")
    try:
        src = root / "src"  # a copy, so that the build writes nothing into the checkout
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "sourcetrace", src / "sourcetrace", ignore=shutil.ignore_patterns("__pycache__"))
        venv = root / "venv"
        assert _run([sys.executable, "-m", "venv", venv], root).returncode == 0
        py = venv / "bin" / "python"
        # the torch build for this machine's driver, as `make setup` picks it (scripts/torch_index.sh)
        index = _run(["bash", REPO / "scripts" / "torch_index.sh"], root).stdout.strip()
        if index:
            deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
            pins = [d for d in deps if d.split("==")[0] in ("torch", "torchaudio")]
            out = _run([py, "-m", "pip", "install", "-q", "--index-url", index, *pins], root, timeout=1800)
            assert out.returncode == 0, out.stderr[-3000:]
        out = _run([py, "-m", "pip", "install", "-q", src], root, timeout=1800)
        assert out.returncode == 0, out.stderr[-3000:]
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bundle(tiny_corpus, tmp_path_factory) -> Path:
    from sourcetrace.config import Config
    from sourcetrace.training.loop import train

    base = tmp_path_factory.mktemp("light_bundle")
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), base / "run")
    assert main(["export", "--model", str(base / "run"), "--out", str(base / "bundle")]) == 0
    return base / "bundle"


@pytest.mark.slow
def test_the_light_install_traces_enrols_evaluates_and_loads_a_bundle(light, bundle, tiny_corpus, tmp_path):
    bin_ = light / "bin"
    size_mb = int(_run(["du", "-sk", light], tmp_path).stdout.split()[0]) / 1024
    tables = read_protocol(tiny_corpus).tables
    systems = {s for table in tables.values() for s in table["system"]}
    clip = sorted(tables["eval"].loc[tables["eval"]["system"] == "sam", "file"])[:4]
    model = tmp_path / "model"
    shutil.copytree(bundle, model)

    start = time.perf_counter()  # the first command of the new environment: its cold start
    out = _run(
        [bin_ / "sourcetrace", "trace", "--model", model, "--format", "json", "--no-progress", clip[0]], tmp_path
    )
    cold_s = time.perf_counter() - start
    print(f"\nlight venv: {size_mb:.0f} MiB on disk (du -sk); first `sourcetrace trace` of one clip: {cold_s:.1f} s")
    assert out.returncode == 0, out.stderr
    (rec,) = json.loads(out.stdout)
    assert rec["error"] is None and rec["path"] == clip[0]
    assert rec["sha256"] == hashlib.sha256(Path(clip[0]).read_bytes()).hexdigest()
    assert [t["score"] for t in rec["top"]] == sorted((t["score"] for t in rec["top"]), reverse=True)
    assert rec["decision"] in ("unknown", rec["top"][0]["system"]) and rec["top"][0]["system"] in systems

    # nothing of the extras in the environment, and the package is the installed copy, not this checkout
    probe = (
        "import importlib.util as u, sourcetrace; "
        f"print(sourcetrace.__file__); print([m for m in {HEAVY!r} if u.find_spec(m)])"
    )
    out = _run([bin_ / "python", "-c", probe], tmp_path)
    assert out.returncode == 0, out.stderr
    where, present = out.stdout.splitlines()
    assert Path(where).is_relative_to(light) and present == "[]"

    out = _run([bin_ / "sourcetrace", "enroll", "--model", model, "--system", "newcomer", *clip[1:]], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "3 clips added, 3 in total" in out.stdout

    api = (
        "import sys, sourcetrace\n"
        f"m = sourcetrace.load({str(model)!r}, device='cpu')\n"
        f"(a,) = m.trace([{clip[1]!r}])\n"
        "assert a.error is None, a.error\n"
        "print(a.decision)\n"
    )
    out = _run([bin_ / "python", "-c", api], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "newcomer"  # one of the clips it was just enrolled with

    ev = tmp_path / "evaluate"
    cmd = [bin_ / "sourcetrace", "evaluate", "--model", bundle, "--root", tiny_corpus, "--out", ev]
    out = _run([*cmd, "--bootstrap", "0", "--max-clips-per-system", "3"], tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n_systems"] == len(set(tables["eval"]["system"])) and 0 <= metrics["metrics"]["model"]["eer"] <= 100
    assert (ev / "metrics.parquet").stat().st_size > 0

    # a command of an extra: its help is there, running it names the extra in one line
    assert _run([bin_ / "sourcetrace", "sweep", "--help"], tmp_path).returncode == 0
    out = _run([bin_ / "sourcetrace", "sweep", REPO / "sweeps" / "demo.py", "--root", tiny_corpus], tmp_path)
    assert out.returncode == 2
    assert (
        out.stderr == "sourcetrace sweep needs the 'sweep' extra (no module 'ray'): pip install 'sourcetrace[sweep]'\n"
    )
