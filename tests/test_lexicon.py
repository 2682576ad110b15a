"""Transcripts as people write them -> words -> pronunciations (phonelabel/lexicon.py), on
the real CMU dictionary and, where installed, festival's letter-to-sound rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.errors import PhonelabelError
from phonelabel.lexicon import (
    festival_available,
    normalize_text,
    pronounce,
    read_dictionary,
    with_clitic,
    year_words,
)

needs_festival = pytest.mark.skipif(not festival_available(), reason="festival not installed")
TRANSCRIBED = Path(__file__).resolve().parents[2] / "shared" / "realspeech" / "transcribed"


def phones(word: str, **kwargs) -> list[str]:
    prons, _ = pronounce([word], **kwargs)
    return [" ".join(p) for p in prons[0]]


# --- clitics ------------------------------------------------------------------------------------


def test_possessive_s_follows_the_last_sound_of_a_word_the_dictionary_lacks_with_it():
    # pharmacist's and madagascar's are not in the CMU dictionary; their stems are
    assert phones("pharmacist's", guess=False) == ["F AA1 R M AH0 S IH0 S T S"]
    assert phones("madagascar's", guess=False) == ["M AE2 D AH0 G AE1 S K ER0 Z"]
    assert with_clitic(("CH", "ER1", "CH"), "'s")[-2:] == ("IH0", "Z")  # after a sibilant
    assert with_clitic(("K", "AE1", "T"), "'s")[-1] == "S"  # after a voiceless consonant
    assert with_clitic(("D", "AO1", "G"), "'s")[-1] == "Z"  # after a voiced one


def test_contractions_and_plural_possessives_of_any_word(tmp_path):
    (tmp_path / "user.dict").write_text("zorblax Z AO1 R B L AE2 K S\nkoo K UW1\n")
    user = read_dictionary(tmp_path / "user.dict")
    words = "zorblax's zorblax'll koo'll koo're zorblax're koo'd zorblax've koo'm".split()
    prons, guessed = pronounce(words, user, guess=False)
    tails = [" ".join(p[0][-2:]) for p in prons]
    assert tails == ["IH0 Z", "AH0 L", "UW1 L", "UW1 R", "S ER0", "UW1 D", "AH0 V", "UW1 M"]
    assert guessed == []
    assert with_clitic(("SH", "UH1", "D"), "n't") == ("SH", "UH1", "D", "AH0", "N", "T")
    assert phones("players'", guess=False) == phones("players", guess=False)  # s' adds nothing


@needs_festival
def test_a_guessed_word_takes_its_clitic_too():
    prons, guessed = pronounce(["kashta's", "kashta", "the"])
    assert guessed == ["kashta's", "kashta"]
    assert prons[0] == [p + ("Z",) for p in prons[1]]  # festival's stem, then /z/ after a vowel


def test_a_word_no_source_knows_is_still_an_error_naming_it():
    with pytest.raises(PhonelabelError, match="zorblaxian's.*guessing is off"):
        pronounce(["the", "zorblaxian's"], guess=False)


# --- text normalisation -------------------------------------------------------------------------


def test_hyphenated_words_split_only_when_the_whole_is_unknown():
    assert normalize_text("X-rays of a semi-prehensile tail, forty-two") == [
        "x-rays", "of", "a", "semi", "prehensile", "tail", "forty", "two"
    ]  # fmt: skip
    assert normalize_text("Stoke-on-Trent -- or not - Antiquity-") == [
        "stoke", "on", "trent", "or", "not", "antiquity"
    ]  # fmt: skip
    # a number joined to a word: split first, then each part read (not "three rd party")
    assert normalize_text("3rd-party 21st-century 10-year-old") == [
        "third", "party", "twenty", "first", "century", "ten", "year", "old"
    ]  # fmt: skip


def test_abbreviations_are_spelled_out_saint_or_street_by_context():
    assert normalize_text("Mr. and Mrs. Smith met Dr. Jones on St. Mary's St. at No. 5.") == [
        "mister", "and", "missus", "smith", "met", "doctor", "jones", "on", "saint", "mary's",
        "street", "at", "number", "five",
    ]  # fmt: skip
    assert normalize_text("Cats vs. dogs, etc. I said no.") == [
        "cats", "versus", "dogs", "et", "cetera", "i", "said", "no"
    ]  # fmt: skip
    assert normalize_text("Main St") == ["main", "street"]


def test_numbers_money_units_ordinals_and_years():
    cases = {
        "5%": "five percent",
        "$3": "three dollars",
        "$1": "one dollar",
        "$3.50": "three dollars fifty cents",
        "$2.5 million": "two point five million dollars",
        "10kg": "ten kilograms",
        "1 kg": "one kilogram",
        "5 km": "five kilometers",
        "3.5": "three point five",
        "1st 22nd 103rd": "first twenty second one hundred third",
        "1984": "nineteen eighty four",
        "2005": "two thousand five",
        "1905 1900 2019": "nineteen oh five nineteen hundred twenty nineteen",
        "1,984 people": "one thousand nine hundred eighty four people",
        "the 1990s, the '70s": "the nineteen nineties the seventies",
        "10:30": "ten thirty",
        "4x4": "four x four",
        "007": "zero zero seven",
    }
    for text, words in cases.items():
        assert normalize_text(text) == words.split(), text
    assert year_words(2100) == ["twenty", "one", "hundred"]
    assert year_words(999) == ["nine", "hundred", "ninety", "nine"]  # no year reading


def test_initialisms_are_read_letter_by_letter():
    assert normalize_text("The U.S.A. and the XQZ's TVs, e.g. NASA") == [
        "the", "u.", "s.", "a.", "and", "the", "x.", "q.", "z.'s", "tv's", "e.", "g.", "nasa"
    ]  # fmt: skip
    prons, _ = pronounce(["u.", "s.", "a.", "z.'s", "tv's"], guess=False)
    assert [p[0] for p in prons[:3]] == [("Y", "UW1"), ("EH1", "S"), ("EY1",)]
    assert prons[3][0] == ("Z", "IY1", "Z") and prons[4][0][-1] == "Z"
    # a transcript all in capitals (LibriSpeech) holds words, not initialisms
    assert normalize_text("HE BEGAN A KASHTA COMPLAINT") == [
        "he", "began", "a", "kashta", "complaint"
    ]  # fmt: skip


def test_quotes_brackets_and_non_ascii_letters():
    text = "\u201cObake karuta\u201d (a game) [noise] 'The King\u2019s Trail' caf\u00e9 na\u00efve Stra\u00dfe <sil> 'til"
    assert normalize_text(text) == [
        "obake", "karuta", "a", "game", "the", "king's", "trail", "cafe", "naive", "strasse",
        "'til",
    ]  # fmt: skip
    assert normalize_text("Fabius' force; 20\u00b0C") == [
        "fabius'", "force", "twenty", "degrees", "celsius"
    ]  # fmt: skip


@pytest.mark.skipif(not TRANSCRIBED.is_dir(), reason="no shared real-speech transcripts")
def test_every_word_of_the_real_transcripts_has_a_pronunciation():
    from phonelabel.align import read_transcript

    texts = [read_transcript(p) for p in sorted(TRANSCRIBED.rglob("*.txt"))]
    words = [w for text in texts for w in normalize_text(text)]
    assert len(texts) == 112 and all(normalize_text(t) for t in texts)
    guess = festival_available()
    if not guess:  # without festival the CMU dictionary must still cover the clitics
        words = [w for w in words if w in ("pharmacist's", "madagascar's", "mary's")]
    prons, _ = pronounce(words, guess=guess)
    assert all(prons)


# --- aligning a recording whose transcript needs it ----------------------------------------------


@pytest.mark.slow
@needs_festival
@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_align_a_recording_written_with_possessives_numbers_and_accents(tmp_path):
    import phonelabel.corpus.engines as tts

    said = "kashta's pharmacist's second cafe cost three dollars"
    output = tts.flite(tts.voice("flite:slt"), 1.0, None, said, tmp_path / "a.wav")
    assert not isinstance(output, str), output
    (tmp_path / "a.txt").write_text("Kashta\u2019s pharmacist's 2nd \u201ccaf\u00e9\u201d cost $3.")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["align", str(tmp_path / "a.wav"), "--out", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "a.json").read_text())
    words = [w for w in document["word_segments"] if w["word"]]  # "" is the silence
    assert [w["word"] for w in words] == said.split()
    assert document["guessed_pronunciations"] == ["kashta's"]
    # each word lies where flite said it: its middle inside flite's own timing of it
    for aligned, (_, start, end) in zip(words, output.words, strict=True):
        assert start < (aligned["start"] + aligned["end"]) / 2 < end, (aligned, start, end)
