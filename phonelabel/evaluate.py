"""Score a trained model on one split of a feature store or a TIMIT-layout corpus.

Every utterance runs from a zero state, target delay honoured, in batches of similar
length on the chosen device. Frame accuracy uses the arg-max phone of each frame; the
phone error rate uses the model's decoder (Viterbi smoothing with its stored parameters,
or plain arg-max-and-merge with ``smooth=False``), and the arg-max PER is always reported
beside it so the effect of smoothing is visible. Scoring convention: ``metrics.py``.

From a corpus directory the audio is featurised here with the model's own feature config
and normalisation statistics, exactly as ``featurize`` would have stored it, so a TIMIT
owner can score the core test without a featurize step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phonelabel import __version__
from phonelabel.align import align_file, load_aligner
from phonelabel.audio import read_audio
from phonelabel.core import Reference, Utterance
from phonelabel.corpus.source import CorpusOptions, open_corpus
from phonelabel.corpus.textgrid import TextGridUtterance
from phonelabel.corpus.timit import read_transcript
from phonelabel.decode import DecoderParams, decode_frames, phone_error_rate, tune_decoder
from phonelabel.distributed import SINGLE, Ranks, sum_array
from phonelabel.errors import PhonelabelError
from phonelabel.features import NO_LABEL, FeatureConfig, config_differences, normalize_speaker
from phonelabel.metrics import (
    ALIGNMENT_SCORING,
    CLOSURES_MERGED,
    SCORING_CONVENTION,
    AlignmentErrors,
    BoundaryCounts,
    EditCounts,
    boundary_counts,
    boundary_pairs,
    confusion_61,
    confusion_accuracy,
    fold_confusion,
    merge_closures,
    most_confused,
    per_phone_accuracy,
    phone_errors,
)
from phonelabel.model import PhoneLSTM, batched_log_posteriors, resolve_device
from phonelabel.modeldir import load_model
from phonelabel.phones import FOLD_INDEX, NUM_PHONES, PHONES_39, PHONES_61
from phonelabel.store import featurize_utterance, open_store

BOUNDARY_TOLERANCE = 0.020  # seconds


@dataclass
class EvaluationInput:
    """One split's utterances, whichever kind of source they came from."""

    kind: str  # "store" or "corpus"
    utt_ids: list[str]
    speakers: list[str]
    lengths: list[int]  # frames per utterance
    features: Callable[[int], np.ndarray]  # i -> (T_i, D) normalised float32
    references: Callable[[int], Reference]  # i -> its frame labels and phone tokens
    skipped: list[list[str]] = field(default_factory=list)  # [utt_id, reason]: unusable
    notes: list[str] = field(default_factory=list)  # caveats the report should carry


