"""Real local sweeps under faults: loopback-only Ray, SIGTERM then --resume, bad audio before Ray,
a diverging trial that is not retried, unwritable storage."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from mlflow import MlflowClient
from test_sweep_e2e import GRID, QUICK, REPO, env, run_sweep, sweep_cmd, trial_states

from sourcetrace.cli import main

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
RAY_NAMES = ("gcs_server", "raylet", "ray::", "python", "default_worker")


def _tree(pid):
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _listening(procs):
    """(process name, address, port) of every TCP listener of ``procs``."""
    out = set()
    for p in procs:
        try:
            for c in p.net_connections("tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((p.name(), c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _start(cmd, cwd, log):
    return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_evaluations(exp_dir, driver, n, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        evaluated = [sum('"dev_eer"' in ln for ln in p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")]
        if sum(evaluated) >= n and list(exp_dir.glob("experiment_state-*.json")):
            return True
        time.sleep(0.5)
    return False


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only_and_dies_with_a_killed_driver(tiny_corpus, tmp_path):
    """Every TCP listener of the driver and of every process Ray starts (GCS, raylet, agents, trial workers)
    binds loopback: none needs token auth as its only guard (auth stays on anyway). After a SIGKILL of the
    driver, Ray's own fate sharing ends them all: GCS, raylet and workers at once, the two agents after
    Ray's fixed 60 s timeout for reporting the raylet's death to the dead GCS."""
    (tmp_path / "grid.py").write_text(GRID.replace("SCHED", "fifo"))
    log = open(tmp_path / "driver.log", "w")
    driver = _start(sweep_cmd(tmp_path / "grid.py", tiny_corpus, tmp_path), tmp_path, log)
    seen, procs = set(), {}
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None:
            tree = _tree(driver.pid)
            procs.update({p.pid: p for p in tree})
            seen |= _listening(tree)
            if any(n.startswith("ray::") for n, _, _ in seen) and (tmp_path / "ray" / "grid").glob("*/result.json"):
                if any((tmp_path / "ray" / "grid").glob("*/result.json")):
                    break
            time.sleep(0.3)
        assert driver.poll() is None, "the sweep ended early:\n" + (tmp_path / "driver.log").read_text()[-3000:]
        names = {n for n, _, _ in seen}
        assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), seen
        exposed = {s for s in seen if s[1] not in LOOPBACK}
        assert not exposed, f"listening beyond loopback: {sorted(exposed)}"
        t0 = time.time()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
        _, alive = psutil.wait_procs([p for p in procs.values() if p.is_running()], timeout=90)
        print(f"\nRay processes gone {time.time() - t0:.1f} s after the driver's SIGKILL; alive: {alive}")
        assert not alive, f"Ray processes outlived the killed driver by 90 s: {alive}"
    finally:
        _kill_group(driver)
        for p in procs.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


@pytest.mark.slow
def test_sigterm_stops_the_sweep_like_ctrl_c_and_resume_completes_it(tiny_corpus, tmp_path):
    (tmp_path / "grid.py").write_text(GRID.replace("SCHED", "fifo"))
    cmd = sweep_cmd(tmp_path / "grid.py", tiny_corpus, tmp_path, "--name", "term")
    exp_dir = tmp_path / "ray" / "term"
    log = open(tmp_path / "driver.log", "w")
    driver = _start(cmd, tmp_path, log)
    try:
        assert _wait_for_evaluations(exp_dir, driver, 2), (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGTERM)  # what Slurm, Kubernetes and `timeout` send
        code = driver.wait(180)
    finally:
        _kill_group(driver)
        log.close()
    out = (tmp_path / "driver.log").read_text()
    assert code == 143, out[-3000:]
    assert "SIGTERM received" not in out and "--resume" in out
    assert (exp_dir / "report" / "trials.parquet").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("term")
    runs = client.search_runs([exp.experiment_id])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    states = trial_states(exp_dir)
    assert set(states.values()) != {"TERMINATED"}  # it did stop before the end
    for run in runs:  # a true record: a trial the signal cut short is "interrupted" (KILLED), not early-stopped
        if states.get(run.data.tags.get("trial_id")) not in (None, "TERMINATED"):
            said = {k: run.data.tags.get(k) for k in ("status", "status_reason", "trial_id")}
            assert run.info.status == "KILLED" and run.data.tags["status"] == "interrupted", (said, states)

    proc, _ = run_sweep(cmd + ["--resume"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(trial_states(exp_dir).values()) == {"TERMINATED"}
    runs = client.search_runs([exp.experiment_id])
    assert [r for r in runs if "reference" in r.data.tags]  # the featureless baseline's run, written at the end
    runs = [r for r in runs if "reference" not in r.data.tags]
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_diverging_trial_fails_once_naming_lr(tiny_corpus, tmp_path):
    sweep = tmp_path / "div.py"
    base = dict(QUICK, **{"train.lr": 1e6, "train.warmup_epochs": 0, "train.epochs": 2})
    sweep.write_text(
        f"BASE = {base!r}\nSPACE = {{'loss.name': 'aamsoftmax', 'train.batch_size': 16}}\n"
        "TUNE = {'scheduler': 'fifo', 'max_failures': 2}\n"
    )
    proc, _ = run_sweep(sweep_cmd(sweep, tiny_corpus, tmp_path), tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp_dir = tmp_path / "ray" / "div"
    snap = max(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.name)
    ((state, meta),) = json.loads(snap.read_text())["trial_data"]
    assert json.loads(state)["status"] == "ERROR" and json.loads(meta)["num_failures"] == 1  # not retried
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("div").experiment_id])
    (run,) = [r for r in runs if "reference" not in r.data.tags]  # beside it: the baseline's run
    assert run.info.status == "FAILED"
    reason = run.data.tags["status_reason"]
    assert reason.startswith("sourcetrace.errors.DivergenceError: training diverged") and "train.lr=1e+06" in reason


def _bad_copy(tiny_corpus, tmp_path):
    """A copy of the corpus with a silent train clip, a corrupt dev clip and a missing test clip."""
    import shutil

    import numpy as np
    import soundfile as sf

    root = tmp_path / "bad"
    shutil.copytree(tiny_corpus, root)
    clips = sorted((root / "fake").rglob("*.flac"))
    info = sf.info(str(clips[0]))
    sf.write(str(clips[0]), np.zeros(info.frames, dtype=np.float32), info.samplerate)
    clips[1].write_bytes(b"\x00garbage" * 100)
    clips[2].unlink()
    return root, clips[:3]


def test_bad_audio_is_listed_in_full_before_ray_starts(tiny_corpus, tmp_path, capsys):
    root, bad = _bad_copy(tiny_corpus, tmp_path)
    argv = ["sweep", str(REPO / "sweeps" / "demo.py"), "--smoke", "--root", str(root)]
    argv += ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"]
    t0 = time.time()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "problem(s) in the data, found before any training started" in err
    for clip in bad:
        assert clip.name in err, clip
    assert not list((tmp_path / "ray").rglob("experiment_state-*.json"))  # Ray never ran a trial
    print(f"\nbad-audio sweep refused in {time.time() - t0:.1f} s")


def test_train_lists_every_unreadable_file(tiny_corpus, tmp_path, capsys):
    from test_train import QUICK as TRAIN_QUICK

    root, bad = _bad_copy(tiny_corpus, tmp_path)
    argv = ["train", "--root", str(root), "--out", str(tmp_path / "run")]
    for k, v in dict(TRAIN_QUICK, **{"data.short_clips": "error"}).items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for clip in bad:
        assert clip.name in err, clip


def test_storage_under_a_regular_file_is_one_line_before_ray(tiny_corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["sweep", str(REPO / "sweeps" / "demo.py"), "--smoke", "--root", str(tiny_corpus)]
    argv += ["--storage", str(tmp_path / "file" / "sub"), "--tracking-uri", f"sqlite:///{tmp_path / 'ml' / 'm.db'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "file/sub/demo_smoke cannot be written" in err[0]


@pytest.mark.slow
def test_sigterm_ends_train_with_143_and_a_resume_hint(tiny_corpus, tmp_path):
    from test_train import QUICK as TRAIN_QUICK

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "sourcetrace.cli", "train", "--root", str(tiny_corpus), "--out", str(out)]
    for k, v in dict(TRAIN_QUICK, **{"train.epochs": 40}).items():
        argv += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait for the first evaluated epoch (it writes last/)
        lines.append(line)
        if "dev EER" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 143, text[-3000:]
    assert "--resume" in text and "Traceback" not in text and "sourcetrace train: interrupted" in text
    done = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert done < 40 and (out / "last" / "state.pt").is_file()


def test_unwritable_sweep_folder_and_report_name_their_path(tmp_path):
    from sourcetrace.errors import StorageError
    from sourcetrace.storage import storage_error, writable_folder

    folder = tmp_path / "ray" / "sw"
    folder.mkdir(parents=True)
    subprocess.run(["chattr", "+i", str(folder)], check=True)  # stops root too
    try:
        with pytest.raises(StorageError, match=r"the sweep folder .*ray/sw cannot be written \(Operation not"):
            writable_folder(folder)
        with pytest.raises(OSError) as err:
            (folder / "report").mkdir()
        message = str(storage_error(err.value, folder / "report"))
        assert "report: Operation not permitted" in message and "--resume" in message and "\n" not in message
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
