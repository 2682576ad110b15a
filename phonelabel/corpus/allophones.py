"""TIMIT's transcription conventions for the synthetic corpus's phones (issue 15, item 1).

festival and flite speak the CMU dictionary's phonemes: they never print TIMIT's
allophones (measured on kal/ked/slt and kal16/awb/slt/rms: no dx, nx, ix, ax-h, axr, el,
em, en, eng, hv, ux, q or epi; unstressed "er" and "ax l" / "ax n" instead). TIMIT's
transcribers labelled what they heard, so ``realize`` relabels an engine phone where
the context and its stress say TIMIT would have written an allophone and, where the
allophone is a matter of the sound (a flap's brevity, voicing), the waveform agrees. It
renames segments, joins two neighbours into one, or cuts a silent gap out of a
boundary (epi); the audio is never changed, and the segments still tile it. Rules, in
the order applied:

1. axr: an unstressed ``er`` (stress 0, "butter") is axr: TIMIT keeps er for stressed
   r-coloured vowels ("bird") and axr for unstressed ones; the engines speak both with
   one unit, and the lexicon's stress tells them apart.
2. el, em, en, eng: ``ax`` + l/m/n/ng closing a word's last syllable (no vowel after it
   in the word), the schwa after a consonant of its word, become one syllabic segment
   spanning both ("bottle" -> el, "button" -> en). Nasals only after a homorganic
   consonant (en after t d s z, em after p b f v, eng after k g), where English
   nasals are syllabic and the schwa is short; l after any consonant ("people").
3. ax-h: a schwa between voiceless consonants ("suppose", "potato") whose waveform is
   unvoiced (``_voicing``, the autocorrelation peak of the segment low-passed at 1 kHz,
   at most ``UNVOICED``) is ax-h, TIMIT's devoiced schwa. A voiced one stays ax; the
   engines voice nearly every schwa (measured: 0.3-0.97, most above 0.5), so ax-h is rare.
4. ix: an unstressed ``ih`` is ix; so is a schwa (ax) before a coronal consonant
   (t d n s z sh zh ch jh th dh), as TIMIT's transcribers wrote it ("roses", "the
   dog"): the coronal's high F2 transition fronts the schwa, and the engine's diphone
   (schwa-to-coronal unit, cut from natural speech) carries that transition.
5. dx: t or d after a vowel or r, before an unstressed vowel of its word ("butter",
   "party"), or word-final before a word that starts with a vowel ("get a"), becomes
   one dx segment (closure + release together) when the engine's whole stop is
   shorter than ``FLAP_MAX_S``: a flap is a single tap (TIMIT's dx: about 30 ms), a
   longer stop in the audio keeps its closure and burst (tcl t). Measured in flapping
   contexts: the kal voices speak a full 60-100 ms stop (no flap), slt and rms often
   20-45 ms, so most dx come from them.
6. nx: n after a vowel and before an unstressed vowel of its word ("winner") shorter
   than ``FLAP_MAX_S`` is nx, TIMIT's nasal flap.
7. hv: hh between a voiced sound and a vowel ("ahead", "the house") is hv when its
   waveform is voiced (``_voicing`` at least ``VOICED``); else it stays hh. Measured:
   slt, awb and rms voice most such h (0.6-1.0); the kal voices do not (0.2-0.5).
8. ux: uw after a coronal or y ("dude", "new", "you") is ux, TIMIT's fronted u; the
   engines' coronal-to-uw diphones carry the fronting transition.
9. epi: where a fricative meets a sonorant (s sh z zh f th v dh, then m n l r w y:
   "slow", "is made") and the audio within 20 ms of their boundary holds a run of 5 ms
   windows ``EPI_DROP_DB`` below the quieter neighbour's mean energy lasting at least
   10 ms, that run is cut out as epi (TIMIT's epenthetic silence, "often found between
   a fricative and a semivowel or nasal"); each neighbour keeps at least 10 ms. Only a
   real gap in the waveform makes one (the HTS voice and rms leave many, kal few).

Left absent, for want of an acoustic basis in synthetic speech: q (the engines never
glottalise: a "button" t keeps its closure and burst, a vowel-initial word its smooth
onset), and nasal flaps from "n t" ("winter": the engine speaks the t's burst). eng
needs "ax ng" word-finally after k/g, which English words almost never have, and em
"ax m" after p b f v ("-pham"), which the prompt grammar's words do not have.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from phonelabel.core import SAMPLE_RATE as RATE
from phonelabel.phones import VOWELS

REDUCED = frozenset("ax ix axr ax-h el em en eng".split())  # unstressed whatever the lexicon
VOICELESS = frozenset("p t k f th s sh ch hh".split())
CORONALS = frozenset("t d n s z sh zh ch jh th dh".split())
SILENT = frozenset(("pau", "h#", "brth"))
SYLLABIC = {"l": ("el", None), "m": ("em", "p b f v"), "n": ("en", "t d s z"), "ng": ("eng", "k g")}
UX_AFTER = CORONALS | {"y", "dx", "nx"}
FLAP_MAX_S = 0.045  # a t/d/n this short in the audio is a single tap (TIMIT dx ~30 ms)
VOICED = 0.6  # low-passed autocorrelation peak (80-400 Hz) at least this: voiced (hv)
UNVOICED = 0.4  # at most this: unvoiced (ax-h); in between neither label changes
VOICING_BAND_HZ = 1000.0
FRICATIVES = frozenset("s sh z zh f th v dh".split())
SONORANTS = frozenset("m n l r w y".split())
EPI_SEARCH_S = 0.02  # look this far either side of a fricative-sonorant boundary
EPI_WINDOW = 80  # 5 ms energy windows, hop EPI_WINDOW // 2
EPI_DROP_DB = 20.0  # a window this far below the quieter neighbour's mean energy is silent
EPI_MIN_S = 0.01  # a silent run at least this long is epi


class EnginePhone(NamedTuple):
    label: str  # the engine's phone (lower-case ARPAbet, or an allophone after ``realize``)
    start: int  # sample
    end: int
    stress: int  # lexical stress of its syllable: 0, 1 or 2 (0 for silence)
    word: int | None  # index of its word in the utterance; None: silence or unknown


def realize(phones: list[EnginePhone], samples: np.ndarray) -> list[EnginePhone]:
    """Engine phones -> the same spans under TIMIT's allophone labels (module docstring).

    ``samples``: (N,) the utterance's waveform, for the voicing and duration checks."""
    out = [p._replace(label="axr") if p.label == "er" and p.stress == 0 else p for p in phones]
    out = _syllabics(out)
    for i, p in enumerate(out):
        before, after = _neighbour(out, i, -1), _neighbour(out, i, 1)
        if p.label == "ax" and before in VOICELESS and after in VOICELESS:
            if _voicing(samples, p) <= UNVOICED:
                out[i] = p._replace(label="ax-h")
                continue
        if (p.label == "ih" and p.stress == 0) or (p.label == "ax" and after in CORONALS):
            out[i] = p._replace(label="ix")
    for i, p in enumerate(out):
        if p.label in ("t", "d", "n") and _flaps(out, i):
            out[i] = p._replace(label="dx" if p.label != "n" else "nx")
    for i, p in enumerate(out):
        before, after = _neighbour(out, i, -1), _neighbour(out, i, 1)
        if p.label == "hh" and before not in VOICELESS | SILENT and after in VOWELS:
            if before is not None and _voicing(samples, p) >= VOICED:
                out[i] = p._replace(label="hv")
        elif p.label == "uw" and before in UX_AFTER:
            out[i] = p._replace(label="ux")
    return _epenthetic_silences(out, samples)


