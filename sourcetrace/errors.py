"""Errors a user can act on. The CLI prints them as one clear line instead of a traceback."""


class SourcetraceError(Exception):
    """Base class: a problem with the user's input, named precisely."""


class ConfigError(SourcetraceError, ValueError):
    """A bad configuration key, value or pairing (raised before any compute)."""


class ProtocolError(SourcetraceError, ValueError):
    """A protocol table that cannot be used: missing column, unknown split, missing file."""


class AudioError(SourcetraceError, ValueError):
    """An audio file that cannot be used: unreadable, empty, silent, too short."""


class TrainingError(SourcetraceError, RuntimeError):
    """Training stopped for a reason the user must see (e.g. a non-finite loss)."""
