"""Speech engines for ``phonelabel synth``: festival and flite, run as Debian programs.

Each engine turns text into a waveform plus the phones it spoke with their end times
(its own ARPAbet-like labels) and, where it can, word timings. festival runs once per
batch of utterances from a generated Scheme script; flite runs once per utterance (it
starts in milliseconds). ``to_timit`` maps engine phones to TIMIT-61 segments.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from phonelabel.corpus.phonemap import arpabet_table, map_segments
from phonelabel.errors import PhonelabelError
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


def _run(argv: list[str], stdin: str | None, name: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=die_with_parent,  # a killed synth worker takes its engine with it
        )
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
    (mapcar (lambda (s) (format fd "P %s %f\\n" (item.name s) (item.feat s 'end)))
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
        done = subprocess.run(
            ["festival", "--pipe"],
            input="\n".join(body) + "\n",
            capture_output=True,
            text=True,
            timeout=60 + 20 * len(items),
            preexec_fn=die_with_parent,
        )
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
    phones, words = [], []
    for line in lines[:-1]:
        fields = line.split()
        if fields[0] == "P":
            phones.append((fields[1], float(fields[2])))
        elif fields[0] == "W" and float(fields[3]) > float(fields[2]):
            words.append((fields[1].lower(), float(fields[2]), float(fields[3])))
    samples, rate = _read_wave(wav)
    return EngineOutput(samples, rate, phones, words)


# --- flite -------------------------------------------------------------------------------

_PSDUR = re.compile(r"^(\S+):(\d+(?:\.\d*)?)$")


def flite(v: Voice, stretch: float, f0: float | None, text: str, wav: Path) -> EngineOutput | str:
    """Synthesise one prompt with flite; an output, or the reason it failed."""
    argv = ["flite", "-voice", v.name, "--setf", f"duration_stretch={stretch:.4f}"]
    if f0 is not None and v.base_f0 is not None:
        argv += ["--setf", f"int_f0_target_mean={f0:.1f}"]
    argv += ["-psdur", "-o", str(wav), "-t", text]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, preexec_fn=die_with_parent
        )
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
    words = _flite_words(text, phones)
    return EngineOutput(samples, rate, phones, words)


def _flite_words(text: str, phones: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    """Word timings for flite, which prints none: align each word's own pronunciation
    (flite's t2p, same lexicon) to the spoken phones; the context rules that change a
    word in a sentence ("the" -> dh iy before a vowel) cost one substitution there."""
    words = re.findall(r"[a-z']+", text.lower())
    spoken = [(i, p) for i, (p, _) in enumerate(phones) if p not in SILENCES]
    if not words or not spoken:
        return []
    out = _run(["t2p", ". ".join(words) + "."], None, "t2p")  # "w1. w2." puts pau between
    prons = [re.sub(r"\d", "", chunk).split() for chunk in out.split("pau")]
    prons = [p for p in prons if p]
    if len(prons) != len(words):
        return []
    owner = align_words([p for _, p in spoken], prons)
    spans: dict[int, list[int]] = {}
    for (index, _), w in zip(spoken, owner, strict=True):
        spans.setdefault(w, []).append(index)
    timed = []
    for w, indices in sorted(spans.items()):
        first, last = indices[0], indices[-1]
        start = phones[first - 1][1] if first > 0 else 0.0
        timed.append((words[w], start, phones[last][1]))
    return timed


def align_words(spoken: list[str], prons: list[list[str]]) -> list[int]:
    """The word index of each spoken phone: Levenshtein alignment against the words'
    dictionary pronunciations laid end to end (an inserted phone joins the word before)."""
    ref = [(w, p) for w, pron in enumerate(prons) for p in pron]
    n, m = len(spoken), len(ref)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            same = spoken[i - 1] == ref[j - 1][1]
            cost[i, j] = min(
                cost[i - 1, j - 1] + (0 if same else 1), cost[i - 1, j] + 1, cost[i, j - 1] + 1
            )
    owner = [0] * n
    i, j = n, m
    while i > 0:
        if j > 0 and cost[i, j] == cost[i - 1, j - 1] + (spoken[i - 1] != ref[j - 1][1]):
            owner[i - 1] = ref[j - 1][0]
            i, j = i - 1, j - 1
        elif j > 0 and cost[i, j] == cost[i, j - 1] + 1:
            j -= 1
        else:  # spoken phone with no dictionary phone: belongs to the word before it
            owner[i - 1] = ref[j - 1][0] if j > 0 else 0
            i -= 1
    return owner


# --- phones ------------------------------------------------------------------------------


def phone_table() -> dict[str, tuple[str, ...]]:
    """Engine phone -> its TIMIT-61 phone(s), from ``data/synth_phones.tsv``."""
    return arpabet_table()


def to_timit(
    phones: list[tuple[str, int, int]], samples: np.ndarray, merge_er_r: bool = False
) -> list[tuple[int, int, str]]:
    """Engine phone segments (label, start, end sample) -> TIMIT segments tiling the audio.

    Silence runs at the ends become h#, inside pau; two-phone entries (b -> bcl b) split at
    the sharpest energy rise of ``samples`` (N,) inside the segment (``phonemap``, the rule
    the TextGrid reader shares). Raises ValueError on a phone the table lacks, or when the
    utterance does not start and end in silence.
    """
    table = phone_table()
    for label, _, _ in phones:
        if label not in table:
            raise ValueError(f"engine phone {label!r} has no TIMIT mapping")
    phones = [p for p in phones if p[2] > p[1]]
    if merge_er_r:
        phones = _merge_er_r(phones)
    if not phones or phones[0][0] not in SILENCES or phones[-1][0] not in SILENCES:
        raise ValueError("engine output does not start and end with silence")
    if all(p[0] in SILENCES for p in phones):
        raise ValueError("engine output holds no speech")
    return map_segments(phones, table, samples, SILENCES)


def _merge_er_r(phones: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    merged: list[tuple[str, int, int]] = []
    took_r = False  # "er r r" is er + a real r
    for phone in phones:
        if phone[0] == "r" and merged and merged[-1][0] == "er" and not took_r:
            merged[-1], took_r = ("er", merged[-1][1], phone[2]), True
        else:
            merged.append(phone)
            took_r = False
    return merged
