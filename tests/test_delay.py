"""Target delay end to end: a model trained with ``--delay 2`` on a corpus whose labels
change every few frames is scored by ``evaluate`` and placed by ``label`` on the frame the
label belongs to, not one before or after (a one-frame shift costs a fifth of the frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RATE, TONE_PHONES, constant_accuracy, write_utterance
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.corpus.timit import read_phn
from phonelabel.evaluate import evaluate
from phonelabel.features import NO_LABEL
from phonelabel.label import label_file, load_labeller
from phonelabel.model import pad_for_delay
from phonelabel.modeldir import load_model
from phonelabel.phones import PHONE_INDEX
from phonelabel.store import featurize, open_store

DELAY = 2
HOP = 160
CHORDS = ("aa", "iy", "s", "sh", "m", "n")
SHIFT_MARGIN = 0.08  # a one-frame shift must cost at least this much accuracy


def fast_utterance(rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """h#, then 20-30 chords of 3-6 frames each (no phone twice in a row), then h#."""
    phones, previous = ["h#"], None
    for _ in range(int(rng.integers(20, 31))):
        previous = rng.choice([p for p in CHORDS if p != previous])
        phones.append(str(previous))
    phones.append("h#")
    pieces, segments, position = [], [], 0
    for phone in phones:
        length = HOP * (int(rng.integers(8, 12)) if phone == "h#" else int(rng.integers(3, 7)))
        t = np.arange(length) / RATE
        if phone == "h#":
            wave = 0.001 * rng.standard_normal(length)
        else:
            k = TONE_PHONES.index(phone)
            wave = 0.3 * sum(np.sin(2 * np.pi * (200 + 350 * k + 900 * h) * t) for h in range(2))
            wave = wave + 0.01 * rng.standard_normal(length)
        pieces.append(wave)
        segments.append((position, position + length, phone))
        position += length
    return np.concatenate(pieces).astype(np.float32), segments


def make_fast_corpus(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for part, speakers, utterances in (("TRAIN", 4, 6), ("TEST", 4, 3)):
        for s in range(speakers):
            speaker_dir = root / part / "DR1" / f"M{part[1]}S{chr(65 + s)}9"
            for u in range(utterances):
                write_utterance(speaker_dir, f"SX{u + 1}", *fast_utterance(rng))
    return root


def accuracy_at_offset(model, split, offset: int) -> float:
    """Frame accuracy when output ``t + offset`` is taken as frame t's label (the model's
    delay is the right offset; evaluate and label must use exactly it)."""
    right = total = 0
    for u in range(len(split.utterances)):
        features = torch.from_numpy(np.array(split.utterance_features(u)))
        labels = np.asarray(split.utterance_labels(u)).astype(np.int64)
        padded = pad_for_delay(features, DELAY + 1)  # room for offset DELAY + 1
        log_posteriors, _ = model.posteriors(padded[None])  # (1, T + d + 1, 61)
        predicted = log_posteriors[0, offset : offset + len(labels)].argmax(-1).numpy()
        scored = labels != NO_LABEL
        right += int(np.sum(predicted[scored] == labels[scored]))
        total += int(scored.sum())
    return right / total


def labels_at(segments, seconds: np.ndarray) -> np.ndarray:
    ends = np.array([s.end for s in segments])
    names = np.array([s.phone for s in segments])
    return names[np.minimum(np.searchsorted(ends, seconds, side="right"), len(names) - 1)]


@pytest.mark.slow
def test_delayed_model_is_scored_and_labelled_on_the_frame_its_label_belongs_to(
    tmp_path, one_thread
):
    corpus = make_fast_corpus(tmp_path / "corpus")
    store = tmp_path / "store"
    featurize(corpus, store, jobs=1)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        ["train", str(store), "--out", str(out), "--delay", str(DELAY), "--hidden", "32",
         "--layers", "1", "--k1", "10", "--batch-streams", "4", "--lr", "0.02",
         "--epochs", "8", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trained = load_model(out)
    assert trained.model.config.delay == DELAY
    model = trained.model.eval()

    # evaluate: exactly the accuracy of output t + d as frame t's label ...
    test = open_store(store).split("test")
    accuracy = {o: accuracy_at_offset(model, test, o) for o in (DELAY - 1, DELAY, DELAY + 1)}
    report = evaluate(out, store, "test")
    assert report.frame_accuracy_61 == pytest.approx(accuracy[DELAY], abs=1e-12)
    # ... and the model learned that alignment: one frame early or late is visibly worse
    for offset in (DELAY - 1, DELAY + 1):
        assert accuracy[DELAY] > accuracy[offset] + SHIFT_MARGIN, (
            f"offset {offset}: {accuracy[offset]:.3f} vs {accuracy[DELAY]:.3f} at the delay "
            f"{DELAY}; a one-frame shift must cost > {SHIFT_MARGIN}"
        )
    train_labels = np.asarray(open_store(store).split("train").labels)
    test_labels = np.asarray(test.labels)
    constant = constant_accuracy(train_labels, test_labels[test_labels != NO_LABEL])
    assert accuracy[DELAY] > constant + 0.4, f"{accuracy[DELAY]:.3f} vs constant {constant:.3f}"

    # label: the segments it writes agree with the reference .PHN at each frame centre, and
    # better than the same segments moved one frame (10 ms) either way
    labeller = load_labeller(out, "cpu", smooth=False)
    agreement = {-1: 0, 0: 0, 1: 0}
    frames = 0
    for wav in sorted((corpus / "TEST").rglob("*.WAV")):
        segments = label_file(wav, labeller).segments
        reference = read_phn(wav.with_suffix(".PHN"))
        centres = (200 + HOP * np.arange(int((reference[-1].end * RATE - 400) // HOP) + 1)) / RATE
        truth = labels_at(reference, centres)
        for shift in agreement:  # shift +1: each output placed one frame later
            agreement[shift] += int(
                np.sum(labels_at(segments, centres - shift * HOP / RATE) == truth)
            )
        frames += len(centres)
    rate = {shift: count / frames for shift, count in agreement.items()}
    for shift in (-1, 1):
        assert rate[0] > rate[shift] + SHIFT_MARGIN, (
            f"label moved {shift:+d} frame agrees {rate[shift]:.3f} vs {rate[0]:.3f} as written"
        )
    assert abs(rate[0] - accuracy[DELAY]) < 0.1  # label and evaluate tell the same story
    assert set(PHONE_INDEX) >= set(CHORDS)
