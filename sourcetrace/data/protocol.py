"""MLAAD source-tracing protocol reader: ``protocol/{train,dev,eval}.csv`` -> one typed table per split.

MLAAD's own CSVs (extra columns such as ``language``, ``duration``, ``transcript``; duplicated rows in
``eval.csv``) and the project's TTS corpus read into identical tables. Known systems and seen languages
are those of ``train.csv``; language is the second path component (``./fake/<lang>/<system>/<file>``).
Reading touches only the CSVs: ``check_files`` / ``require_files`` stat the audio, ``check_fine``
cross-checks ``fine/``; ``read_split_file`` reads one CSV alone (no training split to derive conditions).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sourcetrace.errors import SHOWN, ProtocolError, first_lines

SPLITS = ("train", "dev", "eval")
CONDITIONS = (
    "lang_seen___model_seen",
    "lang_seen___model_not_seen",
    "lang_not_seen___model_seen",
    "lang_not_seen___model_not_seen",
)
REQUIRED = ("path", "model_name")
COLUMNS = ("path", "file", "system", "language", "system_seen", "language_seen", "condition", "label")


@dataclass(frozen=True, eq=False)
class Protocol:
    """Tables of the requested splits (columns ``COLUMNS``) and the label space of ``train.csv``."""

    root: Path
    folder: Path
    tables: dict[str, pd.DataFrame]
    known_systems: tuple[str, ...]
    seen_languages: tuple[str, ...]
    duplicates_dropped: dict[str, int]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.tables)


def condition_name(language_seen: bool, system_seen: bool) -> str:
    """``lang_[not_]seen___model_[not_]seen`` as in MLAAD's ``fine/`` file names."""
    return f"lang_{'' if language_seen else 'not_'}seen___model_{'' if system_seen else 'not_'}seen"


def protocol_folder(root: str | os.PathLike, protocol: str | os.PathLike | None = None) -> Path:
    """The protocol folder: ``protocol`` as given (or relative to ``root``), default ``root/protocol``."""
    root = Path(root)
    if protocol is None or str(protocol) == "":
        folder = root / "protocol"
    else:
        folder = Path(protocol)
        if not folder.is_absolute() and not folder.is_dir() and (root / folder).is_dir():
            folder = root / folder
    if not root.is_dir():
        raise ProtocolError(f"data root {str(root)!r} is not a folder")
    if not folder.is_dir():
        there = sorted(p.name for p in root.iterdir())
        raise ProtocolError(
            f"protocol folder {str(folder)!r} does not exist; {str(root)!r} holds: {', '.join(there) or '(nothing)'}"
        )
    return Path(os.path.abspath(folder))


def read_protocol(
    root: str | os.PathLike,
    protocol: str | os.PathLike | None = None,
    splits: tuple[str, ...] | list[str] = SPLITS,
) -> Protocol:
    """Read ``train.csv`` (always: it defines the classes) and the requested splits.

    A split is ``<folder>/<split>.csv``: MLAAD's are ``SPLITS``; another name is read if its CSV exists,
    else it is an "unknown split" error listing the CSVs there. Audio files are not touched.
    """
    folder = protocol_folder(root, protocol)
    splits = tuple(dict.fromkeys(splits))
    available = sorted(p.stem for p in folder.glob("*.csv"))
    for split in splits:
        if not (folder / f"{split}.csv").is_file():
            kind = "missing split CSV" if split in SPLITS else f"unknown split {split!r}"
            raise ProtocolError(
                f"{kind}: {str(folder / f'{split}.csv')!r} does not exist; "
                f"{str(folder)!r} has: {', '.join(p + '.csv' for p in available) or 'no CSV files'}"
            )
    if not (folder / "train.csv").is_file():
        raise ProtocolError(
            f"missing split CSV: {str(folder / 'train.csv')!r} (it defines the known systems) does not exist; "
            f"{str(folder)!r} has: {', '.join(p + '.csv' for p in available) or 'no CSV files'}"
        )
    abs_root = os.path.abspath(root)
    raw, dropped = {}, {}
    for split in dict.fromkeys(("train",) + splits):
        raw[split], dropped[split] = _read_split(folder / f"{split}.csv", abs_root)
    known = tuple(sorted(set(raw["train"]["system"])))
    seen_langs = tuple(sorted(set(raw["train"]["language"])))
    tables = {split: _finish(raw[split], known, seen_langs) for split in splits}
    return Protocol(
        root=Path(abs_root),
        folder=folder,
        tables=tables,
        known_systems=known,
        seen_languages=seen_langs,
        duplicates_dropped={split: dropped[split] for split in splits},
    )


