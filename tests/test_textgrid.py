"""Audio + TextGrid corpora (MFA output, hand labels): reading, labels, bad input, splits.

Corpora are made here: tone utterances (conftest) written as WAV + TextGrid, in both
Praat text formats and UTF-16, with TIMIT, ARPAbet (MFA style) or user-mapped labels.
The real MFA recordings in the shared folder are read, never written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import RATE, tone_utterance
from praatio import textgrid as praat
from praatio.data_classes.interval_tier import IntervalTier
from praatio.data_classes.point_tier import PointTier
from typer.testing import CliRunner

from phonelabel.audio import read_audio
from phonelabel.cli import app
from phonelabel.corpus.phonemap import map_segments
from phonelabel.corpus.source import CorpusOptions, open_corpus
from phonelabel.corpus.textgrid import (
    LabelRule,
    detect_label_set,
    find_textgrid_corpus,
    read_alignment,
)
from phonelabel.errors import PhonelabelError
from phonelabel.features import NO_LABEL
from phonelabel.store import featurize, open_store

REAL = Path(__file__).resolve().parents[2] / "shared" / "realspeech" / "mfa"
runner = CliRunner()

# tone phone -> ARPAbet as MFA writes it; tcl + t become one T (split back at the burst)
ARPABET = {"aa": "AA1", "iy": "IY0", "s": "S", "sh": "SH", "m": "M", "n": "N", "ow": "OW2"}
USER = {"aa": "A", "iy": "I", "s": "S", "sh": "SH", "m": "M", "n": "N", "ow": "O"}
USER_MAP = "A aa\nI iy\nS s\nSH sh\nM m\nN n\nO ow\nT tcl t\nsil pau\nNOISE -\n"


def to_arpabet(segments: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    after_closure = False
    for index, (start, end, phone) in enumerate(segments):
        if phone == "t" and after_closure:
            out[-1] = (out[-1][0], end, "T")
        elif phone in ("tcl", "t"):
            out.append((start, end, "T"))
        elif phone == "h#":
            out.append((start, end, "" if index == 0 else "sil"))
        else:
            out.append((start, end, {"pau": "sp", "q": "spn"}.get(phone) or ARPABET[phone]))
        after_closure = phone == "tcl"
    return out


def to_user(segments: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    out = []
    for start, end, phone in to_arpabet(segments):
        key = phone.rstrip("012")
        label = {"": "sil", "sil": "sil", "sp": "sil", "spn": "NOISE", "T": "T"}.get(key)
        out.append((start, end, label or USER[key.lower()]))
    return out


def write_grid(
    path: Path,
    intervals: list[tuple[float, float, str]],
    end: float,
    fmt: str = "long_textgrid",
    utf16: bool = False,
    tier: str = "phones",
    words: bool = True,
) -> Path:
    grid = praat.Textgrid()
    if words:
        grid.addTier(IntervalTier("words", [(0.0, end, "tone")], 0, end))
    grid.addTier(IntervalTier(tier, [i for i in intervals if i[2]], 0, end))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format=fmt, includeBlankSpaces=True, minTimestamp=0, maxTimestamp=end)
    if utf16:
        path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    return path


def write_tone_pair(
    directory: Path, stem: str, rng, labels: str = "timit", fmt="long_textgrid", utf16=False
):
    """A WAV + TextGrid pair; returns the TIMIT segments (samples) the labels stand for."""
    samples, segments = tone_utterance(rng)
    directory.mkdir(parents=True, exist_ok=True)
    soundfile.write(directory / f"{stem}.wav", samples, RATE, subtype="PCM_16")
    written = {"timit": segments, "arpabet": to_arpabet(segments), "user": to_user(segments)}
    intervals = [(s / RATE, e / RATE, p) for s, e, p in written[labels]]
    end = len(samples) / RATE
    write_grid(directory / f"{stem}.TextGrid", intervals, end, fmt, utf16)
    return segments


def make_corpus(root: Path, labels: str, speakers: int = 4, utterances: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    for s in range(speakers):
        for u in range(utterances):
            fmt = "short_textgrid" if (s + u) % 2 else "long_textgrid"
            write_tone_pair(root / f"spk{s}", f"utt{u}", rng, labels, fmt, utf16=u == 3)
    return root


# --- the real MFA recordings --------------------------------------------------------------


@pytest.mark.skipif(not REAL.is_dir(), reason="the shared real recordings are not here")
def test_real_mfa_recordings_read_as_arpabet_with_words_and_split_stops():
    corpus = find_textgrid_corpus(REAL)
    assert corpus.label_rule.label_set == "arpabet" and not corpus.problems
    assert len(corpus.splits["all"]) == 3
    total = 0
    for utterance in corpus.splits["all"]:
        audio = read_audio(utterance.audio)
        segments = utterance.segments(audio)
        phones = [s.phone for s in segments]
        assert phones[0] == "h#" and phones[-1] == "h#" and "pau" in phones
        assert {"tcl", "kcl", "dcl"} <= set(phones)  # stops split into closure + release
        for closure, release in zip(phones, phones[1:], strict=False):
            if closure in ("bcl", "dcl", "gcl", "kcl", "pcl", "tcl"):
                assert release in ("b", "d", "g", "k", "p", "t", "ch", "jh")
        assert all(a.end <= b.start + 1e-9 for a, b in zip(segments, segments[1:], strict=False))
        assert segments[-1].end <= audio.seconds + 1e-9
        words = utterance.word_segments()
        assert words and all(w.word.strip() for w in words)
        total += len(segments)
    assert total > 500


@pytest.mark.skipif(not REAL.is_dir(), reason="the shared real recordings are not here")
def test_real_recordings_spoken_noise_is_left_unlabelled(tmp_path):
    report = featurize(REAL, tmp_path / "feat", jobs=1)
    assert "arpabet" in report.summary and not report.skipped
    unlabelled = sum(s.unlabelled_frames for s in report.splits.values())
    assert 0 < unlabelled < 200  # the spn intervals, nothing else
    info = json.loads((tmp_path / "feat" / "store.json").read_text())
    assert info["corpus_kind"] == "textgrid" and info["split_rule"]["rule"] == "seeded"


# --- parsing and labels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,utf16", [("long_textgrid", False), ("short_textgrid", False), ("long_textgrid", True)]
)
def test_long_short_and_utf16_textgrids_read_alike(tmp_path, fmt, utf16):
    intervals = [(0.0, 0.1, ""), (0.1, 0.25, "AH0"), (0.25, 0.3, "é"), (0.3, 0.5, "")]
    path = write_grid(tmp_path / "a.TextGrid", intervals, 0.5, fmt, utf16)
    if utf16:
        assert path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    alignment = read_alignment(path)
    labelled = [(s, e, p) for s, e, p in alignment.phones if p]
    assert labelled == [(0.1, 0.25, "AH0"), (0.25, 0.3, "é")]
    assert alignment.tier == "phones" and alignment.words[0].word == "tone"


def test_arpabet_maps_stress_silence_noise_and_splits_stops_at_the_burst():
    rate = RATE
    rng = np.random.default_rng(1)
    quiet = 0.001 * rng.standard_normal(1600)
    burst = 0.5 * rng.standard_normal(800)
    samples = np.concatenate([quiet, quiet, quiet[:800], burst, quiet, quiet, quiet])
    samples = samples.astype(np.float32)  # 0.6 s
    from phonelabel.audio import Audio

    audio = Audio(samples, rate, rate, 1, len(samples))
    spans = [
        (0.0, 0.1, ""),
        (0.1, 0.2, "AA1"),
        (0.2, 0.35, "T"),  # closure 0.2-0.25, burst from 0.25
        (0.35, 0.45, "sp"),
        (0.45, 0.5, "spn"),
        (0.5, 0.6, "sil"),
    ]
    rule = LabelRule("arpabet")
    from phonelabel.corpus.textgrid import TextGridTiers, timit_segments

    segments = timit_segments(
        TextGridTiers(Path("x"), "phones", spans, None, 0.6), rule, samples, rate
    )
    got = [(round(s.start, 3), round(s.end, 3), s.phone) for s in segments]
    assert got == [
        (0.0, 0.1, "h#"),
        (0.1, 0.2, "aa"),
        (0.2, 0.25, "tcl"),
        (0.25, 0.35, "t"),
        (0.35, 0.45, "pau"),
        (0.5, 0.6, "h#"),  # spn: a gap, neither trained nor scored
    ]
    assert audio.seconds == pytest.approx(0.6)


def test_synth_and_textgrid_share_one_stop_splitting_rule():
    from phonelabel.corpus.engines import to_timit
    from phonelabel.corpus.phonemap import arpabet_table

    rng = np.random.default_rng(2)
    samples = np.concatenate([0.001 * rng.standard_normal(900), rng.standard_normal(700)])
    phones = [("pau", 0, 400), ("k", 400, 1400), ("pau", 1400, 1600)]
    shared = map_segments(phones, arpabet_table(), samples, ("pau",))
    assert to_timit(phones, samples) == shared
    assert shared[1][2] == "kcl" and abs(shared[1][1] - 900) <= 80


def test_label_sets_are_detected():
    assert detect_label_set(["h#", "sh", "iy", "tcl", "t", ""]) == "timit"
    assert detect_label_set(["", "SH", "IY1", "T", "sp", "spn"]) == "arpabet"
    assert detect_label_set(["sh", "iy", "t"]) == "arpabet"  # no closure: CMU style


def test_an_unknown_label_names_file_tier_interval_label_and_the_option(tmp_path):
    samples, _ = tone_utterance(np.random.default_rng(3))
    (tmp_path / "c" / "spk").mkdir(parents=True)
    soundfile.write(tmp_path / "c" / "spk" / "u1.wav", samples, RATE, subtype="PCM_16")
    end = len(samples) / RATE
    path = write_grid(
        tmp_path / "c" / "spk" / "u1.TextGrid",
        [(0.0, 0.1, "sil"), (0.1, 0.2, "AA1"), (0.2, 0.3, "XYZ"), (0.3, end, "sil")],
        end,
    )
    corpus = find_textgrid_corpus(tmp_path / "c")
    assert corpus.label_rule.label_set == "arpabet"
    utterance = corpus.splits["all"][0]
    with pytest.raises(PhonelabelError) as error:
        utterance.segments(read_audio(utterance.audio))
    message = str(error.value)
    assert message.startswith(f"{path}: tier 'phones', interval 3 (0.2-0.3 s)")
    assert "'XYZ'" in message and "--phone-map" in message


def test_a_user_map_gives_what_arpabet_gives_and_dash_is_not_scored(tmp_path):
    for labels in ("user", "arpabet"):
        write_tone_pair(tmp_path / labels / "spk", "u1", np.random.default_rng(4), labels)
    (tmp_path / "map.txt").write_text(USER_MAP)
    mapped = find_textgrid_corpus(tmp_path / "user", phone_map=tmp_path / "map.txt")
    arpabet = find_textgrid_corpus(tmp_path / "arpabet")
    assert mapped.label_rule.label_set == "map" and arpabet.label_rule.label_set == "arpabet"
    got = [c.splits["all"][0] for c in (mapped, arpabet)]
    segments = [u.segments(read_audio(u.audio)) for u in got]
    assert segments[0] == segments[1]
    assert segments[0][0].phone == "h#" and "q" not in {s.phone for s in segments[0]}
    bad = tmp_path / "bad.txt"
    bad.write_text("A zz\n")
    with pytest.raises(PhonelabelError, match="'zz' is not a TIMIT-61 phone"):
        find_textgrid_corpus(tmp_path / "user", phone_map=bad)


def test_the_phone_tier_is_chosen_by_name_or_the_error_lists_the_tiers(tmp_path):
    intervals = [(0.0, 0.2, "aa")]
    write_grid(tmp_path / "one.TextGrid", intervals, 0.2, tier="phone-level")
    assert read_alignment(tmp_path / "one.TextGrid").tier == "phone-level"
    grid = write_grid(tmp_path / "none.TextGrid", intervals, 0.2, tier="segments")
    with pytest.raises(PhonelabelError, match="tiers: 'words', 'segments'.*--tier"):
        read_alignment(grid)
    assert read_alignment(grid, tier="segments").phones == [(0.0, 0.2, "aa")]
    with pytest.raises(PhonelabelError, match="no tier named 'x'"):
        read_alignment(grid, tier="x")
    alone = write_grid(tmp_path / "alone.TextGrid", intervals, 0.2, tier="MAU", words=False)
    assert read_alignment(alone).tier == "MAU"  # a grid's only tier is its phone tier


def test_label_outputs_and_corpora_read_textgrids_by_the_same_rules(tmp_path):
    """formats.read_segments reads a TextGrid through the corpus reader: the same tier
    choice, UTF-16 too, and the same refusal of a grid with no phone tier."""
    from phonelabel.core import Segment
    from phonelabel.formats import read_segments

    intervals = [(0.0, 0.1, "h#"), (0.1, 0.15, ""), (0.15, 0.3, "aa")]
    grid = write_grid(tmp_path / "a.TextGrid", intervals, 0.3, tier="phone", utf16=True)
    expected = [Segment(0.0, 0.1, "h#"), Segment(0.15, 0.3, "aa")]
    assert read_segments(grid) == expected  # the words tier first: not taken for phones
    assert [s[2] for s in read_alignment(grid).phones if s[2]] == ["h#", "aa"]
    none = write_grid(tmp_path / "b.TextGrid", intervals, 0.3, tier="segments")
    with pytest.raises(PhonelabelError, match="no phone tier"):
        read_segments(none)


# --- bad input: featurize skips and reports it, --strict stops -----------------------------


def _bad_corpus(root: Path) -> dict[str, str]:
    """One good utterance per speaker folder plus one bad file of each kind; returns
    {file name: expected reason fragment}."""
    rng = np.random.default_rng(5)
    for s in range(3):
        write_tone_pair(root / f"spk{s}", "good", rng)
    samples, _ = tone_utterance(rng)
    end = len(samples) / RATE
    bad = root / "spk0"

    def wav(stem):
        soundfile.write(bad / f"{stem}.wav", samples, RATE, subtype="PCM_16")

    wav("overlap")
    (bad / "overlap.TextGrid").write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n'
        f'{end}\n<exists>\n1\n"IntervalTier"\n"phones"\n0\n{end}\n2\n'
        f'0\n0.2\n"aa"\n0.1\n{end}\n"iy"\n'
    )
    wav("gappy")  # gaps are allowed: unlabelled frames
    write_grid(bad / "gappy.TextGrid", [(0.0, 0.1, "h#"), (0.2, end, "h#")], end)
    wav("toolong")
    write_grid(bad / "toolong.TextGrid", [(0.0, end + 0.05, "h#")], end + 0.05)
    wav("noalign")
    write_grid(bad / "orphan.TextGrid", [(0.0, 0.1, "h#")], 0.1)
    wav("empty")
    write_grid(bad / "empty.TextGrid", [], end)
    wav("points")
    grid = praat.Textgrid()
    grid.addTier(PointTier("phones", [(0.1, "aa")], 0, end))
    grid.save(str(bad / "points.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    wav("notgrid")
    (bad / "notgrid.TextGrid").write_text("this is not a TextGrid at all\n")
    return {
        "overlap": "overlaps the one before it",
        "toolong": "past the end of its audio",
        "noalign": "no TextGrid for it",
        "orphan": "TextGrid with no audio",
        "empty": "is empty",
        "points": "is a point tier",
        "notgrid": "not a TextGrid",
    }


def test_every_bad_input_is_one_line_naming_the_file_and_strict_stops(tmp_path):
    expected = _bad_corpus(tmp_path / "c")
    report = featurize(tmp_path / "c", tmp_path / "feat", jobs=1)
    lines = [f"{a}: {b}" for a, b in report.problems + report.skipped]
    for stem, reason in expected.items():
        hits = [line for line in lines if stem in line and reason in line]
        assert len(hits) == 1, (stem, lines)
        assert "\n" not in hits[0]
    assert not any("gappy" in line or "good" in line for line in lines)
    stored = sum(s.utterances for s in report.splits.values())
    assert stored == 4  # 3 good + the gappy one
    gappy = open_store(tmp_path / "feat")
    assert any(
        NO_LABEL in gappy.split(n).labels for n in gappy.split_names if gappy.split(n).utterances
    )
    result = runner.invoke(
        app, ["featurize", str(tmp_path / "c"), str(tmp_path / "f2"), "--strict"]
    )
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "error:" in result.stderr and "orphan.TextGrid: TextGrid with no audio" in result.stderr


# --- splits ---------------------------------------------------------------------------------


def test_train_dev_test_folders_are_the_splits(tmp_path):
    rng = np.random.default_rng(6)
    for split, speakers in (("train", 2), ("dev", 1), ("test", 1)):
        for s in range(speakers):
            write_tone_pair(tmp_path / "c" / split / f"{split}{s}", "u1", rng)
    write_tone_pair(tmp_path / "c" / "extra" / "x", "u1", rng)  # in no split folder
    corpus = open_corpus(tmp_path / "c")
    assert corpus.info["split_rule"]["rule"] == "folders"
    counts = {name: len(corpus.splits[name]) for name in ("train", "dev", "test", "all")}
    assert counts == {"train": 2, "dev": 1, "test": 1, "all": 4} and corpus.excluded == 1


def test_a_manifest_sets_the_splits(tmp_path):
    make_corpus(tmp_path / "c", "timit", speakers=2, utterances=2)
    rows = ["utt_id\tspeaker\tsplit\taudio\talignment"]
    for s, split in ((0, "train"), (1, "test")):
        for u in range(2):
            rows.append(f"s{s}u{u}\ts{s}\t{split}\tspk{s}/utt{u}.wav\tspk{s}/utt{u}.TextGrid")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    corpus = open_corpus(tmp_path / "c", CorpusOptions(manifest=tmp_path / "m.tsv"))
    assert [u.utt_id for u in corpus.splits["test"]] == ["s1u0", "s1u1"]
    assert len(corpus.splits["train"]) == 2 and not corpus.splits["dev"]
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    with pytest.raises(PhonelabelError, match="header utt_id speaker split audio alignment"):
        open_corpus(tmp_path / "c", CorpusOptions(manifest=tmp_path / "bad.tsv"))


def test_speakers_are_split_by_a_seeded_rule_and_tiny_corpora_work(tmp_path):
    make_corpus(tmp_path / "c", "timit", speakers=12, utterances=1)
    first = find_textgrid_corpus(tmp_path / "c")
    again = find_textgrid_corpus(tmp_path / "c")
    assert first.split_rule == again.split_rule
    assert first.split_rule["proportions"] == "train 10, dev 1, test 1"
    for name in ("train", "dev", "test"):
        assert [u.utt_id for u in first.splits[name]] == [u.utt_id for u in again.splits[name]]
    by_split = {n: {u.speaker for u in first.splits[n]} for n in ("train", "dev", "test")}
    assert not (by_split["train"] & by_split["test"]) and len(first.splits["all"]) == 12
    make_corpus(tmp_path / "one", "timit", speakers=1, utterances=1)
    single = find_textgrid_corpus(tmp_path / "one")
    assert single.split_rule["unit"] == "utterance" and len(single.splits["all"]) == 1
    assert len(single.splits["train"]) == 1


def test_evaluate_split_all_reads_every_utterance_of_a_tree_and_of_its_store(tmp_path, tone_model):
    make_corpus(tmp_path / "c", "timit", speakers=3, utterances=2)
    featurize(tmp_path / "c", tmp_path / "feat", jobs=1)
    for source in (tmp_path / "c", tmp_path / "feat"):
        result = runner.invoke(
            app, ["evaluate", str(tone_model), str(source), "--split", "all", "--device", "cpu"]
        )
        assert result.exit_code == 0, result.output
        assert "6 utterances" in result.stdout and "frame accuracy, 61 phones" in result.stdout
    from phonelabel.evaluate import evaluate

    tree = evaluate(tone_model, tmp_path / "c", split="all")
    store = evaluate(tone_model, tmp_path / "feat", split="all")
    assert tree.frame_accuracy_61 == pytest.approx(store.frame_accuracy_61, abs=0.02)
    assert tree.frame_accuracy_61 > 0.5  # the tone model knows these chords


# --- training from TextGrid corpora ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["timit", "arpabet", "user"])
def test_a_model_trains_from_a_textgrid_corpus_with_init_and_from_scratch(
    tmp_path, labels, tone_model
):
    """Each label set trains from the tone model's weights (1 epoch); the ARPAbet corpus, the
    MFA case, also from scratch. Long and short TextGrids, UTF-16 among them."""
    from phonelabel.evaluate import evaluate

    root = make_corpus(tmp_path / "c", labels, speakers=3, utterances=4)
    extra = []
    if labels == "user":
        (tmp_path / "map.txt").write_text(USER_MAP)
        extra = ["--phone-map", str(tmp_path / "map.txt")]
    result = runner.invoke(
        app, ["featurize", str(root), str(tmp_path / "feat"), "--jobs", "1", *extra]
    )
    assert result.exit_code == 0, result.output
    named = {"timit": "timit labels", "arpabet": "arpabet labels", "user": "map labels"}
    assert named[labels] in result.stderr
    options = ["--hidden", "48", "--layers", "1", "--k1", "20", "--batch-streams", "8"]
    options += ["--lr", "0.01", "--device", "cpu", "--no-tune-decoder"]
    options += ["--delay", "0", "--time-mask", "0", "--freq-mask", "0"]  # as tone_model
    runs = {"init": ["--init", str(tone_model), "--epochs", "1"]}
    if labels == "arpabet":
        runs["scratch"] = ["--epochs", "3"]
    for name, run in runs.items():
        out = tmp_path / name
        result = runner.invoke(
            app, ["train", str(tmp_path / "feat"), "--out", str(out)] + options + run
        )
        assert result.exit_code == 0, result.output
        written = json.loads((out / "config.json").read_text())
        want = str(tone_model.resolve()) if name == "init" else None
        assert written["run"].get("init_model") == want
        assert written["training"]["init"] == (str(tone_model) if name == "init" else None)
        accuracy = evaluate(out, tmp_path / "feat", split="all").frame_accuracy_61
        assert accuracy > 0.5, (name, accuracy)


def test_init_refuses_a_model_of_another_size_naming_the_difference(tmp_path, tone_model):
    make_corpus(tmp_path / "c", "timit", speakers=3, utterances=1)
    featurize(tmp_path / "c", tmp_path / "feat", jobs=1)
    result = runner.invoke(
        app,
        ["train", str(tmp_path / "feat"), "--out", str(tmp_path / "m"), "--hidden", "32"]
        + ["--layers", "1", "--init", str(tone_model), "--device", "cpu"],
    )
    assert result.exit_code == 2 and "hidden: 48 (model) vs 32 (this run)" in result.stderr
    assert not (tmp_path / "m").exists()
    shutil.rmtree(tmp_path / "feat")
    featurize(tmp_path / "c", tmp_path / "feat", config=_fbank(), jobs=1)
    result = runner.invoke(
        app,
        ["train", str(tmp_path / "feat"), "--out", str(tmp_path / "m"), "--hidden", "48"]
        + ["--layers", "1", "--init", str(tone_model), "--device", "cpu"],
    )
    assert result.exit_code == 2 and "kind: 'mfcc' (model) vs 'fbank'" in result.stderr


def _fbank():
    from phonelabel.features import FeatureConfig

    return FeatureConfig(kind="fbank")


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason="the shared real recordings are not here")
def test_store_split_all_scores_as_the_tree_for_a_speaker_spanning_splits(tmp_path):
    """One speaker split by utterance over train/dev/test: ``--split all`` of the store must
    normalise the speaker over all of them, as evaluating the tree does."""
    from phonelabel.evaluate import evaluate
    from phonelabel.modeldir import default_model_dir
    from phonelabel.store import featurize

    featurize(REAL, tmp_path / "feat", jobs=1)
    from_store = evaluate(default_model_dir(), tmp_path / "feat", split="all")
    from_tree = evaluate(default_model_dir(), REAL, split="all")
    assert from_store.frames == from_tree.frames > 7000
    assert abs(from_store.frame_accuracy_61 - from_tree.frame_accuracy_61) < 1e-3
    assert abs(from_store.frame_accuracy_39 - from_tree.frame_accuracy_39) < 1e-3
