"""The prepared device check: ten minutes on one GPU, run as is from the repo root (``bash benchmarks/gpu_check.sh``).

Needs nothing outside the checkout: it writes its own synthetic corpus (``benchmarks/synthetic_corpus.py``,
numpy only, under ``benchmarks/.gpu_check/``), and Python packages the GPU machine lacks (soundfile, cffi)
come from wheels in ``$WHEELS`` (default ``.whl/``), installed with ``pip --no-index --no-deps --target``
into a folder under /tmp that joins PYTHONPATH. Nothing needs Ray or MLflow.

Steps, in this order, each with its time budget and wall time (budgets sum to ~7.5 min on an H100):

1. env: NVIDIA driver, torch and its CUDA build, GPU name;
2. tests: the CUDA tests of the suite (``tests/*.py`` that ask ``torch.cuda.is_available()``, ``-k`` cuda/gpu/memory);
3. corpus: the synthetic corpus (8 systems, 3 languages, 384 clips of 3-4 s; reused when already there);
4. throughput: clips/s of one trial, the trainer's own epoch function (``training/steps.py``) at batch 24
   (GE2E, balanced sampler) and 128 (AAM-Softmax, random sampler), in bf16 and in fp32 with TF32 off;
5. kernels: CUDA kernels launched per training step (torch.profiler; on a CPU: top-level aten ops);
6. packed: four trials at 0.25 GPU each as four processes, without and (where ``nvidia-cuda-mps-control``
   exists) with MPS, against one trial alone;
7. train: one ``sourcetrace.training.loop.train()`` with its evaluation, dev/eval EER overall and per condition.

Peak GPU memory is printed for every step that allocates on the GPU in this process (and for the packed
trials, each). Exit status: 0 all steps ran; 1 no usable GPU (one line ``gpu_check: no GPU ...``, before
any work); 2 a needed package is missing and no wheel for it (one line naming the ``pip download``);
3 some step failed (the others still run; each failure is printed).

``--device cpu --quick`` runs every step's Python on a CPU with tiny sizes (the CUDA-only parts skip).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# import name -> distribution (pip) name of every third-party package the steps import
NEEDS = {
    "numpy": "numpy",
    "torch": "torch",
    "torchaudio": "torchaudio",
    "soundfile": "soundfile",
    "_cffi_backend": "cffi",
    "pandas": "pandas",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "pytest": "pytest",
}
# seconds per step on one H100 (the printed budget; --quick runs far less)
BUDGETS = {"env": 10, "tests": 100, "corpus": 30, "throughput": 100, "kernels": 20, "packed": 140, "train": 60}
STEPS = tuple(BUDGETS)
MIN_DRIVER = {"12.6": "560", "12.8": "570", "12.9": "575", "13.0": "580"}  # torch's CUDA build -> driver >=


class Missing(Exception):
    """A needed package is missing and cannot be installed here: the one line to print."""


def say(*args) -> None:
    print(*args, flush=True)


# -- arguments ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto or cuda[:N] (a GPU is required), or cpu (a CPU rehearsal)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the whole code path in a minute or two")
    ap.add_argument("--workdir", default=str(HERE / ".gpu_check"), help="corpus and run folder")
    ap.add_argument("--wheels", default=os.environ.get("WHEELS") or str(REPO / ".whl"), help="wheels folder")
    ap.add_argument("--site", default="", help="pip --target folder for the wheels (default: a new one under /tmp)")
    ap.add_argument("--skip", nargs="*", default=[], choices=STEPS, metavar="STEP", help=f"any of {', '.join(STEPS)}")
    ap.add_argument("--steps", type=int, default=0, help="timed training steps per throughput row (0: by mode)")
    args = ap.parse_args(argv)
    if args.device != "cpu" and not re.fullmatch(r"auto|cuda(:\d+)?", args.device):
        ap.error(f"--device {args.device!r}: use auto, cuda, cuda:N or cpu")
    return args


def sizes(quick: bool, on_gpu: bool) -> dict:
    """Sizes of every step: the GPU sizes fit the budgets on an H100; quick ones a CPU in a minute or two."""
    if quick:
        return {"train_per_cell": 12, "test_per_cell": 1, "warmup": 1, "steps": 1, "crop": 0.5, "profile": 1,
                "packed_batch": 24, "packed_steps": 1, "epochs": 1, "epoch_steps": 1, "train_batch": 24,
                "eval_every": 1, "eval_seconds": 1.0}  # fmt: skip
    return {"train_per_cell": 16, "test_per_cell": 4, "warmup": 20, "steps": 50 if on_gpu else 2, "crop": 2.0,
            "profile": 5, "packed_batch": 128, "packed_steps": 40, "epochs": 20, "epoch_steps": 0,
            "train_batch": 32, "eval_every": 10, "eval_seconds": 6.0}  # fmt: skip


# -- the GPU, before anything else --------------------------------------------------------------
def no_gpu_reason(device: str) -> str | None:
    """Why ``device`` is no usable CUDA GPU here (one line), or None when it is."""
    import torch

    from sourcetrace.device import no_cuda_reason

    with warnings.catch_warnings(record=True) as caught:  # e.g. "the NVIDIA driver on your system is too old"
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    said = "; ".join(" ".join(str(w.message).split()) for w in caught)
    if not available:
        extra = f"; torch says: {said}" if said else ""
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f"; CUDA_VISIBLE_DEVICES={env!r}" if env is not None else ""
        return f"CUDA is not available ({no_cuda_reason()}{hidden}{extra})"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return f"{device} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
    try:
        torch.ones(1, device=f"cuda:{index}").add_(1).item()
    except RuntimeError as err:
        return f"CUDA is visible but unusable ({' '.join(str(err).split())[:300]}; {no_cuda_reason()})"
    return None


# -- packages --------------------------------------------------------------------------------------
def missing_modules(needs: dict[str, str]) -> dict[str, str]:
    """The ``needs`` (import name -> distribution) that this interpreter cannot import."""
    importlib.invalidate_caches()
    out = {}
    for mod, dist in needs.items():
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out[mod] = dist
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheels_for(dist: str, wheels: Path) -> list[Path]:
    """Wheel files of ``dist`` in ``wheels`` (any version or platform)."""
    return sorted(p for p in Path(wheels).glob("*.whl") if _norm(p.name.split("-")[0]) == _norm(dist))


def download_command(dists: list[str], wheels: Path) -> str:
    """The ``pip download`` that fetches ``dists`` as wheels for this interpreter and machine."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = platform.machine() or "x86_64"
    return (
        f"python3 -m pip download --only-binary=:all: --no-deps --python-version {py} "
        f"--platform manylinux_2_28_{arch} --platform manylinux2014_{arch} -d {wheels} {' '.join(sorted(dists))}"
    )


