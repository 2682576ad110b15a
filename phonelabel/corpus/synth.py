"""Make a synthetic speech corpus in TIMIT layout with exact phone alignments.

Speakers are (engine, voice, rate, pitch) tuples voiced by festival and flite
(``engines.py``); prompts come from the project's own grammar (``data/synth_grammar.txt``);
engine phones map to TIMIT-61 through ``data/synth_phones.tsv``, stops and affricates
split into closure + release at the sharpest energy rise inside them. TEST speakers use
only voices whose human speaker TRAIN never hears (DESIGN.md §7), so test accuracy
measures generalisation to unseen voices. Output (NIST SPHERE .WAV, .PHN, .WRD, .TXT)
reads through ``phonelabel.corpus.timit``. The same seed gives a byte-identical corpus,
whatever the number of jobs; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
import soxr  # librosa's resampler; scipy.signal would cost seconds to import per worker
from numpy.lib.stride_tricks import sliding_window_view

import phonelabel.corpus.engines as tts
from phonelabel.audio import read_audio
from phonelabel.core import SAMPLE_RATE
from phonelabel.corpus.conditions import (
    add_noise,
    apply_conditions,
    coloured_noise,
    parse_conditions,
    room_tone_lengths,
)
from phonelabel.corpus.engines import SILENCES, EngineOutput, Voice, to_timit
from phonelabel.corpus.timit import assign_splits, find_utterances, read_phn
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig, frame_count, frame_labels
from phonelabel.fileio import LOCK_FILE, atomic_path, output_lock, write_json
from phonelabel.phones import PHONE_INDEX, VOWELS, data_path
from phonelabel.workers import stoppable, worker_pool

RATE = SAMPLE_RATE  # the corpus is written at the rate models work at
# Voice split (DESIGN.md §7): each engine holds out one human voice for TEST. TRAIN keeps
# the female voice (slt, in both engines) so the model hears both sexes; TEST is Ken
# (festival ked) and Alan (flite awb, Scottish English), voices TRAIN never uses.
TRAIN_VOICES = (
    "festival:kal_diphone",
    "festival:cmu_us_slt_arctic_hts",
    "flite:kal16",
    "flite:slt",
    "flite:rms",
)
TEST_VOICES = ("festival:ked_diphone", "flite:awb")
RATE_RANGE = (0.85, 1.2)  # duration stretch per speaker (> 1 is slower)
F0_RANGE = (0.8, 1.25)  # factor on the voice's mean F0, where the engine can set it
RESAMPLE_PITCH_RANGE = (0.9, 1.12)  # otherwise pitch (and formants) move by resampling
# vtlp: every voice is resampled by a factor from this range (> 1: a shorter vocal tract,
# higher formants, as from a man's to a woman's or a child's), and where the engine sets
# F0 it is set so that after resampling it lands in F0_RANGE around the voice's own
VTLP_RANGE = (0.88, 1.15)
DEFAULT_CONDITIONS = "all"  # every recording condition (conditions.py); the CLI shows it
DITHER_DBFS = -70.0  # the engines emit exact digital zeros; log-energy needs none
PROMPT_POOL = 600
CHUNK = 5  # utterances per worker task (one festival process each)
SUFFIXES = (".WAV", ".PHN", ".WRD", ".TXT")


@dataclass(frozen=True)
class Speaker:
    speaker_id: str  # TIMIT style: M/F + 3 letters + 9, e.g. "MKDB9"
    part: str  # "TRAIN" or "TEST"
    dialect: str  # "DR1".."DR8"
    voice: str  # "engine:name"
    rate: float  # duration stretch
    f0: float | None  # target mean F0 in Hz (engine-controlled pitch)
    pitch_resample: float  # > 1 raises pitch and formants by resampling; 1.0 = none

    @property
    def folder(self) -> str:
        return f"{self.part}/{self.dialect}/{self.speaker_id}"


@dataclass(frozen=True)
class UtterancePlan:
    speaker: Speaker
    name: str  # "SX123": the prompt's number in the pool
    text: str
    seed: tuple[int, int, int]  # dither/augmentation RNG seed, independent of job order


@dataclass
class SplitCounts:
    speakers: int = 0
    utterances: int = 0
    seconds: float = 0.0
    voices: list[str] = field(default_factory=list)


@dataclass
class SkippedPrompt:
    speaker: str
    utterance: str
    voice: str
    text: str
    reason: str


@dataclass
class SynthReport:
    out: Path
    parts: dict[str, SplitCounts]  # "train", "test": the TRAIN/ and TEST/ folders
    splits: dict[str, SplitCounts]  # "train", "dev", "test": as the TIMIT reader splits them
    skipped: list[SkippedPrompt]
    synthesized: int  # utterances made by this run
    resumed: int  # utterances found complete and kept
    synthesized_seconds: float  # seconds of audio made by this run
    elapsed_seconds: float


# --- prompts -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_grammar() -> tuple[tuple[tuple[str, ...], ...], dict[str, tuple[str, ...]]]:
    """(templates, category -> words) from ``data/synth_grammar.txt``; adds NOUNS plurals."""
    templates, words = [], {}
    for line in data_path("synth_grammar.txt").read_text().splitlines():
        if line.startswith("= "):
            templates.append(tuple(line[2:].split()))
        elif ":" in line and not line.startswith("#"):
            name, _, entries = line.partition(":")
            words.setdefault(name.strip(), []).extend(entries.split())
    nouns = words["NOUN"]
    words["NOUNS"] = [n.split("/")[1] if "/" in n else _plural(n) for n in nouns]
    words["NOUN"] = [n.split("/")[0] for n in nouns]
    return tuple(templates), {k: tuple(w.replace("_", " ") for w in v) for k, v in words.items()}


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def grammar_words() -> set[str]:
    """Every word a prompt can hold, lower case (for the lexicon test)."""
    templates, words = load_grammar()
    found = {t.lower() for template in templates for t in template if t.islower()}
    found |= {w.lower() for entries in words.values() for e in entries for w in e.split()}
    return {w for w in found if w.isalpha()} | {"an"}


def make_prompts(count: int = PROMPT_POOL, seed: int = 0) -> list[str]:
    """``count`` distinct sentences from the grammar, the same for the same seed."""
    templates, words = load_grammar()
    rng = np.random.default_rng([seed, 1])
    prompts: dict[str, None] = {}
    for _ in range(count * 50):
        template = templates[rng.integers(len(templates))]
        tokens = [words[t][rng.integers(len(words[t]))] if t in words else t for t in template]
        for i, token in enumerate(tokens[:-1]):  # "a" -> "an" before a vowel letter
            if token == "a" and tokens[i + 1][0].lower() in "aeiou":
                tokens[i] = "an"
        text = " ".join(tokens).replace(" ,", ",").replace(" .", ".").replace(" ?", "?")
        prompts[text[0].upper() + text[1:]] = None
        if len(prompts) == count:
            return list(prompts)
    raise PhonelabelError(f"the prompt grammar cannot make {count} distinct sentences")


# --- speakers ----------------------------------------------------------------------------


def plan_speakers(
    speakers: int, engine_names: tuple[str, ...], seed: int, vtlp: bool = False
) -> list[Speaker]:
    """Speaker ids, parts, voices and rate/pitch (and vocal tract length), from ``seed``."""
    if speakers < 4:
        raise PhonelabelError(f"speakers {speakers}: need at least 4 (2 TRAIN, 2 TEST)")
    train = [tts.voice(k) for k in TRAIN_VOICES if k.split(":")[0] in engine_names]
    test = [tts.voice(k) for k in TEST_VOICES if k.split(":")[0] in engine_names]
    rng = np.random.default_rng([seed, 2])
    n_test = max(min(4, speakers // 2), round(0.3 * speakers))  # TIMIT: 27 % of speakers
    codes: set[str] = set()
    while len(codes) < speakers:
        codes.add("".join(chr(65 + c) for c in rng.integers(26, size=3)))
    shuffled = list(rng.permutation(sorted(codes)))
    # TEST ids sorted, consecutive pairs sharing a voice: the reader deals sorted TEST
    # speakers alternately to dev and test, so both get every held-out voice.
    test_codes, train_codes = sorted(shuffled[:n_test]), shuffled[n_test:]
    plans, used = [], set()
    for part, voices, part_codes in (("TRAIN", train, train_codes), ("TEST", test, test_codes)):
        for k, code in enumerate(part_codes):
            v = voices[(k // 2 if part == "TEST" else k) % len(voices)]
            while True:
                rate = round(float(rng.uniform(*RATE_RANGE)), 2)
                if vtlp:
                    resample = round(float(rng.uniform(*VTLP_RANGE)), 2)
                    f0 = None
                    if v.base_f0 is not None:
                        f0 = round(v.base_f0 * float(rng.uniform(*F0_RANGE)) / resample)
                elif v.base_f0 is not None:
                    f0, resample = round(v.base_f0 * float(rng.uniform(*F0_RANGE))), 1.0
                else:
                    f0, resample = None, round(float(rng.uniform(*RESAMPLE_PITCH_RANGE)), 2)
                if (v.key, rate, f0, resample) not in used:
                    break
            used.add((v.key, rate, f0, resample))
            dialect = f"DR{len(plans) % 8 + 1}"
            plans.append(Speaker(f"{v.sex}{code}9", part, dialect, v.key, rate, f0, resample))
    return plans


def plan_utterances(speakers: list[Speaker], per_speaker: int, seed: int) -> list[UtterancePlan]:
    prompts = make_prompts(PROMPT_POOL, seed)
    if not 1 <= per_speaker <= len(prompts):
        raise PhonelabelError(f"utterances per speaker {per_speaker}: must be 1..{len(prompts)}")
    rng = np.random.default_rng([seed, 3])
    plans = []
    for s in speakers:
        for index in sorted(rng.choice(len(prompts), size=per_speaker, replace=False)):
            name = f"SX{index + 1}"
            utt_seed = (seed, zlib.crc32(s.speaker_id.encode()), int(index))
            plans.append(UtterancePlan(s, name, prompts[index], utt_seed))
    return plans


# --- synthesis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    out: Path
    plans: tuple[UtterancePlan, ...]  # all of one speaker
    noise_snr: tuple[float, float] | None
    speed_perturb: float
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Result:
    plan: UtterancePlan
    seconds: float | None  # None: skipped
    reason: str | None = None


def _run_task(task: _Task) -> list[_Result]:
    """Synthesise and write one chunk of a speaker's utterances (runs in a worker)."""
    speaker = task.plans[0].speaker
    v = tts.voice(speaker.voice)
    stretch = speaker.rate * speaker.pitch_resample  # resampling by p then shortens it by p
    texts = [p.text for p in task.plans]
    with tempfile.TemporaryDirectory(prefix="phonelabel-synth-") as tmp:
        work = Path(tmp)
        if v.engine == "festival":
            outputs = tts.festival(v, stretch, speaker.f0, texts, work)
        else:
            outputs = [
                tts.flite(v, stretch, speaker.f0, text, work / f"{i}.wav")
                for i, text in enumerate(texts)
            ]
    results = []
    spoken = [o.samples for o in outputs if not isinstance(o, str)]
    for plan, output in zip(task.plans, outputs, strict=True):
        if isinstance(output, str):
            results.append(_Result(plan, None, output))
            continue
        others = [s for s in spoken if s is not output.samples]  # babble: the other prompts
        try:
            results.append(_Result(plan, _write_utterance(task, plan, v, output, others)))
        except ValueError as error:
            results.append(_Result(plan, None, str(error)))
    return results


