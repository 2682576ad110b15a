"""label.py and the `label` / `plot` commands: blocks equal whole files, streaming, bad input."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import save_random_model, store_baselines, tone_recording, tone_utterance
from typer.testing import CliRunner

from phonelabel.audio import read_audio
from phonelabel.cli import app
from phonelabel.corpus.timit import read_phn
from phonelabel.decode import (
    DecoderParams,
    boundary_precision_recall,
    decode_frames,
    frames_to_segments,
)
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    FeatureConfig,
    FeatureStream,
    compute_features,
    normalize_speaker,
)
from phonelabel.label import (
    Failure,
    label_batch,
    label_file,
    label_files,
    label_stream,
    load_labeller,
    output_names,
)
from phonelabel.metrics import BoundaryCounts
from phonelabel.model import ModelConfig, PosteriorStream, utterance_log_posteriors
from phonelabel.modeldir import default_model_dir
from phonelabel.store import featurize
from phonelabel.workers import Shard

RATE = 16000


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def whole_file_segments(path, labeller):
    """The reference: whole-signal features, whole-utterance posteriors, whole Viterbi."""
    audio = read_audio(path)
    trained = labeller.trained
    (features,) = normalize_speaker(
        [compute_features(audio.samples, trained.feature)], trained.feature, trained.stats
    )
    log_posteriors = utterance_log_posteriors(trained.model, [torch.from_numpy(features)])[0]
    log_posteriors = log_posteriors.numpy()
    classes = decode_frames(log_posteriors, labeller.params, labeller.smooth)
    return frames_to_segments(classes, log_posteriors, len(audio.samples), trained.feature)


def assert_same_segments(got, expected):
    assert [(s.start, s.end, s.phone) for s in got] == [(s.start, s.end, s.phone) for s in expected]
    assert [s.confidence for s in got] == pytest.approx([s.confidence for s in expected], abs=1e-5)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """Random weights, target delay 3, sharpened output: many phone changes to compare."""
    out = tmp_path_factory.mktemp("random_model") / "model"
    shape, features = (
        ModelConfig(hidden=32, layers=2, delay=3),
        FeatureConfig(normalization="speaker"),
    )
    return save_random_model(
        out, shape, features, tone_recording(5.0, seed=1), DecoderParams(0.5, 2)
    )


@pytest.fixture(scope="module")
def global_tone_model(tone_model, tmp_path_factory) -> Path:
    """The trained tone model, switched to global normalisation (its stats are global)."""
    out = tmp_path_factory.mktemp("global_model") / "model"
    shutil.copytree(tone_model, out)
    config = json.loads((out / "config.json").read_text())
    config["feature"]["normalization"] = "global"
    (out / "config.json").write_text(json.dumps(config))
    return out


# --- exactness of the block-wise pipeline ---------------------------------------------------


@pytest.mark.parametrize("block", [100, 1601, 16000])
def test_feature_stream_equals_whole_signal_features(block):
    samples = tone_recording(2.0)
    stream = FeatureStream(FeatureConfig())
    parts = [stream.push(samples[i : i + block]) for i in range(0, len(samples), block)]
    features = np.concatenate(parts + [stream.finish()])
    np.testing.assert_allclose(features, compute_features(samples), rtol=0, atol=1e-4)
    assert len(features) == len(compute_features(samples))


def test_posteriors_in_blocks_equal_whole_utterance_posteriors(random_model):
    labeller = load_labeller(random_model, "cpu")
    features = torch.randn(157, 39).numpy()
    stream = PosteriorStream(labeller.trained.model)
    parts = [stream.push(features[i : i + 10]) for i in range(0, 157, 10)] + [stream.finish()]
    whole = utterance_log_posteriors(labeller.trained.model, [torch.from_numpy(features)])[0]
    np.testing.assert_allclose(np.concatenate(parts), whole.numpy(), atol=1e-5)


@pytest.mark.parametrize("smooth,cache_seconds", [(True, 60.0), (False, 60.0), (True, 0.0)])
def test_file_in_small_blocks_equals_whole_file_labelling(
    tmp_path, random_model, smooth, cache_seconds
):
    path = write_wav(tmp_path / "a.wav", tone_recording(4.0), subtype="FLOAT")
    labeller = load_labeller(random_model, "cpu", smooth=smooth)
    labelled = label_file(path, labeller, block_seconds=0.123, cache_seconds=cache_seconds)
    assert len(labelled.segments) > 20
    assert_same_segments(labelled.segments, whole_file_segments(path, labeller))
    assert labelled.segments[0].start == 0 and labelled.segments[-1].end == 4.0


def _open_files() -> set[str]:
    """What this process's file descriptors point at (a temp file shows as '... (deleted)')."""
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            found.add(str((fds / fd.name).readlink()))
        except OSError:
            continue
    return found


