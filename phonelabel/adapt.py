"""Adapt a model to a corpus's voices from recordings and their words (DESIGN.md §5c).

Each round: ``align`` every recording with the current model (``align.align_files``: the
transcript's phone graph, Viterbi over the model's posteriors) and keep the TextGrids in
``OUT/alignments/round_K/``; score each alignment; leave out what did not align or aligned
far worse than the corpus's typical score; split the rest by speaker (``featurize``'s seeded
rule, dev = 10 % of the speakers); featurize with the alignments as labels, in the starting
model's feature config and normalisation; train from the starting model's weights. A later
round re-aligns with the round before's model and trains again from the starting weights.

The alignment score (transcript mismatch): per frame, the scaled log-likelihood of the phone
the alignment chose minus that of the best phone of the frame (the model's free,
unconstrained path), averaged over the recording; 0 means the transcript's path is the
model's own choice everywhere. A recording scoring below median - ``mismatch_mads`` x MAD
(MAD scaled by 1.4826, the corpus's scores of that round) is left out as a probable
mismatch between the audio and its transcript.

Forgetting: ``mix`` names a feature store (a synthetic corpus's, say) whose training frames
join the real ones, ``mix_share`` of the training frames, so that phones the corpus never
exercises stay trained.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.align import (
    Alignment,
    align_files,
    emission_scores,
    load_aligner,
    log_posterior_blocks,
)
from phonelabel.config import TrainConfig
from phonelabel.core import Segment
from phonelabel.corpus.source import CorpusOptions
from phonelabel.corpus.textgrid import SPLIT_SEED, assign_seeded, read_alignment
from phonelabel.corpus.transcribed import TranscribedCorpus, find_transcribed_corpus
from phonelabel.errors import PhonelabelError
from phonelabel.features import config_differences, frame_labels
from phonelabel.fileio import write_json, write_text
from phonelabel.lexicon import normalize_text
from phonelabel.modeldir import CONFIG, default_model_dir, load_model, read_config
from phonelabel.phones import PHONE_INDEX
from phonelabel.plots import _pyplot, save_figure
from phonelabel.store import SPEAKERS_FILE, STORE_FILE, TSV_HEADER, featurize, open_store
from phonelabel.train import train
from phonelabel.workers import Shard

ROUNDS_DIR = "rounds"
ALIGNMENTS_DIR = "alignments"
STAGED_DIR = "corpus"  # the recordings (links) with their words as <utt>.txt, by speaker
REPORT = "adapt.json"
PLOT = "adapt.png"
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
# the least spread the mismatch rule assumes (so the threshold is at least 0.75 below the
# median): where recordings align about equally well (a synthetic corpus: scaled MAD 0.06)
# a genuine one still scored 0.57 below the median, a swapped transcript 2.9; real corpora
# spread more (transcribed/: MAD 0.43, the rule's own) and another clip's words cost 1-2.5
MAD_FLOOR = 0.25
# why a recording was left out, in the words of the report
REASONS = (
    "no transcript",
    "unreadable transcript",
    "empty transcript",
    "word in no dictionary",
    "audio too short for its words",
    "unreadable audio",
    "no alignment path",
    "probable transcript mismatch",
)


@dataclass(frozen=True)
class AdaptConfig:
    rounds: int = 1  # measured: a second round adds nothing (README "Adapt to your recordings")
    epochs: int = 8
    mismatch_mads: float = 3.0  # left out below median - this x MAD (measured: README)
    mix_share: float = 0.5  # of the training frames from the --mix store, when given
    seed: int = 0
    device: str = "auto"
    jobs: int = 1
    guess: bool = True  # festival's letter-to-sound rules for words in no dictionary

    def check(self) -> None:
        if self.rounds < 1:
            raise PhonelabelError(f"rounds {self.rounds}: must be at least 1")
        if self.epochs < 1:
            raise PhonelabelError(f"epochs {self.epochs}: must be at least 1")
        if not 0.0 <= self.mix_share < 1.0:
            raise PhonelabelError(f"mix share {self.mix_share}: must be in [0, 1)")


@dataclass
class RecordingOutcome:
    utt_id: str
    speaker: str
    audio: str
    seconds: float = 0.0
    score: float | None = None  # mean per-frame log-likelihood below the free path's
    reason: str | None = None  # one of REASONS when left out
    detail: str = ""  # the message behind the reason


@dataclass
class RoundReport:
    round: int
    aligning_model: str
    outcomes: list[RecordingOutcome]
    threshold: float | None = None
    median: float | None = None
    mad: float | None = None
    trained_on: dict[str, int] = field(default_factory=dict)  # split -> recordings
    dev_agreement: float | None = None  # dev frame accuracy (61) against the alignments
    start_dev_agreement: float | None = None
    word_boundary_shift_ms: float | None = None  # mean |shift| from the round before
    word_boundaries_within_20ms: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds

    @property
    def left_out(self) -> dict[str, int]:
        return dict(Counter(o.reason for o in self.outcomes if o.reason is not None))

    @property
    def used(self) -> list[RecordingOutcome]:
        return [o for o in self.outcomes if o.reason is None]

    def to_dict(self) -> dict[str, Any]:
        used = self.used
        return {
            "round": self.round,
            "aligning_model": self.aligning_model,
            "recordings": len(self.outcomes),
            "aligned": sum(1 for o in self.outcomes if o.score is not None),
            "used": len(used),
            "used_minutes": sum(o.seconds for o in used) / 60,
            "left_out": self.left_out,
            "mismatch_rule": {
                "score": "mean per-frame scaled log-likelihood of the aligned phone minus the"
                " frame's best phone (free path)",
                "median": self.median,
                "mad": self.mad,
                "threshold": self.threshold,
            },
            "trained_on": self.trained_on,
            "dev_agreement_61": self.dev_agreement,
            "word_boundary_shift_ms": self.word_boundary_shift_ms,
            "word_boundaries_within_20ms": self.word_boundaries_within_20ms,
            "seconds": self.seconds,
            "recordings_detail": [asdict(o) for o in self.outcomes],
        }


@dataclass
class AdaptReport:
    corpus: str
    form: str
    start: str
    out: str
    rounds: list[RoundReport]
    config: AdaptConfig
    mix: str | None = None
    audio_minutes: float = 0.0
    seconds: float = 0.0
    aligned_only: bool = False  # a --shard run: its share aligned, nothing trained

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "form": self.form,
            "start_model": self.start,
            "out": self.out,
            "config": asdict(self.config),
            "mix": self.mix,
            "audio_minutes": self.audio_minutes,
            "seconds": self.seconds,
            "seconds_per_audio_minute": self.seconds / self.audio_minutes
            if self.audio_minutes
            else None,
            "aligned_only": self.aligned_only,
            "rounds": [r.to_dict() for r in self.rounds],
        }


Progress = Callable[[str, int, int, str | None], None]  # stage, done, total, a left-out line


def _quiet(stage: str, done: int, total: int, line: str | None) -> None:
    pass


# --- the recordings -------------------------------------------------------------------------


def _stage(corpus: TranscribedCorpus, out: Path) -> dict[str, Path]:
    """Each usable recording linked as OUT/corpus/<speaker>/<utt><ext> with <utt>.txt beside
    it (its words), so that ``align`` and ``featurize`` read every corpus form alike."""
    staged: dict[str, Path] = {}
    for r in corpus.recordings:
        if r.problem is not None:
            continue
        folder = out / STAGED_DIR / r.speaker
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{r.utt_id}{r.audio.suffix.lower()}"
        if not link.is_symlink():
            link.symlink_to(r.audio.resolve())
        text = folder / f"{r.utt_id}.txt"
        if not text.is_file() or text.read_text(encoding="utf-8") != r.text:
            write_text(text, r.text)
        staged[r.utt_id] = link
    return staged


def _reason(message: str) -> str:
    """The REASONS entry of an align failure's message."""
    lowered = message.lower()
    if "no transcript" in lowered or "no such transcript" in lowered:
        return "no transcript"
    if "transcript" in lowered and ("utf-8" in lowered or "cannot read" in lowered):
        return "unreadable transcript"
    if "transcript is empty" in lowered or "holds no words" in lowered:
        return "empty transcript"
    if "pronunciation dictionary" in lowered:
        return "word in no dictionary"
    if "need at least" in lowered or "needs at least" in lowered:
        return "audio too short for its words"
    if "no path" in lowered:
        return "no alignment path"
    return "unreadable audio"


