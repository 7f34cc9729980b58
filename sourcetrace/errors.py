"""Errors a user can act on. The CLI prints them as one clear line instead of a traceback.

``exit_code`` is the CLI's exit status for the error: 2 for a problem with the command, its configuration
or its input (fix the command), 1 for a run that was set up right and failed while running.
"""


class SourcetraceError(Exception):
    """Base class: a problem with the user's input, named precisely."""

    exit_code = 2


class ConfigError(SourcetraceError, ValueError):
    """A bad configuration key, value or pairing (raised before any compute)."""


class ProtocolError(SourcetraceError, ValueError):
    """A protocol table that cannot be used: missing column, unknown split, missing file."""


class AudioError(SourcetraceError, ValueError):
    """An audio file that cannot be used: unreadable, empty, silent, too short."""


class TrainingError(SourcetraceError, RuntimeError):
    """Training stopped for a reason the user must see (e.g. a non-finite loss)."""

    exit_code = 1


class CheckpointError(SourcetraceError):
    """A checkpoint that cannot be loaded safely: corrupt, or holding objects that could run code."""


class StorageError(SourcetraceError, OSError):
    """A results folder or tracking store that cannot be written (named with its path)."""


class StorageFault(StorageError):
    """A results folder or tracking store that stopped being writable while a sweep ran: what it holds stands,
    and the same command with ``--resume`` goes on once it is fixed."""

    exit_code = 1


class ServeError(SourcetraceError, OSError):
    """A server that cannot serve (its port busy, its address not this machine's, or it died on start)."""

    exit_code = 1


class DataCheckError(SourcetraceError, ValueError):
    """The driver's check of every audio file of every split found problems (all of them listed)."""


class DivergenceError(TrainingError):
    """Training diverged (non-finite or exploding loss or embeddings): retrying the same settings cannot help."""


SHOWN = 20  # items an error message quotes before "... and N more"


def first_lines(items, limit: int = SHOWN) -> str:
    """At most ``limit`` items, one per indented line, then ``... and N more`` for the rest.

    >>> print(first_lines(["a", "b", "c"], limit=2))
      a
      b
      ... and 1 more
    """
    items = [str(i) for i in items]
    more = [f"... and {len(items) - limit} more"] if len(items) > limit else []
    return "\n".join(f"  {line}" for line in items[:limit] + more)


class BundleError(SourcetraceError):
    """A bundle (or another file a user hands over) that cannot be used: missing file, unreadable JSON, wrong
    shapes, unsafe weights."""