def _resample(samples: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Play ``samples`` ``factor`` times faster (pitch and tempo); the time scale applied."""
    if factor == 1.0:
        return samples, 1.0
    out = soxr.resample(samples, RATE * factor, RATE, "HQ")
    return np.asarray(out, dtype=np.float32), 1 / factor


def _to_samples(seconds: float, scale: float, n: int) -> int:
    return min(n, round(seconds * RATE * scale))


def _write_utterance(
    task: _Task,
    plan: UtterancePlan,
    v: Voice,
    output: EngineOutput,
    others: list[np.ndarray] = (),
) -> float:
    """Map, augment, dither and write one utterance's four files; its length in seconds."""
    if output.rate != RATE:
        raise ValueError(f"{v.key} wrote {output.rate} Hz audio, expected {RATE}")
    rng = np.random.default_rng(list(plan.seed))
    speed = 1.0
    if task.speed_perturb > 0:
        speed = 1 + float(rng.uniform(-task.speed_perturb, task.speed_perturb))
    samples, scale_pitch = _resample(output.samples, plan.speaker.pitch_resample)
    samples, scale_speed = _resample(samples, speed)
    scale, n = scale_pitch * scale_speed, len(samples)
    # flite's diphone voice cuts the final pause short of its printed end: only speech
    # past the end of the audio (or audio far past the labels) means the times are off.
    speech_end = max((end for p, end in output.phones if p not in SILENCES), default=0.0)
    labels_end = output.phones[-1][1] if output.phones else 0.0
    if speech_end * RATE * scale > n + 0.01 * RATE or labels_end * RATE * scale < n - RATE:
        raise ValueError(f"phone times end at {labels_end:.2f} s, the audio at {n / RATE:.2f} s")

    engine_phones, previous = [], 0
    for label, end in output.phones:
        end_sample = max(previous, _to_samples(end, scale, n))
        engine_phones.append((label, previous, end_sample))
        previous = end_sample
    engine_phones[-1] = (engine_phones[-1][0], engine_phones[-1][1], n)
    # labels: TIMIT allophones from the engine's stress and words (corpus/allophones.py)
    segments = to_timit(engine_phones, samples, v.merge_er_r, output.stress, output.word_of)
    words, previous = [], 0
    for word, start, end in output.words:
        s, e = max(previous, _to_samples(start, scale, n)), _to_samples(end, scale, n)
        if e > s:
            words.append((s, e, word))
            previous = e
    if not words:
        raise ValueError("the engine gave no word timings")

    lead_in, lead_out = 0, 0
    if "silence" in task.conditions:  # its own RNG stream, as the conditions have theirs
        lead_in, lead_out = room_tone_lengths(np.random.default_rng([*plan.seed, 11]), RATE)
        segments, words = _with_room_tone(segments, words, lead_in, lead_out)
    noisy = np.pad(samples.astype(np.float64), (lead_in, lead_out))
    speech, n = slice(lead_in, lead_in + n), lead_in + n + lead_out
    if task.conditions:  # its own RNG stream: the draws below stay as they were without
        heard = np.random.default_rng([*plan.seed, 7])
        noisy, _ = apply_conditions(noisy, heard, task.conditions, list(others), RATE, speech)
    if task.noise_snr is not None:
        snr = float(rng.uniform(*task.noise_snr))
        white = coloured_noise(rng, n, "white", RATE)
        noisy = add_noise(noisy, white, snr_db=snr, reference=noisy[speech])
    noisy = add_noise(noisy, rng.standard_normal(n), dbfs=DITHER_DBFS)
    pcm = np.clip(np.round(noisy * 32768), -32768, 32767).astype(np.int16)

    folder = task.out / plan.speaker.folder
    texts = (
        "".join(f"{s} {e} {p}\n" for s, e, p in segments),
        "".join(f"{s} {e} {w}\n" for s, e, w in words),
        f"0 {n} {plan.text}\n",
    )
    # four temp files, renamed only once all are written: never a half-written utterance
    with ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(folder / (plan.name + s))) for s in SUFFIXES]
        soundfile.write(temps[0], pcm, RATE, format="NIST", subtype="PCM_16")
        for temp, text in zip(temps[1:], texts, strict=True):
            temp.write_text(text, encoding="utf-8")
    return n / RATE


