"""The 61-phone TIMIT inventory and its folding to 39 scoring classes.

The order of ``PHONES_61`` is the class index the model predicts. The 61 -> 39
folding is Lee & Hon (1989) as in Kaldi's ``conf/phones.60-48-39.map`` (copied to
``data/phones.61-48-39.map``): closures, epi, pau and h# become one ``sil`` class,
and ``q`` (glottal stop) is deleted from scoring.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from phonelabel.errors import PhonelabelError

PHONES_61: tuple[str, ...] = tuple(
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g "
    "gcl h# hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw "
    "ux v w y z zh".split()
)
PHONE_INDEX: dict[str, int] = {phone: i for i, phone in enumerate(PHONES_61)}
NUM_PHONES = len(PHONES_61)


def data_path(name: str):
    """A file shipped in the package's ``data`` directory (works installed or editable)."""
    return resources.files("phonelabel.data") / name


@lru_cache(maxsize=1)
def _read_map() -> dict[str, str | None]:
    fold: dict[str, str | None] = {}
    for line in data_path("phones.61-48-39.map").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        fold[fields[0]] = fields[2] if len(fields) == 3 else None
    return fold


FOLD_39: dict[str, str | None] = _read_map()
PHONES_39: tuple[str, ...] = tuple(sorted({p for p in FOLD_39.values() if p is not None}))
PHONE_INDEX_39: dict[str, int] = {phone: i for i, phone in enumerate(PHONES_39)}

# (61,) int64: class index 61 -> class index 39, -1 for q (not scored).
FOLD_INDEX = np.array(
    [PHONE_INDEX_39[FOLD_39[p]] if FOLD_39[p] is not None else -1 for p in PHONES_61],
    dtype=np.int64,
)


def phone_index(phone: str) -> int:
    """Class index of a TIMIT-61 phone label (case-insensitive)."""
    try:
        return PHONE_INDEX[phone.lower()]
    except KeyError:
        raise PhonelabelError(f"unknown TIMIT phone {phone!r}") from None


def fold_to_39(phone: str) -> str | None:
    """Scoring class of a TIMIT-61 phone; None for ``q``, which is not scored."""
    phone_index(phone)
    return FOLD_39[phone.lower()]


# --- phone classes: the one home of every rule that names a class of phones ---------------

# TIMIT-61 vowels (syllable nuclei), the reduced (ax ix ax-h axr) and fronted (ux) ones included
VOWELS = frozenset("aa ae ah ao aw ax ax-h axr ay eh er ey ih ix iy ow oy uh uw ux".split())
# The same in ARPAbet, as the CMU dictionary writes them (upper case, stress digit stripped)
ARPABET_VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
# TIMIT splits each stop into a closure and a release: release -> its closure
STOP_CLOSURES = {"b": "bcl", "d": "dcl", "g": "gcl", "p": "pcl", "t": "tcl", "k": "kcl"}
RELEASES = {closure: release for release, closure in STOP_CLOSURES.items()}  # closure -> stop
# ... and each affricate likewise: affricate -> (closure, release)
AFFRICATES = {"ch": ("tcl", "ch"), "jh": ("dcl", "jh")}
# silence: h# at a recording's ends, pau inside it
SILENCES = frozenset({"h#", "pau"})
