"""Forced alignment: text -> words, words -> pronunciations, phone graph, decoder, files."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from phonelabel.align import (
    Aligner,
    AlignmentDecoder,
    AlignParams,
    align_words,
    build_graph,
    emission_scores,
    frame_graph,
)
from phonelabel.cli import app
from phonelabel.corpus.timit import read_transcript
from phonelabel.errors import PhonelabelError
from phonelabel.formats import read_segments
from phonelabel.lexicon import (
    festival_available,
    normalize_text,
    number_words,
    pronounce,
    read_dictionary,
)
from phonelabel.metrics import AlignmentErrors, boundary_pairs, merge_closures
from phonelabel.phones import NUM_PHONES, PHONE_INDEX

runner = CliRunner()
needs_festival = pytest.mark.skipif(not festival_available(), reason="festival not installed")


# --- text ---------------------------------------------------------------------------------------


def test_text_is_normalised_as_users_write_it():
    text = "Don't STOP -- the 3rd of 1,250 X-rays, 2.5% [noise] \u201cquoted\u201d o\u2019clock!"
    assert normalize_text(text) == [
        "don't", "stop", "the", "third", "of", "one", "thousand", "two", "hundred", "fifty",
        "x-rays", "two", "point", "five", "percent", "quoted", "o'clock",
    ]  # fmt: skip


def test_numbers_are_spelled_out():
    assert number_words(0) == ["zero"]
    assert number_words(17) == ["seventeen"]
    assert number_words(40) == ["forty"]
    assert number_words(1984) == ["one", "thousand", "nine", "hundred", "eighty", "four"]
    assert number_words(2_000_005) == ["two", "million", "five"]
    assert normalize_text("21st 100th") == ["twenty", "first", "one", "hundredth"]


def test_timit_txt_and_plain_transcripts_give_the_words(tmp_path):
    (tmp_path / "a.TXT").write_text("0 46797 She had your dark suit in greasy wash water.\n")
    (tmp_path / "b.lab").write_text("she had\nyour dark suit\n")
    assert read_transcript(tmp_path / "a.TXT").split()[:2] == ["She", "had"]
    assert normalize_text(read_transcript(tmp_path / "b.lab")) == [
        "she", "had", "your", "dark", "suit"
    ]  # fmt: skip


def test_a_transcript_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(PhonelabelError, match="not UTF-8"):
        read_transcript(tmp_path / "a.txt")


# --- pronunciations -----------------------------------------------------------------------------


def test_user_dictionary_takes_precedence_and_reads_mfa_probabilities(tmp_path):
    path = tmp_path / "my.dict"
    path.write_text("tomato\t0.99\t0.1\t1.0\t1.0\tT AH0 M AA1 T OW2\nzorblax Z AO1 R B L AE2 K S\n")
    user = read_dictionary(path)
    prons, guessed = pronounce(["tomato", "zorblax", "water"], user, guess=False)
    assert prons[0] == [("T", "AH0", "M", "AA1", "T", "OW2")]  # not the CMU's EY1 one
    assert prons[1] == [("Z", "AO1", "R", "B", "L", "AE2", "K", "S")]
    assert prons[2] == [("W", "AO1", "T", "ER0")]  # from the CMU dictionary
    assert guessed == []


def test_a_bad_dictionary_line_names_the_line_and_the_format(tmp_path):
    path = tmp_path / "bad.dict"
    path.write_text("hello HH AH0 L OW1\nworld W ER1 LD\n")
    with pytest.raises(PhonelabelError, match=r"bad.dict:2: unknown phone 'LD'.*WORD PHONE"):
        read_dictionary(path)


def test_unknown_words_without_guessing_are_all_listed_with_the_line_format():
    with pytest.raises(PhonelabelError) as error:
        pronounce(["hello", "zorblax", "quuxify", "world"], guess=False)
    message = str(error.value)
    assert "zorblax, quuxify" in message and "hello" not in message.split(":")[1]
    assert "WORD PHONE PHONE" in message and "guessing is off" in message


@needs_festival
def test_unknown_words_are_guessed_by_festival_in_one_call():
    prons, guessed = pronounce(["zorblax", "the", "quuxify"], guess=True)
    assert guessed == ["zorblax", "quuxify"]
    assert prons[0][0][0] == "Z" and any(p.endswith("1") for p in prons[0][0])  # stressed vowel


# --- the phone graph ----------------------------------------------------------------------------


def _strings(graph) -> set[str]:
    return {" ".join(path) for path in graph.paths()}


def test_graph_has_optional_silences_and_every_pronunciation():
    strings = _strings(build_graph([[("S", "IY1")], [("AH0",), ("EY1",)]]))  # "see a"
    assert "h# s iy ax h#" in strings and "s iy ey" in strings  # h# optional at both ends
    assert "s iy pau ax" in strings and "h# s iy pau ey h#" in strings  # pau optional
    assert "pau s iy ey" not in strings  # no pau before the first word (h# is the edge)
    assert not any(s.endswith("pau") for s in strings)


def test_stops_expand_to_closure_and_release_flaps_and_glottal_stops():
    water = _strings(build_graph([[("W", "AO1", "T", "ER0")]]))
    assert {"w ao tcl t er", "w ao t er", "w ao dx er", "w ao q er", "w ao dx axr"} <= water
    cat = _strings(build_graph([[("K", "AE1", "T")]]))
    assert {"kcl k ae tcl t", "k ae t", "k ae tcl", "k ae q"} <= cat  # unreleased at the end
    church = _strings(build_graph([[("CH", "ER1", "CH")]]))
    assert "tcl ch er tcl ch" in church and "ch er ch" in church


def test_reduced_vowels_syllabic_consonants_and_hv():
    button = _strings(build_graph([[("B", "AH1", "T", "AH0", "N")]]))
    assert {"bcl b ah tcl t ax n", "b ah q en", "b ah t ix n", "b ah t ax-h n"} <= button
    assert not any("ax t" in s for s in button)  # the stressed ah is not reduced
    hat = _strings(build_graph([[("HH", "AE1", "T")]]))
    assert any(s.startswith("hv ") for s in hat) and any(s.startswith("hh ") for s in hat)
    bird = _strings(build_graph([[("B", "ER1", "D")]]))
    assert not any("axr" in s for s in bird)


def test_realisations_the_model_never_saw_are_left_out():
    seen = lambda phone: phone not in ("dx", "q", "axr")  # noqa: E731
    water = _strings(build_graph([[("W", "AO1", "T", "ER0")]], seen))
    assert not any(p in s.split() for s in water for p in ("dx", "q", "axr"))
    assert "w ao tcl t er" in water


# --- decoding -----------------------------------------------------------------------------------


def dense_viterbi(graph, emissions: np.ndarray) -> np.ndarray:
    """The whole-lattice Viterbi (T x S back-pointers): the reference for the decoder."""
    T, S = len(emissions), graph.size
    everything = np.arange(S)
    score = np.where(graph.initial, emissions[0, graph.phone], -np.inf)
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        padded = np.append(score, -np.inf)
        entering = padded[graph.predecessors]
        which = entering.argmax(axis=1)
        enter = entering[everything, which] - graph.entry_cost
        stay = np.where(graph.loops, score, -np.inf)
        back[t] = np.where(stay >= enter, everything, graph.predecessors[everything, which])
        score = np.maximum(stay, enter) + emissions[t, graph.phone]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(np.argmax(np.where(graph.final, score, -np.inf)))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _decode(graph, emissions, params, block=37):
    decoder = AlignmentDecoder(graph, len(emissions), params)
    parts = [decoder.push(emissions[i : i + block]) for i in range(0, len(emissions), block)]
    return np.concatenate(parts + [decoder.finish()])


def peaked(phones: list[str], durations: list[int], rng, sharp: float = 0.9) -> np.ndarray:
    """(T, 61) log-posteriors whose best frame-wise class is the given phone string."""
    frames = np.repeat([PHONE_INDEX[p] for p in phones], durations)
    noise = rng.dirichlet(np.ones(NUM_PHONES), size=len(frames)) * (1 - sharp)
    noise[np.arange(len(frames)), frames] += sharp
    return np.log(noise)


def test_decoder_equals_the_whole_lattice_viterbi_on_noisy_posteriors():
    rng = np.random.default_rng(0)
    prons, _ = pronounce("she had your dark suit".split(), guess=False)
    params = AlignParams(min_frames=2, beam=np.inf, check_every=7, max_lag=10**6)
    graph = frame_graph(build_graph(prons), params)
    posteriors = np.log(rng.dirichlet(np.ones(NUM_PHONES) * 0.3, size=160))
    priors = rng.dirichlet(np.ones(NUM_PHONES))
    emissions = emission_scores(posteriors, priors, params)  # (160, 62)
    np.testing.assert_array_equal(
        _decode(graph, emissions, params), dense_viterbi(graph, emissions)
    )


def test_aligner_recovers_known_boundaries_exactly():
    rng = np.random.default_rng(1)
    words = "the dark suit".split()
    phones = "h# dh ax dcl d aa r kcl k pau s uw tcl t h#".split()
    durations = [12, 4, 5, 3, 2, 9, 6, 4, 3, 15, 10, 8, 5, 2, 20]
    aligner = Aligner(None, None, AlignParams(), guess=False)
    posteriors = peaked(phones, durations, rng)
    result = align_words(words, aligner, [posteriors], len(posteriors), 1.2)
    assert [s.phone for s in result.phones] == phones
    edges = np.cumsum(durations)[:-1]  # frame boundaries -> 10 ms hop + 7.5 ms offset
    assert [round(s.start, 4) for s in result.phones[1:]] == [
        round((e * 160 + 120) / 16000, 4) for e in edges
    ]
    assert [w.word for w in result.words] == ["", "the", "dark", "", "suit", ""]
    assert result.words[1].start == result.phones[1].start
    assert result.phones[0].start == 0 and result.phones[-1].end == 1.2


def test_words_that_cannot_fit_the_audio_are_refused():
    aligner = Aligner(None, None, AlignParams(min_frames=3), guess=False)
    posteriors = np.log(np.full((20, NUM_PHONES), 1 / NUM_PHONES))
    with pytest.raises(PhonelabelError, match="need at least .* frames.*the audio has 20"):
        align_words("she had your dark suit".split(), aligner, [posteriors], 20, 0.2)


@pytest.mark.slow
def test_a_long_recording_aligns_in_bounded_memory():
    """Over 20,000 frames (3+ minutes) of posteriors for a 1,000-word transcript, made block by
    block: the decoder's memory stays far below one frame x graph lattice (which would take
    T x S x 4 bytes = gigabytes), and every boundary is recovered."""
    rng = np.random.default_rng(2)
    vocabulary = "she had your dark suit in greasy wash water all year".split()
    words = [vocabulary[i] for i in rng.integers(0, len(vocabulary), size=1000)]
    params = AlignParams()
    prons, _ = pronounce(words, guess=False)
    graph = build_graph(prons)
    # the true path: the first pronunciation, closure + release stops, pauses sometimes
    phones = ["h#"]
    for i in range(len(words)):
        phones += graph_word_forms(prons[i][0])
        if rng.random() < 0.2:
            phones.append("pau")
    phones.append("h#")
    durations = [int(d) for d in rng.integers(3, 12, size=len(phones))]
    durations = [
        d if p not in ("b", "d", "g", "p", "t", "k") else 2
        for p, d in zip(phones, durations, strict=True)
    ]
    total = sum(durations)
    frame_phones = np.repeat([PHONE_INDEX[p] for p in phones], durations)

    def blocks():
        for start in range(0, total, 1000):
            chunk = frame_phones[start : start + 1000]
            rows = np.full((len(chunk), NUM_PHONES), np.log(0.1 / 60))
            rows[np.arange(len(chunk)), chunk] = np.log(0.9)
            yield rows

    aligner = Aligner(None, None, params, guess=False)
    tracemalloc.start()
    result = align_words(words, aligner, blocks(), total, total / 100)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total > 20000
    states = frame_graph(graph, params).size
    assert peak < 60e6, f"peak {peak / 1e6:.1f} MB"  # a T x S int32 lattice: total * states * 4
    assert total * states * 4 > 100 * peak
    assert [s.phone for s in result.phones] == phones
    assert [w.word for w in result.words if w.word] == words


def graph_word_forms(pron) -> list[str]:
    """The canonical TIMIT form of a pronunciation: closure + release stops, full vowels."""
    forms = []
    for phone in pron:
        base = phone.rstrip("012").lower()
        if base in ("b", "d", "g", "p", "t", "k"):
            forms += [base + "cl", base]
        elif base == "ch":
            forms += ["tcl", "ch"]
        elif base == "jh":
            forms += ["dcl", "jh"]
        else:
            forms.append(base)
    return forms


def test_a_long_uninformative_stretch_forces_decisions_within_max_lag():
    """Uniform posteriors never let paths converge: past max_lag frames the best path is
    forced, so back-pointers never cover more than max_lag frames."""
    prons, _ = pronounce(["water"] * 200, guess=False)
    params = AlignParams(min_frames=2, max_lag=400, check_every=50)
    graph = frame_graph(build_graph(prons), params)
    decoder = AlignmentDecoder(graph, 6000, params)
    flat = emission_scores(np.log(np.full((100, NUM_PHONES), 1 / NUM_PHONES)), None, params)
    decided, most = 0, 0
    for _ in range(60):
        decided += len(decoder.push(flat))
        most = max(most, decoder.frames - decoder.decided)
    decided += len(decoder.finish())
    assert decided == 6000
    assert most <= params.max_lag + 1


# --- scoring ------------------------------------------------------------------------------------


def test_boundary_scoring_matches_the_strings_first():
    from phonelabel.corpus.timit import Segment

    reference = [Segment(0, 0.1, "h#"), Segment(0.1, 0.2, "s"), Segment(0.2, 0.3, "ix"),
                 Segment(0.3, 0.35, "tcl"), Segment(0.35, 0.4, "t"), Segment(0.4, 0.5, "h#")]  # fmt: skip
    aligned = [Segment(0, 0.11, "h#"), Segment(0.11, 0.2, "s"), Segment(0.2, 0.33, "ih"),
               Segment(0.33, 0.4, "t"), Segment(0.4, 0.5, "h#")]  # fmt: skip
    pairs = boundary_pairs(reference, aligned)
    assert pairs == [(0.1, 0.11), (0.2, 0.2), (0.3, None), (0.35, 0.33), (0.4, 0.4)]
    errors = AlignmentErrors()
    errors.add(pairs)
    assert errors.boundaries == 5 and errors.unmatched == 1
    assert errors.within(10) == pytest.approx(3 / 5) and errors.within(20) == pytest.approx(4 / 5)
    merged = merge_closures(reference)
    assert [s.phone for s in merged] == ["h#", "s", "ix", "t", "h#"] and merged[3].start == 0.3


# --- with the shipped model ---------------------------------------------------------------------


@pytest.mark.slow
def test_align_cli_writes_words_and_phones_and_reports_bad_inputs(synth_corpus, tmp_path):
    wavs = sorted(Path(synth_corpus).rglob("*.WAV"))[:2]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, wav in zip("ab", wavs, strict=True):
        (inputs / f"{name}.wav").write_bytes(wav.read_bytes())
    (inputs / "a.TXT").write_text(wav_txt := wavs[0].with_suffix(".TXT").read_text())
    (inputs / "c.lab").write_text("no audio for me")  # transcript, no audio
    (inputs / "d.wav").write_bytes(wavs[0].read_bytes())
    (inputs / "d.txt").write_text("  \n")  # empty transcript
    (inputs / "e.wav").write_bytes(wavs[0].read_bytes())
    (inputs / "e.txt").write_text(" ".join(["extraordinarily"] * 60))  # cannot fit the audio
    (inputs / "f.wav").write_bytes(wavs[0].read_bytes())
    (inputs / "f.txt").write_bytes(b"caf\xe9")  # not UTF-8
    out = tmp_path / "out"
    args = [
        "align",
        *(str(inputs / n) for n in ("a.wav", "b.wav", "c.lab", "d.wav", "e.wav", "f.wav")),
    ]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 5, result.output
    for stem, what in [("b.wav", "no transcript beside it"), ("c.lab", "no audio beside it"),
                       ("d.wav", "transcript is empty"), ("e.wav", "need at least"),
                       ("f.txt", "not UTF-8")]:  # fmt: skip
        assert any(stem in line and what in line for line in lines), (stem, result.output)
    textgrid = (out / "a.TextGrid").read_text()
    assert 'name = "words"' in textgrid and 'name = "phones"' in textgrid
    phones = read_segments(out / "a.TextGrid")
    words = normalize_text(wav_txt.split(None, 2)[2])
    assert all(w in textgrid for w in words)
    assert phones[0].start == 0 and all(
        a.end == b.start for a, b in zip(phones, phones[1:], strict=False)
    )
    # one --text for a single input, JSON output with the 39 classes
    result = runner.invoke(
        app,
        ["align", str(inputs / "b.wav"), "--text", wav_txt.split(None, 2)[2], "--out",
         str(out), "--format", "json", "--fold39"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "b.json").read_text())
    assert document["phone_set"] == "timit-39" and document["word_segments"]


@pytest.mark.slow
def test_shipped_model_places_most_synthetic_boundaries_within_20_ms(synth_corpus, tmp_path):
    from phonelabel.evaluate import evaluate_alignment
    from phonelabel.label import default_model_dir

    report = evaluate_alignment(default_model_dir(), synth_corpus, split="full_test").to_json()
    assert report["utterances"] >= 10 and not report["skipped"]
    assert report["within_20ms"] > 0.7, report
    assert report["within_50ms"] > report["within_20ms"] > report["within_10ms"]


@pytest.mark.slow
def test_training_stores_the_phone_priors(tone_model, tone_store):
    from phonelabel.store import open_store

    config = json.loads((Path(tone_model) / "config.json").read_text())
    labels = np.asarray(open_store(tone_store).split("train").labels)
    labels = labels[labels < NUM_PHONES]
    expected = np.bincount(labels, minlength=NUM_PHONES) / len(labels)
    np.testing.assert_allclose(config["phone_priors"], expected)


@pytest.mark.slow  # two spawned workers, each importing torch
def test_align_jobs_and_shards_write_the_bytes_of_one_process(tmp_path):
    from conftest import tone_utterance

    rng = np.random.default_rng(3)
    inputs = []
    for i in range(4):
        samples = np.concatenate([tone_utterance(rng)[0] for _ in range(3)])
        inputs.append(str(tmp_path / "in" / f"r{i}.wav"))
        Path(inputs[-1]).parent.mkdir(exist_ok=True)
        soundfile.write(inputs[-1], samples, 16000, subtype="PCM_16")
    args = ["align", *inputs, "--text", "the cat sat on a mat", "--no-festival", "-f", "json"]

    def tree(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in out.iterdir()}

    outputs = {}
    for name, options in [("one", []), ("jobs", ["--jobs", "2"]), ("shard1", ["--shard", "1/2"]),
                          ("shard2", ["--shard", "2/2"])]:  # fmt: skip
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name), *options])
        assert result.exit_code == 0, result.output
        outputs[name] = tree(tmp_path / name)
    assert len(outputs["one"]) == 4 and outputs["jobs"] == outputs["one"]
    assert len(outputs["shard1"]) == len(outputs["shard2"]) == 2
    assert {**outputs["shard1"], **outputs["shard2"]} == outputs["one"]
    # the runner label shares refuses to overwrite a reference beside its recording
    (tmp_path / "in" / "r2.json").write_text("{}")
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "in")])
    assert result.exit_code == 2 and "r2.json: exists beside its recording" in result.stderr
    assert (tmp_path / "in" / "r2.json").read_text() == "{}"
    assert not (tmp_path / "in" / "r0.json").exists()  # refused before any work