def _with_room_tone(
    segments: list[tuple[int, int, str]],
    words: list[tuple[int, int, str]],
    lead_in: int,
    lead_out: int,
) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """Phone and word segments (samples) of an utterance given ``lead_in`` samples of
    silence before it and ``lead_out`` after it: the opening and closing h# grow over them."""
    end = segments[-1][1] + lead_in + lead_out
    shifted = [(s + lead_in, e + lead_in, p) for s, e, p in segments]
    shifted[0] = (0, *shifted[0][1:])  # to_timit opens and closes with h#
    shifted[-1] = (shifted[-1][0], end, shifted[-1][2])
    return shifted, [(s + lead_in, e + lead_in, w) for s, e, w in words]


def _complete(out: Path, plan: UtterancePlan) -> bool:
    folder = out / plan.speaker.folder
    return all((folder / (plan.name + s)).is_file() for s in SUFFIXES)


def _parse_engines(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if name == "espeak":
            raise PhonelabelError(
                "espeak: the espeak-ng engine (GPL-3.0, opt-in) is not implemented yet;"
                " use --engines festival,flite"
            )
        if name not in tts.ENGINES:
            raise PhonelabelError(f"unknown engine {name!r} (known: festival, flite, espeak)")
    if not names:
        raise PhonelabelError("no engine given (festival, flite)")
    return tuple(sorted(set(names)))


def _settings_file(out: Path, settings: dict) -> None:
    """Write OUT/synth.json, or check that an existing corpus was made with ``settings``."""
    path = out / "synth.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise PhonelabelError(
                f"{out}: holds a corpus made with other settings ({', '.join(changed)});"
                " resume with the same options or use another directory"
            )
        return
    if out.exists() and (not out.is_dir() or any(p.name != LOCK_FILE for p in out.iterdir())):
        raise PhonelabelError(f"{out}: exists and is not a phonelabel synth corpus")
    write_json(path, settings)