def test_a_long_recording_is_featurized_once_spooled_to_a_temp_file_that_goes_away(
    tmp_path, random_model, monkeypatch
):
    """Over ``cache_seconds`` the first read's features go to an anonymous temp file, not a
    second featurization: the output bytes equal the in-memory run's (which equal the two-pass
    run's of 0.3.0: featurizing is deterministic), nothing stays open or on disk (also when
    the run stops half-way), and the audio is featurized exactly once."""
    import phonelabel.features as features_module

    path = write_wav(tmp_path / "long.wav", tone_recording(6.0, seed=7))
    labeller = load_labeller(random_model, "cpu")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool_dir))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    featurized = []
    compute = features_module.compute_features
    monkeypatch.setattr(
        features_module,
        "compute_features",
        lambda samples, config: featurized.append(len(samples)) or compute(samples, config),
    )
    before = _open_files()
    outputs = {}
    for cache in (60.0, 1.0):  # in memory; spooled
        featurized.clear()
        labelled = label_file(path, labeller, block_seconds=0.5, cache_seconds=cache)
        outputs[cache] = tmp_path / f"{cache}.json"
        labelled.write("json", outputs[cache])
        assert sum(featurized) < 6.0 * RATE * 1.2  # once, with a little context per block
    assert outputs[60.0].read_bytes() == outputs[1.0].read_bytes()
    assert _open_files() == before and not any(spool_dir.iterdir())
    assert_same_segments(labelled.segments, whole_file_segments(path, labeller))

    from phonelabel.audio import AudioFile
    from phonelabel.label import recording_features

    features = recording_features(AudioFile(path), labeller.feature, labeller.trained.stats)
    spooled = recording_features(
        AudioFile(path), labeller.feature, labeller.trained.stats, cache_seconds=1.0
    )
    assert any("(deleted)" in f for f in _open_files() - before)  # open, nameless
    first = next(spooled.blocks)
    np.testing.assert_array_equal(first, next(features.blocks))
    spooled.blocks.close()  # a run stopped half-way (an error, Ctrl-C) closes it too
    assert _open_files() == before and not any(spool_dir.iterdir())


def test_resampled_stereo_flac_in_blocks_equals_whole_file(tmp_path, random_model):
    import soxr

    mono = soxr.resample(tone_recording(1.5), RATE, 44100)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, stereo, 44100)
    labeller = load_labeller(random_model, "cpu")
    labelled = label_file(path, labeller, block_seconds=0.2)
    assert_same_segments(labelled.segments, whole_file_segments(path, labeller))


