"""A real two-node Ray cluster on this machine: a sweep's trials land on both nodes, and survive losing one.

What cluster/README.md tells a user to do, done by the test: a head and a second node started with
``ray start --block`` as separate processes (each its own process group, different custom resources
``node_a`` / ``node_b`` so Ray's records tell them apart), an ``mlflow server`` on 127.0.0.1 with an
sqlite backend, then ``sourcetrace sweep --address --tracking-uri --storage``. Where each trial ran
comes from Ray's own records: the pid Tune reports with every result, matched against the GCS actor
table (node id and pid of every trial actor) and the GCS node table (node id -> custom resources).
The second sweep loses the second node (SIGKILL to its process group) while a trial runs there; every
trial must still finish exactly once, in Tune's experiment state and in MLflow. Everything started here
is stopped by its process group, never by ``ray stop`` (which stops every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from sourcetrace.localray import SINGLE_MACHINE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
# Fast node-death detection by the GCS (defaults: ~30 s); read by the head's gcs_server from its env.
FAST_HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc (Linux, like ``ray start`` clusters)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(proc: subprocess.Popen) -> set[int]:
    """Live pids below one we started. Ray's raylet puts each worker in a process group of its own (to
    clean up after it), so a node's trial actors are below the node's ``ray start`` but not in its group."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [proc.pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and table[child][1] != "Z":
                out.add(child)
                todo.append(child)
    return out


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_node(proc: subprocess.Popen) -> None:
    """What losing a machine does to a Ray node: SIGKILL its process group and every process below it."""
    below = descendants(proc)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill(below)