def alignment_score(audio: Path, phones: list[Segment], aligner: Any) -> tuple[float, float]:
    """(mean per-frame score of the aligned phones below the free best path, seconds)."""
    source, frames, blocks = log_posterior_blocks(audio, aligner.labeller)
    log_posteriors = np.concatenate(list(blocks))  # (T, 61)
    scores = emission_scores(log_posteriors, aligner.priors, aligner.params)  # (T, 62)
    labels = frame_labels(phones, len(scores), aligner.feature).astype(np.int64)  # (T,)
    silence = (labels == PHONE_INDEX["h#"]) | (labels == PHONE_INDEX["pau"])
    labels[silence] = scores.shape[1] - 1  # the aligner scores silence as one class
    chosen = labels < scores.shape[1]
    rows = np.flatnonzero(chosen)
    below = scores[rows, labels[rows]] - scores[rows].max(axis=1)
    return float(below.mean()) if len(below) else 0.0, source.source_frames / source.source_rate


def _align_round(
    staged: dict[str, Path],
    outcomes: dict[str, RecordingOutcome],
    aligner: Any,
    target: Path,
    config: AdaptConfig,
    shard: Shard | None,
    on_progress: Progress,
) -> None:
    utts = sorted(staged)
    if shard is None:  # what a --shard run (job array) aligned already is read back
        for u in [u for u in utts if (target / f"{u}.TextGrid").is_file()]:
            grid = read_alignment(target / f"{u}.TextGrid")
            phones = [Segment(a, b, label) for a, b, label in grid.phones if label]
            outcomes[u].score, outcomes[u].seconds = alignment_score(staged[u], phones, aligner)
            utts.remove(u)
    results = align_files(
        [staged[u] for u in utts], aligner, target, "textgrid", jobs=config.jobs, shard=shard
    )
    total = len(utts) if shard is None else len(utts) // shard.count + 1
    with closing(results):  # Ctrl-C stops --jobs workers at once, as align's command does
        for done, result in enumerate(results, 1):
            outcome = outcomes[Path(result.source).stem]
            error = None if isinstance(result, Alignment) else result.error  # runner's Failure
            if error is None:
                try:
                    outcome.score, outcome.seconds = alignment_score(
                        staged[outcome.utt_id], result.phones, aligner
                    )
                except PhonelabelError as failure:
                    error = str(failure)
            if error is not None:
                outcome.reason, outcome.detail = _reason(error), error
            on_progress("align", done, total, error and f"{result.source}: left out: {error}")