def synthesize(
    out: str | Path,
    speakers: int = 40,
    utterances_per_speaker: int = 10,
    seed: int = 0,
    jobs: int | None = None,
    engines: tuple[str, ...] = ("festival", "flite"),
    noise_snr: tuple[float, float] | None = None,
    speed_perturb: float = 0.0,
    on_progress: Callable[[int, int], None] | None = None,
    conditions: tuple[str, ...] | str = DEFAULT_CONDITIONS,
) -> SynthReport:
    """Make (or resume) a synthetic TIMIT-layout corpus in ``out``; see the module docstring.

    ``noise_snr``: add white noise at an SNR (dB, against the engine's speech) drawn per
    utterance from (lo, hi), by the conditions' own noise (``conditions.add_noise``).
    ``speed_perturb``: play each utterance 1 ± up to this much faster (resampled).
    ``conditions``: recording conditions (``conditions.py``): names, or "all" / "none".
    ``on_progress(done, total)`` is called as utterances finish.
    """
    with output_lock(out, "a corpus"):
        return _synthesize(
            Path(out),
            speakers,
            utterances_per_speaker,
            seed,
            jobs,
            engines,
            noise_snr,
            speed_perturb,
            on_progress,
            parse_conditions(conditions) if isinstance(conditions, str) else conditions,
        )


