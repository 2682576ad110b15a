"""phonelabel synth: the real festival/flite engines, mapped to TIMIT-61, read back by the
TIMIT reader. The session fixture ``synth_corpus`` (conftest.py) is 8 speakers x 3."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
from conftest import FLITE_CORPUS
from typer.testing import CliRunner

import phonelabel.corpus.engines as tts
from phonelabel.cli import app
from phonelabel.corpus import synth
from phonelabel.corpus.timit import (
    assign_splits,
    find_utterances,
    read_phn,
    read_transcript,
    read_wrd,
)
from phonelabel.errors import PhonelabelError
from phonelabel.phones import PHONE_INDEX


def corpus_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the corpus --------------------------------------------------------------------------


def test_corpus_reads_through_timit_reader_with_disjoint_voices(synth_corpus):
    utterances = find_utterances(synth_corpus)
    assert len(utterances) == 24  # nothing skipped
    splits = assign_splits(utterances)
    table = json.loads((synth_corpus / "synth.json").read_text())["speaker_table"]
    person = {s["speaker_id"].lower(): tts.VOICES[s["voice"]].person for s in table}
    voices = {s["speaker_id"].lower(): s["voice"] for s in table}
    heard = {name: {person[u.speaker] for u in splits[name]} for name in splits}
    assert all(heard.values())
    assert not heard["train"] & (heard["dev"] | heard["test"])
    # both held-out voices (one per engine) reach dev and test alike
    for name in ("dev", "test"):
        assert {voices[u.speaker] for u in splits[name]} == set(synth.TEST_VOICES)
    assert len({(s["voice"], s["rate"], s["f0"], s["pitch_resample"]) for s in table}) == 8
    for u in utterances:
        assert re.fullmatch(r"[mf][a-z]{3}9", u.speaker)
        assert re.fullmatch(r"s[xi]\d+", u.utt_id.split("_")[1])


def test_every_file_is_timit_format_and_phones_tile_the_audio(synth_corpus):
    for u in find_utterances(synth_corpus):
        info = soundfile.info(str(u.audio))
        assert (info.format, info.subtype, info.samplerate) == ("NIST", "PCM_16", 16000)
        n = info.frames
        segments = read_phn(u.alignment, n)  # raises on any label outside the 61
        samples = [(round(s.start * 16000), round(s.end * 16000)) for s in segments]
        assert samples[0][0] == 0 and samples[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(samples, samples[1:], strict=False))
        assert segments[0].phone == segments[-1].phone == "h#"
        assert "h#" not in [s.phone for s in segments[1:-1]]
        words = read_wrd(u.words, n)
        text = read_transcript(u.transcript)
        assert [w.word for w in words] == re.findall(r"[a-z]+", text.lower())
        assert u.transcript.read_text().startswith(f"0 {n} ")


def test_corpus_labels_carry_timit_allophones(synth_corpus):
    """allophones.py on real engine output: the allophones appear (tiling is checked
    above), and a flap is one short segment that replaced its closure and release."""
    seen: dict[str, list[float]] = {}
    for u in find_utterances(synth_corpus):
        segments = read_phn(u.alignment)
        for before, segment in zip(segments, segments[1:], strict=False):
            seen.setdefault(segment.phone, []).append(segment.end - segment.start)
            if segment.phone == "dx":
                assert before.phone not in ("tcl", "dcl")
    assert {"ix", "axr", "el", "en", "ux", "dx", "hv"} <= set(seen)
    assert max(seen["dx"]) < 0.045
    assert len(seen["ix"]) > len(seen.get("ax", []))  # TIMIT's ix outnumbers ax


def test_dither_leaves_no_digital_zero_frame(synth_corpus):
    for u in find_utterances(synth_corpus):
        pcm, _ = soundfile.read(str(u.audio), dtype="int16")
        frames = np.lib.stride_tricks.sliding_window_view(pcm, 400)[::160]
        assert (np.abs(frames).max(axis=1) > 0).all()
        assert 3 < np.std(pcm[:800].astype(float)) < 300  # leading h#: dither, not speech


def test_alignments_agree_with_the_audio(synth_corpus):
    stats = synth.alignment_stats(synth_corpus)
    assert all(group["frames"] > 50 for group in stats.values())
    assert stats["vowel"]["mean_db"] > stats["silence"]["mean_db"] + 30
    assert stats["sibilant"]["hf_share"] > 0.3 > 10 * stats["vowel"]["hf_share"]
    assert stats["release"]["mean_db"] > stats["closure"]["mean_db"] + 2


def test_resume_redoes_only_the_missing_utterance_byte_for_byte(synth_corpus, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(synth_corpus, copy)
    before = corpus_files(copy)
    victim = sorted(copy.rglob("*.PHN"))[5]
    victim.unlink()
    (victim.parent / ".SX1.WAV.x.tmp").write_bytes(b"half-written")  # reader ignores it
    report = synth.synthesize(
        copy, speakers=8, utterances_per_speaker=3, seed=0, jobs=1, conditions="none"
    )
    assert (report.synthesized, report.resumed, report.skipped) == (1, 23, [])
    assert corpus_files(copy) == before  # stale temp file gone, PHN back, identical bytes
    assert report.splits["train"].utterances == 12


def test_other_settings_in_an_existing_corpus_are_refused(synth_corpus):
    with pytest.raises(PhonelabelError, match="other settings"):
        synth.synthesize(
            synth_corpus, speakers=8, utterances_per_speaker=3, seed=1, conditions="none"
        )


@pytest.mark.slow
def test_cli_makes_a_corpus_the_same_seed_makes_again_byte_for_byte_whatever_the_jobs(tmp_path):
    # default recording conditions on (their seeding: test_conditions.py); flite only, as
    # festival's bytes are pinned by the resume test above (a ked_diphone utterance re-made
    # alone in one process, equal to synth_corpus's made by 2 workers)
    options = ["--speakers", "4", "--utterances-per-speaker", "1", "--engines", "flite"]
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path / "a"), *options, "--seed", "7", "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "dev" in result.output and "flite:awb" in result.output
    assert len(find_utterances(tmp_path / "a")) == 4
    again = synth.synthesize(tmp_path / "b", 4, 1, seed=7, jobs=2, engines=("flite",))
    assert again.synthesized == 4
    assert corpus_files(tmp_path / "a") == corpus_files(tmp_path / "b")
    assert synth.plan_speakers(4, ("flite",), 7) != synth.plan_speakers(4, ("flite",), 8)


@pytest.mark.slow
def test_augmentation_noise_and_speed_change_the_audio_and_keep_tiling(tmp_path):
    report = synth.synthesize(
        tmp_path / "aug",
        4,
        1,
        seed=0,
        jobs=1,
        engines=("flite",),
        noise_snr=(10.0, 10.0),
        speed_perturb=0.1,
        conditions="none",
    )
    assert report.synthesized == 4 and not report.skipped
    for u in find_utterances(tmp_path / "aug"):
        samples, _ = soundfile.read(str(u.audio))
        segments = read_phn(u.alignment, len(samples))
        assert round(segments[-1].end * 16000) == len(samples)
        h_sharp = samples[: round(segments[0].end * 16000)]
        assert np.std(h_sharp) > 0.003  # 10 dB SNR noise, far above the -70 dB dither


def _phn_samples(path):
    return [
        (int(s), int(e), p) for s, e, p in (line.split() for line in path.read_text().splitlines())
    ]


@pytest.mark.slow
def test_silence_adds_seeded_lead_in_and_lead_out_room_tone_labelled_h_sharp(
    flite_corpus, tmp_path
):
    synth.synthesize(tmp_path / "padded", conditions="silence,tone", **FLITE_CORPUS)
    clean = {u.utt_id: u for u in find_utterances(flite_corpus)}
    leads = set()
    for u in find_utterances(tmp_path / "padded"):
        c = clean[u.utt_id]
        phones, original = _phn_samples(u.alignment), _phn_samples(c.alignment)
        lead_in = phones[1][0] - original[1][0]
        lead_out = (phones[-1][1] - phones[-1][0]) - (original[-1][1] - original[-1][0])
        if (lead_in, lead_out) != (0, 0):  # a share of the utterances is padded
            for lead in (lead_in, lead_out):
                assert 0.2 * 16000 - 1 <= lead <= 2.0 * 16000 + 1
            leads.add((lead_in, lead_out))
        # the same phones, shifted; the opening and closing h# grown over the room tone
        assert phones[1:-1] == [(s + lead_in, e + lead_in, p) for s, e, p in original[1:-1]]
        assert phones[0] == (0, original[0][1] + lead_in, "h#") and phones[-1][2] == "h#"
        words = [line.split() for line in u.words.read_text().splitlines()]
        assert words == [
            [str(int(s) + lead_in), str(int(e) + lead_in), w]
            for s, e, w in (line.split() for line in c.words.read_text().splitlines())
        ]
        heard, _ = soundfile.read(str(u.audio), dtype="int16")
        assert (
            len(heard) == phones[-1][1] == len(soundfile.read(str(c.audio))[0]) + lead_in + lead_out
        )
        assert u.transcript.read_text().startswith(f"0 {len(heard)} ")
        tone = heard[: max(lead_in, 800) - 160].astype(float)  # room tone at -62..-45 dBFS
        assert 32768 * 10 ** (-63 / 20) < np.sqrt(np.mean(tone**2)) < 32768 * 10 ** (-44 / 20)
    assert leads, "no utterance of 8 was padded"  # each padded one with lengths of its own


# --- phones ------------------------------------------------------------------------------


def festival_phones(voice: str, prompts: list[str]) -> list[list[str]]:
    """Each prompt's phones from festival's text analysis (no waveform: fast)."""
    modules = "(Initialize u) (Text u) (Token_POS u) (Token u) (POS u) (Phrasify u) (Word u)"
    modules += " (Pauses u) (Intonation u) (PostLex u)"
    script = [f"(voice_{voice})"] + [
        f'(set! u (Utterance Text "{p}")) {modules}'
        ' (mapcar (lambda (s) (format t "%s " (item.name s))) (utt.relation.items u \'Segment))'
        ' (format t "\\n")'
        for p in prompts
    ]
    done = subprocess.run(
        ["festival", "--pipe"], input="\n".join(script), capture_output=True, text=True, check=True
    )
    return [line.split() for line in done.stdout.strip().splitlines()]


def map_without_audio(phones: list[str], merge_er_r: bool) -> list[str]:
    segments = [(p, 400 * i, 400 * (i + 1)) for i, p in enumerate(phones)]
    return [
        label for _, _, label in tts.to_timit(segments, np.zeros(400 * len(phones)), merge_er_r)
    ]


@pytest.mark.slow
def test_every_phone_the_engines_say_on_every_prompt_is_mapped():
    prompts = synth.make_prompts(synth.PROMPT_POOL, seed=0)
    spoken = festival_phones("ked_diphone", prompts)  # ked: the voice with "er r"
    out = subprocess.run(["t2p", " ".join(prompts)], capture_output=True, text=True, check=True)
    spoken.append(re.sub(r"\d", "", out.stdout).split())  # flite's phones (same lexicon)
    assert len(spoken) == len(prompts) + 1
    seen = set()
    for phones in spoken:
        labels = map_without_audio(phones, merge_er_r=True)
        assert set(labels) <= set(PHONE_INDEX)
        seen |= set(labels)
    assert {"zh", "oy", "uh", "th", "dh", "ng", "ch", "jh", "y", "hh", "er"} <= seen


def test_every_grammar_word_is_in_festivals_lexicon():
    words = sorted(synth.grammar_words())
    script = "(voice_kal_diphone)\n" + "\n".join(
        f'(if (not (lex.lookup_all "{w}")) (format t "{w}\\n"))' for w in words
    )
    done = subprocess.run(["festival", "--pipe"], input=script, capture_output=True, text=True)
    assert done.stdout.split() == []
    assert len(words) > 500


def test_prompts_are_distinct_seeded_sentences():
    prompts = synth.make_prompts(600, seed=0)
    assert len(set(prompts)) == 600 and prompts == synth.make_prompts(600, seed=0)
    assert prompts != synth.make_prompts(600, seed=1)
    assert all(p[0].isupper() and p[-1] in ".?" and '"' not in p for p in prompts)
    assert not any(re.search(r"\ba [aeiou]", p.lower()) for p in prompts)


def test_stop_is_split_at_its_burst():
    rng = np.random.default_rng(0)
    samples = np.zeros(4000, dtype=np.float32)
    samples[1000:1600] = 0.001 * rng.standard_normal(600)  # closure: near silence
    samples[1600:2000] = 0.3 * rng.standard_normal(400)  # burst + aspiration
    samples[2000:3000] = 0.5 * np.sin(np.arange(1000) / 5)  # vowel
    phones = [("pau", 0, 1000), ("t", 1000, 2000), ("aa", 2000, 3000), ("pau", 3000, 4000)]
    segments = tts.to_timit(phones, samples)
    assert [s[2] for s in segments] == ["h#", "tcl", "t", "aa", "h#"]
    assert abs(segments[1][1] - 1600) <= 8


def test_mapping_rules_silences_affricates_and_ked_er_r():
    phones = "pau brth hh er r r iy pau brth jh ch pau".split()
    labels = map_without_audio(phones, merge_er_r=True)
    assert labels == "h# hh er r iy pau dcl jh tcl ch h#".split()
    assert map_without_audio("pau er r pau".split(), merge_er_r=False) == "h# er r h#".split()
    with pytest.raises(ValueError, match="no TIMIT mapping"):
        map_without_audio("pau xx pau".split(), merge_er_r=False)
    with pytest.raises(ValueError, match="silence"):
        map_without_audio("pau aa".split(), merge_er_r=False)


def test_flite_word_timings_follow_its_phones(tmp_path):
    output = tts.flite(
        tts.voice("flite:slt"), 1.0, None, "The cat sat on the mat.", tmp_path / "a.wav"
    )
    assert not isinstance(output, str)
    assert [w for w, _, _ in output.words] == ["the", "cat", "sat", "on", "the", "mat"]
    ends = {end for _, end in output.phones}
    assert all(end in ends for _, _, end in output.words)
    assert output.rate == 16000 and len(output.samples) > 16000


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_prompt_festival_fails_on_is_skipped_not_the_batch(tmp_path):
    kal = tts.voice("festival:kal_diphone")
    results = tts.festival(kal, 1.0, None, ["Hello there.", "", "Good night."], tmp_path)
    assert isinstance(results[1], str)  # festival crashes on an empty utterance
    assert not isinstance(results[0], str) and not isinstance(results[2], str)
    speaker = synth.Speaker("MABC9", "TRAIN", "DR1", kal.key, 1.0, 105.0, 1.0)
    plans = tuple(
        synth.UtterancePlan(speaker, f"SX{i}", t, (0, 0, i)) for i, t in enumerate(["Hi.", ""])
    )
    made = synth._run_task(synth._Task(tmp_path / "c", plans, None, 0.0))
    assert made[0].seconds and made[1].seconds is None and made[1].reason


def test_missing_engine_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PhonelabelError, match="apt-get install festival"):
        synth.synthesize(tmp_path / "c", speakers=4, utterances_per_speaker=1)


def test_bad_options_are_one_line_errors(tmp_path):
    runner = CliRunner()
    for args, message in (
        (["--engines", "espeak"], "GPL-3.0"),
        (["--engines", "festival,bogus"], "unknown engine 'bogus'"),
        (["--speakers", "2"], "at least 4"),
        (["--noise-snr", "30,10"], "LO <= HI"),
        (["--utterances-per-speaker", "0"], "must be 1.."),
    ):
        result = runner.invoke(app, ["synth", str(tmp_path / "c"), *args])
        assert result.exit_code == 2, args
        assert message in result.output
    with pytest.raises(PhonelabelError, match="unknown voice"):
        tts.voice("flite:nobody")
