"""Speech engines for ``phonelabel synth``: festival and flite, run as Debian programs.

Each engine turns text into a waveform plus the phones it spoke with their end times
(its own ARPAbet-like labels) and, where it can, word timings. festival runs once per
batch of utterances from a generated Scheme script; flite runs once per utterance (it
starts in milliseconds). ``to_timit`` maps engine phones to TIMIT-61 segments, under
TIMIT's allophone labels (``allophones.realize``) where each phone's stress and word are
known: festival prints its syllables' stress, flite's comes from its own lexicon (t2p).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from phonelabel.corpus.allophones import EnginePhone, realize
from phonelabel.corpus.phonemap import arpabet_table, map_segments
from phonelabel.errors import PhonelabelError
from phonelabel.metrics import levenshtein
from phonelabel.workers import die_with_parent

ENGINES = ("festival", "flite")
SILENCES = ("pau", "h#", "brth")
INSTALL = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite"


@dataclass(frozen=True)
class Voice:
    engine: str  # "festival" or "flite"
    name: str  # the engine's own voice name
    person: str  # the human recorded for it; one person never serves both TRAIN and TEST
    sex: str  # "M" or "F" (first letter of a TIMIT speaker id)
    package: str  # the Debian package that installs it
    base_f0: float | None  # mean F0 (Hz) the engine can retarget; None: pitch by resampling
    merge_er_r: bool = False  # ked spells every r-coloured vowel "er r"

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


VOICES: dict[str, Voice] = {
    v.key: v
    for v in (
        Voice("festival", "kal_diphone", "kal", "M", "festvox-kallpc16k", 105.0),
        Voice("festival", "ked_diphone", "ked", "M", "festvox-kdlpc16k", 105.0, merge_er_r=True),
        # festival's HTS module ignores hts_engine's pitch option, so pitch goes by resampling
        Voice("festival", "cmu_us_slt_arctic_hts", "slt", "F", "festvox-us-slt-hts", None),
        Voice("flite", "kal16", "kal", "M", "flite", 100.0),
        Voice("flite", "awb", "awb", "M", "flite", 125.0),
        Voice("flite", "slt", "slt", "F", "flite", 170.0),
        # rms ignores int_f0_target_mean (measured: the same F0 for 90, 130 and 200 Hz)
        Voice("flite", "rms", "rms", "M", "flite", None),
    )
}


@dataclass
class EngineOutput:
    samples: np.ndarray  # (N,) float32 in [-1, 1]
    rate: int
    phones: list[tuple[str, float]]  # (engine phone, end time in seconds), in order
    words: list[tuple[str, float, float]]  # (word, start s, end s); may miss a word
    # per phone, parallel to ``phones``: its syllable's lexical stress (0, 1, 2) and its
    # word's index in ``words`` (None: silence, or a phone no word claims)
    stress: list[int] | None = None
    word_of: list[int | None] | None = None


def voice(key: str) -> Voice:
    """The voice named ``engine:name`` (e.g. ``flite:awb``)."""
    if key not in VOICES:
        raise PhonelabelError(f"unknown voice {key!r} (known: {', '.join(VOICES)})")
    return VOICES[key]


def check_voices(voices: list[Voice]) -> None:
    """Raise PhonelabelError naming the Debian package when an engine or voice is missing."""
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(engine) is None:
            raise PhonelabelError(f"{engine}: not found on PATH (install it: {INSTALL})")
    wanted = {v.engine: [w for w in voices if w.engine == v.engine] for v in voices}
    if "festival" in wanted:
        script = "(print (voice.list))"
        listing = _run(["festival", "--pipe"], script, "festival").split()
        installed = {name.strip("()") for name in listing}
        for v in wanted["festival"]:
            if v.name not in installed:
                raise PhonelabelError(
                    f"festival voice {v.name}: not installed (apt-get install {v.package})"
                )
    if "flite" in wanted:
        installed = set(_run(["flite", "-lv"], None, "flite").split())
        for v in wanted["flite"]:
            if v.name not in installed:
                raise PhonelabelError(
                    f"flite voice {v.name}: not installed (apt-get install flite)"
                )


def run_engine(argv: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess:
    """``argv`` run to its end (its output captured as text) and killed by the kernel when
    this process exits, so a killed synth worker takes its engine with it: util-linux's
    ``setpriv --pdeathsig`` sets that up in the child. Where there is no setpriv, a
    ``preexec_fn`` does (``die_with_parent``); Python then runs its fork handlers around the
    fork, and a worker's stop (SIGTERM) landing inside one is printed as "Exception ignored"
    and lost."""
    setpriv = shutil.which("setpriv")
    if setpriv and shutil.which(argv[0]) is None:  # as subprocess says it (setpriv would exit 127)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
    return subprocess.run(
        prefix + argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=None if setpriv else die_with_parent,
    )


def _run(argv: list[str], stdin: str | None, name: str, timeout: float = 60) -> str:
    try:
        done = run_engine(argv, stdin, timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PhonelabelError(f"{name}: cannot run ({error})") from None
    return done.stdout


def _read_wave(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)


# --- festival ----------------------------------------------------------------------------

_FESTIVAL_PRELUDE = """
(define (plabel_write utt labpath)
  (let ((fd (fopen labpath "w")))
    (mapcar (lambda (s) (format fd "P %s %f %s\\n" (item.name s) (item.feat s 'end)
                          (item.feat s "R:SylStructure.parent.stress")))
            (utt.relation.items utt 'Segment))
    (mapcar (lambda (w) (format fd "W %s %f %f\\n" (item.name w)
               (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")
               (item.feat w "R:SylStructure.daughtern.daughtern.end")))
            (utt.relation.items utt 'Word))
    (format fd "END\\n")
    (fclose fd)))
(define (plabel_say text wavpath labpath)
  (unwind-protect
    (let ((utt (eval (list 'Utterance 'Text text))))
      (utt.synth utt)
      (utt.wave.resample utt 16000)
      (utt.save.wave utt wavpath 'riff)
      (plabel_write utt labpath))
    (format t "failed: %s\\n" labpath)))
"""


def _festival_setup(v: Voice, stretch: float, f0: float | None) -> str:
    lines = [f"(voice_{v.name})"]
    if v.base_f0 is None:  # HTS: speed only, through hts_engine's -r (speech rate = 1/stretch)
        lines.append(
            f'(set! hts_engine_params (append hts_engine_params \'(("-r" {1 / stretch:.4f}))))'
        )
    else:
        lines.append(
            f"(Parameter.set 'Duration_Stretch (* {stretch:.4f} (Parameter.get 'Duration_Stretch)))"
        )
        f0 = f0 or v.base_f0
        lines.append(
            f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std {f0 * 0.14:.1f})"
            " (model_f0_mean 170) (model_f0_std 34)))"
        )
    return "\n".join(lines)


def festival(
    v: Voice, stretch: float, f0: float | None, texts: list[str], workdir: Path
) -> list[EngineOutput | str]:
    """Synthesise ``texts`` in one festival process; each result is an output or a reason."""
    results: list[EngineOutput | str | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    # A festival crash (it can segfault) loses only the utterances not yet written; those
    # are retried one per process, so one bad prompt cannot take down its whole batch.
    for batch_size in (len(texts), 1):
        retry = []
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            error = _festival_batch(v, stretch, f0, [(i, texts[i]) for i in batch], workdir)
            for i in batch:
                results[i] = _read_festival_output(workdir, i)
                if results[i] is None:
                    retry.append(i)
                    results[i] = error or "festival produced no output"
        pending = retry
        if not pending:
            break
    return [r for r in results if r is not None]


def _festival_batch(
    v: Voice, stretch: float, f0: float | None, items: list[tuple[int, str]], workdir: Path
) -> str | None:
    body = [_FESTIVAL_PRELUDE, _festival_setup(v, stretch, f0)]
    for i, text in items:
        if '"' in text or "\\" in text:
            raise PhonelabelError(f"prompt {text!r}: quotes and backslashes are not allowed")
        body.append(f'(plabel_say "{text}" "{workdir / f"{i}.wav"}" "{workdir / f"{i}.lab"}")')
    try:
        done = run_engine(["festival", "--pipe"], "\n".join(body) + "\n", 60 + 20 * len(items))
    except subprocess.TimeoutExpired:
        return "festival timed out"
    except OSError as error:
        raise PhonelabelError(f"festival: cannot run ({error}); install it: {INSTALL}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return f"festival exited with code {done.returncode} {last}".strip()
    return None


def _read_festival_output(workdir: Path, i: int) -> EngineOutput | None:
    wav, lab = workdir / f"{i}.wav", workdir / f"{i}.lab"
    if not (wav.exists() and lab.exists()):
        return None
    lines = lab.read_text().splitlines()
    if not lines or lines[-1] != "END":
        return None
    phones, words, stress = [], [], []
    for line in lines[:-1]:
        fields = line.split()
        if fields[0] == "P":
            phones.append((fields[1], float(fields[2])))
            stress.append(int(fields[3]) if fields[3].isdigit() else 0)
        elif fields[0] == "W" and float(fields[3]) > float(fields[2]):
            words.append((fields[1].lower(), float(fields[2]), float(fields[3])))
    samples, rate = _read_wave(wav)
    word_of = [_word_at(words, end) if p not in SILENCES else None for p, end in phones]
    return EngineOutput(samples, rate, phones, words, stress, word_of)


def _word_at(words: list[tuple[str, float, float]], end: float) -> int | None:
    """The word whose span holds a phone ending at ``end`` (festival's word spans are its
    segments' own boundaries)."""
    for w, (_, start, stop) in enumerate(words):
        if start < end <= stop + 1e-4:
            return w
    return None


# --- flite -------------------------------------------------------------------------------

_PSDUR = re.compile(r"^(\S+):(\d+(?:\.\d*)?)$")


def flite(v: Voice, stretch: float, f0: float | None, text: str, wav: Path) -> EngineOutput | str:
    """Synthesise one prompt with flite; an output, or the reason it failed."""
    argv = ["flite", "-voice", v.name, "--setf", f"duration_stretch={stretch:.4f}"]
    if f0 is not None and v.base_f0 is not None:
        argv += ["--setf", f"int_f0_target_mean={f0:.1f}"]
    argv += ["-psdur", "-o", str(wav), "-t", text]
    try:
        done = run_engine(argv, None, 60)
    except subprocess.TimeoutExpired:
        return "flite timed out"
    except OSError as error:
        raise PhonelabelError(f"flite: cannot run ({error}); install it: {INSTALL}") from None
    if done.returncode != 0 or not wav.exists():
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return f"flite exited with code {done.returncode} {last}".strip()
    # -psdur prints "phone:end_seconds" for every phone, space separated, on stdout
    phones = []
    for token in done.stdout.split():
        match = _PSDUR.match(token)
        if match is None:
            return f"flite printed an unexpected phone token {token!r}"
        phones.append((match[1], float(match[2])))
    samples, rate = _read_wave(wav)
    words, stress, word_of = _flite_words(text, phones)
    return EngineOutput(samples, rate, phones, words, stress, word_of)


def _flite_words(
    text: str, phones: list[tuple[str, float]]
) -> tuple[list[tuple[str, float, float]], list[int] | None, list[int | None] | None]:
    """Word timings for flite, which prints none: align each word's own pronunciation
    (flite's t2p, same lexicon) to the spoken phones; the context rules that change a
    word in a sentence ("the" -> dh iy before a vowel) cost one substitution there.
    Also each phone's stress (its word's vowel's digit, 0 for a reduced one and for
    consonants) and word index (into the timed words), as ``EngineOutput`` holds them."""
    words = re.findall(r"[a-z']+", text.lower())
    spoken = [(i, p) for i, (p, _) in enumerate(phones) if p not in SILENCES]
    if not words or not spoken:
        return [], None, None
    out = _run(["t2p", ". ".join(words) + "."], None, "t2p")  # "w1. w2." puts pau between
    prons = [chunk.split() for chunk in out.split("pau")]
    prons = [p for p in prons if p]
    if len(prons) != len(words):
        return [], None, None
    digits = [int(d) for pron in prons for d in (re.sub(r"\D", "", p) or "0" for p in pron)]
    matched = align_phones(
        [p for _, p in spoken], [[re.sub(r"\d", "", p) for p in w] for w in prons]
    )
    spans: dict[int, list[int]] = {}
    stress, word_of = [0] * len(phones), [None] * len(phones)
    for (index, _), (w, j) in zip(spoken, matched, strict=True):
        spans.setdefault(w, []).append(index)
        stress[index] = digits[j] if j is not None else 0
    timed = []
    for w, indices in sorted(spans.items()):
        first, last = indices[0], indices[-1]
        start = phones[first - 1][1] if first > 0 else 0.0
        for index in indices:
            word_of[index] = len(timed)
        timed.append((words[w], start, phones[last][1]))
    return timed, stress, word_of


def align_phones(spoken: list[str], prons: list[list[str]]) -> list[tuple[int, int | None]]:
    """Each spoken phone's (word index, index of its dictionary phone in ``prons`` laid end
    to end, or None): Levenshtein alignment against the words' dictionary pronunciations
    laid end to end; an inserted phone (None) joins the word before."""
    ref = [(w, p) for w, pron in enumerate(prons) for p in pron]
    owner: list[tuple[int, int | None]] = [(0, None)] * len(spoken)
    last = None  # the dictionary phone the alignment passed last
    for j, i in levenshtein([p for _, p in ref], spoken):
        if j is not None:
            last = j
        if i is not None:  # a spoken phone with no dictionary phone joins the word before
            owner[i] = (
                (ref[j][0], j) if j is not None else (ref[last][0] if last is not None else 0, None)
            )
    return owner


# --- phones ------------------------------------------------------------------------------


def phone_table() -> dict[str, tuple[str, ...]]:
    """Engine phone -> its TIMIT-61 phone(s), from ``data/synth_phones.tsv``."""
    return arpabet_table()


def to_timit(
    phones: list[tuple[str, int, int]],
    samples: np.ndarray,
    merge_er_r: bool = False,
    stress: list[int] | None = None,
    word_of: list[int | None] | None = None,
) -> list[tuple[int, int, str]]:
    """Engine phone segments (label, start, end sample) -> TIMIT segments tiling the audio.

    Silence runs at the ends become h#, inside pau; two-phone entries (b -> bcl b) split at
    the sharpest energy rise of ``samples`` (N,) inside the segment (``phonemap``, the rule
    the TextGrid reader shares). With each phone's ``stress`` and ``word_of`` (as
    ``EngineOutput`` holds them) phones take TIMIT's allophone labels first
    (``allophones.realize``: dx, ix, axr, el, en, hv, ux, ...). Raises ValueError on a
    phone the table lacks, or when the utterance does not start and end in silence.
    """
    table = phone_table()
    for label, _, _ in phones:
        if label not in table:
            raise ValueError(f"engine phone {label!r} has no TIMIT mapping")
    annotated = stress is not None and word_of is not None
    engine = [
        EnginePhone(
            label, start, end, stress[i] if annotated else 0, word_of[i] if annotated else None
        )
        for i, (label, start, end) in enumerate(phones)
    ]
    engine = [p for p in engine if p.end > p.start]
    if merge_er_r:
        engine = _merge_er_r(engine)
    if not engine or engine[0].label not in SILENCES or engine[-1].label not in SILENCES:
        raise ValueError("engine output does not start and end with silence")
    if all(p.label in SILENCES for p in engine):
        raise ValueError("engine output holds no speech")
    if annotated:
        engine = realize(engine, samples)
    return map_segments([p[:3] for p in engine], table, samples, SILENCES)


def _merge_er_r(phones: list[EnginePhone]) -> list[EnginePhone]:
    merged: list[EnginePhone] = []
    took_r = False  # "er r r" is er + a real r
    for phone in phones:
        if phone.label == "r" and merged and merged[-1].label == "er" and not took_r:
            merged[-1], took_r = merged[-1]._replace(end=phone.end), True
        else:
            merged.append(phone)
            took_r = False
    return merged
