"""adapt: corpus forms, leave-out reasons, mismatches, rounds and refusals, on real audio
(the festival/flite ``synth_corpus``) adapted from the shipped model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from phonelabel.adapt import AdaptConfig, _reason, adapt
from phonelabel.cli import app
from phonelabel.corpus.timit import read_transcript
from phonelabel.corpus.transcribed import find_transcribed_corpus
from phonelabel.errors import PhonelabelError
from phonelabel.lexicon import festival_available
from phonelabel.modeldir import load_model

runner = CliRunner()


def _recordings(synth_corpus: Path, speakers: int, per_speaker: int) -> list[tuple[str, Path, str]]:
    """(speaker, WAV, words) of the first ``per_speaker`` utterances of ``speakers`` speakers."""
    chosen = []
    for folder in sorted({w.parent for w in Path(synth_corpus).rglob("*.WAV")})[:speakers]:
        for wav in sorted(folder.glob("*.WAV"))[:per_speaker]:
            chosen.append((folder.name.lower(), wav, read_transcript(wav.with_suffix(".TXT"))))
    return chosen


def _flac(wav: Path, target: Path) -> Path:
    samples, rate = soundfile.read(wav)
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(target, samples, rate, format="FLAC")
    return target


def test_each_corpus_form_is_detected_and_read(synth_corpus, tmp_path):
    chosen = _recordings(synth_corpus, 3, 2)
    # transcripts beside the audio, in speaker folders; one without a transcript
    beside = tmp_path / "beside"
    for speaker, wav, words in chosen:
        _flac(wav, beside / speaker / f"{wav.stem.lower()}.flac")
        (beside / speaker / f"{wav.stem.lower()}.lab").write_text(words)
    _flac(chosen[0][1], beside / "lonely" / "x.flac")
    # Common Voice
    cv = tmp_path / "cv"
    rows = ["client_id\tpath\tsentence\tup_votes"]
    for i, (speaker, wav, words) in enumerate(chosen):
        _flac(wav, cv / "clips" / f"common_voice_en_{i}.flac")
        rows.append(f"{speaker}abcdef\tcommon_voice_en_{i}.flac\t{words}\t2")
    (cv / "validated.tsv").write_text("\n".join(rows) + "\n")
    # LibriSpeech
    libri = tmp_path / "libri"
    for i, (_, wav, words) in enumerate(chosen):
        chapter = libri / str(100 + i % 3) / "7"
        _flac(wav, chapter / f"{100 + i % 3}-7-{i:04d}.flac")
        with open(chapter / f"{100 + i % 3}-7.trans.txt", "a") as table:
            table.write(f"{100 + i % 3}-7-{i:04d} {words.upper()}\n")
    # LJ Speech
    lj = tmp_path / "lj"
    lines = []
    for i, (_, wav, words) in enumerate(chosen):
        (lj / "wavs").mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, lj / "wavs" / f"LJ001-{i:04d}.wav")
        lines.append(f"LJ001-{i:04d}|{words.upper()}|{words}")
    (lj / "metadata.csv").write_text("\n".join(lines) + "\n")

    found = {
        name: find_transcribed_corpus(tmp_path / name) for name in ("beside", "cv", "libri", "lj")
    }
    assert {k: v.form for k, v in found.items()} == {
        "beside": "beside", "cv": "commonvoice", "libri": "librispeech", "lj": "ljspeech",
    }  # fmt: skip
    words = sorted(w.lower() for _, _, w in chosen)
    for name, corpus in found.items():
        usable = [r for r in corpus.recordings if r.problem is None]
        assert sorted(r.text.lower() for r in usable) == words, name
        assert all(r.audio.is_file() for r in usable)
        assert len({r.utt_id for r in corpus.recordings}) == len(corpus.recordings)
    assert found["beside"].speakers == 4 and found["cv"].speakers == 3
    assert found["libri"].speakers == 3 and found["lj"].speakers == 1
    (lonely,) = [r for r in found["beside"].recordings if r.problem is not None]
    assert lonely.speaker == "lonely" and "no transcript" in lonely.problem

    # an empty sentence in any form is an empty transcript, in the report's words
    (cv / "validated.tsv").write_text("\n".join(rows[:2] + ["x1\tcommon_voice_en_1.flac\t\t2"]))
    (empty,) = [r for r in find_transcribed_corpus(cv).recordings if r.problem]
    assert _reason(empty.problem) == "empty transcript", empty.problem
    # a row short of the header's columns is one line naming it, not a traceback
    (cv / "validated.tsv").write_text("\n".join(rows[:2] + ["x1\tcommon_voice_en_1.flac"]))
    with pytest.raises(PhonelabelError, match="line 3 has fewer columns"):
        find_transcribed_corpus(cv)


@pytest.fixture(scope="module")
def bad_corpus(synth_corpus, tmp_path_factory) -> Path:
    """6 speakers x 2 real recordings with their words, one of them with another's words
    (a mismatch), plus one recording of each leave-out reason."""
    root = tmp_path_factory.mktemp("adapt") / "corpus"
    chosen = _recordings(synth_corpus, 6, 2)
    for speaker, wav, words in chosen:
        _flac(wav, root / speaker / f"{wav.stem.lower()}.flac")
        (root / speaker / f"{wav.stem.lower()}.txt").write_text(words)
    speaker, wav, _ = chosen[0]
    (root / speaker / f"{wav.stem.lower()}.txt").write_text(chosen[-1][2])  # another's words
    odd = root / "odd"
    for name, text in [("unknown", "the zqxwv said"), ("empty", "  "),
                       ("short", " ".join(["extraordinarily"] * 60)), ("missing", None)]:  # fmt: skip
        _flac(chosen[1][1], odd / f"{name}.flac")
        if text is not None:
            (odd / f"{name}.txt").write_text(text)
    (odd / "broken.wav").write_bytes(b"RIFF not audio at all")
    (odd / "broken.txt").write_text("the words")
    return root


@pytest.mark.slow
def test_adapt_leaves_out_bad_recordings_and_trains_two_rounds(bad_corpus, tone_store, tmp_path):
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        ["adapt", str(bad_corpus), "--out", str(out), "--rounds", "2", "--epochs", "1",
         "--no-festival", "--device", "cpu", "--mix", str(tone_store), "--mix-share", "0.2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "corpus form: beside" in result.output
    for name in ("unknown", "empty", "short", "missing", "broken"):
        assert any(name in line and "left out" in line for line in result.output.splitlines()), name
    report = json.loads((out / "adapt.json").read_text())
    assert report["form"] == "beside" and len(report["rounds"]) == 2
    for r in report["rounds"]:
        by_stem = {Path(d["audio"]).stem: d["reason"] for d in r["recordings_detail"]}
        assert by_stem["unknown"] == "word in no dictionary"
        assert by_stem["empty"] == "empty transcript"
        assert by_stem["short"] == "audio too short for its words"
        assert by_stem["missing"] == "no transcript"
        assert by_stem["broken"] == "unreadable audio"
        mismatched = [
            d for d in r["recordings_detail"] if d["reason"] == "probable transcript mismatch"
        ]
        scores = {d["utt_id"]: d["score"] for d in r["recordings_detail"]}
        assert len(mismatched) == 1, f"{r['mismatch_rule']}; " + " ".join(
            f"{k} {v:.2f}" for k, v in scores.items() if v is not None
        )
        assert r["used"] == 11 and r["trained_on"]["train"] + r["trained_on"]["dev"] == 11
        assert 0 < r["dev_agreement_61"] <= 1
        assert len(list((out / "alignments" / f"round_{r['round']}").glob("*.TextGrid"))) == 12
    assert report["rounds"][1]["word_boundary_shift_ms"] is not None
    assert (out / "adapt.png").stat().st_size > 0 and (out / "metrics.jsonl").is_file()
    config = json.loads((out / "config.json").read_text())
    adapted = config["run"]["adapted"]
    assert adapted["recordings"] == 11 and adapted["rounds"] == 2 and adapted["minutes"] > 0
    assert config["training"]["init"]  # trained from the starting model's weights
    mixed = json.loads((out / "work" / "round_2" / "mixed" / "store.json").read_text())["mix"]
    assert mixed["utterances"] > 0
    load_model(out)


@pytest.mark.slow
@pytest.mark.skipif(not festival_available(), reason="festival is not installed")
def test_adapt_guesses_words_in_no_dictionary(synth_corpus, tmp_path):
    """LJ Speech form; every transcript gains a made-up name festival must pronounce."""
    lj = tmp_path / "lj"
    (lj / "wavs").mkdir(parents=True)
    lines = []
    for i, (_, wav, words) in enumerate(_recordings(synth_corpus, 4, 1)):
        shutil.copy(wav, lj / "wavs" / f"LJ001-{i:04d}.wav")
        lines.append(f"LJ001-{i:04d}|x|{words} brontavik")
    (lj / "metadata.csv").write_text("\n".join(lines) + "\n")
    # the name is not said: no mismatch check here (4 recordings, one MAD is tiny)
    config = AdaptConfig(epochs=1, device="cpu", mismatch_mads=100)
    report = adapt(lj, tmp_path / "m", config=config)
    (only,) = report.rounds
    assert report.form == "ljspeech" and len(only.used) == 4, only.left_out
    grid = (tmp_path / "m" / "alignments" / "round_1" / "lj001-0000.TextGrid").read_text()
    assert "brontavik" in grid


def test_a_mix_store_of_other_features_is_refused(tone_corpus, synth_corpus, tmp_path):
    from phonelabel.features import FeatureConfig
    from phonelabel.store import featurize

    fbank = tmp_path / "fbank"
    featurize(tone_corpus, fbank, FeatureConfig(kind="fbank"), jobs=1)
    corpus = tmp_path / "corpus"
    for speaker, wav, words in _recordings(synth_corpus, 3, 1):
        _flac(wav, corpus / speaker / "a.flac")
        (corpus / speaker / "a.txt").write_text(words)
    with pytest.raises(PhonelabelError, match="features differ.*kind"):
        adapt(corpus, tmp_path / "m", mix=fbank)
    assert not (tmp_path / "m").exists()
    result = runner.invoke(app, ["adapt", str(corpus), "--out", str(tmp_path / "m"),
                                 "--model", str(tmp_path / "fbank")])  # fmt: skip
    assert result.exit_code == 2 and "not a model directory" in result.output
    np.testing.assert_equal((tmp_path / "m").exists(), False)


@pytest.mark.slow
def test_shards_align_their_share_and_the_full_run_reads_it_back(synth_corpus, tmp_path):
    from phonelabel.workers import Shard

    corpus = tmp_path / "corpus"
    for speaker, wav, words in _recordings(synth_corpus, 4, 1):
        _flac(wav, corpus / speaker / "a.flac")
        (corpus / speaker / "a.txt").write_text(words)
    out = tmp_path / "m"
    config = AdaptConfig(epochs=1, device="cpu")
    first = adapt(corpus, out, config=config, shard=Shard(1, 2))
    assert first.aligned_only and (out / "adapt.shard-1-of-2.json").is_file()
    grids = sorted((out / "alignments" / "round_1").glob("*.TextGrid"))
    assert len(grids) == 2 and not (out / "model.pt").exists()
    before = {g.name: g.read_bytes() for g in grids}
    report = adapt(corpus, out, config=config)  # aligns the other half, then trains
    assert len(report.rounds[0].used) == 4
    assert all((out / "alignments" / "round_1" / n).read_bytes() == b for n, b in before.items())
    load_model(out)
