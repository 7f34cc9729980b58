"""Local embedded Ray that listens on 127.0.0.1 only, with Ray's token auth left on.

Ray 2.60 binds its GCS, raylet, object-manager, core-worker (driver and trial workers) and runtime-env
agent servers to the *node IP*. On Linux that is the machine's external address, and
``ray.init(_node_ip_address="127.0.0.1")`` is turned back into it (``resolve_ip_for_localhost``). Ray's
single-machine mode (its default on macOS/Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes the
node IP 127.0.0.1, so every server binds loopback; no dashboard is started. Token auth (Ray's default,
``RAY_AUTH_MODE=token``, token at ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) stays on as a second
guard against other local users.

A SIGKILLed driver takes GCS, raylet and workers along (Ray's fate sharing); its dashboard and
runtime-env agents notice at once but spend up to 60 s (a timeout fixed in Ray) reporting the death to
the dead GCS before they exit, on loopback meanwhile.
"""

from __future__ import annotations

import os
import sys

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make the local Ray this process starts bind 127.0.0.1 (call before ``ray.init``)."""
    os.environ[SINGLE_MACHINE] = "0"  # read when ray is imported: here and in every process Ray spawns
    if "ray" in sys.modules:  # imported already (a sweep file imports ray.tune): the flag was read then
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