def ensure_packages(needs: dict[str, str], wheels: Path, site: Path | None = None) -> list[str]:
    """Install the missing ``needs`` from the wheels in ``wheels`` into ``site`` (a new folder under /tmp by
    default), which joins ``sys.path`` and ``PYTHONPATH`` (the check's subprocesses see it too).

    Returns the distributions installed; raises ``Missing`` (one line naming the packages and the
    ``pip download`` that fetches them) when a wheel is not there or does not install.
    """
    missing = missing_modules(needs)
    if not missing:
        return []
    dists = sorted(set(missing.values()))
    wheels = Path(wheels)
    lacking = [d for d in dists if not wheels_for(d, wheels)]
    if lacking:
        raise Missing(
            f"gpu_check: missing Python packages {', '.join(lacking)} and no wheel for them in {wheels}/; "
            f"on a machine with internet: {download_command(dists, wheels)}"
        )
    site = Path(site) if site else Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade", "--target", str(site)]
    cmd += ["--find-links", str(wheels), *dists]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split())[-300:]
        raise Missing(
            f"gpu_check: could not install {', '.join(dists)} from {wheels}/ ({why}); "
            f"fetch wheels for this Python: {download_command(dists, wheels)}"
        )
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    still = missing_modules(missing)
    if still:
        raise Missing(
            f"gpu_check: the wheels of {', '.join(sorted(set(still.values())))} in {wheels}/ installed but do not "
            f"import here (another Python version or platform?); {download_command(dists, wheels)}"
        )
    return dists


# -- steps -------------------------------------------------------------------------------------------
class Peak:
    """Peak GPU memory of a step (in this process): reset on entry, read on exit."""

    def __init__(self, device):
        self.device, self.gib = device, None

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        return False

    def __str__(self) -> str:
        return "n/a (cpu)" if self.gib is None else f"{self.gib:.2f} GiB"


