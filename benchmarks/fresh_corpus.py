"""Build the fresh outside check set: voices, languages and texts that no earlier set has used.

``outside_corpus.py``'s set has been looked at during development, so it no longer tests anything
cleanly. This one is built once and scored once, at the end (issue #31). It is rendered with the
engines that install here, in MLAAD's layout (``fake/<lang>/<system>/``, ``protocol/{train,dev,eval}.csv``
and ``protocol/fine/``), like ``outside_corpus.py`` whose helpers it reuses. Nothing in it is in the
corpus (``sourcetrace.data.corpus.systems`` / ``text``, its dev-only systems included) or in the old
outside set (``tests/test_fresh_corpus.py`` checks that):

* systems: espeak-ng voice variants never used (m4, f4, klatt6, Lee, Mario, klatt3, Alicia), Festival's
  us1_mbrola voice, Flite's 8 kHz kal voice, SAM with another mouth and throat ("little old lady"),
  SVOX Pico's it-IT voice raised in pitch and slowed by its own markup, and three re-vocoded ones over new
  sources: WORLD over espeak +m6, and a second method, an LPC vocoder (all-pole filter of the source's
  LPC envelope driven by pulses at its WORLD f0 or by noise), over espeak +f5 and over Festival us1_mbrola;
* languages: Danish, Hungarian, Turkish and Indonesian, which neither the corpus nor the old outside set
  has. The English-only engines (Festival, Flite, SAM) and Pico's Italian voice read the Indonesian
  texts (plain ASCII, close to how it is written) with their own front ends: foreign-accented speech,
  labelled with the language of the text;
* texts: everyday sentences written here, 40 per language, neither the corpus's generated pools nor
  number sequences. A clip reads two of them; the train and eval clips draw from disjoint sentences.

Within this set five systems and the languages tr, id have a train split (references for the open-set
metrics and the seen/unseen conditions); the other systems and da, hu are eval only; dev stays empty.
It is a measurement, not training data for the product.

    .venv/bin/python benchmarks/fresh_corpus.py --out data/fresh [--per-cell 12] [--workers 2]
    .venv/bin/sourcetrace corpus check --root data/fresh
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from outside_corpus import (  # beside this script (the tests put this folder on sys.path)
    _run,
    render_clip,
    write_protocol,
)

from sourcetrace.data.corpus import engines

LANGS = ("da", "hu", "tr", "id")
TRAIN_LANGS = ("tr", "id")
ESPEAK_LANG = {"da": "da", "hu": "hu", "tr": "tr", "id": "id"}
SAM_OLD_LADY = {"speed": 82, "pitch": 32, "mouth": 145, "throat": 145}
PICO_IT_HIGH_SLOW = {"voice": "it-IT", "pitch": 140, "speed": 80}
# name -> (family, languages, has train split, (engine, settings)); a re-vocoder's source is (engine, settings)
SYSTEMS: dict[str, tuple[str, tuple[str, ...], bool, tuple[str, dict]]] = {
    "espeak_m4": ("formant", LANGS, True, ("espeak", {"variant": "m4"})),
    "espeak_f4": ("formant", LANGS, True, ("espeak", {"variant": "f4"})),
    "espeak_klatt6": ("formant", LANGS, True, ("espeak", {"variant": "klatt6"})),
    "espeak_lee": ("formant", LANGS, False, ("espeak", {"variant": "Lee"})),
    "espeak_mario": ("formant", LANGS, False, ("espeak", {"variant": "Mario"})),
    "espeak_klatt3": ("formant", LANGS, False, ("espeak", {"variant": "klatt3"})),
    "espeak_alicia": ("formant", LANGS, False, ("espeak", {"variant": "Alicia"})),
    "festival_us1_mbrola": ("diphone", ("id",), True, ("festival", {"voice": "us1_mbrola"})),
    "flite_kal8k": ("diphone", ("id",), False, ("flite", {"voice": "kal"})),
    "sam_old_lady": ("formant_8bit", ("id",), False, ("sam", SAM_OLD_LADY)),
    "pico_it_high_slow": ("hmm_parametric", ("id",), True, ("pico", PICO_IT_HIGH_SLOW)),
    "espeak_m6_world": (
        "world_vocoder",
        LANGS,
        False,
        ("revocode", {"method": "world", "source": ("espeak", {"variant": "m6"})}),
    ),
    "espeak_f5_lpc": (
        "lpc_vocoder",
        LANGS,
        False,
        ("revocode", {"method": "lpc", "source": ("espeak", {"variant": "f5"})}),
    ),
    "festival_us1_lpc": (
        "lpc_vocoder",
        ("id",),
        False,
        ("revocode", {"method": "lpc", "source": ("festival", {"voice": "us1_mbrola"})}),
    ),
}

# Everyday sentences written for this set (two per clip). Indonesian stays ASCII: the English front ends read it.
SENTENCES: dict[str, tuple[str, ...]] = {
    "da": (
        "Jeg drikker en kop kaffe hver morgen.",
        "Bussen kommer om et kvarter.",
        "Kan du give mig saltet, tak?",
        "Vi skal handle ind efter arbejde.",
        "Min bror bor i et lille hus ved skoven.",
        "Det regner igen i dag.",
        "Hun cykler til skole hver dag.",
        "Husk at lukke vinduet, før du går.",
        "Børnene leger i haven efter aftensmaden.",
        "Jeg har glemt min paraply på toget.",
        "Butikken lukker klokken seks i aften.",
        "Vil du have te eller kaffe?",
        "Vores nabo har fået en ny hund.",
        "Jeg læser en god bog om havet.",
        "Han vasker op, mens hun laver mad.",
        "Vi tager på ferie til sommer.",
        "Lægen siger, at jeg skal hvile mig.",
        "Kagen står på bordet i køkkenet.",
        "Toget er forsinket på grund af sne.",
        "Min mor ringer til mig hver søndag.",
        "Kan vi mødes ved stationen i morgen?",
        "Jeg køber brød og mælk hos bageren.",
        "Katten sover på sofaen hele dagen.",
        "Hvor ligger det nærmeste apotek?",
        "Vi spiste fisk og kartofler til middag.",
        "Det er koldt, så tag en varm jakke på.",
        "Min søster arbejder på et stort hospital.",
        "Jeg vander blomsterne i vindueskarmen.",
        "Bilen skal til syn i næste uge.",
        "Der er mange mennesker på stranden i dag.",
        "Han har lovet at hjælpe os med flytningen.",
        "Jeg kan ikke finde mine nøgler.",
        "Biblioteket har åbent til klokken otte.",
        "Vi går en tur langs søen efter frokost.",
        "Min telefon er løbet tør for strøm.",
        "Kan du anbefale en god restaurant her?",
        "Postbuddet kommer sent i dag.",
        "Jeg skal til tandlægen på torsdag.",
        "Drengen har lært at svømme i år.",
        "Suppen smager bedre med lidt peber.",
    ),
    "hu": (
        "Minden reggel iszom egy csésze kávét.",
        "A busz tíz perc múlva indul.",
        "Kérlek, add ide a sót.",
        "Munka után bevásárolunk a piacon.",
        "A bátyám egy kis házban lakik az erdő mellett.",
        "Ma megint esik az eső.",
        "A húgom minden nap biciklivel megy iskolába.",
        "Ne felejtsd el becsukni az ablakot.",
        "A gyerekek a kertben játszanak vacsora után.",
        "Az esernyőmet a vonaton hagytam.",
        "A bolt este hatkor zár.",
        "Teát vagy kávét kérsz?",
        "A szomszédunknak új kutyája van.",
        "Egy érdekes könyvet olvasok a tengerről.",
        "Ő mosogat, amíg a felesége főz.",
        "Nyáron a Balatonra megyünk nyaralni.",
        "Az orvos szerint pihennem kell.",
        "A sütemény az asztalon van a konyhában.",
        "A vonat a hó miatt késik.",
        "Anyám minden vasárnap felhív.",
        "Holnap találkozhatunk az állomáson?",
        "Kenyeret és tejet veszek a pékségben.",
        "A macska egész nap a kanapén alszik.",
        "Hol van a legközelebbi gyógyszertár?",
        "Vacsorára halat és krumplit ettünk.",
        "Hideg van, vegyél fel egy meleg kabátot.",
        "A nővérem egy nagy kórházban dolgozik.",
        "Meglocsolom a virágokat az ablakpárkányon.",
        "Jövő héten viszem szervizbe az autót.",
        "Ma sokan vannak a strandon.",
        "Megígérte, hogy segít nekünk a költözésben.",
        "Nem találom a kulcsaimat.",
        "A könyvtár nyolc óráig van nyitva.",
        "Ebéd után sétálunk egyet a tó partján.",
        "Lemerült a telefonom.",
        "Tudsz ajánlani egy jó éttermet a közelben?",
        "A postás ma későn jön.",
        "Csütörtökön fogorvoshoz megyek.",
        "A kisfiú idén megtanult úszni.",
        "A leves finomabb egy kis borssal.",
    ),
    "tr": (
        "Her sabah bir fincan kahve içerim.",
        "Otobüs on dakika sonra kalkıyor.",
        "Tuzu bana uzatır mısın?",
        "İşten sonra markete gideceğiz.",
        "Ağabeyim ormanın yanında küçük bir evde oturuyor.",
        "Bugün yine yağmur yağıyor.",
        "Kız kardeşim her gün okula bisikletle gidiyor.",
        "Çıkmadan önce pencereyi kapatmayı unutma.",
        "Çocuklar akşam yemeğinden sonra bahçede oynuyor.",
        "Şemsiyemi trende unuttum.",
        "Dükkan akşam altıda kapanıyor.",
        "Çay mı istersin, kahve mi?",
        "Komşumuzun yeni bir köpeği var.",
        "Deniz hakkında güzel bir kitap okuyorum.",
        "O bulaşıkları yıkarken annesi yemek yapıyor.",
        "Yazın tatile gideceğiz.",
        "Doktor dinlenmem gerektiğini söyledi.",
        "Pasta mutfaktaki masanın üstünde duruyor.",
        "Tren kar yüzünden gecikti.",
        "Annem her pazar beni arar.",
        "Yarın istasyonda buluşabilir miyiz?",
        "Fırından ekmek ve süt alıyorum.",
        "Kedi bütün gün kanepede uyuyor.",
        "En yakın eczane nerede?",
        "Akşam yemeğinde balık ve patates yedik.",
        "Hava soğuk, kalın bir ceket giy.",
        "Ablam büyük bir hastanede çalışıyor.",
        "Pencerenin önündeki çiçekleri suluyorum.",
        "Arabayı gelecek hafta servise götüreceğim.",
        "Bugün plajda çok insan var.",
        "Taşınmamıza yardım edeceğine söz verdi.",
        "Anahtarlarımı bulamıyorum.",
        "Kütüphane saat sekize kadar açık.",
        "Öğle yemeğinden sonra gölün kenarında yürüyüş yaparız.",
        "Telefonumun şarjı bitti.",
        "Buralarda iyi bir lokanta önerebilir misin?",
        "Postacı bugün geç geliyor.",
        "Perşembe günü dişçiye gideceğim.",
        "Küçük çocuk bu yıl yüzmeyi öğrendi.",
        "Çorba biraz biberle daha lezzetli oluyor.",
    ),
    "id": (
        "Saya minum secangkir kopi setiap pagi.",
        "Bus berangkat sepuluh menit lagi.",
        "Tolong ambilkan garam itu.",
        "Kami akan berbelanja sepulang kerja.",
        "Kakak saya tinggal di rumah kecil dekat hutan.",
        "Hari ini hujan lagi.",
        "Adik saya naik sepeda ke sekolah setiap hari.",
        "Jangan lupa menutup jendela sebelum pergi.",
        "Anak-anak bermain di kebun setelah makan malam.",
        "Payung saya tertinggal di kereta.",
        "Toko itu tutup jam enam sore.",
        "Kamu mau teh atau kopi?",
        "Tetangga kami punya anjing baru.",
        "Saya sedang membaca buku yang bagus tentang laut.",
        "Dia mencuci piring sementara ibunya memasak.",
        "Kami akan pergi berlibur bulan depan.",
        "Dokter bilang saya harus banyak istirahat.",
        "Kuenya ada di atas meja dapur.",
        "Keretanya terlambat karena banjir.",
        "Ibu saya menelepon setiap hari Minggu.",
        "Bisakah kita bertemu di stasiun besok?",
        "Saya membeli roti dan susu di toko roti.",
        "Kucing itu tidur di sofa sepanjang hari.",
        "Di mana apotek terdekat?",
        "Kami makan ikan dan nasi untuk makan malam.",
        "Udaranya dingin, pakailah jaket yang tebal.",
        "Kakak perempuan saya bekerja di rumah sakit besar.",
        "Saya menyiram bunga di depan jendela.",
        "Minggu depan mobil saya harus diservis.",
        "Hari ini pantai sangat ramai.",
        "Dia berjanji akan membantu kami pindahan.",
        "Saya tidak bisa menemukan kunci saya.",
        "Perpustakaan buka sampai jam delapan malam.",
        "Setelah makan siang kami berjalan-jalan di tepi danau.",
        "Baterai ponsel saya sudah habis.",
        "Bisakah kamu merekomendasikan restoran yang enak di sini?",
        "Tukang pos datang terlambat hari ini.",
        "Hari Kamis saya harus ke dokter gigi.",
        "Anak laki-laki itu belajar berenang tahun ini.",
        "Supnya lebih enak dengan sedikit merica.",
    ),
}
TRAIN_SHARE = 0.4  # of each language's sentences; the rest are eval's


def sentence_pools(lang: str) -> dict[str, tuple[str, ...]]:
    """Disjoint train / eval sentence pools of ``lang`` (a fixed shuffle, independent of any seed)."""
    sents = list(SENTENCES[lang])
    random.Random(f"sourcetrace-fresh-{lang}").shuffle(sents)
    n = round(TRAIN_SHARE * len(sents))
    return {"train": tuple(sents[:n]), "eval": tuple(sents[n:])}


def pick_texts(lang: str, split: str, n: int, key: str) -> list[str]:
    """``n`` distinct clip texts, each two different sentences of ``split``'s pool, chosen from ``key``."""
    pairs = list(itertools.combinations(sentence_pools(lang)[split], 2))
    return [f"{a} {b}" for a, b in random.Random(key).sample(pairs, n)]


