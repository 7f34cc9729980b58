"""sourcetrace: which TTS system made this clip? Metric-learning source tracing, swept with Ray Tune.

``import sourcetrace`` stays light (no torch until a model is loaded)::

    m = sourcetrace.load("path/to/bundle", device="auto")
    m.trace(["clip.flac"], top_k=3)  # -> [Attribution(path, decision, top, knownness, error)]
"""

from sourcetrace.version import __version__

__all__ = ["Attribution", "SourceTracer", "load", "__version__"]


def load(path, device: str = "auto"):
    """A bundle (or a run / checkpoint / fusion / sweep folder, exported on first use) ready to ``trace``."""
    from sourcetrace.artefacts import load as _load

    return _load(path, device=device)


def __getattr__(name: str):
    if name in ("Attribution", "SourceTracer"):
        from sourcetrace.bundle import model

        return getattr(model, name)
    raise AttributeError(f"module 'sourcetrace' has no attribute {name!r}")
