from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import tone_utterance, write_utterance
from typer.testing import CliRunner

from phonelabel.audio import read_audio
from phonelabel.cli import app
from phonelabel.corpus.timit import read_phn
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    NO_LABEL,
    FeatureConfig,
    Moments,
    compute_features,
    frame_count,
    frame_labels,
    global_stats,
    normalization_stats,
    normalize,
)
from phonelabel.store import featurize, open_store

GLOBAL = FeatureConfig(normalization="global")


def _raw(path: str) -> np.ndarray:
    return compute_features(read_audio(path).samples, FeatureConfig())


def test_store_round_trip(tone_corpus, tmp_path):
    report = featurize(tone_corpus, tmp_path / "feat", jobs=1)
    assert not report.noop and report.skipped == []
    assert {k: (v.speakers, v.utterances) for k, v in report.splits.items()} == {
        "train": (4, 24),
        "dev": (2, 12),
        "test": (2, 12),
        "full_test": (4, 24),
    }
    store = open_store(tmp_path / "feat")
    assert store.config == FeatureConfig()
    assert store.split_names == ["train", "dev", "test", "full_test"]
    # full_test holds every TEST utterance, featurized once and identical to dev/test's
    full = store.split("full_test")
    by_id = {u.utt_id: i for i, u in enumerate(full.utterances)}
    for name in ("dev", "test"):
        split = store.split(name)
        for i, utt in enumerate(split.utterances):
            j = by_id.pop(utt.utt_id)
            np.testing.assert_array_equal(split.utterance_features(i), full.utterance_features(j))
            np.testing.assert_array_equal(split.utterance_labels(i), full.utterance_labels(j))
    assert by_id == {}
    info = json.loads((tmp_path / "feat" / "store.json").read_text())
    assert info["phones"][27] == "h#" and info["corpus"] == str(tone_corpus.resolve())
    header = (tmp_path / "feat" / "train" / "utterances.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["utt_id", "speaker", "offset", "frames", "path", "phones"]
    train = store.split("train")
    assert isinstance(train.raw, np.memmap) and train.raw.dtype == np.float32
    assert train.labels.dtype == np.uint8 and train.raw.shape == (train.num_frames, 39)
    # the stats are the raw train features' global statistics
    raws = [_raw(u.path) for u in train.utterances]  # each utterance's features, alone
    raw_train = np.concatenate(raws)
    np.testing.assert_allclose(store.stats["mean"], global_stats(raw_train)["mean"], atol=1e-4)
    offset = 0
    for i, utt in enumerate(train.utterances):
        assert utt.offset == offset and utt.utt_id.startswith(utt.speaker + "_")
        offset += utt.frames
        samples = read_audio(utt.path).samples
        assert utt.frames == frame_count(len(samples))
        segments = read_phn(Path(utt.path).with_suffix(".PHN"))
        np.testing.assert_array_equal(
            train.utterance_labels(i), frame_labels(segments, utt.frames, FeatureConfig())
        )
        assert utt.phones == tuple(s.phone for s in segments)  # PER's reference tokens
        np.testing.assert_array_equal(train.raw[utt.offset : utt.offset + utt.frames], raws[i])
    # speaker normalisation: each speaker's frames with that speaker's blended stats
    first = train.utterances[0].speaker
    rows = [i for i, u in enumerate(train.utterances) if u.speaker == first]
    raw = [raws[i] for i in rows]
    moments = Moments().add(np.concatenate(raw), FeatureConfig())
    mean, std = normalization_stats(FeatureConfig(), store.stats, moments)
    np.testing.assert_allclose(
        train.utterance_features(rows[1]), normalize(raw[1], mean, std), atol=1e-5
    )
    np.testing.assert_array_equal(
        train.normalized_features()[train.utterances[rows[1]].offset],
        train.utterance_features(rows[1])[0],
    )


def test_global_normalisation_uses_train_statistics(tone_global_store):
    store = open_store(tone_global_store)
    assert store.config == GLOBAL
    train = store.split("train").normalized_features()
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-3)
    test = store.split("test")
    np.testing.assert_allclose(
        test.utterance_features(0),
        normalize(_raw(test.utterances[0].path), store.stats["mean"], store.stats["std"]),
        atol=1e-5,
    )


@pytest.mark.slow
def test_parallel_workers_write_the_same_store(tone_corpus, tone_store, tmp_path):
    featurize(tone_corpus, tmp_path / "two", jobs=2)  # tone_store: the same, with jobs=1
    for split in ("train", "dev", "test"):
        for name in ("features.npy", "labels.npy"):
            one = (tone_store / split / name).read_bytes()
            assert one == (tmp_path / "two" / split / name).read_bytes()