def stop_group(proc: subprocess.Popen, leader_first: bool = False) -> None:
    """Stop a process we started and its process group, then anything left below it.

    ``leader_first``: SIGTERM the leader alone first: a ``ray start --block`` process then drains its node
    and stops the node's processes itself (SIGTERM to the whole group kills the GCS under a draining head,
    which then waits a minute for it). Then SIGTERM, then SIGKILL, to the group.
    """
    below = descendants(proc)
    steps = [(os.killpg, signal.SIGTERM, 10.0), (os.killpg, signal.SIGKILL, 5.0)]
    if leader_first:
        steps.insert(0, (os.kill, signal.SIGTERM, 15.0))
    for send, sig, wait in steps:
        proc.poll()  # reap the leader, so a zombie does not keep the group "alive"
        if group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                send(proc.pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            proc.poll()
            live = {pid for pid, (_, state) in _proc_table().items() if state != "Z"}
            if not group_alive(proc.pid) and not (below & live):
                return
            time.sleep(0.2)
    _kill(below)  # workers in process groups of their own that outlived their raylet


class LocalCluster:
    """Processes this test started (Ray head, Ray node, MLflow server), each in its own process group."""

    def __init__(self, base: Path, env: dict[str, str]):
        self.base, self.env = base, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "w")
        proc = subprocess.Popen(
            cmd,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.base,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def start_node(self, name: str, head: bool, resources: dict[str, int]) -> subprocess.Popen:
        # Every port explicit: two raylets share this host, and other Ray instances may run beside them.
        ports = {
            "node-manager-port": free_port(),
            "object-manager-port": free_port(),
            "dashboard-agent-listen-port": free_port(),
            "dashboard-agent-grpc-port": free_port(),
            "runtime-env-agent-port": free_port(),
            "metrics-export-port": free_port(),
        }
        cmd = [
            RAY_CLI,
            "start",
            "--block",
            "--num-cpus=1",
            "--num-gpus=0",
            "--disable-usage-stats",
            f"--resources={json.dumps(resources)}",
            f"--temp-dir={self.base / name}",
            "--object-store-memory=150000000",
        ] + [f"--{k}={v}" for k, v in ports.items()]
        if head:
            cmd += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        return self._spawn(name, cmd, dict(self.env, **FAST_HEALTH) if head else None)

    def start_mlflow(self, port: int) -> str:
        store = self.base / "mlflow"
        store.mkdir()
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self._spawn("mlflow", cmd, dict(self.env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        url = f"http://127.0.0.1:{port}"

        def healthy():
            assert self.procs["mlflow"].poll() is None, self.log("mlflow")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, 90, "the MLflow server")
        return url

    def ray_query(self, code: str, timeout: float = 90) -> dict:
        """Run ``code`` in a fresh driver connected to the cluster; it prints one JSON object."""
        script = f"import json, time, ray\nray.init(address={self.address!r}, logging_level='ERROR')\n"
        out = subprocess.run(
            [sys.executable, "-c", script + textwrap.dedent(code)],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for name in reversed(list(self.procs)):  # MLflow, node b, head: dependants first
            stop_group(self.procs[name], leader_first=name != "mlflow")


NODE_TABLE = """
deadline = time.time() + 60
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2:
        break
    time.sleep(0.5)
print(json.dumps({n["NodeID"]: n["Resources"] for n in alive}))
"""

# Every trial actor Ray ever ran for a job of this cluster: node id and pid (the GCS keeps dead actors).
ACTOR_TABLE = """
from ray._private import state
actors = state.actors()
print(json.dumps([{"node": a["Address"]["NodeID"], "pid": a["Pid"], "cls": a["ActorClassName"]}
                  for a in actors.values()]))
"""


@pytest.fixture
def cluster(tiny_corpus):
    # A short base folder: Ray's unix sockets live under --temp-dir, and their paths must stay < 108 bytes.
    parent = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 24 else os.sep + "tmp"
    base = Path(tempfile.mkdtemp(prefix="st-", dir=parent))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)  # Ray assigns devices; the test never sets them
    env.pop(SINGLE_MACHINE, None)  # left set by earlier in-process tests that started a loopback-only Ray
    c = LocalCluster(base, env)
    try:
        c.start_node("head", head=True, resources={"node_a": 1})
        wait_for(
            lambda: list((base / "head").glob("session_*/sockets/raylet")) or c.procs["head"].poll() is not None,
            90,
            "the Ray head",
        )
        assert c.procs["head"].poll() is None, c.log("head")
        c.start_node("worker", head=False, resources={"node_b": 1})
        c.mlflow_url = c.start_mlflow(free_port())
        c.nodes = c.ray_query(NODE_TABLE)
        assert len(c.nodes) == 2, (c.nodes, c.log("worker"))
        yield c
    finally:
        c.stop()
        leftovers = [n for n, p in c.procs.items() if group_alive(p.pid)]
        shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"process groups still alive after teardown: {leftovers}"


def sweep_cmd(c: LocalCluster, sweep_file: Path, root: Path, name: str, *extra: str, env_address=False) -> list[str]:
    """The driver's command; ``env_address``: no --address (run_sweep then passes the cluster as RAY_ADDRESS)."""
    cmd = [
        sys.executable,
        "-m",
        "sourcetrace",
        "sweep",
        str(sweep_file),
        "--root",
        str(root),
        "--address",
        c.address,
        "--tracking-uri",
        c.mlflow_url,
        "--storage",
        str(c.base / "shared" / "ray_results"),
        "--name",
        name,
        "--no-analyze",
        *extra,
    ]
    return [a for a in cmd if a not in ("--address", c.address)] if env_address else cmd


def run_sweep(c: LocalCluster, cmd: list[str], timeout: float, during=None) -> subprocess.CompletedProcess:
    """Run a sweep driver in its own process group; ``during(proc)`` is polled while it runs."""
    log_path = c.base / f"{cmd[cmd.index('--name') + 1]}.driver.log"
    env = c.env if "--address" in cmd else c.env | {"RAY_ADDRESS": c.address}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=c.base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.monotonic() + timeout
        while proc.poll() is None:
            assert time.monotonic() < end, f"sweep timed out:\n{log_path.read_text()[-4000:]}"
            if during is not None:
                during(proc)
            time.sleep(0.5)
    finally:
        stop_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, log_path.read_text(errors="replace"), "")


def trial_results(exp: Path, partial: bool = False) -> dict[str, list[dict]]:
    """Tune's result rows per trial id, read from each trial folder's result.json.

    ``partial``: the sweep is still running, so a file's last line may be half written (skipped).
    """
    out: dict[str, list[dict]] = {}
    for path in exp.glob("*/result.json"):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if partial:
                    continue
                raise
            out.setdefault(row["trial_id"], []).append(row)
    return out


def tune_states(exp: Path) -> dict[str, dict]:
    """Trial id -> status and failure count in Tune's newest experiment snapshot."""
    snap = max(exp.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    out = {}
    for state_json, meta_json in json.loads(snap.read_text())["trial_data"]:
        state, meta = json.loads(state_json), json.loads(meta_json)
        assert state["trial_id"] not in out, f"trial {state['trial_id']} twice in Tune's state"
        out[state["trial_id"]] = {"status": state["status"], "num_failures": meta.get("num_failures", 0)}
    return out


def mlflow_runs(url: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} on {url}"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def check_exactly_once(c: LocalCluster, exp: Path, n_trials: int) -> dict[str, dict]:
    """Every trial TERMINATED once in Tune and one FINISHED MLflow run per trial, epochs logged once."""
    states = tune_states(exp)
    assert len(states) == n_trials, states
    assert all(s["status"] == "TERMINATED" for s in states.values()), states
    record = json.loads((exp / "sourcetrace_sweep.json").read_text())
    client, runs = mlflow_runs(c.mlflow_url, record["experiment"])
    by_trial: dict[str, list] = {}
    for run in runs:
        if "reference" not in run.data.tags:  # the featureless baseline's run is no trial
            by_trial.setdefault(run.data.tags.get("trial_id"), []).append(run)
    assert sorted(by_trial) == sorted(states), (sorted(by_trial), sorted(states))
    for tid, trial_runs in by_trial.items():
        assert len(trial_runs) == 1, f"trial {tid} has {len(trial_runs)} MLflow runs"
        run = trial_runs[0]
        assert run.info.status == "FINISHED", (tid, run.info.status, run.data.tags)
        assert run.data.tags.get("status") in ("finished", "early_stopped"), run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/dev_eer")]
        assert steps and len(steps) == len(set(steps)), f"trial {tid}: dev_eer steps {steps} (an epoch logged twice)"
    return states


def where_trials_ran(c: LocalCluster, exp: Path) -> dict[str, set[str]]:
    """Trial id -> names of the custom resources (node_a / node_b) of the nodes its actor(s) ran on."""
    actors = c.ray_query(ACTOR_TABLE)
    node_of_pid = {a["pid"]: a["node"] for a in actors if a["pid"]}
    label = {nid: next(k for k in res if k.startswith("node_")) for nid, res in c.nodes.items()}
    out = {}
    for tid, rows in trial_results(exp).items():
        pids = {r["pid"] for r in rows}
        missing = pids - set(node_of_pid)
        assert not missing, f"trial {tid}: pids {missing} are not trial actors in Ray's actor table"
        out[tid] = {label[node_of_pid[p]] for p in pids}
    return out


def test_sweep_spreads_over_nodes_and_survives_losing_one(cluster, tiny_corpus):
    c = cluster
    storage = c.base / "shared" / "ray_results"

    # 1. The project's smoke sweep through the cluster: 2 trials, 1 CPU each, 1 CPU per node.
    done = run_sweep(c, sweep_cmd(c, REPO / "sweeps" / "demo.py", tiny_corpus, "spread", "--smoke"), timeout=240)
    assert done.returncode == 0, done.stdout[-4000:]
    exp = storage / "spread"
    states = check_exactly_once(c, exp, n_trials=2)
    placed = where_trials_ran(c, exp)
    print("sweep 'spread', node of each trial:", placed)
    assert set(placed) == set(states)
    assert set().union(*placed.values()) == {"node_a", "node_b"}, f"trials did not use both nodes: {placed}"

    # 2. Lose node b mid-sweep: SIGKILL its process group once a trial there has reported an epoch
    #    (so it has a checkpoint); Tune must retry that trial on node a and the sweep still end cleanly.
    sweep_file = c.base / "failover.py"
    sweep_file.write_text(
        textwrap.dedent("""
        from ray import tune
        BASE = {"model.name": "thin_resnet34", "model.channels": 8, "train.epochs": 4, "train.eval_every": 1,
                "train.warmup_epochs": 1, "train.steps_per_epoch": 3, "train.lr": 1e-3, "train.batch_size": 16,
                "data.crop_seconds": 1.0, "data.eval_seconds": 2.0, "data.short_clips": "pad",
                "loss.name": "aamsoftmax", "sampler.name": "random"}
        SPACE = {"model.embedding_dim": tune.grid_search([8, 16, 24])}
        TUNE = {"scheduler": "fifo", "max_failures": 3, "keep_checkpoints": 1, "log_checkpoint": False}
        RESOURCES = {"cpu": 1}
    """)
    )
    worker = c.procs["worker"]
    killed: dict[str, object] = {}

    def kill_worker_when_busy(_driver):
        if killed:
            return
        on_worker = descendants(worker)
        for tid, rows in trial_results(storage / "failover", partial=True).items():
            last = rows[-1]
            if last["pid"] in on_worker and not last.get("done") and last["epoch"] < 4:
                kill_node(worker)
                killed.update(trial=tid, epoch=last["epoch"])
                return

    # this driver finds the cluster through RAY_ADDRESS alone, as `ray job submit` and Ray's own tools set it
    cmd = sweep_cmd(c, sweep_file, tiny_corpus, "failover", env_address=True)
    done = run_sweep(c, cmd, timeout=300, during=kill_worker_when_busy)
    assert killed, f"no trial ran on node b before the sweep ended:\n{done.stdout[-3000:]}"
    assert done.returncode == 0, done.stdout[-4000:]
    states = check_exactly_once(c, storage / "failover", n_trials=3)
    assert states[killed["trial"]]["num_failures"] >= 1, (killed, states)
    rows = trial_results(storage / "failover")[killed["trial"]]
    assert max(r["epoch"] for r in rows) == 4, rows
    placed = where_trials_ran(c, storage / "failover")
    print(
        f"sweep 'failover': node b killed during trial {killed['trial']} after epoch {killed['epoch']:g};",
        "Tune states:",
        states,
        "nodes:",
        placed,
    )
    assert placed[killed["trial"]] == {"node_a", "node_b"}, placed  # started on b, finished on a

    # 3. The report reads the shared storage path and finds every trial finished, none twice.
    from sourcetrace.sweep.report import write_reports

    reports = write_reports(storage / "failover", tracking_uri=c.mlflow_url)
    per_trial = reports.trials.drop_duplicates("trial_id")
    assert len(per_trial) == 3 and (per_trial["status"] == "finished").all(), per_trial[["trial_id", "status"]]
    assert per_trial["run_id"].notna().all() and per_trial["run_id"].is_unique