@dataclass
class EvaluationResult:
    split: str
    model: str
    source: str
    source_kind: str
    utterances: int
    speakers: int
    seed: int | None
    per_decoder: str  # "viterbi" or "argmax": what produced the PER's phone strings
    decoder_params: dict[str, Any]
    confusion: np.ndarray  # (61, 61) int64 frame counts, row = reference, column = arg-max
    edits: EditCounts  # phone strings of the PER decoder
    edits_argmax: EditCounts
    boundaries: BoundaryCounts  # frame boundaries of the PER decoder's output
    boundary_tolerance: float = BOUNDARY_TOLERANCE
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def folded(self):
        return fold_confusion(self.confusion)

    @property
    def frames(self) -> int:
        return int(self.confusion.sum())

    @property
    def frame_accuracy_61(self) -> float | None:
        return confusion_accuracy(self.confusion)

    @property
    def frame_accuracy_39(self) -> float | None:
        return self.folded.accuracy

    def per_phone(self) -> dict[str, dict[str, Any]]:
        """Per TIMIT-61 reference phone: frames, 61-class accuracy, folded accuracy."""
        table = per_phone_accuracy(self.confusion, PHONES_61)
        same_class = FOLD_INDEX[:, None] == FOLD_INDEX[None, :]  # (61, 61) folds together
        for i, phone in enumerate(PHONES_61):
            support = table[phone]["frames"]
            scored = FOLD_INDEX[i] >= 0 and support > 0
            correct = int(self.confusion[i, same_class[i]].sum())
            table[phone]["accuracy_39"] = correct / support if scored else None
        return table

    def to_json(self) -> dict[str, Any]:
        folded = self.folded
        return {
            "split": self.split,
            "frames": self.frames,
            "frames_39": folded.frames,
            "frame_accuracy_61": self.frame_accuracy_61,
            "frame_accuracy_39": self.frame_accuracy_39,
            "phone_error_rate_39": self.edits.error_rate,
            "phone_error_rate_39_argmax": self.edits_argmax.error_rate,
            "per_decoder": self.per_decoder,
            "decoder_params": self.decoder_params,
            "reference_phones": self.edits.reference_length,
            "substitutions": self.edits.substitutions,
            "deletions": self.edits.deletions,
            "insertions": self.edits.insertions,
            "argmax_edits": {
                "substitutions": self.edits_argmax.substitutions,
                "deletions": self.edits_argmax.deletions,
                "insertions": self.edits_argmax.insertions,
            },
            "boundary_tolerance_ms": round(self.boundary_tolerance * 1000, 3),
            "boundary_precision": self.boundaries.precision,
            "boundary_recall": self.boundaries.recall,
            "boundary_f1": self.boundaries.f1,
            "utterances": self.utterances,
            "speakers": self.speakers,
            "scoring": SCORING_CONVENTION,
            "seed": self.seed,
            "model": self.model,
            "source": self.source,
            "source_kind": self.source_kind,
            "version": __version__,
            "seconds": round(self.seconds, 3),
            "per_phone": self.per_phone(),
            "per_phone_39": per_phone_accuracy(folded.matrix, PHONES_39, folded.support),
            "phones_39": list(PHONES_39),
            "confusion_39": folded.matrix.tolist(),
            "q_predicted_39": folded.q_predicted.tolist(),
            "most_confused": most_confused(folded, top=10),
            **self.extra,
        }


def evaluate(
    model_dir: str | Path,
    source: str | Path,
    split: str = "test",
    device: str = "auto",
    batch_utterances: int = 64,
    smooth: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    options: CorpusOptions | None = None,
) -> EvaluationResult:
    """Score the model in ``model_dir`` on ``split`` of ``source`` (a feature store or a
    corpus directory, read by ``options``). ``on_progress(done, total)`` after each batch."""
    if batch_utterances < 1:
        raise PhonelabelError(f"batch size must be at least 1, got {batch_utterances}")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    trained = load_model(model_dir, torch_device)
    data = load_input(Path(source), split, trained.feature, trained.stats, options)
    params = trained.decoder_params
    tolerance = round(BOUNDARY_TOLERANCE * trained.feature.sample_rate / trained.feature.hop_length)

    confusion = np.zeros((NUM_PHONES, NUM_PHONES), dtype=np.int64)
    edits, edits_argmax, bounds = EditCounts(), EditCounts(), BoundaryCounts()
    posteriors = batched_log_posteriors(
        trained.model, data.features, data.lengths, torch_device, batch_utterances
    )
    for done, (i, log_posteriors) in enumerate(posteriors, 1):
        truth = data.references(i)
        reference = np.asarray(truth.frames, dtype=np.int64)  # (T,)
        argmax = log_posteriors.argmax(axis=1)  # (T,)
        decoded = decode_frames(log_posteriors, params, smooth=True) if smooth else argmax
        confusion += confusion_61(reference, argmax)
        edits += phone_errors(truth.phones, decoded, reference)
        edits_argmax += phone_errors(truth.phones, argmax, reference)
        bounds += boundary_counts(reference, decoded, tolerance)
        if on_progress is not None and (done % batch_utterances == 0 or done == len(data.lengths)):
            on_progress(done, len(data.lengths))
    return EvaluationResult(
        split=split,
        model=str(Path(model_dir)),
        source=str(Path(source)),
        source_kind=data.kind,
        utterances=len(data.utt_ids),
        speakers=len(set(data.speakers)),
        seed=trained.training.get("seed"),
        per_decoder="viterbi" if smooth else "argmax",
        decoder_params=params.to_dict() if smooth else {},
        confusion=confusion,
        edits=edits,
        edits_argmax=edits_argmax,
        boundaries=bounds,
        boundary_tolerance=tolerance * trained.feature.hop_length / trained.feature.sample_rate,
        seconds=time.perf_counter() - started,
        extra={
            **({"decoder_tuned": bool(trained.decoder)} if smooth else {}),
            "skipped": data.skipped,
            "notes": data.notes,
        },
    )


