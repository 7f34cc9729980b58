"""The prepared GPU check's CPU-side parts: the no-GPU exit, wheels and missing packages, arguments, and the
synthetic corpus it trains on (passes ``corpus check``, trains an epoch); its whole measuring path on a CPU
(slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
from synthetic_corpus import LANGUAGES, SYSTEMS, TRAIN_LANGUAGES, TRAIN_SYSTEMS, synthesise, write_corpus  # noqa: E402


def run_wrapper(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    cmd = ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_exits_1_with_one_line_before_any_work(tmp_path):
    work = tmp_path / "work"
    done = run_wrapper("--workdir", str(work), env={"WHEELS": str(tmp_path / "no-wheels")}, timeout=60)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU"), lines
    assert "torch" in lines[0] and "CUDA" in lines[0]  # sourcetrace.device.no_cuda_reason: the build and driver
    assert not work.exists()  # nothing written


def test_arguments():
    args = gpu_check.parse_args(["--device", "cpu", "--quick", "--skip", "tests", "packed", "--wheels", "w"])
    assert (args.device, args.quick, args.skip, args.wheels) == ("cpu", True, ["tests", "packed"], "w")
    assert gpu_check.parse_args([]).device == "auto"
    assert gpu_check.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    for bad in (["--device", "mps"], ["--skip", "nothing"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)
    assert list(gpu_check.BUDGETS) == list(gpu_check.STEPS) and sum(gpu_check.BUDGETS.values()) <= 480


def test_the_cuda_tests_are_the_files_that_ask_for_cuda():
    files = gpu_check.cuda_test_files()
    assert "tests/test_device.py" in files and "tests/test_gpu_check.py" not in files  # not itself
    expected = [
        f"tests/{p.name}"
        for p in sorted((REPO / "tests").glob("*.py"))
        if "cuda.is_available()" in p.read_text() and p.name != "test_gpu_check.py"
    ]
    assert files == expected
    _, expr, _ = gpu_check.test_selection()
    assert "cuda" in expr


def test_a_missing_package_without_a_wheel_is_one_line_naming_pip_download(tmp_path):
    with pytest.raises(gpu_check.Missing) as err:
        gpu_check.ensure_packages({"gpucheck_absent_mod": "gpucheck-absent-dist", "numpy": "numpy"}, tmp_path)
    line = str(err.value)
    assert "\n" not in line and line.startswith("gpu_check: missing Python packages gpucheck-absent-dist")
    assert "pip download --only-binary=:all: --no-deps" in line and f"-d {tmp_path} gpucheck-absent-dist" in line
    assert "numpy" not in line.split("pip download")[0]  # present packages are not named
    assert gpu_check.ensure_packages({"numpy": "numpy"}, tmp_path) == []  # nothing missing: nothing done


def _fake_wheel(folder: Path, dist: str, module: str) -> Path:
    """A minimal pure-Python wheel of ``dist`` holding ``module`` (what pip needs to install it)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-0.1-py3-none-any.whl"
    info = f"{dist}-0.1.dist-info"
    files = {
        f"{module}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", record)
    return wheel


