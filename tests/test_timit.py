"""The corpus reader (phonelabel/corpus/timit.py) and the audio reader (phonelabel/audio.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import write_utterance

from phonelabel.audio import read_audio
from phonelabel.corpus.timit import (
    assign_splits,
    find_utterances,
    kaldi_speakers,
    read_phn,
)
from phonelabel.errors import PhonelabelError

RATE = 16000


def _tone(n: int = 4000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32)


def _phn(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "X.PHN"
    path.write_text(text)
    return path


def test_sphere_audio_reads_as_16k_mono(tmp_path):
    samples = _tone()
    wav = write_utterance(tmp_path / "s", "SX1", samples, [(0, 4000, "h#")])
    assert wav.read_bytes()[:7] == b"NIST_1A"  # really SPHERE
    audio = read_audio(wav)
    assert audio.sample_rate == 16000 and not audio.converted
    np.testing.assert_allclose(audio.samples, samples, atol=1 / 32768)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], axis=1) * 0.5
    path = tmp_path / "x.wav"
    soundfile.write(path, stereo, 44100)
    audio = read_audio(path)
    assert (audio.source_rate, audio.source_channels, audio.converted) == (44100, 2, True)
    assert abs(len(audio.samples) - 16000) <= 1 and audio.samples.ndim == 1
    assert 0.2 < np.abs(audio.samples).max() < 0.3  # mean of the two channels


def test_not_audio_missing_and_empty_audio_are_refused(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not a RIFF or SPHERE file at all" * 10)
    with pytest.raises(PhonelabelError, match="bad.wav: not readable audio"):
        read_audio(bad)
    with pytest.raises(PhonelabelError, match="no such audio file"):
        read_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(PhonelabelError, match="no samples"):
        read_audio(empty)


def test_read_phn_gives_seconds_and_allows_gaps(tmp_path):
    segments = read_phn(_phn(tmp_path, "0 1600 h#\n2000 3200 IY\n\n3200 4000 h#\n"), 4000)
    assert [(s.start, s.end, s.phone) for s in segments] == [
        (0.0, 0.1, "h#"),
        (0.125, 0.2, "iy"),
        (0.2, 0.25, "h#"),
    ]
    at_8k = read_phn(_phn(tmp_path, "0 800 h#\n"), rate=8000)
    assert at_8k[0].end == 0.1


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 100 h#\n100 200 xyz\n", r"X.PHN:2: unknown phone label 'xyz'"),
        ("0 300 h#\n200 400 aa\n", r"X.PHN:2: .*overlapping or out of order"),
        ("200 400 aa\n0 200 h#\n", r"X.PHN:2: .*overlapping or out of order"),
        ("0 3000 h#\n3000 4001 aa\n", r"X.PHN:2: .*past the end of the audio \(4000\)"),
        ("", r"X.PHN: empty"),
        ("\n  \n", r"X.PHN: empty"),
        ("0 100\n", r"X.PHN:1: expected 'start end label'"),
        ("0 1e3 h#\n", r"X.PHN:1: start and end must be sample numbers"),
        ("100 100 h#\n", r"X.PHN:1: segment 100..100 is empty"),
    ],
)
def test_bad_phn_is_refused_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(PhonelabelError, match=message):
        read_phn(_phn(tmp_path, text), num_samples=4000)


@pytest.mark.parametrize("upper", [True, False])
def test_find_utterances_in_either_letter_case(tmp_path, upper):
    top = "TRAIN" if upper else "train"
    speaker_dir = tmp_path / top / ("DR1" if upper else "dr1") / ("FCJF0" if upper else "fcjf0")
    write_utterance(speaker_dir, "SI1027", _tone(), [(0, 4000, "h#")], upper=upper)
    write_utterance(speaker_dir, "SA1", _tone(), [(0, 4000, "h#")], upper=upper)
    (speaker_dir / ("SX1.WAV" if upper else "sx1.wav")).write_bytes(b"")  # no .PHN beside it
    found = {u.utt_id: u for u in find_utterances(tmp_path)}
    assert sorted(found) == ["fcjf0_sa1", "fcjf0_si1027", "fcjf0_sx1"]
    utt = found["fcjf0_si1027"]
    assert (utt.speaker, utt.part, utt.dialect) == ("fcjf0", "train", "dr1")
    assert utt.audio.is_file() and utt.alignment is not None and utt.alignment.is_file()
    assert found["fcjf0_sx1"].alignment is None
    assert found["fcjf0_sa1"].is_sa and not utt.is_sa


def test_tree_without_utterances_is_refused(tmp_path):
    (tmp_path / "TRAIN" / "DR1" / "FAKE0").mkdir(parents=True)
    (tmp_path / "TRAIN" / "DR1" / "FAKE0" / "README.txt").write_text("nothing here")
    with pytest.raises(PhonelabelError, match="no utterances found"):
        find_utterances(tmp_path)
    with pytest.raises(PhonelabelError, match="no such corpus directory"):
        find_utterances(tmp_path / "nope")


def _touch_speaker(root: Path, part: str, speaker: str, names: list[str]) -> None:
    speaker_dir = root / part / "DR1" / speaker.upper()
    speaker_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (speaker_dir / f"{name}.WAV").write_bytes(b"")
        (speaker_dir / f"{name}.PHN").write_text("0 1 h#\n")


TIMIT_UTTERANCES = ["SA1", "SA2", "SI1", "SI2", "SI3", "SX1", "SX2", "SX3", "SX4", "SX5"]


def test_timit_protocol_split_sizes(tmp_path):
    dev, core = sorted(kaldi_speakers("dev_spk.list")), sorted(kaldi_speakers("core_test_spk.list"))
    assert (len(dev), len(core)) == (50, 24)
    for speaker in dev + core + ["mzzz0", "fzzz0"]:  # two TEST speakers on neither list
        _touch_speaker(tmp_path, "TEST", speaker, TIMIT_UTTERANCES)
    for speaker in ["maaa0", "mbbb0", "fccc0"]:
        _touch_speaker(tmp_path, "TRAIN", speaker, TIMIT_UTTERANCES)
    splits = assign_splits(find_utterances(tmp_path))
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 24, "dev": 400, "test": 192, "full_test": 76 * 8}
    assert {u.speaker for u in splits["dev"]} == set(dev)
    assert {u.speaker for u in splits["test"]} == set(core)
    assert not any(u.is_sa for split in splits.values() for u in split)
    with_sa = assign_splits(find_utterances(tmp_path), include_sa=True)
    sizes = {k: len(v) for k, v in with_sa.items()}
    assert sizes == {"train": 30, "dev": 500, "test": 240, "full_test": 76 * 10}


# An independent copy (Halberstadt 1998, Kaldi's timit recipe): the 24 core test speakers,
# two male and one female per dialect region, and a few of the 50 dev speakers.
CORE_TEST = """mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0
               mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0""".split()
SOME_DEV = ["faks0", "fdac1", "fjem0", "mgwt0", "mjar0", "mmdb1", "mmdm2", "mpdf0"]


def test_shipped_speaker_lists_are_timits_core_test_and_dev_sets(tmp_path):
    core, dev = kaldi_speakers("core_test_spk.list"), kaldi_speakers("dev_spk.list")
    assert core == set(CORE_TEST)
    assert len(dev) == 50 and set(SOME_DEV) <= dev and not dev & core
    # a tree holding the known speakers (not built from the lists) is split by them
    for speaker in CORE_TEST + SOME_DEV + ["mzzz0"]:
        _touch_speaker(tmp_path, "TEST", speaker, ["SX1", "SI2"])
    _touch_speaker(tmp_path, "TRAIN", "maaa0", ["SX1"])
    splits = assign_splits(find_utterances(tmp_path))
    assert {u.speaker for u in splits["test"]} == set(CORE_TEST)
    assert {u.speaker for u in splits["dev"]} == set(SOME_DEV)
    assert "mzzz0" in {u.speaker for u in splits["full_test"]}


def test_other_trees_split_test_speakers_into_dev_and_test(tmp_path):
    for i in range(5):
        _touch_speaker(tmp_path, "TEST", f"mtst{i}9", ["SX1", "SX2", "SI3"])
    _touch_speaker(tmp_path, "TRAIN", "mtrn09", ["SX1"])
    splits = assign_splits(find_utterances(tmp_path))
    dev_speakers = {u.speaker for u in splits["dev"]}
    test_speakers = {u.speaker for u in splits["test"]}
    assert len(dev_speakers) == 3 and len(test_speakers) == 2
    assert {u.utt_id for u in splits["full_test"]} == {
        u.utt_id for u in splits["dev"] + splits["test"]
    }
    assert not dev_speakers & test_speakers  # by speaker, never by utterance
    assert len(splits["dev"]) + len(splits["test"]) == 15 and len(splits["train"]) == 1


def test_only_sa_numbers_are_sa_sentences(tmp_path):
    _touch_speaker(tmp_path, "TRAIN", "x_sam", ["SAMPLE01", "SATURDAY", "SA1", "SA12"])
    found = {u.utt_id: u.is_sa for u in find_utterances(tmp_path)}
    assert found == {
        "x_sam_sa1": True,
        "x_sam_sa12": True,
        "x_sam_sample01": False,
        "x_sam_saturday": False,
    }


def test_two_audio_files_for_one_utterance_are_refused(tmp_path):
    speaker_dir = tmp_path / "TRAIN" / "DR1" / "FAAA0"
    write_utterance(speaker_dir, "U1", _tone(), [(0, 4000, "h#")])
    soundfile.write(speaker_dir / "U1.flac", _tone(), RATE)
    with pytest.raises(PhonelabelError, match="two audio files for utterance 'u1'"):
        find_utterances(tmp_path)


@pytest.mark.parametrize("fmt,suffix", [("WAV", ".wav"), ("NIST", ".WAV")])
def test_truncated_audio_is_refused_not_read_short(tmp_path, fmt, suffix):
    whole = tmp_path / f"whole{suffix}"
    soundfile.write(whole, _tone(16000), RATE, format=fmt, subtype="PCM_16")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:20000])  # a copy that stopped half way
    with pytest.raises(PhonelabelError, match="truncated audio"):
        read_audio(cut)
    assert len(read_audio(whole).samples) == 16000
