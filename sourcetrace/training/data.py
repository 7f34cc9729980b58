"""Everything a trial reads, prepared once: protocol tables, labels and decoded wave banks.

The order is the one that spends no compute on a bad input: read the protocol (CSV only), validate the
config against its class count, check that every file exists, then decode. Prepared data is memoised
per process, so a Ray actor reused for the next trial does not decode the corpus again; set
``SOURCETRACE_CACHE`` to a folder to also share decoded banks between processes (memory-mapped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.config import Config
from sourcetrace.data.bank import WaveBank, probe_headers
from sourcetrace.data.protocol import Protocol, read_protocol, require_files
from sourcetrace.degrade import renderings_of
from sourcetrace.degrade.render import with_renderings
from sourcetrace.errors import AudioError, ProtocolError, first_lines
from sourcetrace.validation import validate


@dataclass(frozen=True)
class SplitData:
    """One split: its table (protocol columns), decoded audio, and integer labels (-1 = unseen system)."""

    name: str
    table: pd.DataFrame
    bank: WaveBank

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def systems(self) -> np.ndarray:
        return self.table["system"].to_numpy()


@dataclass(frozen=True)
class TrialData:
    protocol: Protocol
    train: SplitData
    dev: SplitData
    test: SplitData | None

    @property
    def known_systems(self) -> tuple[str, ...]:
        return self.protocol.known_systems


_MEMO: dict[tuple, TrialData] = {}


def data_key(cfg: Config) -> tuple:
    d = cfg.data
    return (
        str(Path(d.root).resolve()),
        d.protocol,
        d.sample_rate,
        d.crop_seconds,
        d.short_clips,
        d.max_clips_per_class,
        d.train_split,
        d.dev_split,
        d.test_split,
        d.dev_degrade,
        cfg.augment.seed,
        cfg.train.eval_test,
    )


def prepare_data(cfg: Config) -> TrialData:
    """Read, validate and decode the data of ``cfg`` (memoised per process)."""
    key = data_key(cfg)
    if key not in _MEMO:
        _MEMO.clear()  # one corpus per process at a time: keep memory bounded
        _MEMO[key] = _prepare(cfg)
    return _MEMO[key]


def read_tables(cfg: Config) -> tuple[Protocol, dict[str, pd.DataFrame]]:
    """Protocol tables of the configured splits, capped per class; validates cfg against the class count."""
    d = cfg.data
    if not d.root:
        raise ProtocolError("data.root is not set: pass --root DIR (the folder holding fake/ and protocol/)")
    splits = [d.train_split, d.dev_split] + ([d.test_split] if cfg.train.eval_test else [])
    protocol = read_protocol(d.root, d.protocol or None, splits=tuple(dict.fromkeys(splits)))
    validate(cfg, n_classes=len(protocol.known_systems))
    tables = {}
    for split in splits:
        table = protocol.tables[split]
        if d.max_clips_per_class:
            # a seeded shuffle, then the first k of each system (groupby.apply drops the key in pandas 3)
            table = table.sample(frac=1, random_state=0).groupby("system").head(d.max_clips_per_class).sort_index()
        tables[split] = table.reset_index(drop=True)
    for split, table in tables.items():
        if len(table) < 2:
            raise ProtocolError(f"split {split!r} has {len(table)} clips; at least 2 are needed")
    return protocol, tables


def _prepare(cfg: Config) -> TrialData:
    d = cfg.data
    protocol, tables = read_tables(cfg)
    require_files(tables)
    train_table = tables[d.train_split]
    headers = {}  # the training clips' headers, read once: for the short-clip rule and the decoder
    if d.short_clips != "pad":
        found = probe_headers(train_table["file"])
        durations = np.array([info.duration if info else np.inf for info, _ in found])  # unreadable: load names it
        short = np.flatnonzero(durations < d.crop_seconds)
        if len(short) and d.short_clips == "error":
            names = first_lines(f"{train_table['path'][i]} ({durations[i]:.2f} s)" for i in short)
            raise AudioError(
                f"{len(short)} training clips are shorter than the {d.crop_seconds} s crop:\n{names}\n"
                "set data.short_clips=pad (wrap-pad them) or data.short_clips=drop (leave them out), "
                "or shorten data.crop_seconds"
            )
        keep = np.setdiff1d(np.arange(len(train_table)), short)
        tables[d.train_split] = train_table.iloc[keep].reset_index(drop=True)  # drop (or nothing to drop)
        headers[d.train_split] = [found[i] for i in keep]
    if d.dev_degrade:
        names = renderings_of(d.dev_degrade, "data.dev_degrade")
        tables[d.dev_split] = with_renderings(tables[d.dev_split], names, cfg.augment.seed, d.sample_rate)
    cache = os.environ.get("SOURCETRACE_CACHE") or None
    splits = {
        split: SplitData(
            split,
            table,
            WaveBank.load(list(table["file"]), d.sample_rate, cache_dir=cache, headers=headers.get(split)),
        )
        for split, table in tables.items()
    }
    return TrialData(
        protocol=protocol,
        train=splits[d.train_split],
        dev=splits[d.dev_split],
        test=splits.get(d.test_split) if cfg.train.eval_test else None,
    )
