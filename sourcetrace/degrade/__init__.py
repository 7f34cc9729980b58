"""Degraded listening conditions: real codecs (through ffmpeg) and simulated loudspeaker replay.

A degradation maps a clip to a clip of the same length at the same rate, as it sounds after the
channel: ``mp3_32``/``mp3_64`` (LAME at 32/64 kb/s), ``opus_16`` (libopus at 16 kb/s, as messenger
voice notes), ``amr_nb`` (AMR-NB 12.2 kb/s at 8 kHz, mobile telephony), ``gsm`` (GSM full rate at
8 kHz), ``g711`` (mu-law at 8 kHz, landline) and ``replay`` (loudspeaker band limit, a synthetic room
impulse response, microphone noise). ``render.render_files`` renders them once per (file, degradation,
seed) into an on-disk cache. This module stays light (no torch): the config validates names with it.

>>> check_names("mp3_32, replay")
['mp3_32', 'replay']
>>> check_names("mp3_16")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sourcetrace.errors.ConfigError: unknown degradation 'mp3_16'; valid degradations: amr_nb, g711, gsm, mp3_32, ...
"""

from __future__ import annotations

from sourcetrace.degrade.codecs import CODECS
from sourcetrace.errors import ConfigError

REPLAY = "replay"
DEGRADATIONS: tuple[str, ...] = (*CODECS, REPLAY)


def check_names(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """Degradation names from a comma-separated string or a list; an unknown one lists the valid ones."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ConfigError(f"no degradation named; valid degradations: {', '.join(sorted(DEGRADATIONS))}")
    for name in items:
        if name not in DEGRADATIONS:
            raise ConfigError(f"unknown degradation {name!r}; valid degradations: {', '.join(sorted(DEGRADATIONS))}")
    return list(dict.fromkeys(items))