def test_rerun_is_a_noop_unless_something_changed(tone_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(tone_corpus, corpus)
    out = tmp_path / "feat"
    featurize(corpus, out, jobs=1)
    features = out / "train" / "features.npy"
    stamp = features.stat().st_mtime_ns
    assert featurize(corpus, out, jobs=1).noop
    assert features.stat().st_mtime_ns == stamp
    assert not featurize(corpus, out, jobs=1, force=True).noop
    assert featurize(corpus, out, FeatureConfig(kind="fbank"), jobs=1).noop is False
    assert open_store(out).split("dev").raw.shape[1] == 120
    phn = next(corpus.glob("TRAIN/*/*/*.PHN"))
    os.utime(phn, ns=(phn.stat().st_atime_ns, phn.stat().st_mtime_ns + 10**9))
    assert not featurize(corpus, out, FeatureConfig(kind="fbank"), jobs=1).noop


def test_out_that_is_not_a_store_is_refused_and_left_alone(tone_corpus, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(PhonelabelError, match="not a feature store"):
        featurize(tone_corpus, out, jobs=1)
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(PhonelabelError, match="not a directory"):
        featurize(tone_corpus, tmp_path / "file", jobs=1)
    with pytest.raises(PhonelabelError, match="no store.json"):
        open_store(out)


def test_interrupted_featurize_keeps_the_previous_store(tone_corpus, tone_store, tmp_path):
    out = tmp_path / "feat"
    shutil.copytree(tone_store, out)  # a finished store of the tone corpus
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupt(done: int, total: int) -> None:
        if done == total - 3:  # train already done: every split must stay untouched
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        featurize(tone_corpus, out, FeatureConfig(kind="fbank"), jobs=1, on_progress=interrupt)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert open_store(out).config.kind == "mfcc"
    # a fresh OUT interrupted holds no split; a temp dir left by a killed run is cleaned up
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        featurize(tone_corpus, fresh, jobs=1, on_progress=interrupt)
    assert not fresh.exists()  # made by the run and left empty: removed
    (fresh / ".train.killed.tmp").mkdir(parents=True)
    featurize(tone_corpus, fresh, jobs=1)
    assert sorted(p.name for p in fresh.iterdir()) == [
        "dev",
        "full_test",
        "store.json",
        "test",
        "train",
    ]


def _good(speaker_dir: Path, name: str, rng: np.random.Generator) -> None:
    samples, segments = tone_utterance(rng)
    write_utterance(speaker_dir, name, samples, segments)


@pytest.fixture
def messy_corpus(tmp_path) -> Path:
    """A TIMIT-layout tree with one good utterance per speaker and one bad case each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "messy"
    train = root / "TRAIN" / "DR1"
    cases = {}
    for speaker in ("MAAA9", "MBBB9", "MCCC9", "MDDD9", "MEEE9", "MFFF9", "MGGG9"):
        _good(train / speaker, "SX1", rng)
    (train / "MAAA9" / "SX2.WAV").write_bytes(b"garbage, not audio" * 20)
    (train / "MAAA9" / "SX2.PHN").write_text("0 100 h#\n")
    cases["maaa9_sx2"] = "not readable audio"
    write_utterance(train / "MBBB9", "SX2", np.zeros(300, np.float32), [(0, 300, "h#")])
    cases["mbbb9_sx2"] = "shorter than one window"
    _good(train / "MCCC9", "SX2", rng)
    (train / "MCCC9" / "SX2.PHN").unlink()
    cases["mccc9_sx2"] = "no .PHN"
    write_utterance(train / "MDDD9", "SX2", np.zeros(4000, np.float32), [(0, 4000, "xx")])
    cases["mddd9_sx2"] = "unknown phone label"
    write_utterance(train / "MEEE9", "SX2", np.zeros(4000, np.float32), [(0, 4800, "h#")])
    cases["meee9_sx2"] = "past the end of the audio"
    nan = train / "MFFF9" / "SX2.WAV"  # a float WAV can hold NaN
    soundfile.write(nan, np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    (train / "MFFF9" / "SX2.PHN").write_text("0 4000 h#\n")
    cases["mfff9_sx2"] = "NaN or infinite"
    write_utterance(train / "MGGG9", "SX2", np.zeros(4000, np.float32), [])
    cases["mggg9_sx2"] = "empty"
    _good(root / "TEST" / "DR1" / "FTST9", "SX1", rng)
    return root, cases


def test_bad_utterances_are_skipped_and_reported(messy_corpus, tmp_path):
    root, cases = messy_corpus
    report = featurize(root, tmp_path / "feat", jobs=1)
    skipped = dict(report.splits["train"].skipped)
    assert sorted(skipped) == sorted(cases)
    for utt_id, reason in cases.items():
        assert reason in skipped[utt_id], (utt_id, skipped[utt_id])
    assert report.splits["train"].utterances == 7
    store = open_store(tmp_path / "feat")
    assert [u.utt_id for u in store.split("train").utterances] == sorted(
        f"{s}_sx1" for s in ("maaa9", "mbbb9", "mccc9", "mddd9", "meee9", "mfff9", "mggg9")
    )
    assert (
        len(
            json.loads((tmp_path / "feat" / "store.json").read_text())["splits"]["train"]["skipped"]
        )
        == 7
    )
    with pytest.raises(PhonelabelError, match="maaa9_sx2: .*not readable audio"):
        featurize(root, tmp_path / "strict", jobs=1, strict=True)
    assert not (tmp_path / "strict" / "train").exists()


def test_strict_featurize_command_stops_at_the_first_bad_utterance(messy_corpus, tmp_path):
    root, _ = messy_corpus
    out = tmp_path / "strict"
    args = ["featurize", str(root), str(out), "--jobs", "1"]
    result = CliRunner().invoke(app, [*args, "--strict"])
    assert result.exit_code == 2, result.output
    assert "maaa9_sx2" in result.output and "not readable audio" in result.output
    assert "Traceback" not in result.output and not (out / "train").exists()
    lenient = CliRunner().invoke(app, args)  # without --strict the same corpus is featurized
    assert lenient.exit_code == 0 and (out / "train").is_dir()


def test_other_rates_and_stereo_are_converted_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    speaker_dir = tmp_path / "c" / "train" / "dr1" / "mxyz9"
    samples, segments = tone_utterance(rng)
    write_utterance(speaker_dir, "sx1", samples, segments, sphere=False, upper=False)
    # the same utterance at 8 kHz in stereo; its .PHN counts 8 kHz samples
    stereo = np.stack([samples[::2], samples[::2]], axis=1)
    soundfile.write(speaker_dir / "sx2.wav", stereo, 8000)
    (speaker_dir / "sx2.phn").write_text(
        "".join(f"{s // 2} {e // 2} {p}\n" for s, e, p in segments)
    )
    report = featurize(tmp_path / "c", tmp_path / "feat", jobs=1)
    assert (report.resampled, report.downmixed, report.skipped) == (1, 1, [])
    train = open_store(tmp_path / "feat").split("train")
    native, converted = train.utterance_labels(0), train.utterance_labels(1)
    assert abs(len(native) - len(converted)) <= 1
    n = min(len(native), len(converted))
    assert np.mean(native[:n] == converted[:n]) > 0.95
    assert NO_LABEL not in native


def test_a_16k_phn_beside_higher_rate_audio_is_reported_not_half_used(tmp_path):
    rng = np.random.default_rng(0)
    speaker_dir = tmp_path / "c" / "train" / "dr1" / "mxyz9"
    samples, segments = tone_utterance(rng)
    write_utterance(speaker_dir, "sx1", samples, segments, sphere=False, upper=False)
    soundfile.write(speaker_dir / "sx2.wav", np.repeat(samples, 2), 32000)  # 32 kHz audio,
    (speaker_dir / "sx2.phn").write_text("".join(f"{s} {e} {p}\n" for s, e, p in segments))
    report = featurize(tmp_path / "c", tmp_path / "feat", jobs=1)
    assert [utt for utt, _ in report.skipped] == ["mxyz9_sx2"]  # ... a 16 kHz .PHN
    assert "look like 16000 Hz ones, but the audio is 32000 Hz" in report.skipped[0][1]


def test_featurize_command(tone_corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["featurize", str(tone_corpus), str(tmp_path / "f"), "--jobs", "1", "--kind", "fbank"]
    )
    assert result.exit_code == 0, result.output
    for word in ("train", "dev", "test", "speakers", "hours", "skipped"):
        assert word in result.output
    assert open_store(tmp_path / "f").config == FeatureConfig(kind="fbank")
    again = runner.invoke(
        app, ["featurize", str(tone_corpus), str(tmp_path / "f"), "--kind", "fbank"]
    )
    assert again.exit_code == 0 and "up to date" in again.output
    bad = runner.invoke(app, ["featurize", str(tone_corpus), str(tmp_path), "--jobs", "1"])
    assert bad.exit_code == 2 and "not a feature store" in bad.output
    bad = runner.invoke(app, ["featurize", str(tone_corpus), str(tmp_path / "g"), "--kind", "plp"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_featurize_real_synthetic_speech(synth_corpus, tmp_path):
    report = featurize(synth_corpus, tmp_path / "feat", jobs=2)
    assert report.skipped == [] and all(s.frames > 0 for s in report.splits.values())
    train = open_store(tmp_path / "feat").split("train")
    labels = np.asarray(train.labels)
    assert len(np.unique(labels[labels != NO_LABEL])) > 20  # real phones, not one class
    assert np.all(np.isfinite(train.normalized_features()))


def test_one_speaker_name_in_train_and_test_is_one_clear_error(tone_corpus, tmp_path):
    """Two folders FTNA9 (TRAIN/DR1 and TEST/DR1) make the same utterance ids."""
    corpus = tmp_path / "corpus"
    shutil.copytree(tone_corpus, corpus)
    train_speaker = next((corpus / "TRAIN").glob("*/*"))
    shutil.copytree(train_speaker, corpus / "TEST" / "DR1" / train_speaker.name)
    with pytest.raises(PhonelabelError, match="rename one speaker folder"):
        featurize(corpus, tmp_path / "feat", jobs=1)
    assert not (tmp_path / "feat").exists()
