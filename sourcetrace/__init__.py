"""sourcetrace: which TTS system made this clip? Metric-learning source tracing, swept with Ray Tune."""

__version__ = "0.1.0"