def test_a_missing_package_is_installed_from_its_wheel_onto_the_path(tmp_path, monkeypatch):
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("no pip in this interpreter")
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    _fake_wheel(wheels, "gpucheck_fake", "gpucheck_fake_mod")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    installed = gpu_check.ensure_packages({"gpucheck_fake_mod": "gpucheck-fake", "numpy": "numpy"}, wheels, site)
    assert installed == ["gpucheck-fake"]
    assert (site / "gpucheck_fake_mod" / "__init__.py").is_file()
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(site), "/elsewhere"]
    out = subprocess.run(  # the check's subprocesses (pytest, packed trials) see it too
        [sys.executable, "-c", "import gpucheck_fake_mod; print(gpucheck_fake_mod.VALUE)"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert out.stdout.strip() == "42", out.stderr


def test_a_wheel_that_does_not_install_is_one_line(tmp_path):
    (tmp_path / "gpucheck_broken-0.1-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(gpu_check.Missing) as err:
        gpu_check.ensure_packages({"gpucheck_broken_mod": "gpucheck-broken"}, tmp_path, tmp_path / "site")
    assert "\n" not in str(err.value) and "pip download" in str(err.value)


def test_the_steps_import_neither_ray_nor_mlflow():
    """The GPU machine has no Ray or MLflow: the training loop, the corpus check and the check itself do without."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow", "optuna", "transformers"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.path[:0] = [{str(REPO)!r}, {str(REPO / "benchmarks")!r}]
import sourcetrace.training.loop, sourcetrace.data.check, gpu_check, bench_gpu, synthetic_corpus
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_synthetic_systems_are_told_apart_by_their_spectra():
    """Nearest mean band spectrum (3 clips per system) names the system of new clips far above chance (1/8)."""
    rng = np.random.default_rng(0)

    def bands(system, language):
        w = synthesise(system, language, 2.0, rng)
        assert w.dtype == np.float32 and 0.5 < np.abs(w).max() <= 1.0
        power = (np.abs(np.fft.rfft(w[: len(w) // 512 * 512].reshape(-1, 512), axis=1)) ** 2).mean(0)[1:]
        b = np.log(power.reshape(32, 8).mean(1) + 1e-10)
        return b - b.mean()

    names = list(SYSTEMS)
    ref = [np.mean([bands(s, g) for g in ("la", "lb", "lc")], axis=0) for s in names]
    hits = [
        names[int(np.argmin([np.abs(bands(s, g) - r).mean() for r in ref]))] == s
        for s in names
        for g in ("la", "lb", "lc")
    ]
    assert np.mean(hits) >= 0.6, np.mean(hits)
    assert len(LANGUAGES) == 3 and set(TRAIN_LANGUAGES) < set(LANGUAGES) and set(TRAIN_SYSTEMS) < set(SYSTEMS)


def test_synthetic_corpus_passes_corpus_check_and_trains_one_epoch(tmp_path):
    from sourcetrace.cli import main
    from sourcetrace.config import Config
    from sourcetrace.data.check import check_corpus
    from sourcetrace.training.loop import train

    root = tmp_path / "corpus"
    summary = write_corpus(root, train_per_cell=4, test_per_cell=1)
    assert summary["clips"] == {"train": 48, "dev": 24, "eval": 24}
    assert sorted(p.name for p in (root / "protocol").iterdir()) == ["dev.csv", "eval.csv", "train.csv"]
    report = check_corpus(root)
    assert report.ok, report.format()
    conditions = set(report.protocol.tables["dev"]["condition"])
    assert len(conditions) == 4  # systems and a language not in train: every seen/unseen condition
    assert main(["corpus", "check", "--root", str(root)]) == 0

    cfg = Config.from_dict(
        {
            "data.root": str(root),
            "data.crop_seconds": 1.0,
            "data.eval_seconds": 1.0,
            "train.device": "cpu",
            "train.batch_size": 8,
            "train.epochs": 1,
            "train.steps_per_epoch": 1,
            "train.warmup_epochs": 0,
            "model.channels": 8,
        }
    )
    result = train(cfg, tmp_path / "run")
    assert math.isfinite(result.final_metrics["dev_eer"]) and math.isfinite(result.final_metrics["test_eer"])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["best_epoch"] == 1


@pytest.mark.slow
def test_the_whole_check_runs_on_a_cpu_in_quick_mode(tmp_path):
    """Every step's Python (corpus, CUDA tests, throughput, profiler, 4 packed processes, train()) once, on a CPU."""
    done = run_wrapper("--device", "cpu", "--quick", "--workdir", str(tmp_path / "work"), timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for i, step in enumerate(gpu_check.STEPS, 1):
        assert f"== [{i}/{len(gpu_check.STEPS)}] {step} (budget" in out and f"-- {step}: " in out
    assert "FAILED" not in out and "gpu_check: all steps ran" in out
    assert "tests: " in out and " passed" in out
    assert "4 x 0.25 GPU, batch 24, no MPS:" in out and "MPS: skipped (cpu)" in out
    assert "dev EER" in out and "per training step" in out


@pytest.mark.parametrize(
    "driver, index",
    [
        (None, ""),  # no NVIDIA driver (CI, a laptop): PyPI's torch
        ("580.159.04", ""),  # CUDA 13.0's driver: PyPI's build fits
        ("570.86.15", "https://download.pytorch.org/whl/cu126"),
        ("535.183.01", "https://download.pytorch.org/whl/cu126"),
        ("470.256.02", ""),  # too old for any CUDA build of torch 2.11: PyPI's, with a warning
    ],
)
def test_make_setup_picks_the_torch_build_that_fits_the_driver(tmp_path, driver, index):
    """scripts/torch_index.sh reads the driver from nvidia-smi (a stand-in prints it: no GPU here)."""
    if driver:
        fake = tmp_path / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\necho {driver}\n")
        fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:/usr/bin:/bin")
    out = subprocess.run(["bash", str(REPO / "scripts" / "torch_index.sh")], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == index
    assert ("older than 525" in out.stderr) == (driver == "470.256.02")
    make = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "venv"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert (f"--index-url {index} torch==2.11.0 torchaudio==2.11.0" in make.stdout) == bool(index)