def step_env(device) -> str:
    import torch

    from sourcetrace.device import device_name, driver_version

    build = torch.version.cuda
    need = f" (needs driver >= {MIN_DRIVER[build]})" if build in MIN_DRIVER else ""
    say(f"driver: {driver_version()}")
    say(f"torch {torch.__version__}, CUDA build {build}{need}, cuDNN {torch.backends.cudnn.version()}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        say(f"GPU: {device_name(device)}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
    else:
        say(f"GPU: none used (--device cpu; {os.cpu_count()} CPU cores)")
    return ""


def cuda_test_files() -> list[str]:
    """``tests/*.py`` that ask ``torch.cuda.is_available()`` (as ``grep -l`` finds them), but this check's own."""
    return sorted(
        os.path.relpath(f, REPO)
        for f in glob.glob(str(REPO / "tests" / "*.py"))
        if "cuda.is_available()" in Path(f).read_text(encoding="utf-8") and Path(f).name != "test_gpu_check.py"
    )


def test_selection() -> tuple[list[str], str, str]:
    """(files, ``-k`` expression, note): the CUDA tests that run without a TTS engine."""
    expr = "cuda or gpu or memory"
    note = ""
    if shutil.which("espeak-ng") is None:  # the tiny_corpus fixture synthesises with espeak-ng
        expr = f"({expr}) and not test_two_epochs_train_and_evaluate_on_cuda"
        note = (
            "test_two_epochs_train_and_evaluate_on_cuda deselected: its tiny corpus needs espeak-ng "
            "(step 7 trains on CUDA instead)"
        )
    return cuda_test_files(), expr, note


def step_tests(timeout: float) -> str:
    files, expr, note = test_selection()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-k", expr, *files]
    say("$ " + " ".join(cmd[1:3] + ["-q", "-m", "'not slow'", "-k", repr(expr)] + files))
    if note:
        say(note)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pytest ran past {timeout:.0f} s") from None
    lines = (done.stdout + done.stderr).strip().splitlines()
    shown = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "SKIPPED"))][:12]
    for ln in shown:
        say("  " + ln[:200])
    summary = lines[-1] if lines else "(no output)"
    say(f"tests: {summary}")
    if done.returncode not in (0, 5):  # 5: nothing collected
        if not shown:
            say("\n".join(lines[-25:]))
        raise RuntimeError(f"pytest exited with {done.returncode}")
    return summary


def step_corpus(workdir: Path, size: dict) -> Path:
    from synthetic_corpus import write_corpus

    root = workdir / "corpus"
    stamp = root / "gpu_check.json"
    want = {"train_per_cell": size["train_per_cell"], "test_per_cell": size["test_per_cell"], "seed": 0}
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == want:
        say(f"corpus: reusing {root}")
        return root
    shutil.rmtree(root, ignore_errors=True)
    summary = write_corpus(root, want["train_per_cell"], want["test_per_cell"], want["seed"])
    stamp.write_text(json.dumps({"params": want, "summary": summary}))
    clips = summary["clips"]
    say(
        f"corpus: {sum(clips.values())} clips (train {clips['train']}, dev {clips['dev']}, eval {clips['eval']}), "
        f"{summary['systems']} systems, {summary['languages']} languages, {summary['audio_s'] / 60:.1f} min of audio "
        f"in {summary['seconds']:.1f} s -> {root}"
    )
    return root


def set_tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def set_tf32_defaults(saved: tuple[bool, bool]) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def step_throughput(root: Path, device, size: dict, keep: dict) -> list[dict]:
    """clips/s of one trial per (batch, precision); the bf16 trials are kept for the kernel count."""
    import bench_gpu
    import torch

    bench_gpu.CROP[0] = size["crop"]
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    rows = []
    say(f"{'batch':>5}  {'loss':<10}  {'sampler':<8}  {'precision':<16}  {'clips/s':>8}  {'steps/s':>7}  {'peak':>10}")
    try:
        for batch in (24, 128):
            for precision in ("bf16", "fp32"):
                if device.type == "cuda":  # fp32: TF32 off; bf16: torch's defaults
                    set_tf32(False) if precision == "fp32" else set_tf32_defaults(saved)
                with Peak(device) as peak:
                    trial = bench_gpu.Trial(str(root), str(device), batch, precision=precision)
                    trial.epoch(1, size["warmup"])
                    seconds, seen = trial.epoch(2, size["steps"])
                label = precision + (" (TF32 off)" if precision == "fp32" and device.type == "cuda" else "")
                recipe = bench_gpu.RECIPES[batch]
                row = {"batch": batch, "loss": recipe["loss.name"], "sampler": recipe["sampler.name"],
                       "precision": label, "clips_per_s": seen / seconds, "steps_per_s": size["steps"] / seconds,
                       "peak_gib": peak.gib}  # fmt: skip
                rows.append(row)
                say(
                    f"{batch:>5}  {row['loss']:<10}  {row['sampler']:<8}  {label:<16}  {row['clips_per_s']:>8.1f}  "
                    f"{row['steps_per_s']:>7.2f}  {str(peak):>10}"
                )
                if precision == "bf16":
                    keep[batch] = trial
                else:
                    del trial
    finally:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return rows


