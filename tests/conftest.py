"""Shared fixtures: small real corpora made by code (no data files committed).

``tone_corpus``: a TIMIT-layout tree with NIST SPHERE audio in which every phone is a
distinct chord of sinusoids plus noise, so a model can learn it in seconds.
``synth_corpus``: a tiny corpus from the real festival/flite engines (``phonelabel synth``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soundfile

from phonelabel.workers import available_cores  # (torch-free)

if TYPE_CHECKING:  # torch stays unimported until a fixture needs it
    from phonelabel.config import ModelConfig
    from phonelabel.features import FeatureConfig

RATE = 16000
# fixtures that train or synthesise (their users are slow)
TRAINING_FIXTURES = {"tone_model", "global_tone_model", "synth_corpus", "flite_corpus"}
TONE_PHONES = ("h#", "aa", "iy", "s", "sh", "m", "n", "pau", "tcl", "t", "q", "ow")
FLITE_CORPUS = dict(speakers=4, utterances_per_speaker=2, seed=3, jobs=1, engines=("flite",))

SLOW_TIMEOUT = 600  # seconds for a slow test (pyproject's ``timeout`` for the rest)


MAX_WORKERS = 4  # pytest-xdist processes for -n auto (each builds the session fixtures once)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most MAX_WORKERS."""
    return max(1, min(available_cores(), MAX_WORKERS))


def pytest_configure(config) -> None:
    """Under xdist the cores are shared: each worker's torch (and the commands it starts)
    gets cores / workers threads, unless OMP_NUM_THREADS says otherwise. Two workers with
    two OpenMP threads each on two cores spin against each other (the demo test took 4x as
    long). It works because nothing has imported torch yet (OpenMP reads the variable once,
    when torch loads): keep torch's imports out of this file's top level."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, available_cores() // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def pytest_collection_modifyitems(items) -> None:
    """A test that needs the trained tone model or a synthesised corpus is slow, whether or
    not it says so: ``pytest -m "not slow"`` then never builds them. A slow test may
    take SLOW_TIMEOUT seconds (it may build a session fixture first) unless it sets its own
    ``pytest.mark.timeout``."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


def write_utterance(
    speaker_dir: Path,
    name: str,
    samples: np.ndarray,
    segments: list[tuple[int, int, str]],
    sphere: bool = True,
    upper: bool = True,
) -> Path:
    """Write <name>.WAV (SPHERE or RIFF) and <name>.PHN into ``speaker_dir``; returns the WAV."""
    speaker_dir.mkdir(parents=True, exist_ok=True)
    stem = name.upper() if upper else name.lower()
    wav = speaker_dir / (stem + (".WAV" if upper else ".wav"))
    if sphere:
        soundfile.write(wav, samples, RATE, format="NIST", subtype="PCM_16")
    else:
        soundfile.write(wav, samples, RATE, format="WAV", subtype="PCM_16")
    phn = speaker_dir / (stem + (".PHN" if upper else ".phn"))
    phn.write_text("".join(f"{s} {e} {p}\n" for s, e, p in segments))
    return wav


def tone_utterance(rng: np.random.Generator, pitch: float = 1.0) -> tuple[np.ndarray, list]:
    """Random phone sequence; each phone a distinct chord, 40-150 ms long, h# at both ends."""
    phones = ["h#"] + list(rng.choice(TONE_PHONES[1:], size=int(rng.integers(4, 9)))) + ["h#"]
    pieces, segments, position = [], [], 0
    for phone in phones:
        length = int(rng.integers(640, 2400))
        k = TONE_PHONES.index(phone)
        t = np.arange(length) / RATE
        if phone in ("h#", "pau", "tcl"):
            wave = 0.001 * rng.standard_normal(length)
        else:
            wave = sum(
                np.sin(2 * np.pi * pitch * (200 + 350 * k + 900 * h) * t) / (h + 1)
                for h in range(3)
            )
            wave = 0.3 * wave + 0.01 * rng.standard_normal(length)
        pieces.append(wave)
        segments.append((position, position + length, phone))
        position += length
    return np.concatenate(pieces).astype(np.float32), segments


