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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel import __version__
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig
from phonelabel.metrics import (
    SCORING_CONVENTION,
    BoundaryCounts,
    EditCounts,
    boundary_counts,
    confusion_61,
    fold_confusion,
    most_confused,
    per_phone_accuracy,
    phone_errors,
)
from phonelabel.phones import FOLD_INDEX, NUM_PHONES, PHONES_39, PHONES_61

BOUNDARY_TOLERANCE = 0.020  # seconds


@dataclass
class EvaluationInput:
    """One split's utterances, whichever kind of source they came from."""

    kind: str  # "store" or "corpus"
    utt_ids: list[str]
    speakers: list[str]
    lengths: list[int]  # frames per utterance
    features: Callable[[int], np.ndarray]  # i -> (T_i, D) normalised float32
    labels: Callable[[int], np.ndarray]  # i -> (T_i,) uint8 61-class, NO_LABEL in gaps
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
        return int(np.trace(self.confusion)) / self.frames if self.frames else None

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
    device: str = "cpu",
    batch_utterances: int = 64,
    smooth: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Score the model in ``model_dir`` on ``split`` of ``source`` (a feature store or a
    TIMIT-layout corpus directory). ``on_progress(done, total)`` after each batch."""
    import torch  # deferred: keeps `phonelabel --help` fast

    from phonelabel.decode import DecoderParams, decode_frames
    from phonelabel.model import resolve_device, utterance_log_posteriors
    from phonelabel.modeldir import load_model

    if batch_utterances < 1:
        raise PhonelabelError(f"batch size must be at least 1, got {batch_utterances}")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    trained = load_model(model_dir, torch_device)
    data = load_input(Path(source), split, trained.feature, trained.stats)
    params = DecoderParams.from_dict(trained.decoder)
    tolerance = round(BOUNDARY_TOLERANCE * trained.feature.sample_rate / trained.feature.hop_length)

    confusion = np.zeros((NUM_PHONES, NUM_PHONES), dtype=np.int64)
    edits, edits_argmax, bounds = EditCounts(), EditCounts(), BoundaryCounts()
    order = sorted(range(len(data.lengths)), key=lambda i: data.lengths[i])  # less padding
    for done in range(0, len(order), batch_utterances):
        chosen = order[done : done + batch_utterances]
        inputs = [torch.from_numpy(np.array(data.features(i))).to(torch_device) for i in chosen]
        outputs = utterance_log_posteriors(trained.model, inputs)  # [(T_i, 61)]
        for i, log_posteriors in zip(chosen, outputs, strict=True):
            log_posteriors = log_posteriors.float().cpu().numpy()
            reference = np.asarray(data.labels(i), dtype=np.int64)  # (T,)
            argmax = log_posteriors.argmax(axis=1)  # (T,)
            decoded = decode_frames(log_posteriors, params, smooth=True) if smooth else argmax
            confusion += confusion_61(reference, argmax)
            edits += phone_errors(reference, decoded)
            edits_argmax += phone_errors(reference, argmax)
            bounds += boundary_counts(reference, decoded, tolerance)
        if on_progress is not None:
            on_progress(min(done + batch_utterances, len(order)), len(order))
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
    source: Path, split: str, feature: FeatureConfig, stats: dict[str, Any]
) -> EvaluationInput:
    """A split of a feature store (``store.json`` inside) or of a TIMIT-layout corpus."""
    if not source.exists():
        raise PhonelabelError(f"{source}: no such feature store or corpus directory")
    if (source / "store.json").is_file():
        data = _store_input(source, split, feature, stats)
    else:
        data = _corpus_input(source, split, feature, stats)
    if not data.utt_ids:
        raise PhonelabelError(f"{source}: split {split!r} is empty (no utterances to score)")
    return data


def config_differences(model: FeatureConfig, store: FeatureConfig) -> list[str]:
    """'name: <model value> (model) vs <store value> (store)' for every differing field."""
    return [
        f"{f.name}: {getattr(model, f.name)!r} (model) vs {getattr(store, f.name)!r} (store)"
        for f in fields(FeatureConfig)
        if getattr(model, f.name) != getattr(store, f.name)
    ]


def _store_input(
    path: Path, split: str, feature: FeatureConfig, stats: dict[str, Any]
) -> EvaluationInput:
    from phonelabel.store import open_store

    store = open_store(path)
    differences = config_differences(feature, store.config)
    if differences:
        raise PhonelabelError(
            f"{path}: the store's feature config differs from the model's: "
            + "; ".join(differences)
        )
    if split not in store.split_names:
        raise PhonelabelError(
            f"{path}: no split {split!r} (the store has: {', '.join(store.split_names)})"
        )
    data = store.split(split)
    features, notes = data.utterance_features, []
    if not _same_stats(stats, store.stats):
        # A model trained on another store: its inputs must be normalised its own way.
        if feature.normalization == "global":
            features = _renormalized(data.utterance_features, store.stats, stats)
            notes.append("store normalised with other statistics; re-normalised to the model's")
        else:
            notes.append(
                "store normalised with other global statistics than the model's (per-speaker"
                " normalisation: only the prior differs; evaluate the corpus dir to be exact)"
            )
    utterances = data.utterances
    return EvaluationInput(
        kind="store",
        utt_ids=[u.utt_id for u in utterances],
        speakers=[u.speaker for u in utterances],
        lengths=[u.frames for u in utterances],
        features=features,
        labels=data.utterance_labels,
        notes=notes,
    )


def _same_stats(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in ("mean", "std"))


def _renormalized(
    features: Callable[[int], np.ndarray], have: dict[str, Any], want: dict[str, Any]
) -> Callable[[int], np.ndarray]:
    """Globally normalised features under ``have`` -> the same under ``want`` (affine)."""
    have_mean, have_std = np.asarray(have["mean"]), np.asarray(have["std"])
    want_mean, want_std = np.asarray(want["mean"]), np.asarray(want["std"])
    scale = (have_std / want_std).astype(np.float32)
    shift = ((have_mean - want_mean) / want_std).astype(np.float32)
    return lambda i: np.asarray(features(i)) * scale + shift


def _corpus_input(
    root: Path, split: str, feature: FeatureConfig, stats: dict[str, Any]
) -> EvaluationInput:
    """Featurise a corpus split exactly as ``featurize`` stores it (same per-utterance
    function, same per-speaker normalisation over the speaker's utterances in the split),
    with the model's statistics as the global prior, so store and corpus scores agree."""
    from phonelabel.corpus.timit import SPLITS, assign_splits, find_utterances
    from phonelabel.features import normalize, speaker_stats
    from phonelabel.store import featurize_utterance

    if split not in SPLITS:
        raise PhonelabelError(f"{root}: no split {split!r} (a corpus has: {', '.join(SPLITS)})")
    kept, features, labels, skipped = [], [], [], []
    for utterance in assign_splits(find_utterances(root))[split]:
        result = featurize_utterance(utterance.audio, utterance.phn, feature)
        if result.reason is not None:  # featurize skips these too, and says so
            skipped.append([utterance.utt_id, result.reason])
            continue
        kept.append(utterance)
        features.append(result.features.astype(np.float32, copy=False))  # (T, D) raw
        labels.append(result.labels)
    if feature.normalization == "speaker":
        by_speaker: dict[str, list[int]] = {}
        for i, utterance in enumerate(kept):
            by_speaker.setdefault(utterance.speaker, []).append(i)
        for indices in by_speaker.values():
            mean, std = speaker_stats(np.concatenate([features[i] for i in indices]), stats)
            for i in indices:
                features[i] = normalize(features[i], mean, std)
    else:
        features = [normalize(f, stats["mean"], stats["std"]) for f in features]
    return EvaluationInput(
        kind="corpus",
        utt_ids=[u.utt_id for u in kept],
        speakers=[u.speaker for u in kept],
        lengths=[len(f) for f in features],
        features=features.__getitem__,
        labels=labels.__getitem__,
        skipped=skipped,
    )


# --- forced alignment ----------------------------------------------------------------------


def evaluate_alignment(
    model_dir: str | Path,
    source: str | Path,
    split: str = "test",
    device: str = "cpu",
    closures_merged: bool = False,
    params: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Align every utterance of ``split`` of a TIMIT-layout corpus with its transcript
    (.TXT) and score the aligned phone boundaries against its .PHN (``metrics.
    ALIGNMENT_SCORING``). ``closures_merged``: score closure + release as one phone."""
    from phonelabel.align import align_file, load_aligner, read_transcript
    from phonelabel.corpus.timit import SPLITS, assign_splits, find_utterances, read_phn
    from phonelabel.metrics import ALIGNMENT_SCORING, AlignmentErrors, boundary_pairs
    from phonelabel.metrics import merge_closures as merged

    source = Path(source)
    if split not in SPLITS:
        raise PhonelabelError(f"{source}: no split {split!r} (a corpus has: {', '.join(SPLITS)})")
    aligner = load_aligner(model_dir, device, params=params)
    utterances = assign_splits(find_utterances(source))[split]
    if not utterances:
        raise PhonelabelError(f"{source}: split {split!r} is empty (no utterances to align)")
    errors, skipped, audio_seconds = AlignmentErrors(), [], 0.0
    started = time.perf_counter()  # speed of aligning, without loading the model
    for done, utterance in enumerate(utterances, 1):
        try:
            if utterance.txt is None or utterance.phn is None:
                raise PhonelabelError("no .TXT transcript or no .PHN reference beside the audio")
            text = read_transcript(utterance.txt)  # a TextGrid's words tier plugs in here
            alignment = align_file(utterance.audio, text, aligner)
            reference = read_phn(utterance.phn)
        except PhonelabelError as error:
            skipped.append([utterance.utt_id, str(error)])
            continue
        hypothesis = alignment.phones
        if closures_merged:
            reference, hypothesis = merged(reference), merged(hypothesis)
        errors.add(boundary_pairs(reference, hypothesis))
        audio_seconds += alignment.duration
        if on_progress is not None:
            on_progress(done, len(utterances))
    seconds = time.perf_counter() - started
    scoring = ALIGNMENT_SCORING + (" Closures merged." if closures_merged else "")
    return {
        "split": split,
        "utterances": len(utterances) - len(skipped),
        "speakers": len({u.speaker for u in utterances}),
        "model": str(Path(model_dir)),
        "source": str(source),
        "task": "forced alignment",
        **errors.to_json(),
        "closures_merged": closures_merged,
        "scoring": scoring,
        "aligner": aligner.description(),
        "audio_seconds": round(audio_seconds, 3),
        "seconds": round(seconds, 3),
        "skipped": skipped,
        "version": __version__,
    }