def _synthesize(
    out: Path,
    speakers: int,
    utterances_per_speaker: int,
    seed: int,
    jobs: int | None,
    engines: tuple[str, ...],
    noise_snr: tuple[float, float] | None,
    speed_perturb: float,
    on_progress: Callable[[int, int], None] | None,
    conditions: tuple[str, ...],
) -> SynthReport:
    started = time.perf_counter()
    engine_names = _parse_engines(tuple(engines))
    if noise_snr is not None and not (
        np.all(np.isfinite(noise_snr)) and len(noise_snr) == 2 and noise_snr[0] <= noise_snr[1]
    ):
        raise PhonelabelError(f"noise SNR {noise_snr}: give LO,HI in dB with LO <= HI")
    if not 0 <= speed_perturb <= 0.3:
        raise PhonelabelError(f"speed perturbation {speed_perturb}: must be in 0..0.3")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise PhonelabelError(f"jobs {jobs}: must be at least 1")

    conditions = parse_conditions(",".join(conditions) or "none")  # checked and sorted
    speaker_plans = plan_speakers(speakers, engine_names, seed, vtlp="vtlp" in conditions)
    tts.check_voices([tts.voice(k) for k in sorted({s.voice for s in speaker_plans})])
    plans = plan_utterances(speaker_plans, utterances_per_speaker, seed)
    settings = {
        "seed": seed,
        "speakers": speakers,
        "utterances_per_speaker": utterances_per_speaker,
        "engines": list(engine_names),
        "noise_snr": list(noise_snr) if noise_snr is not None else None,
        "speed_perturb": speed_perturb,
        "conditions": list(conditions),
        "train_voices": [k for k in TRAIN_VOICES if k.split(":")[0] in engine_names],
        "test_voices": [k for k in TEST_VOICES if k.split(":")[0] in engine_names],
        "speaker_table": [asdict(s) for s in speaker_plans],
    }
    _settings_file(out, settings)

    for folder in {out / s.folder for s in speaker_plans if (out / s.folder).is_dir()}:
        for stale in folder.glob(".*.tmp"):  # left by a killed run; never renamed
            stale.unlink()
    pending = [p for p in plans if not _complete(out, p)]
    tasks, by_speaker = [], {}
    for p in pending:
        by_speaker.setdefault(p.speaker.speaker_id, []).append(p)
    for group in by_speaker.values():
        for i in range(0, len(group), CHUNK):
            tasks.append(
                _Task(out, tuple(group[i : i + CHUNK]), noise_snr, speed_perturb, conditions)
            )
    done = len(plans) - len(pending)
    if on_progress:
        on_progress(done, len(plans))
    results: list[_Result] = []
    for chunk in _run_all(tasks, jobs):
        results += chunk
        done += len(chunk)
        if on_progress:
            on_progress(done, len(plans))
    return _report(out, plans, results, len(plans) - len(pending), started)