def test_phn_sample_numbers_are_at_the_recordings_own_rate(tmp_path, random_model):
    """A .PHN beside a 44.1 kHz file counts its samples, so the corpus reader reads it back."""
    import soxr

    path = tmp_path / "u1.wav"
    soundfile.write(path, soxr.resample(tone_recording(1.5), RATE, 44100), 44100)
    out = tmp_path / "out"
    result = runner.invoke(app, ["label", str(path), "--model", str(random_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = (out / "u1.phn").read_text().split("\n")
    assert lines[0].startswith("0 ") and lines[-2].split()[1] == str(soundfile.info(path).frames)
    segments = read_phn(out / "u1.phn", num_samples=soundfile.info(path).frames, rate=44100)
    labelled = label_file(path, load_labeller(random_model, "cpu"))
    assert [s.phone for s in segments] == [s.phone for s in labelled.segments]
    assert max(abs(a.end - b.end) for a, b in zip(segments, labelled.segments, strict=True)) < 1e-4


def test_progress_covers_both_passes_of_a_speaker_normalised_model(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(2.0))
    calls = []
    label_file(path, load_labeller(random_model, "cpu"), lambda d, t: calls.append((d, t)), 0.5)
    assert calls[-1] == (4.0, 4.0)  # two passes over 2 s
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --- streaming ------------------------------------------------------------------------------


class TrickleStream(io.RawIOBase):
    """A byte stream that hands out small reads and remembers how far it has been read."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        chunk = self.data[self.position : self.position + min(size, 3200)]
        self.position += len(chunk)
        return chunk

    read = read1


def pcm_bytes(path: Path) -> bytes:
    return soundfile.read(path, dtype="int16")[0].astype("<i2").tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("smooth", [True, False])
def test_stream_equals_whole_file_for_a_globally_normalised_model(
    tmp_path, global_tone_model, smooth
):
    path = write_wav(tmp_path / "a.wav", tone_recording(3.0, seed=3))
    labeller = load_labeller(global_tone_model, "cpu", smooth=smooth)
    streamed = list(label_stream(TrickleStream(pcm_bytes(path)), labeller))
    assert len(streamed) > 20
    assert_same_segments(streamed, label_file(path, labeller).segments)
    assert_same_segments(streamed, whole_file_segments(path, labeller))


def test_stream_yields_segments_before_the_input_ends(tmp_path, global_tone_model):
    data = pcm_bytes(write_wav(tmp_path / "a.wav", tone_recording(2.5, seed=4)))
    stream = TrickleStream(data)
    positions = [stream.position for _ in label_stream(stream, load_labeller(global_tone_model))]
    assert positions[0] < len(data) / 4
    assert sum(p < len(data) for p in positions) > len(positions) / 2


def test_stream_of_a_speaker_model_uses_running_stats_close_to_the_file(tmp_path, tone_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(3.0, seed=5))
    labeller = load_labeller(tone_model, "cpu")
    streamed = list(label_stream(TrickleStream(pcm_bytes(path)), labeller))
    whole = label_file(path, labeller).segments
    counts = boundary_precision_recall(whole, streamed, tolerance=0.0101)
    assert counts.recall > 0.8 and counts.precision > 0.8


def test_stream_shorter_than_one_frame_is_an_error(random_model):
    with pytest.raises(PhonelabelError, match="shorter than one frame"):
        list(label_stream(io.BytesIO(b"\0\0" * 399), load_labeller(random_model)))


# --- against reference boundaries -----------------------------------------------------------


@pytest.mark.slow
def test_labelling_reproduces_reference_phn_boundaries(tone_corpus, tone_model):
    labeller = load_labeller(tone_model, "cpu")
    counts = BoundaryCounts()
    for wav in sorted((tone_corpus / "TEST").rglob("*.WAV"))[:8]:
        labelled = label_file(wav, labeller)
        counts += boundary_precision_recall(read_phn(wav.with_suffix(".PHN")), labelled.segments)
    assert counts.recall > 0.7 and counts.precision > 0.7


# --- the commands ---------------------------------------------------------------------------

runner = CliRunner()


def test_label_one_file_to_stdout_in_each_format(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(1.0))
    result = runner.invoke(app, ["label", str(path), "--model", str(random_model)])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0].split()
    assert first[0] == "0" and int(first[1]) > 0
    result = runner.invoke(
        app, ["label", str(path), "--model", str(random_model), "-f", "json", "--fold39"]
    )
    document = json.loads(result.stdout)
    assert document["phone_set"] == "timit-39" and document["duration"] == 1.0
    assert document["segments"][-1]["end"] == 1.0


def test_label_many_files_with_bad_ones_labels_the_rest_and_exits_2(tmp_path, random_model):
    good = write_wav(tmp_path / "good.wav", tone_recording(1.0))
    other = write_wav(tmp_path / "other.wav", tone_recording(0.5))
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    no_samples = write_wav(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32))
    short = write_wav(tmp_path / "short.wav", np.zeros(300, dtype=np.float32))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(write_wav(tmp_path / "full.wav", tone_recording(1.0)).read_bytes()[:9000])
    inputs = [good, garbage, no_samples, short, truncated, tmp_path / "missing.wav", other]
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["label", *map(str, inputs), "--model", str(random_model), "--out", str(out), "-f", "csv"],
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 5
    for bad, reason in [
        (garbage, "not readable audio"),
        (no_samples, "no samples"),
        (short, "shorter than one frame"),
        (truncated, "truncated"),
        (tmp_path / "missing.wav", "no such audio file"),
    ]:
        assert any(str(bad) in line and reason in line for line in errors), (bad, errors)
    assert sorted(p.name for p in out.iterdir()) == ["good.csv", "other.csv"]
    assert (out / "good.csv").read_text().startswith("start,end,phone,confidence\n0,")


def test_run_label_resolves_a_run_once_and_counts_what_it_wrote(tmp_path, random_model):
    """The library side of `label`: one call checks and sets up the run (LabelRun), the
    results count as they come, and an interruption names what was kept."""
    from phonelabel.label import LabelRun, run_label

    good = write_wav(tmp_path / "a.wav", tone_recording(0.5))
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "out"
    run = run_label([str(good), str(bad)], random_model, "csv", out, device="cpu", shard="1/1")
    assert isinstance(run, LabelRun) and run.lines is None
    assert (run.inputs, run.total, str(run.shard)) == (2, 2, "1/1")
    results = list(run)
    assert [type(r).__name__ for r in results] == ["Labelled", "Failure"]
    assert (run.written, run.failed) == (1, 1) and (out / "a.csv").is_file()
    assert run.kept() == f"kept 1 whole outputs in {out}; run the same command again"
    with pytest.raises(PhonelabelError, match="stdin must be the only input"):
        run_label(["-", str(good)], random_model)
    with pytest.raises(PhonelabelError, match="2 inputs: give out DIR"):
        run_label([str(good), str(good)], random_model)
    streamed = run_label(["-"], random_model, "csv", stdin=io.BytesIO(pcm_bytes(good)))
    assert next(streamed.lines) == "start,end,phone,confidence"
    assert list(streamed.lines)[-1].split(",")[1] == "0.5"


def test_run_label_reads_the_first_file_while_the_model_loads_and_labels_it_as_label_file(
    tmp_path, random_model
):
    """``run_label`` makes the first file's features while torch and the weights load (a
    thread): its first read happens before the run is iterated, the outputs are label_file's
    bytes, the file is not featurized again, and a first file that cannot be read still
    fails in its turn."""
    from phonelabel.label import run_label

    first = write_wav(tmp_path / "a.wav", tone_recording(4.0, seed=3))
    second = write_wav(tmp_path / "b.wav", tone_recording(1.5, seed=4))
    reads: list[tuple[str, float, float]] = []

    def on_progress(source):
        return lambda done, total: reads.append((Path(source).name, done, total))

    run = run_label([str(first), str(second)], random_model, "json", tmp_path / "out",
                    device="cpu", on_progress=on_progress)  # fmt: skip
    assert reads and {name for name, *_ in reads} == {"a.wav"}  # before any result
    assert max(done for _, done, _ in reads) == pytest.approx(4.0, abs=0.05)  # its first read
    results = list(run)
    assert [Path(r.source).name for r in results] == ["a.wav", "b.wav"]
    labeller = load_labeller(random_model, "cpu")
    for path in (first, second):  # the same segments, confidences to the last digit
        expected = tmp_path / f"{path.stem}.expected.json"
        label_file(path, labeller).write("json", expected)
        got = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert got["segments"] == json.loads(expected.read_text())["segments"]
    a_reads = [done for name, done, _ in reads if name == "a.wav"]
    assert a_reads == sorted(a_reads) and a_reads[-1] == 8.0  # both passes, once each

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    run = run_label([str(bad), str(second)], random_model, "csv", tmp_path / "out2", device="cpu")
    assert [type(r).__name__ for r in run] == ["Failure", "Labelled"]

    # a shard of batches: the first read is of the shard's own first file
    paths = [str(write_wav(tmp_path / f"s{i}.wav", tone_recording(0.6, seed=i))) for i in range(4)]
    reads.clear()
    run = run_label(paths, random_model, "csv", tmp_path / "out3", device="cpu",
                    batch_files=2, shard="2/2", on_progress=on_progress)  # fmt: skip
    assert {name for name, *_ in reads} == {"s2.wav"}
    assert [Path(r.source).name for r in run] == ["s2.wav", "s3.wav"]


def test_model_dir_without_config_is_one_line_and_exit_2(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(0.5))
    broken = tmp_path / "broken"
    shutil.copytree(random_model, broken)
    (broken / "config.json").unlink()
    result = runner.invoke(app, ["label", str(path), "--model", str(broken)])
    assert result.exit_code == 2
    assert "no config.json" in result.stderr and len(result.stderr.strip().splitlines()) == 1


class Exploit:
    """Unpickling this runs Path.touch(marker): a model file must never be unpickled so."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_model_file_that_is_not_a_state_dict_is_refused_unpickled(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(0.5))
    evil = tmp_path / "evil"
    shutil.copytree(random_model, evil)
    marker = tmp_path / "pwned"
    torch.save({"weights": Exploit(marker)}, evil / "model.pt")
    result = runner.invoke(app, ["label", str(path), "--model", str(evil)])
    assert result.exit_code == 2 and "model.pt" in result.stderr
    assert "refused unread" in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists()


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(0.5))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(
        app, ["label", str(path), "--model", str(random_model), "--out", str(blocker / "sub")]
    )
    assert result.exit_code == 2 and "cannot create the directory" in result.stderr


def test_several_inputs_need_out(tmp_path, random_model):
    path = write_wav(tmp_path / "a.wav", tone_recording(0.5))
    result = runner.invoke(app, ["label", str(path), str(path), "--model", str(random_model)])
    assert result.exit_code == 2 and "--out" in result.stderr


def test_label_from_stdin_prints_lines(tmp_path, random_model):
    data = pcm_bytes(write_wav(tmp_path / "a.wav", tone_recording(1.0)))
    result = runner.invoke(
        app, ["label", "-", "--model", str(random_model), "-f", "csv"], input=data
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "start,end,phone,confidence" and lines[-1].split(",")[1] == "1"
    result = runner.invoke(
        app, ["label", "-", "--model", str(random_model), "-f", "textgrid"], input=data
    )
    assert result.exit_code == 2 and "needs the whole recording" in result.stderr
    wav = (tmp_path / "a.wav").read_bytes()  # a file, not raw PCM: its header is no sound
    result = runner.invoke(app, ["label", "-", "--model", str(random_model)], input=wav)
    assert result.exit_code == 2 and "stdin holds a WAV file, not raw PCM" in result.stderr


def test_label_from_a_real_pipe_prints_segments_before_the_writer_closes_it(tmp_path, random_model):
    """`producer | phonelabel label -`: PCM written in pieces with pauses reaches the
    command through an OS pipe, and its first segments come out on stdout while the writer
    still holds the pipe open, more audio to come."""
    import threading
    import time

    data = pcm_bytes(write_wav(tmp_path / "a.wav", tone_recording(4.0, seed=6)))
    run = subprocess.Popen(
        [sys.executable, "-c", "from phonelabel.cli import main; main()", "label", "-",
         "--model", str(random_model), "-f", "csv"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines: list[tuple[float, str]] = []  # (when, line)
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic(), line.decode()) for line in run.stdout)
    )
    reader.start()
    try:
        half = len(data) // 2
        for start in range(0, half, 3200):  # 2 s, in 100 ms pieces
            run.stdin.write(data[start : start + 3200])
            run.stdin.flush()
            time.sleep(0.01)
        deadline = time.monotonic() + 120  # the command's own start-up (a torch import)
        while len(lines) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        closed = time.monotonic()
        run.stdin.write(data[half:])
        run.stdin.close()
        assert run.wait(timeout=120) == 0, run.stderr.read().decode()
    finally:
        run.kill()
        reader.join(timeout=10)
    assert lines[0][1].strip() == "start,end,phone,confidence"
    early = [line for when, line in lines[1:] if when < closed]
    assert len(early) >= 2, f"no segment before stdin closed ({len(lines)} lines in all)"
    assert float(early[-1].split(",")[1]) <= 2.0  # from the audio written so far
    assert len(lines) > len(early) + 1 and lines[-1][1].split(",")[1] == "4"


def test_label_never_overwrites_the_alignment_beside_a_recording(tmp_path, random_model):
    wav = write_wav(tmp_path / "sx1.wav", tone_recording(1.0))
    reference = tmp_path / "sx1.phn"
    reference.write_text("0 16000 h#\n")
    result = runner.invoke(
        app, ["label", str(wav), "--model", str(random_model), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "exists beside its recording" in result.stderr
    assert reference.read_text() == "0 16000 h#\n"


@pytest.mark.slow
def test_shipped_default_model_labels_unseen_voices(tmp_path, synth_corpus):
    """`phonelabel label` with no --model uses models/default, and it is a trained model:
    on the synth corpus's held-out voices its frames agree with the reference .PHN far more
    often than a per-frame predictor fitted on the corpus's own train split, and its
    segments sit where they belong (moved 10 or 20 ms either way, they agree less)."""
    directory = default_model_dir()
    assert load_labeller(None, "cpu").trained.directory == directory
    wavs = sorted((synth_corpus / "TEST").rglob("*.WAV"))
    out = tmp_path / "labels"
    result = runner.invoke(app, ["label", *map(str, wavs), "--out", str(out), "-f", "phn"])
    assert result.exit_code == 0, result.output
    shifts = (-2, -1, 0, 1, 2)  # frames; +1: each segment moved 10 ms later
    agree, total = dict.fromkeys(shifts, 0), 0
    for wav, name in zip(wavs, output_names([str(w) for w in wavs], "phn"), strict=True):
        hypothesis = read_phn(out / name)
        reference = read_phn(wav.with_suffix(".PHN"))
        assert hypothesis[0].start == 0 and hypothesis[-1].end == pytest.approx(reference[-1].end)
        centres = np.arange(200, reference[-1].end * 16000, 160) / 16000  # frame centres, s
        truth = _labels_at(reference, centres)
        for shift in shifts:
            agree[shift] += int(np.sum(_labels_at(hypothesis, centres - shift / 100) == truth))
        total += len(centres)
    rate = {shift: count / total for shift, count in agree.items()}
    store = tmp_path / "store"  # the baselines, on the same voices: fitted on its train split
    featurize(synth_corpus, store, jobs=1)
    # the strongest trivial predictor the test can fit: phone by frame position (it beats the
    # commonest phone, 0.14); its best on either held-out split
    per_frame = max(store_baselines(store, split)[1] for split in ("dev", "test"))
    assert rate[0] > per_frame + 0.25, (
        f"agreement {rate[0]:.3f}: not 0.25 above a per-frame predictor ({per_frame:.3f}); "
        "measured in 0.3.0 with the shipped model: 0.653 vs 0.323"
    )
    for shift in (-1, 1):  # measured 0.622 and 0.632 vs 0.653; at -+2 frames 0.567, 0.576
        assert rate[0] > rate[shift], rate
        assert rate[0] > rate[2 * shift] + 0.05, rate


def test_inputs_with_the_same_name_mirror_their_folders(tmp_path, tone_model):
    audio, _ = tone_utterance(np.random.default_rng(3))
    for speaker in ("FAAA0", "MBBB0"):
        (tmp_path / "in" / speaker).mkdir(parents=True)
        soundfile.write(tmp_path / "in" / speaker / "SX1.wav", audio, 16000)
    wavs = sorted(str(p) for p in (tmp_path / "in").rglob("*.wav"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["label", *wavs, "--model", str(tone_model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.phn")) == [
        "FAAA0/SX1.phn",
        "MBBB0/SX1.phn",
    ]
    result = runner.invoke(
        app, ["label", wavs[0], wavs[0], "--model", str(tone_model), "--out", str(out)]
    )
    assert result.exit_code == 2 and "several inputs would write SX1.phn" in result.stderr


@pytest.mark.parametrize(
    "span,message",
    [
        (["--start", "2"], "--start 2.0 s: must be from 0 to the recording's length (1.00 s)"),
        (["--start", "-0.5"], "--start -0.5 s: must be from 0"),
        (["--start", "0.5", "--end", "0.5"], "--end 0.5 s: must be after --start (0.5 s)"),
        (["--start", "0.5", "--end", "0.2"], "--end 0.2 s: must be after --start (0.5 s)"),
    ],
)
def test_plot_refuses_a_span_outside_the_recording(tmp_path, random_model, span, message):
    path = write_wav(tmp_path / "a.wav", tone_recording(1.0))
    png = tmp_path / "p.png"
    result = runner.invoke(
        app, ["plot", str(path), "--model", str(random_model), "-o", str(png), *span]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not png.exists()


def test_label_into_a_closed_pipe_exits_quietly_as_sigpipe(tmp_path, random_model):
    # `phonelabel label x.wav | true`: the reader is gone before the first write
    path = write_wav(tmp_path / "a.wav", tone_recording(2.0))
    command = [sys.executable, "-m", "phonelabel.cli", "label", str(path), "--model",
               str(random_model)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    process.wait(timeout=120)
    errors = process.stderr.read().decode()
    assert process.returncode == 141, errors  # as a process killed by SIGPIPE (128 + 13)
    assert errors.strip() == "", errors  # no traceback, no "Exception ignored ..."


def _labels_at(segments, samples: np.ndarray) -> np.ndarray:
    ends = np.array([segment.end for segment in segments])
    names = np.array([segment.phone for segment in segments])
    return names[np.minimum(np.searchsorted(ends, samples, side="right"), len(names) - 1)]


def test_label_plot_and_plot_command_write_pngs(tmp_path, tone_corpus, tone_model):
    wav = sorted((tone_corpus / "TEST").rglob("*.WAV"))[0]
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["label", str(wav), "--model", str(tone_model), "--out", str(out), "--plot"]
    )
    assert result.exit_code == 0, result.output
    assert (out / (wav.stem + ".png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = tmp_path / "plot.png"
    result = runner.invoke(
        app,
        ["plot", str(wav), "--model", str(tone_model), "-o", str(png)]
        + ["--reference", str(wav.with_suffix(".PHN"))],
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "silence",
    [np.zeros(3 * RATE)]
    + [np.random.default_rng(0).standard_normal(3 * RATE) * 10 ** (db / 20) for db in (-75, -55)],
    ids=[
        "digital-zero",
        "noise-at-minus-75-dBFS",
        "noise-at-minus-55-dBFS",
    ],
)
def test_silence_is_labelled_silence_by_the_shipped_model(tmp_path, silence):
    """Per-recording normalisation must not blow a silent recording's noise floor up into
    speech (0.1.0 labelled 3 s of zeros "h# uw l"), and a long steady noise floor is h#
    from end to end: the 0.3.0 model, whose training utterances opened with at most a few
    hundred ms of silence, called part of one a closure (pcl); 0.4.0's has heard real
    recordings' silences and synth's lead-in/lead-out room (the silence condition)."""
    path = write_wav(tmp_path / "silence.wav", silence)
    labeller = load_labeller(device="cpu")
    for segments in (
        label_file(path, labeller).segments,
        list(label_stream(io.BytesIO(pcm_bytes(path)), labeller)),
    ):
        assert [s.phone for s in segments] == ["h#"], segments
        assert segments[0].start == 0 and abs(segments[-1].end - 3.0) < 0.03


# --- many files: worker processes, batches, shards ------------------------------------------


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    """Nine short recordings in two folders, one stem in both (outputs mirror the folders)."""
    root = tmp_path_factory.mktemp("recordings")
    paths = []
    for i in range(9):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        name = "same.wav" if i in (1, 2) else f"r{i}.wav"
        paths.append(write_wav(folder / name, tone_recording(0.4 + 0.15 * i, seed=10 + i)))
    return paths


@pytest.fixture(scope="module")
def one_process_outputs(recordings, random_model, tmp_path_factory) -> dict[str, bytes]:
    """What one process writes for ``recordings`` (the reference of the tests below)."""
    out = tmp_path_factory.mktemp("one_process") / "out"
    labeller = load_labeller(random_model, "cpu")
    results = list(label_files(recordings, labeller, "json", out))
    assert all(not isinstance(r, Failure) for r in results)
    return _tree(out)


def test_label_jobs_2_writes_byte_for_byte_what_one_process_writes(
    tmp_path, recordings, random_model, one_process_outputs
):
    garbage = recordings[0].parent / "garbage.wav"  # beside them: the same output names
    garbage.write_bytes(b"this is not audio" * 10)
    out = tmp_path / "out"
    inputs = [str(p) for p in recordings[:4]] + [str(garbage)] + [str(p) for p in recordings[4:]]
    result = runner.invoke(
        app, ["label", *inputs, "--model", str(random_model), "--out", str(out), "-f", "json",
              "--jobs", "2"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(garbage) in errors[0] and "not readable audio" in errors[0]
    assert "1 of 10 inputs failed" in result.stderr
    assert _tree(out) == one_process_outputs


def test_shards_are_disjoint_and_together_write_the_whole_run(
    tmp_path, recordings, random_model, one_process_outputs
):
    labeller = load_labeller(random_model, "cpu")
    shuffled = [recordings[i] for i in (4, 0, 8, 2, 6, 1, 3, 7, 5)]  # any order, same shards
    outs = []
    for k in (1, 2):
        outs.append(tmp_path / f"shard{k}")
        list(label_files(shuffled, labeller, "json", outs[-1], shard=Shard(k, 2)))
    first, second = _tree(outs[0]), _tree(outs[1])
    assert len(first) == 5 and len(second) == 4 and not set(first) & set(second)
    assert {**first, **second} == one_process_outputs  # names mirror folders as in the whole run
    # batches are cut from the sorted list, the same in every shard: equal bytes again
    batched = tmp_path / "batched"
    list(label_files(recordings, labeller, "json", batched, batch_files=3))
    together = tmp_path / "together"
    for k in (1, 2, 3):  # one batch each
        list(label_files(shuffled, labeller, "json", together, batch_files=3, shard=Shard(k, 3)))
    assert _tree(together) == _tree(batched)


def test_batched_labelling_gives_the_segments_of_one_at_a_time(tmp_path, recordings, random_model):
    labeller = load_labeller(random_model, "cpu")
    short = write_wav(tmp_path / "short.wav", np.zeros(300, dtype=np.float32))
    paths = [*recordings, short, tmp_path / "missing.wav"]
    batched = label_batch(paths, labeller, max_seconds=1.2)  # the longest three go alone
    for path, result in zip(recordings, batched, strict=False):
        alone = label_file(path, labeller)
        assert_same_segments(result.segments, alone.segments)
        assert (result.duration, result.metadata) == (alone.duration, alone.metadata)
    assert "shorter than one frame" in str(batched[-2])
    assert "no such audio file" in str(batched[-1])
    # the posteriors themselves: a padded batch equals each utterance alone
    features = [torch.randn(n, 39) for n in (5, 157, 60)]
    together = utterance_log_posteriors(labeller.trained.model, features)
    for f, log_posteriors in zip(features, together, strict=True):
        alone = utterance_log_posteriors(labeller.trained.model, [f])[0]
        np.testing.assert_allclose(log_posteriors.numpy(), alone.numpy(), rtol=0, atol=1e-5)


def test_torchrun_rank_and_world_size_pick_the_shard(
    tmp_path, recordings, random_model, one_process_outputs, monkeypatch
):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    args = ["label", *map(str, recordings), "--model", str(random_model), "--out", str(out)]
    result = runner.invoke(app, [*args, "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "shard 2/2: 4 of 9 inputs" in result.output
    expected = {name: data for name, data in one_process_outputs.items() if name in _tree(out)}
    assert _tree(out) == expected and len(expected) == 4
    monkeypatch.setenv("RANK", "2")  # --shard wins over the environment
    result = runner.invoke(app, [*args, "-f", "json", "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    assert _tree(out) == one_process_outputs


@pytest.mark.parametrize(
    "option, message",
    [
        (["--shard", "3/2"], "--shard 3/2: K must be 1 to 2"),
        (["--shard", "0/4"], "--shard 0/4: K must be 1 to 4"),
        (["--shard", "1/0"], "--shard 1/0: N must be at least 1"),
        (["--shard", "half"], "--shard 'half': expected K/N"),
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--batch-files", "0"], "--batch-files 0: must be at least 1"),
    ],
)
def test_bad_shard_jobs_or_batch_is_one_line_and_writes_nothing(
    tmp_path, recordings, random_model, option, message
):
    out = tmp_path / "out"
    inputs = [str(p) for p in recordings[:2]]
    result = runner.invoke(
        app, ["label", *inputs, "--model", str(random_model), "--out", str(out), *option]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
    assert not out.exists()
