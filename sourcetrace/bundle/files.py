"""A bundle's files on disk: names, atomic writes, the enrolment lock, and strict readers.

Every reader turns a missing, truncated or garbled file into one ``BundleError`` naming the file, and
nothing here can run code from a file: weights are safetensors, arrays ``.npz`` read with
``allow_pickle=False``, everything else JSON. Writers go through a temporary sibling and
``os.replace``, so a kill mid-write leaves the previous file whole; temporaries a killed writer left
behind are removed by the next writer holding the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from sourcetrace.errors import BundleError
from sourcetrace.schemas import SCHEMAS, check, parse_json
from sourcetrace.validation import MAX_MODEL_BYTES

FORMAT = "sourcetrace-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
SCORER_ARRAYS, SCORER_JSON = "scorer.npz", "scorer.json"
THRESHOLD = "threshold.json"
ENROLLED = "enrolled.json"
CARD_MD, CARD_JSON = "model_card.md", "model_card.json"
CALIBRATION = "calibration.json"  # optional: bundles exported before it trace without probabilities
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
REQUIRED = (MANIFEST, CONFIG, WEIGHTS, SCORER_ARRAYS, SCORER_JSON, THRESHOLD, ENROLLED)
RESERVED_NAMES = ("unknown",)
MAX_NAME = 200
# Caps on what a bundle's files may ask for, checked before anything is allocated (the JSON files' own caps
# are in their schemas, sourcetrace/schemas/; the model's is validation.MAX_MODEL_BYTES): a hostile or damaged
# bundle is one error, not an OOM.
MAX_ARRAYS, MAX_ARRAY_DIMS, MAX_ARRAYS_BYTES = 64, 4, 2 << 30  # scorer.npz: arrays, dimensions, bytes in all


def is_bundle(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``path`` through a temporary sibling and ``os.replace`` (a kill leaves the old file whole)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX + path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _regular_file(path: Path, folder: Path) -> Path:
    """``path`` if it is a regular file; missing, or a folder / pipe / device, is one ``BundleError``."""
    if path.is_file():
        return path
    if path.exists():
        raise BundleError(f"{path}: not a regular file (a folder, pipe or device); a bundle holds plain files")
    raise BundleError(f"{path}: missing (is {folder} a complete bundle? re-export it with `sourcetrace export`)")


def read_json(folder: Path, name: str, schema: bool = True) -> Any:
    """A bundle JSON file; missing, unparsable or (``schema``, for the files that have one) not fitting its
    schema -> one clear error naming it and the field."""
    path = _regular_file(Path(folder) / name, Path(folder))
    obj = parse_json(path, name if schema and name in SCHEMAS else None)
    if name == CONFIG and not isinstance(obj, dict):  # its keys and values are the Config's own checks
        raise BundleError(f"{path}: must be an object of config keys (section.key: value), got {type(obj).__name__}")
    return obj


def _npz_headers(path: Path) -> None:
    """Check every array's header in the ``.npz`` at ``path`` before any is read: at most ``MAX_ARRAYS``
    arrays of at most ``MAX_ARRAY_DIMS`` dimensions, ``MAX_ARRAYS_BYTES`` in all, no object (pickled) arrays.

    The shape in a header is what ``np.load`` allocates, whatever the (compressed) data holds, so a header
    asking for terabytes is refused here, not attempted."""
    import zipfile

    total = 0
    with zipfile.ZipFile(path) as z:
        names = [i for i in z.infolist() if not i.is_dir()]
        if len(names) > MAX_ARRAYS:
            raise BundleError(f"{path}: {len(names)} arrays; a bundle's scorer has at most {MAX_ARRAYS}")
        for info in names:
            key = info.filename.removesuffix(".npy")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"array {key!r}: .npy format version {version}")
            if dtype.hasobject:
                raise BundleError(f"{path}: holds pickled objects (array {key!r}), which are never loaded")
            if len(shape) > MAX_ARRAY_DIMS:
                raise BundleError(f"{path}: array {key!r} has {len(shape)} dimensions; at most {MAX_ARRAY_DIMS}")
            total += math.prod(shape) * dtype.itemsize
            if total > MAX_ARRAYS_BYTES:
                raise BundleError(
                    f"{path}: array {key!r} has shape {tuple(shape)}: its arrays would take more than the "
                    f"{MAX_ARRAYS_BYTES:,} bytes a bundle's scorer may have"
                )


def read_npz(folder: Path, name: str) -> dict[str, np.ndarray]:
    path = _regular_file(Path(folder) / name, Path(folder))
    try:
        _npz_headers(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except BundleError:
        raise
    except ValueError as err:  # object arrays need pickle: refused
        if "pickle" not in str(err):
            raise BundleError(f"{path}: not a readable .npz array file ({err})") from None
        raise BundleError(f"{path}: holds pickled objects, which are never loaded ({err})") from None
    except Exception as err:  # zipfile.BadZipFile, EOFError, OSError: truncated or not an npz
        raise BundleError(f"{path}: not a readable .npz array file ({type(err).__name__}: {err})") from None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, buf.getvalue())


def read_weights(folder: Path) -> dict:
    """The model's state dict from ``weights.safetensors`` (tensors only: no code can run from it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _regular_file(Path(folder) / WEIGHTS, Path(folder))
    size = _weights_bytes(path)
    if size > MAX_MODEL_BYTES:
        raise BundleError(
            f"{path}: its tensors take {size:,} bytes, more than the {MAX_MODEL_BYTES:,} a bundle's model may have"
        )
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BundleError(
            f"{path}: not a safetensors weights file ({err}); bundles never load pickled weights"
        ) from None


