"""Shared fixtures: a real tiny TTS corpus, built once and cached across pytest runs."""

from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["mlaad_fixture"]  # the MLAAD-shaped corpus fixture, for every test module

# Ray runs as users get it, token auth on (its default), but with a token of this test session rather
# than one written into HOME; no usage stats.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.pop("RAY_AUTH_MODE", None)
_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="sourcetrace-ray-auth-"))
(_TOKEN_DIR / "auth_token").write_text(secrets.token_hex(32))
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN_DIR / "auth_token")
atexit.register(shutil.rmtree, _TOKEN_DIR, True)


@pytest.fixture(scope="session")
def tiny_corpus(request) -> Path:
    """Root of the ``tiny`` preset corpus (seed 0), under pytest's cache so re-runs resume instantly.

    The build is resumable, so an interrupted session finishes it next time; the folder name carries
    a hash of the builder's source, so a changed builder never reuses clips of an older one.
    """
    import sourcetrace.data.corpus as corpus

    digest = hashlib.sha1()
    for src in sorted(Path(corpus.__file__).parent.glob("*.py")):
        digest.update(src.read_bytes())
    root = Path(request.config.cache.mkdir(f"sourcetrace_tiny_corpus_{digest.hexdigest()[:10]}"))
    corpus.build_corpus(root, preset="tiny", seed=0, workers=0, progress=False)
    return root