def _leave_out_mismatches(report: RoundReport, mads: float, on_progress: Progress) -> None:
    scored = [o for o in report.outcomes if o.reason is None and o.score is not None]
    if len(scored) < 3:
        return
    values = np.array([o.score for o in scored])
    report.median = float(np.median(values))
    report.mad = float(MAD_SCALE * np.median(np.abs(values - report.median)))
    report.threshold = report.median - mads * max(report.mad, MAD_FLOOR)
    for o in scored:
        if o.score < report.threshold:
            o.reason = "probable transcript mismatch"
            o.detail = (
                f"alignment score {o.score:.2f} per frame, below the corpus's threshold"
                f" {report.threshold:.2f} (median {report.median:.2f} - {mads:g} x MAD)"
            )
            on_progress("align", 0, 0, f"{o.audio}: left out: {o.detail}")


def _word_shift(before: Path, after: Path) -> list[float]:
    """|shift| in seconds of each word boundary between two alignments of one recording."""
    words = [read_alignment(p).words or [] for p in (before, after)]
    if len(words[0]) != len(words[1]):
        return []
    return [
        abs(t - u)
        for a, b in zip(*words, strict=True)
        for t, u in ((a.start, b.start), (a.end, b.end))
    ]


# --- featurize and mix ----------------------------------------------------------------------


def _speaker_splits(corpus: TranscribedCorpus, seed: int) -> dict[str, str]:
    """utt_id -> train or dev: featurize's seeded speaker rule over the whole corpus (the
    same split every round); its test speakers train too (evaluation is not adapt's job)."""

    @dataclass
    class _Unit:
        utt_id: str
        speaker: str

    splits: dict[str, list[Any]] = {"train": [], "dev": [], "test": []}
    assign_seeded([_Unit(r.utt_id, r.speaker) for r in corpus.recordings], splits, seed)  # type: ignore[arg-type]
    return {u.utt_id: "dev" if name == "dev" else "train" for name in splits for u in splits[name]}