def _weights_bytes(path: Path) -> int:
    """The bytes the tensors of a safetensors file take, from its header alone (nothing is loaded)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100 << 20:  # safetensors' own limit on a header
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        if not all(isinstance(e, int) and e >= 0 for e in ends):
            raise ValueError("data offsets")
        return max(ends, default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OSError) as err:
        raise BundleError(
            f"{path}: not a safetensors weights file ({type(err).__name__}: {str(err)[:200]}); "
            "bundles never load pickled weights"
        ) from None


def write_weights(path: Path, state_dict: dict) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return atomic_write(path, save(tensors))


def _remove_strays(folder: Path) -> None:
    for stray in folder.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            stray.unlink()


def sweep_strays(folder: Path) -> None:
    """Remove temporaries a killed writer left, if no writer holds the lock now (else leave them)."""
    try:
        fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # a read-only bundle: nothing was written here, nothing to clean
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove_strays(Path(folder))
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(folder: Path):
    """Exclusive lock on the bundle (``fcntl.flock`` on ``.lock``): one enrolment writer at a time.

    Under the lock no other writer is alive, so temporaries left by a killed one are removed here.
    """
    folder = Path(folder)
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise BundleError(f"cannot lock {folder} for writing ({err.strerror}); is the bundle read-only?") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _remove_strays(folder)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_name(name: Any, what: str = "system name", strict: bool = True) -> str:
    """A system name is a value printed in tables, never a path: printable, non-empty, not reserved.

    '/' is allowed (MLAAD's ``tts_models/en/ljspeech/vits``); tabs, newlines and other control or
    separator characters are not, because they break table, CSV and log output. ``strict=False`` (the
    training corpus's names, which the user did not type here) refuses only empty and reserved names.

    >>> check_name("tts_models/en/ljspeech/vits")
    'tts_models/en/ljspeech/vits'
    >>> check_name("a\\tb")
    Traceback (most recent call last):
    ...
    sourcetrace.errors.BundleError: invalid system name 'a\\tb': it holds the control character '\\t'
    """
    if not isinstance(name, str) or not name.strip():
        raise BundleError(f"invalid {what} {name!r}: empty")
    if name.lower() in RESERVED_NAMES:
        raise BundleError(f"invalid {what} {name!r}: 'unknown' is the tracer's answer for no match")
    if not strict:  # a training corpus's names are taken as they are; output escapes them
        return name
    for ch in name:
        if not ch.isprintable() or unicodedata.category(ch) in ("Zl", "Zp"):
            raise BundleError(f"invalid {what} {name!r}: it holds the control character {ch!r}")
    if name != name.strip():
        raise BundleError(f"invalid {what} {name!r}: leading or trailing spaces")
    if len(name) > MAX_NAME:
        raise BundleError(f"invalid {what} {name[:40]!r}...: longer than {MAX_NAME} characters")
    return name


def check_manifest(folder: Path) -> dict:
    """The manifest, with the format and version checked and every required file present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a folder")
    manifest = read_json(folder, MANIFEST, schema=False)  # format and version first: their own messages
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{folder / MANIFEST}: not a sourcetrace bundle manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
        raise BundleError(f"{folder / MANIFEST}: bundle format version {version!r}; readable: 1..{FORMAT_VERSION}")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    for name in missing:
        if (folder / name).exists():  # there, but a folder, pipe or device: said as such
            _regular_file(folder / name, folder)
    if missing:
        raise BundleError(f"{folder}: incomplete bundle, missing {', '.join(missing)}")
    systems, dim = manifest.get("known_systems"), manifest.get("embedding_dim")
    if not isinstance(systems, list) or not systems or not isinstance(dim, int) or dim < 1:
        raise BundleError(f"{folder / MANIFEST}: needs a non-empty 'known_systems' list and an 'embedding_dim' >= 1")
    return check(manifest, MANIFEST, folder / MANIFEST)


FIXED = (MANIFEST, CONFIG, WEIGHTS, SCORER_ARRAYS, SCORER_JSON, THRESHOLD)  # what export writes and nothing changes
FIXED_OPTIONAL = (CALIBRATION,)  # fixed at export too, absent from older bundles: hashed when present


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundle_sha256(folder: str | os.PathLike) -> str:
    """One SHA-256 that names a bundle's model: over the name and SHA-256 of each of its fixed files (manifest,
    config, weights, scorer, threshold, and the calibration when the bundle has one), in that order. Enrolment,
    the model card and the lock do not change it (``enrolled.json`` is hashed on its own: ``file_sha256``); a
    copied or moved bundle keeps it."""
    import hashlib

    folder = Path(folder)
    h = hashlib.sha256()
    for name in FIXED + tuple(n for n in FIXED_OPTIONAL if (folder / n).is_file()):
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: missing (is {folder} a complete bundle?)")
        h.update(f"{name}\t{file_sha256(path)}\n".encode())
    return h.hexdigest()