def count_kernels(trial, steps: int) -> tuple[float, str]:
    """Per training step: CUDA kernels launched (memcpy/memset excluded), or on a CPU top-level aten ops."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trial.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings(), profile(activities=activities) as prof:
        warnings.simplefilter("ignore")
        trial.epoch(3, steps)
    events = prof.events()
    if cuda:
        n = sum(
            1
            for e in events
            if getattr(e.device_type, "name", str(e.device_type)).upper().endswith("CUDA")
            and not e.name.lower().startswith(("memcpy", "memset"))
        )
        return n / steps, "CUDA kernels"
    n = sum(1 for e in events if e.name.startswith("aten::") and e.cpu_parent is None)
    return n / steps, "top-level aten ops (cpu)"


def step_kernels(keep: dict, size: dict, device) -> list[dict]:
    rows = []
    with Peak(device) as peak:
        for batch in sorted(keep):
            per_step, what = count_kernels(keep[batch], size["profile"])
            rows.append({"batch": batch, "per_step": per_step, "what": what})
            say(f"batch {batch} bf16: {per_step:.0f} {what} per training step (over {size['profile']} steps)")
    say(f"peak GPU memory: {peak}")
    keep.clear()
    return rows


def start_mps(base: Path) -> tuple[dict | None, str]:
    """An MPS control daemon with private pipe and log folders: (its clients' environment, what happened)."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        return None, "nvidia-cuda-mps-control not found"
    pipe, log = base / "pipe", base / "log"
    pipe.mkdir(parents=True, exist_ok=True)
    log.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(pipe), CUDA_MPS_LOG_DIRECTORY=str(log))
    try:
        done = subprocess.run([exe, "-d"], env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"could not start the MPS daemon ({err})"
    if done.returncode != 0:
        return None, f"could not start the MPS daemon (exit {done.returncode}: {(done.stderr or done.stdout).strip()})"
    time.sleep(1)
    return env, f"MPS daemon started (pipe {pipe})"


def stop_mps(env: dict) -> None:
    exe = shutil.which("nvidia-cuda-mps-control")
    try:
        subprocess.run([exe], input="quit\n", env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        say(
            f"  MPS: quit failed ({err}); stop it with: echo quit | CUDA_MPS_PIPE_DIRECTORY=... nvidia-cuda-mps-control"
        )


def step_packed(root: Path, device, size: dict, single: dict, workdir: Path, timeout: float) -> list[dict]:
    import bench_gpu

    batch, steps = size["packed_batch"], size["packed_steps"]
    alone = single.get(batch)
    say(f"one trial alone, batch {batch} bf16: " + (f"{alone:.1f} clips/s" if alone else "not measured"))
    modes = [("no MPS", None)]
    if device.type == "cuda":
        modes.append(("MPS", "mps"))
    else:
        say("MPS: skipped (cpu)")
    rows = []
    for label, mps in modes:
        env, stop = dict(os.environ), None
        if mps:
            env, how = start_mps(Path(tempfile.mkdtemp(prefix="gpu_check_mps_", dir="/tmp")))
            say(f"MPS: {how}")
            if env is None:
                continue
            stop = env
        try:
            r = bench_gpu.packed(str(root), str(device), batch, steps, 4, env=env, timeout=timeout)
        except Exception as err:  # one mode failing (e.g. MPS refused in a container) leaves the other's figure
            say(f"4 x 0.25 GPU, {label}: FAILED ({' '.join(str(err).split())[:300]})")
            rows.append({"mode": label, "error": str(err)})
            continue
        finally:
            if stop is not None:
                stop_mps(stop)
        ratio = f" = {r['clips_per_s_sum'] / alone:.2f} x one trial" if alone else ""
        peak = f", peak {r['peak_gib_each']:.2f} GiB each" if device.type == "cuda" else ""
        say(f"4 x 0.25 GPU, batch {batch}, {label}: {r['clips_per_s_sum']:.1f} clips/s summed{ratio}{peak}")
        rows.append({"mode": label} | r)
    if rows and all("error" in r for r in rows):
        raise RuntimeError("no packed run finished")
    return rows


def train_config(root: Path, device, size: dict):
    from sourcetrace.config import Config

    return Config.from_dict(
        {
            "data.root": str(root),
            "data.crop_seconds": size["crop"],
            "data.short_clips": "pad",
            "data.eval_seconds": size["eval_seconds"],
            "train.device": str(device),
            "train.batch_size": size["train_batch"],
            "train.epochs": size["epochs"],
            "train.eval_every": size["eval_every"],
            "train.steps_per_epoch": size["epoch_steps"],
            "train.warmup_epochs": 1,
            "train.lr": 1e-3,
            "loss.name": "aamsoftmax",
            "sampler.name": "random",
        }
    )


def step_train(root: Path, device, size: dict, workdir: Path) -> dict:
    from sourcetrace.training.loop import train

    cfg = train_config(root, device, size)
    out = workdir / "run"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with Peak(device) as peak:
        result = train(cfg, out)
    seconds = time.perf_counter() - t0
    m = result.final_metrics
    last = result.history[-1]
    say(
        f"train(): {len(result.history)} epochs of batch {cfg.train.batch_size} ({cfg.loss.name}) with "
        f"{sum(1 for h in result.history if 'dev_eer' in h)} evaluations in {seconds:.1f} s, "
        f"last epoch {last['clips_per_s']:.0f} clips/s, peak GPU memory {peak}"
    )
    say(f"dev EER {m.get('dev_eer', float('nan')):.2f} %, eval EER {m.get('test_eer', float('nan')):.2f} %")
    for prefix in ("dev", "test"):
        conds = {k.split(".", 1)[1]: v for k, v in m.items() if k.startswith(f"{prefix}_eer.")}
        if conds:
            say(f"  {prefix} per condition: " + ", ".join(f"{c} {v:.1f}" for c, v in sorted(conds.items())))
    return m


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        missing = missing_modules({"torch": "torch", "numpy": "numpy"})
        if missing:  # the GPU check itself needs torch: no wheel folder replaces it
            raise Missing(
                f"gpu_check: {sys.executable} has no {', '.join(missing)}; run with PYTHON=/path/to/python "
                "that has torch (the GPU machine's python3 does)"
            )
        if args.device != "cpu":
            why = no_gpu_reason("cuda" if args.device == "auto" else args.device)
            if why:
                say(f"gpu_check: no GPU: {why}")
                return 1
        installed = ensure_packages(NEEDS, Path(args.wheels), Path(args.site) if args.site else None)
    except Missing as err:
        say(str(err))
        return 2
    import torch

    from sourcetrace.device import resolve_device

    device = resolve_device("cuda" if args.device == "auto" else args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    size = sizes(args.quick, device.type == "cuda")
    if args.steps:
        size["steps"] = args.steps
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    mode = "quick, " if args.quick else ""
    say(f"gpu_check: {mode}device {device}, budget {sum(BUDGETS.values())} s on one H100, work folder {workdir}")
    if installed:
        say(f"installed from wheels: {', '.join(installed)} -> {sys.path[0]}")

    failed, single, keep, root = [], {}, {}, None
    for i, name in enumerate(STEPS, 1):
        budget = BUDGETS[name]
        say(f"\n== [{i}/{len(STEPS)}] {name} (budget {budget} s)")
        if name in args.skip:
            say("skipped (--skip)")
            continue
        if name in ("throughput", "kernels", "packed", "train") and root is None:
            say("skipped: no corpus")
            continue
        if name == "kernels" and not keep:
            say("skipped: no bf16 trial from the throughput step")
            continue
        t0 = time.perf_counter()
        try:
            if name == "env":
                step_env(device)
            elif name == "tests":
                step_tests(timeout=max(budget * 1.5, 150))
            elif name == "corpus":
                root = step_corpus(workdir, size)
            elif name == "throughput":
                rows = step_throughput(root, device, size, keep)
                single = {r["batch"]: r["clips_per_s"] for r in rows if r["precision"].startswith("bf16")}
            elif name == "kernels":
                step_kernels(keep, size, device)
            elif name == "packed":
                step_packed(root, device, size, single, workdir, timeout=max(budget, 120))
            elif name == "train":
                step_train(root, device, size, workdir)
        except Exception as err:  # a failed step is reported; the others still run
            failed.append(name)
            say(f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:500]}")
            say("".join(traceback.format_exception(err)[-6:]).rstrip())
        wall = time.perf_counter() - t0
        over = "  OVER BUDGET" if wall > budget and not args.quick else ""
        say(f"-- {name}: {wall:.1f} s (budget {budget} s){over}")
    total = time.perf_counter() - start
    state = f"FAILED steps: {', '.join(failed)}" if failed else "all steps ran"
    say(f"\ngpu_check: {state}; {total:.0f} s in all (budget {sum(BUDGETS.values())} s)")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