def _featurize_round(
    report: RoundReport,
    staged: dict[str, Path],
    splits: dict[str, str],
    alignments: Path,
    out: Path,
    start: Any,
    jobs: int,
) -> Path:
    used = report.used
    training = [o for o in used if splits[o.utt_id] == "train"]
    if not training:
        raise PhonelabelError("no recording of a training speaker could be used; nothing to train")
    if len(training) == len(used):  # a tiny corpus: one train recording to dev, if two or more
        if len(training) < 2:
            raise PhonelabelError("one recording could be used: too little to train and check on")
        splits = {**splits, used[-1].utt_id: "dev"}
    root = out / STAGED_DIR
    rows = ["utt_id\tspeaker\tsplit\taudio\talignment"] + [
        f"{o.utt_id}\t{o.speaker}\t{splits[o.utt_id]}\t{staged[o.utt_id].relative_to(root)}"
        f"\t{o.utt_id}.TextGrid"
        for o in used
    ]
    work = out / "work" / f"round_{report.round}"
    manifest = work / "manifest.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_text(manifest, "\n".join(rows) + "\n")
    options = CorpusOptions(alignments=alignments, manifest=manifest, label_set="timit")
    store = work / "store"
    featurize(root, store, start.feature, jobs=jobs, force=True, options=options)
    info = json.loads((store / STORE_FILE).read_text(encoding="utf-8"))
    # the starting model's normalisation prior, not this small corpus's
    write_json(store / STORE_FILE, {**info, "stats": start.stats, "stats_from": "starting model"})
    report.trained_on = {s: sum(1 for o in used if splits[o.utt_id] == s) for s in ("train", "dev")}
    return store


def _check_mix(feature: Any, mix: Path | str) -> None:
    """Refuse a --mix store whose features are not the model's."""
    differences = config_differences(feature, open_store(mix).config, f"--mix {mix}")
    if differences:
        raise PhonelabelError(
            f"{mix}: its features differ from the model's: " + "; ".join(differences)
        )


def mix_stores(adapted: Path, mix: Path, out: Path, share: float, seed: int) -> dict[str, Any]:
    """A store whose train split is ``adapted``'s plus utterances of ``mix``'s train split
    (drawn by ``seed``) making up ``share`` of its frames; dev as ``adapted``'s."""
    real, other = open_store(adapted), open_store(mix)
    _check_mix(real.config, mix)
    if "train" not in other.split_names:
        raise PhonelabelError(f"{mix}: no train split to mix in")
    ours, theirs = real.split("train"), other.split("train")
    wanted = int(share / (1 - share) * ours.num_frames)
    order = np.random.default_rng(seed).permutation(len(theirs.utterances))
    chosen, frames = [], 0
    for i in order:
        if frames >= wanted:
            break
        chosen.append(theirs.utterances[int(i)])
        frames += chosen[-1].frames
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in real.split_names:
        if name != "train":
            shutil.copytree(real.path / name, out / name)
    train_dir = out / "train"
    train_dir.mkdir()
    raw = [np.asarray(ours.raw)] + [
        np.asarray(theirs.raw[u.offset : u.offset + u.frames]) for u in chosen
    ]
    labels = [np.asarray(ours.labels)] + [
        np.asarray(theirs.labels[u.offset : u.offset + u.frames]) for u in chosen
    ]
    np.save(train_dir / "features.npy", np.concatenate(raw).astype(np.float32))
    np.save(train_dir / "labels.npy", np.concatenate(labels).astype(np.uint8))
    rows, offset = ["\t".join(TSV_HEADER)], 0
    for u, prefix in [(u, "") for u in ours.utterances] + [(u, "mix-") for u in chosen]:
        rows.append(
            f"{prefix}{u.utt_id}\t{prefix}{u.speaker}\t{offset}\t{u.frames}\t{u.path}\t{' '.join(u.phones)}"
        )
        offset += u.frames
    write_text(train_dir / "utterances.tsv", "\n".join(rows) + "\n")
    moments = json.loads((real.path / "train" / SPEAKERS_FILE).read_text(encoding="utf-8"))
    theirs_moments = json.loads((other.path / "train" / SPEAKERS_FILE).read_text(encoding="utf-8"))
    moments.update({f"mix-{s}": theirs_moments[s] for s in {u.speaker for u in chosen}})
    write_json(train_dir / SPEAKERS_FILE, moments)
    info = dict(real.info)  # its own fingerprint: train --resume must not take it for either
    info["fingerprint"] = f"{real.info.get('fingerprint')}+{other.info.get('fingerprint')}"
    info["fingerprint"] += f":{share}:{seed}"
    train = {**info["splits"]["train"], "frames": offset, "utterances": len(rows) - 1}
    train["speakers"] = len(moments)
    train["seconds"] += frames * real.config.hop_length / real.config.sample_rate
    info["splits"] = {**info["splits"], "train": train}
    mixed = {"store": str(mix), "utterances": len(chosen), "frames": frames, "share": share}
    write_json(out / STORE_FILE, {**info, "mix": mixed})
    return mixed