def load_input(
    source: Path,
    split: str,
    feature: FeatureConfig,
    stats: dict[str, Any],
    options: CorpusOptions | None = None,
) -> EvaluationInput:
    """A split of a feature store (``store.json`` inside) or of a corpus directory (TIMIT
    layout, or audio + TextGrids read by ``options``). Split ``all``: every utterance."""
    if not source.exists():
        raise PhonelabelError(f"{source}: no such feature store or corpus directory")
    if (source / "store.json").is_file():
        data = _store_input(source, split, feature, stats)
    else:
        data = _corpus_input(source, split, feature, stats, options)
    if not data.utt_ids:
        raise PhonelabelError(f"{source}: split {split!r} is empty (no utterances to score)")
    return data


def _store_input(
    path: Path, split: str, feature: FeatureConfig, stats: dict[str, Any]
) -> EvaluationInput:
    """A store split, normalised by the model's own rule and statistics (the store keeps raw
    features and per-speaker moments), so store and corpus scores agree exactly."""
    store = open_store(path)
    differences = config_differences(feature, store.config, "store")
    if differences:
        raise PhonelabelError(
            f"{path}: the store's feature config differs from the model's: "
            + "; ".join(differences)
        )
    if split == "all" and "all" not in store.split_names:
        data = _all_splits(store, stats)
    elif split not in store.split_names:
        raise PhonelabelError(
            f"{path}: no split {split!r} (the store has: {', '.join(store.split_names)}, all)"
        )
    else:
        data = store.split(split, prior=stats)
    utterances = data.utterances
    return EvaluationInput(
        kind="store",
        utt_ids=[u.utt_id for u in utterances],
        speakers=[u.speaker for u in utterances],
        lengths=[u.frames for u in utterances],
        features=data.utterance_features,
        references=data.reference,
    )


class _JoinedSplits:
    """Several splits of a store read as one (split ``all``), without copying them."""

    def __init__(self, parts: list[Any]):
        self.parts = parts
        self.index = [(p, i) for p in parts for i in range(len(p.utterances))]
        self.utterances = [u for p in parts for u in p.utterances]

    def utterance_features(self, i: int) -> np.ndarray:
        part, j = self.index[i]
        return part.utterance_features(j)

    def reference(self, i: int) -> Reference:
        part, j = self.index[i]
        return part.reference(j)


def _all_splits(store: Any, prior: dict[str, Any]) -> _JoinedSplits:
    """Every utterance of the store once: train, dev and test (full_test repeats dev+test)."""
    names = [n for n in ("train", "dev", "test") if n in store.split_names]
    moments = store.speaker_moments(names)  # a speaker split by utterance spans the splits
    return _JoinedSplits([store.split(name, prior, moments) for name in names])


