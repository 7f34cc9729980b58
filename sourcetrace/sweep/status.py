"""What became of a trial, in one vocabulary for the MLflow tags and the report.

``finished`` (its whole epoch budget), ``early_stopped`` (by the scheduler), ``failed`` (with the reason
from its error file), ``interrupted`` (the sweep stopped mid-trial) and ``pending`` (never started).
"""

from __future__ import annotations

from pathlib import Path

UNFINISHED = ("interrupted", "pending")


def trial_status(tune_status: str, reached: int, epochs: int, error: str | None = None) -> tuple[str, str]:
    """(status, reason) of a trial from Tune's status and the last epoch it reported.

    >>> trial_status("TERMINATED", 3, 10)
    ('early_stopped', 'stopped by the scheduler at epoch 3 of 10')
    """
    if tune_status == "TERMINATED":
        if reached >= epochs:
            return "finished", f"all {epochs} epochs"
        return "early_stopped", f"stopped by the scheduler at epoch {reached} of {epochs}"
    if tune_status == "ERROR":
        return "failed", error or "trial failed (no error file)"
    if reached:
        return "interrupted", f"sweep stopped at epoch {reached} of {epochs}; --resume continues it"
    return "pending", "never started; --resume runs it"


def error_reason(error_file: str | Path | None, limit: int = 4000) -> str:
    """A failed trial's exception from its error file: a ``SourcetraceError`` in full (it may list many
    files), else the last line; a generic note without an error file."""
    if error_file and Path(error_file).is_file():
        text = Path(error_file).read_text(errors="replace")
        lines = [ln.rstrip() for ln in text.split("\nFailure # ")[-1].splitlines() if ln.strip()]
        ours = [i for i, ln in enumerate(lines) if ln.startswith("sourcetrace.errors.")]
        if ours:
            return "\n".join(ln.strip() for ln in lines[ours[-1] :])[:limit]
        if lines:
            return lines[-1].strip()[:500]
    return "trial failed (no error file)"
