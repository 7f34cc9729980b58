"""Cluster preflight: before ``fit``, one Ray task per node type proves the sweep folder is shared and the data exist.

A storage path that is not the same shared file system on every node, or a data root mounted only on
the head, is otherwise found when the first checkpoint is persisted (after ``train.eval_every`` epochs,
then retried). The driver writes a marker file with a random token into the sweep folder; a task
pinned to one live node of each type (nodes alike in their resources; the head runs no trials and is
skipped when it has no CPU for them) reads it back and checks ``data.root`` and ``data.protocol``. Node
types the autoscaler has not started yet cannot be checked here.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from sourcetrace.errors import StorageError

TIMEOUT_S = 300.0  # a node that cannot run a zero-CPU task in this time is itself a problem


def node_type(node: dict) -> tuple:
    """What makes two nodes alike: their resource totals, without per-node and per-IP entries."""
    res = node.get("Resources", {})
    return tuple(sorted((k, v) for k, v in res.items() if not k.startswith("node:") and k != "object_store_memory"))


def _probe(marker: str, token: str, paths: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """Runs on a node: (its address, what it found wrong)."""
    import ray

    problems, folder = [], Path(marker).parent
    try:
        if Path(marker).read_text() != token:
            problems.append(f"--storage {folder} holds another marker here: not the driver's folder")
    except FileNotFoundError:
        problems.append(
            f"--storage {folder} is not shared: the driver's marker file is missing here; mount the same "
            "shared file system at the same path on every node"
        )
    except OSError as err:
        problems.append(f"--storage {folder} cannot be read here ({err.strerror or err})")
    for label, path in paths:
        if path and not Path(path).exists():
            problems.append(f"{label} {path} does not exist on this node")
    return ray.util.get_node_ip_address(), problems


def check_nodes(sweep_folder: Path, data_root: str, protocol: str | None = None) -> int:
    """Check every node type of the running Ray cluster; ``StorageError`` listing each node's problems.

    Returns the number of nodes checked.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    by_type: dict[tuple, dict] = {}
    for node in nodes:
        by_type.setdefault(node_type(node), node)
    if not by_type:
        print(
            "note: no node with CPUs is up yet; shared storage and data are not checked before the sweep",
            file=sys.stderr,
        )
        return 0
    sweep_folder = Path(sweep_folder)
    sweep_folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker = sweep_folder / f".node-check-{token[:8]}"
    marker.write_text(token)
    paths = [("data.root", data_root), ("data.protocol", protocol or "")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        refs = {
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker), token, paths
            ): node
            for node in by_type.values()
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=TIMEOUT_S)
        results = ray.get(ready)
    finally:
        marker.unlink(missing_ok=True)
    problems = [f"node {ip}: {p}" for ip, found in results for p in found]
    problems += [f"node {refs[ref]['NodeManagerAddress']}: no answer in {TIMEOUT_S:.0f} s" for ref in pending]
    if problems:
        raise StorageError("cluster preflight failed before any trial started:\n  " + "\n  ".join(problems))
    return len(refs)
