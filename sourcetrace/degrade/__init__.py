"""Degraded listening conditions: real codecs (through ffmpeg), simulated loudspeaker replay, level and band.

A degradation maps a clip to a clip of the same length at the same rate, as it sounds after the
channel: ``mp3_32``/``mp3_64`` (LAME at 32/64 kb/s), ``opus_16`` (libopus at 16 kb/s, as messenger
voice notes), ``amr_nb`` (AMR-NB 12.2 kb/s at 8 kHz, mobile telephony), ``gsm`` (GSM full rate at
8 kHz), ``g711`` (mu-law at 8 kHz, landline), ``replay`` (loudspeaker band limit, a synthetic room
impulse response, microphone noise), ``gain`` (a random level per clip, uniform in [-30, 0] dB) and
``band_8k`` (the telephone band without a codec: resampled to 8 kHz and back). ``DEGRADATIONS`` are
these single renderings (one ``augment.*`` key each). ``render.render_files`` renders them once per
(file, degradation, seed) into an on-disk cache.

Chains: ``a+b`` is ``a`` then ``b``, left to right as the sound travels (``replay+amr_nb``: replayed in a
room, then sent over a mobile call); each part draws its own random values as it does alone, so a chain's
first stage is exactly the single rendering. A chain is rendered and cached under its full name.

Evaluation windows (``sourcetrace evaluate`` only, never rendered): ``short_1s`` / ``short_2s`` score the
clip's centred 1 s / 2 s window instead of ``data.eval_seconds``; one may end a chain (``amr_nb+short_1s``).
Sets: ``everyday`` (``EVERYDAY``) names the conditions of everyday listening. This module stays light (no
torch): the config validates names with it.

>>> check_names("mp3_32, replay+amr_nb")
['mp3_32', 'replay+amr_nb']
>>> check_names("everyday,g711")  # doctest: +NORMALIZE_WHITESPACE
['gain', 'short_1s', 'short_2s', 'band_8k', 'mp3_32', 'opus_16', 'amr_nb', 'gsm', 'replay', 'g711']
>>> split_condition("amr_nb+replay+short_1s")
('amr_nb+replay', 1.0)
>>> check_names("mp3_16")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sourcetrace.errors.ConfigError: unknown degradation 'mp3_16'; valid degradations: amr_nb, g711, gsm, mp3_32, ...
"""

from __future__ import annotations

from sourcetrace.degrade.codecs import CODECS
from sourcetrace.errors import ConfigError

REPLAY = "replay"
GAIN = "gain"
BAND_8K = "band_8k"
LEVEL = (GAIN, BAND_8K)  # rendered in level.py
DEGRADATIONS: tuple[str, ...] = (*CODECS, REPLAY, *LEVEL)  # single renderings (each an augment.* key)
CHAIN = "+"
WINDOWS: dict[str, float] = {"short_1s": 1.0, "short_2s": 2.0}  # evaluation windows (seconds), last in a chain
EVERYDAY: tuple[str, ...] = (
    "gain",
    "short_1s",
    "short_2s",
    "band_8k",
    "mp3_32",
    "opus_16",
    "amr_nb",
    "gsm",
    "replay",
)
SETS: dict[str, tuple[str, ...]] = {"everyday": EVERYDAY}


def _valid() -> str:
    return (
        f"valid degradations: {', '.join([*sorted(CODECS), REPLAY, *LEVEL])} (chain with '{CHAIN}', applied "
        f"left to right, e.g. replay{CHAIN}amr_nb); evaluation windows, last in a chain: {', '.join(WINDOWS)}; "
        f"sets: {', '.join(SETS)}"
    )


def split_condition(name: str) -> tuple[str | None, float | None]:
    """(the rendered chain or None, the evaluation window in seconds or None) of a valid condition name."""
    parts = name.split(CHAIN)
    if parts[-1] in WINDOWS:
        return (CHAIN.join(parts[:-1]) or None), WINDOWS[parts[-1]]
    return name, None


def chain_parts(name: str, windows: bool = False) -> list[str]:
    """The single degradations of chain ``name`` in order; one error names a bad part and the valid names.

    ``windows``: a window (``short_1s``) may end the chain (it is then the last part returned).
    """
    parts = [p.strip() for p in name.split(CHAIN)]
    for i, part in enumerate(parts):
        if part in DEGRADATIONS:
            continue
        if part in WINDOWS:
            if not windows:
                raise ConfigError(f"{part!r} (in {name!r}) is an evaluation window, not a rendering; {_valid()}")
            if i == len(parts) - 1:
                continue
            raise ConfigError(f"the window {part!r} must come last in {name!r}; {_valid()}")
        if part in SETS:
            raise ConfigError(f"the set {part!r} cannot be part of a chain ({name!r}); {_valid()}")
        what = f"unknown degradation {part!r}" + (f" in {name!r}" if len(parts) > 1 else "")
        raise ConfigError(f"{what}; {_valid()}")
    return parts


def check_names(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Condition names from a comma-separated string or a list, sets expanded in place, duplicates dropped:
    single degradations, chains (``a+b``) and evaluation windows; an unknown one lists the valid ones."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ConfigError(f"no degradation named; {_valid()}")
    out = []
    for name in items:
        if name in SETS:
            out += SETS[name]
            continue
        out.append(CHAIN.join(chain_parts(name, windows=True)))
    return list(dict.fromkeys(out))


def rendered_parts(names) -> list[str]:
    """The distinct single degradations the conditions ``names`` render (for ``codecs.require``)."""
    return list(dict.fromkeys(p for n in names for p in n.split(CHAIN) if p in DEGRADATIONS))


def renderings_of(value: str, key: str) -> list[str]:
    """The renderings a config value names (sets expanded, evaluation windows left out), checked once, with the
    encoders they need; a bad name is one ConfigError naming ``key``."""
    try:
        names = check_names(value)
    except ConfigError as err:
        raise ConfigError(f"{key}={value!r}: {err}") from None
    rendered = [chain for chain, window in map(split_condition, names) if chain and window is None]
    if not rendered:
        raise ConfigError(f"{key}={value!r} names no rendering (an evaluation window alone is not one)")
    from sourcetrace.degrade.codecs import require

    require(rendered_parts(rendered))
    return rendered