def _run_all(tasks: list[_Task], jobs: int):
    if jobs == 1 or len(tasks) <= 1:
        yield from map(_run_task, tasks)
        return
    with worker_pool(jobs) as pool:  # workers (and their engines) die with this process
        futures = [pool.submit(stoppable, _run_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def _report(
    out: Path, plans: list[UtterancePlan], results: list[_Result], resumed: int, started: float
) -> SynthReport:
    made = [r for r in results if r.seconds is not None]
    skipped = [
        SkippedPrompt(
            r.plan.speaker.speaker_id,
            r.plan.name,
            r.plan.speaker.voice,
            r.plan.text,
            r.reason or "unknown",
        )
        for r in results
        if r.seconds is None
    ]
    seconds = {}
    for plan in plans:
        if _complete(out, plan):
            wav = out / plan.speaker.folder / (plan.name + ".WAV")
            key = f"{plan.speaker.speaker_id.lower()}_{plan.name.lower()}"
            seconds[key] = (soundfile.info(str(wav)).frames / RATE, plan.speaker)
    utterances = find_utterances(out) if seconds else []
    groups = {"parts": {"train": [], "test": []}, "splits": {}}
    for u in utterances:
        groups["parts"][u.part].append(u)
    if utterances:
        groups["splits"] = assign_splits(utterances)
    counts = {}
    for kind, named in groups.items():
        counts[kind] = {}
        for name, members in named.items():
            found = [seconds[u.utt_id] for u in members if u.utt_id in seconds]
            counts[kind][name] = SplitCounts(
                speakers=len({s.speaker_id for _, s in found}),
                utterances=len(found),
                seconds=round(sum(sec for sec, _ in found), 2),
                voices=sorted({s.voice for _, s in found}),
            )
    return SynthReport(
        out=out,
        parts=counts["parts"],
        splits=counts["splits"],
        skipped=skipped,
        synthesized=len(made),
        resumed=resumed,
        synthesized_seconds=round(sum(r.seconds for r in made), 2),
        elapsed_seconds=round(time.perf_counter() - started, 2),
    )


# --- checking alignments -----------------------------------------------------------------

PHONE_GROUPS = {
    "silence": ("h#", "pau"),
    "closure": ("pcl", "tcl", "kcl"),  # voiceless: no voice bar, so energy tells
    "release": ("p", "t", "k"),
    "vowel": tuple(sorted(VOWELS)),
    "sibilant": ("s", "sh"),
}


def alignment_stats(root: str | Path) -> dict[str, dict[str, float]]:
    """Show, from the audio, that a corpus's .PHN labels sit where their sounds are.

    Per phone group (silence, closure, release, vowel, sibilant): frame count, mean frame
    log energy (dB re full scale) and mean share of the frame's energy above 4 kHz, over
    the 25 ms / 10 ms frames of DESIGN.md §4 labelled by their centre sample.
    """
    config = FeatureConfig()
    window = np.hamming(config.win_length)
    high = np.fft.rfftfreq(config.win_length, 1 / RATE) >= 4000
    group_of = {PHONE_INDEX[p]: g for g, phones in PHONE_GROUPS.items() for p in phones}
    sums = {g: np.zeros(3) for g in PHONE_GROUPS}  # frames, sum of dB, sum of HF share
    for utterance in find_utterances(root):
        samples = read_audio(utterance.audio).samples.astype(np.float64)
        n = frame_count(len(samples), config)
        labels = frame_labels(read_phn(utterance.alignment, len(samples)), n, config)
        frames = sliding_window_view(samples, config.win_length)[:: config.hop_length][:n]
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, 201)
        decibels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        high_share = power[:, high].sum(axis=1) / (power.sum(axis=1) + 1e-20)
        for index, group in group_of.items():
            mask = labels == index
            sums[group] += (mask.sum(), decibels[mask].sum(), high_share[mask].sum())
    return {
        g: {
            "frames": int(f),
            "mean_db": round(float(d / max(f, 1)), 2),
            "hf_share": round(float(h / max(f, 1)), 3),
        }
        for g, (f, d, h) in sums.items()
    }