def _epenthetic_silences(phones: list[EnginePhone], samples: np.ndarray) -> list[EnginePhone]:
    """Cut an epi out of each fricative-sonorant boundary the audio is silent across."""
    out: list[EnginePhone] = []
    for i, p in enumerate(phones):
        nxt = phones[i + 1] if i + 1 < len(phones) else None
        if out and out[-1].label == "epi":
            p = p._replace(start=out[-1].end)
        if nxt is not None and p.label in FRICATIVES and nxt.label in SONORANTS:
            gap = _silent_run(samples, p, nxt)
            if gap is not None:
                out += [p._replace(end=gap[0]), EnginePhone("epi", gap[0], gap[1], 0, None)]
                continue
        out.append(p)
    return out


def _silent_run(
    samples: np.ndarray, left: EnginePhone, right: EnginePhone
) -> tuple[int, int] | None:
    """The longest run of 5 ms windows near the boundary of ``left`` and ``right`` whose
    energy is ``EPI_DROP_DB`` below the quieter of the two, if it lasts ``EPI_MIN_S``;
    each neighbour keeps at least ``EPI_MIN_S`` of its own."""
    keep, hop = round(EPI_MIN_S * RATE), EPI_WINDOW // 2
    lo = max(left.start + keep, left.end - round(EPI_SEARCH_S * RATE))
    hi = min(right.end - keep, right.start + round(EPI_SEARCH_S * RATE))
    if hi - lo < keep:
        return None
    x = samples.astype(np.float64)
    quiet = min(_decibels(x[left.start : left.end]), _decibels(x[right.start : right.end]))
    starts = range(lo, hi - EPI_WINDOW + 1, hop)
    silent = [_decibels(x[s : s + EPI_WINDOW]) <= quiet - EPI_DROP_DB for s in starts]
    best, run_start = None, None
    for k, (start, low) in enumerate(zip(starts, silent, strict=True)):
        if low and run_start is None:
            run_start = start
        if run_start is not None and (not low or k == len(silent) - 1):
            end = start + EPI_WINDOW if low else start - hop + EPI_WINDOW
            if best is None or end - run_start > best[1] - best[0]:
                best = (run_start, end)
            run_start = None
    if best is None or best[1] - best[0] < keep:
        return None
    return best