def _sniff_sep(csv: Path) -> str:
    with open(csv, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def _rows(csv: Path, rows, what: str) -> str:
    """``file: <what> in N rows: row i (line l): ...`` quoting the first of them."""
    rows = list(rows)
    return f"{csv}: {what} in {len(rows)} row(s):\n{first_lines(rows)}"


def _read_split(csv: Path, abs_root: str) -> tuple[pd.DataFrame, int]:
    """path, file, system, language of one CSV with duplicate paths dropped; validates every row."""
    try:
        df = pd.read_csv(
            csv, sep=_sniff_sep(csv), dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ProtocolError(f"{csv}: not a readable CSV table ({err})") from None
    df.columns = [str(c).strip() for c in df.columns]
    for column in REQUIRED:
        if column not in df.columns:
            raise ProtocolError(
                f"{csv}: missing column {column!r}; its columns are: {', '.join(df.columns) or '(none)'} "
                f"(MLAAD protocols need at least {', '.join(REQUIRED)})"
            )
    paths = df["path"].str.strip().to_numpy(dtype=object)
    systems = df["model_name"].str.strip().to_numpy(dtype=object)
    line = np.arange(len(df)) + 2  # 1-based file line, after the header
    empty = [f"row {i} (line {line[i]})" for i in range(len(df)) if not systems[i]]
    if empty:
        raise ProtocolError(_rows(csv, empty, "empty column 'model_name'"))
    languages, bad = [], []
    for i, p in enumerate(paths):
        parts = PurePosixPath(p.replace("\\", "/")).parts
        parts = parts[1:] if parts[:1] == (".",) else parts
        if len(parts) != 4 or parts[0] != "fake" or ".." in parts:
            bad.append(f"row {i} (line {line[i]}): {p!r}")
            languages.append("")
        else:
            languages.append(parts[1])
    if bad:
        raise ProtocolError(_rows(csv, bad, "column 'path' does not look like ./fake/<lang>/<system>/<file>"))
    out = pd.DataFrame(
        {
            "path": paths,
            "file": [os.path.normpath(os.path.join(abs_root, p)) for p in paths],
            "system": systems,
            "language": languages,
        }
    )
    dup = out.duplicated("path", keep=False)
    if dup.any():
        per_path = out[dup].groupby("path", sort=False)["system"].nunique()
        conflict = per_path[per_path > 1]
        if len(conflict):
            quoted = [f"{p!r}: {', '.join(sorted(set(out.loc[out['path'] == p, 'system'])))}" for p in conflict.index]
            raise ProtocolError(_rows(csv, quoted, "the same path is listed with different model_name values"))
    keep = ~out.duplicated("path", keep="first")
    return out[keep].reset_index(drop=True), int((~keep).sum())


def _finish(raw: pd.DataFrame, known: tuple[str, ...], seen_langs: tuple[str, ...]) -> pd.DataFrame:
    """Add seen flags, condition and label with fixed dtypes (identical for every protocol source)."""
    system = raw["system"].to_numpy(dtype=object)
    language = raw["language"].to_numpy(dtype=object)
    index = {s: i for i, s in enumerate(known)}
    label = np.array([index.get(s, -1) for s in system], dtype=np.int64)
    system_seen = label >= 0
    language_seen = np.isin(language.astype(str), np.array(seen_langs, dtype=str))
    condition = [condition_name(ls, ss) for ls, ss in zip(language_seen, system_seen)]
    text = {c: pd.array(list(raw[c]), dtype="str") for c in ("path", "file", "system", "language")}
    return pd.DataFrame(
        {
            **text,
            "system_seen": system_seen.astype(bool),
            "language_seen": language_seen.astype(bool),
            "condition": pd.array(condition, dtype="str"),
            "label": label,
        },
        columns=list(COLUMNS),
    )


def protocol_checksum(root: str | os.PathLike, protocol: str | os.PathLike | None = None) -> str:
    """SHA-256 over the protocol folder's CSV files (names and bytes, ``fine/`` included): which data a run saw."""
    folder = protocol_folder(root, protocol)
    digest = hashlib.sha256()
    for csv in sorted(folder.rglob("*.csv")):
        digest.update(csv.relative_to(folder).as_posix().encode() + b"\0" + csv.read_bytes())
    return digest.hexdigest()


def check_files(protocol: Protocol) -> list[str]:
    """One ``'<split>: <path> -> <file>: file does not exist'`` line per protocol row without its audio file."""
    return _missing_files(protocol.tables)


def require_files(tables: Mapping[str, pd.DataFrame]) -> None:
    """A ProtocolError quoting the first rows of ``tables`` whose audio file does not exist, if any."""
    missing = _missing_files(tables)
    if missing:
        raise ProtocolError(f"{len(missing)} protocol rows point at missing files:\n{first_lines(missing)}")


def _missing_files(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    return [
        f"{split}: {path} -> {file}: file does not exist"
        for split, table in tables.items()
        for path, file in zip(table["path"], table["file"])
        if not os.path.isfile(file)
    ]


def read_checked(root: str | Path, protocol: str | Path | None, splits: tuple[str, ...]) -> Protocol:
    """``read_protocol`` of ``splits`` (repeats dropped) with every audio file checked to exist."""
    proto = read_protocol(root, protocol, splits=tuple(dict.fromkeys(splits)))
    require_files(proto.tables)
    return proto


def read_split_file(csv: Path, root: str | Path) -> pd.DataFrame:
    """One protocol CSV read alone, paths resolved against ``root``: no training split, so no system is
    known, every language unseen and no label set (``label`` -1)."""
    raw, _ = _read_split(Path(csv), os.path.abspath(root))
    return _finish(raw, (), ())


def fine_files(protocol: Protocol) -> dict[tuple[str, str], Path]:
    """``fine/<split>___<condition>.csv`` files present for the protocol's splits."""
    fine = protocol.folder / "fine"
    out = {}
    for split in protocol.splits:
        for cond in CONDITIONS:
            f = fine / f"{split}___{cond}.csv"
            if f.is_file():
                out[split, cond] = f
    return out


def check_fine(protocol: Protocol) -> list[str]:
    """Problems where ``fine/`` disagrees with the conditions derived from ``train.csv`` (none if absent)."""
    problems = []
    for (split, cond), csv in fine_files(protocol).items():
        try:
            listed, _ = _read_split(csv, str(protocol.root))
        except ProtocolError as err:
            problems.append(f"fine/{csv.name}: {err}")
            continue
        table = protocol.tables[split]  # compared by normalised file, so './fake/..' == 'fake/..'
        ours = set(table.loc[table["condition"] == cond, "file"])
        theirs = set(listed["file"])
        derived = dict(zip(table["file"], table["condition"]))
        shown = dict(zip(listed["file"], listed["path"])) | dict(zip(table["file"], table["path"]))
        for f in sorted(theirs - ours)[:SHOWN]:
            where = f"has condition {derived[f]}" if f in derived else f"is not in {split}.csv"
            problems.append(f"fine/{csv.name}: lists {shown[f]} which {where}")
        if len(theirs - ours) > SHOWN:
            more = len(theirs - ours) - SHOWN
            problems.append(f"fine/{csv.name}: ... and {more} more listed clips of another condition")
        if ours - theirs:
            example = shown[sorted(ours - theirs)[0]]
            problems.append(
                f"fine/{csv.name}: omits {len(ours - theirs)} clips of {split}.csv with this condition (e.g. {example})"
            )
    return problems