# --- the run --------------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    """OUT may hold a --shard run's alignments (they are reused), nothing else."""
    if out.exists() and not out.is_dir():
        raise PhonelabelError(f"{out}: exists and is not a directory")
    if out.is_dir():
        extra = sorted(
            p.name
            for p in out.iterdir()
            if p.name not in (STAGED_DIR, ALIGNMENTS_DIR)
            and not (p.name.startswith("adapt.shard-") and p.suffix == ".json")
        )
        if extra:
            raise PhonelabelError(
                f"{out}: already holds {', '.join(extra[:3])}; choose a new --out (only a"
                " --shard run's alignments may be there)"
            )


def _training_config(start: Any, config: AdaptConfig, start_dir: Path) -> TrainConfig:
    model = start.model.config
    return TrainConfig.of(
        hidden=model.hidden,
        layers=model.layers,
        dropout=model.dropout,
        delay=model.delay,
        epochs=config.epochs,
        patience=config.epochs,
        seed=config.seed,
        device=config.device,
        init=str(start_dir.resolve()),
    )


def _screen(found: TranscribedCorpus, on_progress: Progress) -> dict[str, RecordingOutcome]:
    """An outcome per recording; those with no usable transcript or audio left out already."""
    outcomes = {
        r.utt_id: RecordingOutcome(r.utt_id, r.speaker, str(r.audio)) for r in found.recordings
    }
    for r in found.recordings:
        outcome = outcomes[r.utt_id]
        if r.problem is not None:
            outcome.reason, outcome.detail = _reason(r.problem), r.problem
        elif not normalize_text(r.text):
            outcome.reason, outcome.detail = "empty transcript", f"no words in {r.text!r}"
        if outcome.reason is not None:
            on_progress("align", 0, 0, f"{r.audio}: left out: {outcome.detail}")
    return outcomes


def _boundary_shift(report: RoundReport, previous: Path, target: Path) -> None:
    """How far the word boundaries of the recordings used moved from the round before."""
    shifts = [
        s
        for o in report.used
        if (previous / f"{o.utt_id}.TextGrid").is_file()
        for s in _word_shift(previous / f"{o.utt_id}.TextGrid", target / f"{o.utt_id}.TextGrid")
    ]
    if shifts:
        report.word_boundary_shift_ms = 1000 * float(np.mean(shifts))
        report.word_boundaries_within_20ms = float(np.mean(np.array(shifts) <= 0.020))