def make_tone_corpus(root: Path, speakers_per_part: int = 4, utterances: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    for part, sex in (("TRAIN", "M"), ("TEST", "F")):
        for s in range(speakers_per_part):
            speaker_dir = root / part / f"DR{s % 2 + 1}" / f"{sex}TN{chr(65 + s)}9"
            pitch = 0.9 + 0.05 * s
            for u in range(utterances):
                samples, segments = tone_utterance(rng, pitch)
                write_utterance(speaker_dir, f"SX{100 + u}", samples, segments)
    return root


@pytest.fixture
def one_thread():
    """Torch on one thread for a tiny model: a second thread only adds synchronisation (and
    on a busy 2-core machine, several times the wall time)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    return make_tone_corpus(tmp_path_factory.mktemp("tone") / "corpus")


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """A tiny real corpus from festival + flite: 4 TRAIN + 4 TEST speakers x 3 utterances,
    seed 0, clean (``synthesize(out, speakers=8, utterances_per_speaker=3, seed=0,
    conditions="none")``): the engines' own audio, so label placement can be checked against
    it; ``test_conditions.py`` covers the recording conditions the default adds."""
    from phonelabel.corpus.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "corpus"
    synthesize(out, speakers=8, utterances_per_speaker=3, seed=0, jobs=2, conditions="none")
    return out


@pytest.fixture(scope="session")
def flite_corpus(tmp_path_factory) -> Path:
    """4 speakers x 2 utterances from flite alone, seed 3, clean (``FLITE_CORPUS``): what
    conditions and silence padding are compared against (read it, do not write into it)."""
    from phonelabel.corpus.synth import synthesize

    out = tmp_path_factory.mktemp("flite") / "corpus"
    synthesize(out, conditions="none", **FLITE_CORPUS)
    return out


@pytest.fixture(scope="session")
def tone_store(tone_corpus, tmp_path_factory) -> Path:
    """The tone corpus featurized (default MFCC config) into a feature store."""
    from phonelabel.store import featurize

    out = tmp_path_factory.mktemp("tone_store") / "features"
    featurize(tone_corpus, out, jobs=1)
    return out


@pytest.fixture(scope="session")
def tone_global_store(tone_corpus, tmp_path_factory) -> Path:
    """The tone corpus featurized with global normalisation (read it, do not write into it)."""
    from phonelabel.features import FeatureConfig
    from phonelabel.store import featurize

    out = tmp_path_factory.mktemp("tone_global_store") / "features"
    featurize(tone_corpus, out, FeatureConfig(normalization="global"), jobs=1)
    return out


@pytest.fixture(scope="session")
def tone_model(tone_store, tmp_path_factory) -> Path:
    """A small model dir trained with phonelabel.train on the tone corpus (seconds, CPU)."""
    from phonelabel.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tone_model") / "model"
    config = TrainConfig.of(  # bare mechanics: no target delay or SpecAugment (6 epochs)
        hidden=48,
        layers=1,
        k1=10,
        batch_streams=4,
        epochs=6,
        lr=0.01,
        seed=0,
        device="cpu",
        delay=0,
        time_mask=0,
        freq_mask=0,
    )
    train(tone_store, out, config)
    return out


# --- trivial predictors: what an accuracy threshold must sit well above -------------------


def constant_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy on ``test_labels`` of always answering train's commonest label."""
    values, counts = np.unique(train_labels, return_counts=True)
    return float(np.mean(test_labels == values[np.argmax(counts)]))


def per_frame_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    steps: int = 300,
) -> float:
    """Accuracy of a memoryless predictor: multinomial logistic regression on each frame
    alone (no context), fitted on train, scored on test. What a model that ignores
    everything but the current frame can reach."""
    import torch

    classes, y = np.unique(train_labels, return_inverse=True)
    x = torch.from_numpy(np.asarray(train_features, np.float32))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    targets = torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    weight = (0.01 * torch.randn(x.shape[1], len(classes), generator=generator)).requires_grad_()
    bias = torch.zeros(len(classes), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(x @ weight + bias, targets).backward()
        optimizer.step()
    with torch.no_grad():
        test = (torch.from_numpy(np.asarray(test_features, np.float32)) - mean) / std
        predicted = classes[(test @ weight + bias).argmax(1).numpy()]
    return float(np.mean(predicted == test_labels))


def store_baselines(store: Path, split: str, fold: bool = False) -> tuple[float, float]:
    """(constant, per-frame) accuracy on a feature store's ``split``, both fitted on its
    train split; 61 phones, or the 39 folded classes (q frames dropped) when ``fold``."""
    from phonelabel.features import NO_LABEL
    from phonelabel.phones import FOLD_INDEX
    from phonelabel.store import open_store

    opened = open_store(store)

    def frames(name: str) -> tuple[np.ndarray, np.ndarray]:
        part = opened.split(name)
        labels = np.asarray(part.labels).astype(np.int64)
        keep = labels != NO_LABEL
        features, labels = part.normalized_features()[keep], labels[keep]
        if fold:
            labels = FOLD_INDEX[labels]
            features, labels = features[labels >= 0], labels[labels >= 0]
        return features, labels

    (train_x, train_y), (test_x, test_y) = frames("train"), frames(split)
    return (
        constant_accuracy(train_y, test_y),
        per_frame_accuracy(train_x, train_y, test_x, test_y),
    )


def tone_recording(seconds: float, seed: int = 0) -> np.ndarray:
    """A recording of ``seconds`` of tone utterances end to end (no labels kept)."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < seconds * RATE:
        pieces.append(tone_utterance(rng)[0])
        total += len(pieces[-1])
    return np.concatenate(pieces)[: int(seconds * RATE)]


def save_random_model(
    out: Path, model: ModelConfig, features: FeatureConfig, audio: np.ndarray, decoder
) -> Path:
    """A model dir of random weights (seed 0) with a sharpened, peaky output, as a trained
    model's (many phone changes to compare, Viterbi paths that merge), its statistics from
    ``audio``: a labelling test's model in a second, no training."""
    import torch

    from phonelabel.features import compute_features, global_stats
    from phonelabel.model import PhoneLSTM
    from phonelabel.modeldir import TrainedModel, save_model

    torch.manual_seed(0)
    lstm = PhoneLSTM(model)
    with torch.no_grad():
        lstm.output.weight.mul_(20)
    stats = global_stats(compute_features(audio, features))
    save_model(out, TrainedModel(lstm.eval(), features, stats, decoder.to_dict()))
    return out