def _corpus_input(
    root: Path,
    split: str,
    feature: FeatureConfig,
    stats: dict[str, Any],
    options: CorpusOptions | None = None,
) -> EvaluationInput:
    """Featurise a corpus split exactly as ``featurize`` stores it (same per-utterance
    function, same per-speaker normalisation over the speaker's utterances in the split),
    with the model's statistics as the global prior, so store and corpus scores agree."""
    corpus = open_corpus(root, options or CorpusOptions())
    if split not in corpus.splits:
        raise PhonelabelError(
            f"{root}: no split {split!r} (a corpus has: {', '.join(corpus.splits)})"
        )
    kept, features, references = [], [], []
    skipped = [[file, reason] for file, reason in corpus.problems]
    for utterance in corpus.splits[split]:
        result = featurize_utterance(utterance, feature)
        if result.reason is not None:  # featurize skips these too, and says so
            skipped.append([utterance.utt_id, result.reason])
            continue
        kept.append(utterance)
        features.append(result.features.astype(np.float32, copy=False))  # (T, D) raw
        references.append(Reference(result.labels, result.phones))
    by_speaker: dict[str, list[int]] = {}
    for i, utterance in enumerate(kept):
        by_speaker.setdefault(utterance.speaker, []).append(i)
    for indices in by_speaker.values():
        normalized = normalize_speaker([features[i] for i in indices], feature, stats)
        for i, utterance_features in zip(indices, normalized, strict=True):
            features[i] = utterance_features
    return EvaluationInput(
        kind="corpus",
        utt_ids=[u.utt_id for u in kept],
        speakers=[u.speaker for u in kept],
        lengths=[len(f) for f in features],
        features=features.__getitem__,
        references=references.__getitem__,
        skipped=skipped,
    )


# --- dev scoring during training, and the decoder tuned after it ---------------------------


@dataclass(frozen=True)
class DevScore:
    """Frame accuracy of a model on a split, scored exactly as ``evaluate`` scores it."""

    frame_accuracy_61: float
    frame_accuracy_39: float
    frames: int


@dataclass(frozen=True)
class DecoderTuning:
    """How the decoder's Viterbi smoothing was tuned (config.json's "decoder_tuning")."""

    tuned_on: str
    dev_phone_error_rate_39: float | None
    dev_phone_error_rate_39_argmax: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_posteriors(
    model: PhoneLSTM, split: Any, device: torch.device, batch: int = 64, ranks: Ranks = SINGLE
) -> Iterator[tuple[np.ndarray, Reference]]:
    """(log-posteriors (T, 61) numpy, its Reference) of every utterance of a split (with
    several ranks: of this rank's share), each from a zero state, target delay honoured
    (batched by similar length)."""
    chosen = ranks.items(len(split.utterances))
    lengths = [split.utterances[i].frames for i in chosen]
    for j, log_posteriors in batched_log_posteriors(
        model, lambda j: split.utterance_features(chosen[j]), lengths, device, batch
    ):
        yield log_posteriors, split.reference(chosen[j])


def dev_score(
    model: PhoneLSTM, split: Any, device: torch.device, ranks: Ranks = SINGLE
) -> DevScore:
    """Frame accuracy (61 and folded 39 classes) of ``split``; with several ranks each
    scores its share and the confusions are summed."""
    confusion = np.zeros((NUM_PHONES, NUM_PHONES), dtype=np.int64)
    for log_posteriors, reference in split_posteriors(model, split, device, ranks=ranks):
        confusion += confusion_61(reference.frames, log_posteriors.argmax(-1))
    confusion = sum_array(ranks, confusion)
    return DevScore(
        confusion_accuracy(confusion) or 0.0,
        fold_confusion(confusion).accuracy or 0.0,
        int(confusion.sum()),
    )


def tune_decoder_on(
    model: PhoneLSTM, split: Any, device: torch.device
) -> tuple[DecoderParams, DecoderTuning]:
    """Viterbi smoothing parameters with the lowest 39-class PER on ``split`` (dev), and how
    they were found."""
    posteriors, references = zip(*split_posteriors(model, split, device), strict=True)
    params = tune_decoder(posteriors, references)
    return params, DecoderTuning(
        tuned_on="dev",
        dev_phone_error_rate_39=phone_error_rate(posteriors, references, params),
        dev_phone_error_rate_39_argmax=phone_error_rate(posteriors, references, smooth=False),
    )