def lpc_vocode(audio: np.ndarray, sr: int, seed: int = 0, frame_ms: float = 5.0) -> np.ndarray:
    """LPC vocoder: per 5 ms frame, an all-pole filter fitted to the (pre-emphasised) source drives either
    a pulse train at the source's WORLD f0 (voiced) or white noise (unvoiced); de-emphasised at the end."""
    import pyworld
    from scipy.linalg import solve_toeplitz
    from scipy.signal import lfilter, lfiltic

    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pyworld.dio(x, sr, frame_period=frame_ms)
    f0 = pyworld.stonemask(x, f0, t, sr)
    hop, win, order = int(round(sr * frame_ms / 1000)), int(0.03 * sr), int(2 + sr / 1000)
    pre = np.append(x[0], x[1:] - 0.97 * x[:-1])
    padded = np.pad(pre, (win // 2, win))
    window = np.hanning(win)
    f0s = np.repeat(f0, hop)  # excitation: one unit-power pulse per period where voiced, else noise
    cycles = np.floor(np.cumsum(f0s / sr))
    pulses = np.diff(cycles, prepend=0.0) > 0
    excitation = np.where(f0s > 0, pulses * np.sqrt(sr / np.maximum(f0s, 1.0)), 0.0)
    noise = np.random.default_rng(seed).standard_normal(len(f0s))
    excitation = np.where(f0s > 0, excitation, noise)
    y, past = np.zeros(len(f0s)), np.zeros(order)
    for i in range(len(f0)):
        seg = padded[i * hop : i * hop + win] * window
        r = np.correlate(seg, seg, "full")[win - 1 : win + order].copy()
        if r[0] <= 1e-10:
            past[:] = 0.0
            continue
        r[0] *= 1.0 + 1e-6
        a = solve_toeplitz(r[:order], -r[1 : order + 1])
        poles = np.concatenate([[1.0], a])
        gain = np.sqrt(max(r[0] + float(np.dot(a, r[1 : order + 1])), 0.0) / win)
        out, _ = lfilter([gain], poles, excitation[i * hop : (i + 1) * hop], zi=lfiltic([gain], poles, past[::-1]))
        y[i * hop : (i + 1) * hop] = out
        past = np.concatenate([past, out])[-order:]
    return lfilter([1.0], [1.0, -0.97], y)


def _source(engine: str, settings: dict, lang: str, text: str, tmp: Path) -> tuple[np.ndarray, int]:
    if engine == "espeak":
        out = tmp / "e.wav"
        return _run(["espeak-ng", "-v", f"{ESPEAK_LANG[lang]}+{settings['variant']}", "-w", str(out), text], out)
    if engine == "festival":
        return engines.festival(text, lang, tmp, voice=settings["voice"])
    if engine == "flite":
        return engines.flite(text, lang, tmp, voice=settings["voice"])
    if engine == "sam":
        from samtts import SamTTS

        SamTTS(**settings).save(text, str(tmp / "s.wav"))
        audio, sr = sf.read(str(tmp / "s.wav"), dtype="float64")
        return audio, int(sr)
    if engine == "pico":  # SVOX Pico's own markup sets pitch and speed (100 = the voice's own)
        marked = f"<pitch level='{settings['pitch']}'><speed level='{settings['speed']}'>{text}</speed></pitch>"
        out = tmp / "p.wav"
        return _run(["pico2wave", "-l", settings["voice"], "-w", str(out), marked], out)
    raise ValueError(f"unknown engine {engine!r}")


def render(system: str, lang: str, text: str, tmp: Path) -> tuple[np.ndarray, int]:
    engine, settings = SYSTEMS[system][3]
    if engine != "revocode":
        return _source(engine, settings, lang, text, tmp)
    audio, sr = _source(*settings["source"], lang, text, tmp)
    audio = audio.mean(axis=1) if audio.ndim > 1 else audio
    if settings["method"] == "world":
        return engines.world(audio, sr), sr
    return lpc_vocode(audio, sr, seed=zlib.crc32(text.encode())), sr


def plan(per_cell: int, seed: int) -> list[dict]:
    rows = []
    for system, (family, langs, seen, _) in SYSTEMS.items():
        for lang in langs:
            n_train = per_cell // 2 if seen and lang in TRAIN_LANGS else 0
            for split, n in (("train", n_train), ("eval", per_cell - n_train)):
                for i, text in enumerate(pick_texts(lang, split, n, f"fresh/{seed}/{system}/{lang}/{split}")):
                    rel = f"fake/{lang}/{system}/{system}_{lang}_{split}{i:03d}.flac"
                    rows.append(
                        {
                            "split": split,
                            "path": f"./{rel}",
                            "model_name": system,
                            "language": lang,
                            "architecture": family,
                            "text": text,
                        }
                    )
    return rows


def make(root: str, row: dict) -> tuple[str, float | None, str | None]:
    return render_clip(root, row, render, "fresh")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-cell", type=int, default=12, help="clips per system and language")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args()
    rows = plan(a.per_cell, a.seed)
    with ProcessPoolExecutor(a.workers) as pool:
        done = list(pool.map(make, [a.out] * len(rows), rows, chunksize=4))
    errors = [e for _, _, e in done if e]
    if errors:
        print(f"{len(errors)} clips failed; first: {errors[0]}", file=sys.stderr)
        return 1
    for row, (_, dur, _) in zip(rows, done):
        row["duration"] = f"{dur:.3f}"
    write_protocol(a.out, rows)
    hours = sum(float(r["duration"]) for r in rows) / 3600
    n_train = sum(r["split"] == "train" for r in rows)
    print(
        f"{len(rows)} clips ({n_train} train), {len(SYSTEMS)} systems, {len(LANGS)} languages, {hours:.2f} h -> {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
