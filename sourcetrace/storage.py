"""Storage faults of a sweep as one clear line naming the path: an unwritable results folder or report,
or an object-store URI where a (shared) file system path is needed.

The MLflow side lives in ``sourcetrace.tracking`` (a failing store is one line and training goes on); here the
Tune folder is checked before Ray starts.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

from sourcetrace.errors import StorageError, StorageFault

RECORD = "sourcetrace_sweep.json"  # a sweep folder's record, beside Tune's files (``sweep/record.py``)


def storage_error(err: OSError, where: Path) -> StorageFault:
    """``err`` as a ``StorageFault`` (exit 1) naming the file it hit (or ``where``) and what to do."""
    path = err.filename or where
    reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return StorageFault(
        f"cannot write {path}: {reason}; make it writable (or free space) and run the same command with "
        "--resume: finished trials are kept"
    )


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def local_path(value: str | Path, what: str) -> Path:
    """``value`` as a local path (``file://`` URIs included), or ``StorageError`` for any other URI.

    Sweep folders are read and written as files (the sweep record, trial checkpoints read back for MLflow,
    the parquet reports, the exported bundle), so ``s3://bucket/x`` must never become a local folder
    ``./s3:/bucket/x``: it is refused before anything is created.

    >>> local_path("file:///tmp/ray_results", "--storage")
    PosixPath('/tmp/ray_results')
    """
    text = str(value)
    match = _URI.match(text)
    if match is None:
        return Path(text)
    if match.group(1).lower() == "file":
        return Path(unquote(urlparse(text).path))
    raise StorageError(
        f"{what} {text}: {match.group(1)}:// storage is not supported; sweeps read and write their folder as "
        "files, so mount it on every node (EFS/NFS/FSx, or an object-store mount such as mountpoint-s3) and "
        "pass the mounted path"
    )


def writable_folder(folder: Path, what: str = "the sweep folder", fix: str = "choose another --storage") -> None:
    """Create ``folder`` and prove a file can be written in it, or raise ``StorageError`` naming it."""
    probe = Path(folder) / f".write-test-{uuid.uuid4().hex}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise StorageError(
            f"{what} {folder} cannot be written ({err.strerror or err}): {fix} or make it writable"
        ) from None