def adapt(
    corpus: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    config: AdaptConfig = AdaptConfig(),
    dictionary: str | Path | None = None,
    mix: str | Path | None = None,
    shard: Shard | None = None,
    on_progress: Progress | None = None,
) -> AdaptReport:
    """Adapt ``model`` (default: the shipped one) to ``corpus`` into ``out``: the module
    docstring. With ``shard``, align that share of round 1 only (a job array's part) and
    stop; the run without ``shard`` reuses those alignments and trains."""
    config.check()
    began = time.perf_counter()
    on_progress = on_progress or _quiet
    out = Path(out)
    start_dir = Path(model) if model is not None else default_model_dir()
    start = load_model(start_dir, "cpu")
    if mix is not None:  # refuse a store of other features before any work
        _check_mix(start.feature, mix)
    found = find_transcribed_corpus(corpus)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    staged = _stage(found, out)
    splits = _speaker_splits(found, config.seed or SPLIT_SEED)
    report = AdaptReport(
        str(found.root),
        found.form,
        str(start_dir),
        str(out),
        [],
        config,
        str(mix) if mix is not None else None,
        aligned_only=shard is not None,
    )
    aligning = start_dir
    previous: Path | None = None
    for k in range(1, (1 if shard is not None else config.rounds) + 1):
        outcomes = _screen(found, on_progress if k == 1 else _quiet)
        todo = {u: p for u, p in staged.items() if outcomes[u].reason is None}
        round_report = RoundReport(k, str(aligning), list(outcomes.values()))
        report.rounds.append(round_report)
        target = out / ALIGNMENTS_DIR / f"round_{k}"
        t0 = time.perf_counter()
        aligner = load_aligner(aligning, config.device, dictionary, config.guess)
        _align_round(todo, outcomes, aligner, target, config, shard, on_progress)
        round_report.seconds["align"] = time.perf_counter() - t0
        if shard is not None:
            break
        _leave_out_mismatches(round_report, config.mismatch_mads, on_progress)
        if previous is not None:
            _boundary_shift(round_report, previous, target)
        t0 = time.perf_counter()
        on_progress("featurize", 0, 1, None)
        store = _featurize_round(round_report, staged, splits, target, out, start, config.jobs)
        if mix is not None:
            mix_stores(store, Path(mix), store.parent / "mixed", config.mix_share, config.seed)
            store = store.parent / "mixed"
        round_report.seconds["featurize"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        trained_dir = out / ROUNDS_DIR / f"round_{k}"

        def progress(p: Any, k: int = k) -> None:
            if p.epoch_done is not None:
                on_progress(f"train round {k}", p.epoch, p.epochs, None)

        result = train(
            store, trained_dir, _training_config(start, config, start_dir), on_progress=progress
        )
        round_report.seconds["train"] = time.perf_counter() - t0
        best = result.best  # the epoch whose weights the round keeps
        round_report.dev_agreement = best.dev_frame_accuracy_61 if best else None
        aligning, previous = trained_dir, target
    report.audio_minutes = sum(o.seconds for o in report.rounds[0].outcomes) / 60
    report.seconds = time.perf_counter() - began
    if shard is None:
        _finish(out, aligning, report, found)
    write_json(out / (REPORT if shard is None else f"adapt.{shard.name}.json"), report.to_dict())
    return report


def _finish(out: Path, final: Path, report: AdaptReport, found: TranscribedCorpus) -> None:
    """The last round's model as OUT's own, its config.json saying how it was adapted."""
    for name in os.listdir(final):
        if not name.startswith(".") and name != "checkpoint.pt" and (final / name).is_file():
            shutil.copy2(final / name, out / name)
    last = report.rounds[-1]
    cfg = read_config(out)
    cfg["run"] = {
        **cfg.get("run", {}),
        "adapted": {
            "from": report.start,
            "corpus": report.corpus,
            "form": report.form,
            "recordings": len(last.used),
            "minutes": sum(o.seconds for o in last.used) / 60,
            "rounds": len(report.rounds),
            "mix": report.mix,
        },
    }
    write_json(out / CONFIG, cfg)
    plot_report(report.to_dict(), out / PLOT)


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Per round: recordings used and left out (by reason), dev agreement with the
    alignments, how far word boundaries moved from the round before, and the alignment
    scores with the mismatch threshold."""
    plt = _pyplot()
    rounds = report["rounds"]
    names = [f"round {r['round']}" for r in rounds]
    figure, axes = plt.subplots(1, 4, figsize=(17, 4))
    bottom = np.zeros(len(rounds))
    for reason in ("used", *REASONS):
        counts = np.array(
            [r["used"] if reason == "used" else r["left_out"].get(reason, 0) for r in rounds]
        )
        if counts.any():
            axes[0].bar(names, counts, bottom=bottom, label=reason)
            bottom += counts
    axes[0].set(ylabel="recordings", title="recordings used / left out")
    axes[0].legend(fontsize=7)
    axes[1].bar(names, [100 * (r["dev_agreement_61"] or 0) for r in rounds])
    axes[1].set(ylabel="frame agreement (%)", title="dev: model vs its alignments (61)")
    shifts = [r["word_boundary_shift_ms"] for r in rounds]
    axes[2].bar(names, [s or 0 for s in shifts])
    for x, shift in enumerate(shifts):
        axes[2].annotate("-" if shift is None else f"{shift:.1f}", (x, shift or 0), ha="center")
    axes[2].set(ylabel="ms", title="word boundaries: mean shift from round before")
    for r in rounds:
        scores = [d["score"] for d in r["recordings_detail"] if d["score"] is not None]
        axes[3].hist(scores, bins=30, alpha=0.6, label=f"round {r['round']}")
        if r["mismatch_rule"]["threshold"] is not None:
            axes[3].axvline(r["mismatch_rule"]["threshold"], color="red", linestyle="--")
    axes[3].set(xlabel="score (log-likelihood/frame below the free path)", ylabel="recordings",
                title="alignment scores; red: left out below")  # fmt: skip
    axes[3].legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    save_figure(figure, path, dpi=100, tight=False)
