"""Shared fixtures: a real tiny TTS corpus, built once and cached across pytest runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

pytest_plugins = ["mlaad_fixture"]  # the MLAAD-shaped corpus fixture, for every test module

# The team's Ray tests: no usage stats, no token auth written into HOME (design.md §3).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"


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