def phone_frequencies(labels: np.ndarray) -> list[float]:
    """(61,) share of the labelled frames held by each phone (the aligner's priors)."""
    labels = labels[labels != NO_LABEL].astype(np.int64)
    counts = np.bincount(labels, minlength=NUM_PHONES)[:NUM_PHONES]
    return [float(c) / max(1, len(labels)) for c in counts]


# --- forced alignment ----------------------------------------------------------------------


def _transcript(utterance: Utterance) -> str:
    """The words said: a TextGrid's words tier, or TIMIT's .TXT."""
    if isinstance(utterance, TextGridUtterance):
        words = utterance.word_segments()
        if not words:
            raise PhonelabelError(f"{utterance.alignment}: no words tier to align with")
        return " ".join(word.word for word in words if word.word)
    if utterance.transcript is None:
        raise PhonelabelError(f"{utterance.audio}: no .TXT transcript beside it")
    return read_transcript(utterance.transcript)


@dataclass
class AlignmentEvaluation:
    """Forced alignment of a corpus split scored against its reference alignment."""

    split: str
    utterances: int  # aligned and scored (skipped ones not counted)
    speakers: int
    model: str
    source: str
    errors: AlignmentErrors
    closures_merged: bool
    aligner: dict[str, Any]
    audio_seconds: float
    seconds: float
    skipped: list[list[str]]  # [utt_id, reason]

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "utterances": self.utterances,
            "speakers": self.speakers,
            "model": self.model,
            "source": self.source,
            "task": "forced alignment",
            **self.errors.to_json(),
            "closures_merged": self.closures_merged,
            "scoring": ALIGNMENT_SCORING + (CLOSURES_MERGED if self.closures_merged else ""),
            "aligner": self.aligner,
            "audio_seconds": round(self.audio_seconds, 3),
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
            "version": __version__,
        }


def evaluate_alignment(
    model_dir: str | Path,
    source: str | Path,
    split: str = "test",
    device: str = "auto",
    closures_merged: bool = False,
    params: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
    options: CorpusOptions | None = None,
) -> AlignmentEvaluation:
    """Align every utterance of ``split`` of a corpus with its transcript (TIMIT's .TXT, or
    a TextGrid's words tier) and score the aligned phone boundaries against its alignment
    (.PHN, or the TextGrid's phone tier) (``metrics.ALIGNMENT_SCORING``).
    ``closures_merged``: score closure + release as one phone."""
    source = Path(source)
    corpus = open_corpus(source, options or CorpusOptions())
    if split not in corpus.splits:
        raise PhonelabelError(
            f"{source}: no split {split!r} (a corpus has: {', '.join(corpus.splits)})"
        )
    aligner = load_aligner(model_dir, device, params=params)
    utterances = corpus.splits[split]
    if not utterances:
        raise PhonelabelError(f"{source}: split {split!r} is empty (no utterances to align)")
    errors, skipped, audio_seconds = AlignmentErrors(), [], 0.0
    started = time.perf_counter()  # speed of aligning, without loading the model
    for done, utterance in enumerate(utterances, 1):
        try:
            alignment = align_file(utterance.audio, _transcript(utterance), aligner)
            reference = utterance.segments(read_audio(utterance.audio))
        except PhonelabelError as error:
            skipped.append([utterance.utt_id, str(error)])
            continue
        hypothesis = alignment.phones
        if closures_merged:
            reference, hypothesis = merge_closures(reference), merge_closures(hypothesis)
        errors.add(boundary_pairs(reference, hypothesis))
        audio_seconds += alignment.duration
        if on_progress is not None:
            on_progress(done, len(utterances))
    return AlignmentEvaluation(
        split=split,
        utterances=len(utterances) - len(skipped),
        speakers=len({u.speaker for u in utterances}),
        model=str(Path(model_dir)),
        source=str(source),
        errors=errors,
        closures_merged=closures_merged,
        aligner=aligner.description(),
        audio_seconds=audio_seconds,
        seconds=time.perf_counter() - started,
        skipped=skipped,
    )