def _decibels(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x**2) + 1e-12))


def _neighbour(phones: list[EnginePhone], i: int, step: int) -> str | None:
    j = i + step
    return phones[j].label if 0 <= j < len(phones) else None


def _syllabics(phones: list[EnginePhone]) -> list[EnginePhone]:
    out: list[EnginePhone] = []
    i = 0
    while i < len(phones):
        p = phones[i]
        nxt = phones[i + 1] if i + 1 < len(phones) else None
        prev = out[-1] if out else None
        if (
            p.label == "ax"
            and nxt is not None
            and nxt.label in SYLLABIC
            and p.word is not None
            and prev is not None
            and prev.word == p.word == nxt.word
            and prev.label not in VOWELS | SILENT
            and _closes_word(phones, i + 1)
        ):
            label, after = SYLLABIC[nxt.label]
            if after is None or prev.label in after.split():
                out.append(EnginePhone(label, p.start, nxt.end, 0, p.word))
                i += 2
                continue
        out.append(p)
        i += 1
    return out


def _closes_word(phones: list[EnginePhone], i: int) -> bool:
    """No vowel follows phone ``i`` inside its word."""
    word = phones[i].word
    for p in phones[i + 1 :]:
        if p.word != word:
            return True
        if p.label in VOWELS:
            return False
    return True


def _flaps(phones: list[EnginePhone], i: int) -> bool:
    p = phones[i]
    if i == 0 or i + 1 >= len(phones) or (p.end - p.start) / RATE >= FLAP_MAX_S:
        return False
    prev, nxt = phones[i - 1], phones[i + 1]
    if p.word is None or prev.word != p.word:  # word-initial: not flapped
        return False
    if prev.label not in VOWELS and not (prev.label == "r" and p.label != "n"):
        return False
    if nxt.label not in VOWELS and nxt.label not in ("el", "axr"):
        return False
    if nxt.word == p.word:
        return nxt.stress == 0 or nxt.label in REDUCED
    # across words: t/d closing its word before a vowel-initial word ("get a")
    return p.label != "n" and nxt.word is not None


def _voicing(samples: np.ndarray, p: EnginePhone) -> float:
    """Peak normalised autocorrelation over 80-400 Hz lags of the segment low-passed at
    ``VOICING_BAND_HZ`` (so formants and frication do not hide the pulses; 0: silence)."""
    x = samples[p.start : p.end].astype(np.float64)
    spectrum = np.fft.rfft(x - x.mean())
    spectrum[np.fft.rfftfreq(len(x), 1 / RATE) > VOICING_BAND_HZ] = 0
    x = np.fft.irfft(spectrum, len(x))
    best = 0.0
    for lag in range(RATE // 400, min(RATE // 80, len(x) // 2) + 1):
        a, b = x[:-lag], x[lag:]
        norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
        if norm > 0:
            best = max(best, float(np.dot(a, b) / norm))
    return best
