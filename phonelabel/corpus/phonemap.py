"""Phone labels of other sets -> TIMIT-61 segments (DESIGN.md §5b, §7).

One mapping rule for every source that speaks ARPAbet or a set mapped like it (the
synthetic corpus's engines, MFA alignments, a user's map): silence runs at either end of
an utterance become h#, inner ones pau; a label mapped to two TIMIT phones (a stop or an
affricate: ``b -> bcl b``, ``ch -> tcl ch``) is split at the sharpest energy rise inside
it (the burst, the frication onset); a label mapped to nothing is left out, so its frames
are neither trained nor scored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache

import numpy as np

from phonelabel.errors import PhonelabelError
from phonelabel.phones import PHONE_INDEX, data_path

ENERGY_FLOOR_DB = -70.0  # per-sample energy below this (the dither level) is no rise


@lru_cache(maxsize=1)
def arpabet_table() -> dict[str, tuple[str, ...]]:
    """ARPAbet phone (lower case, no stress) -> its TIMIT-61 phone(s), from
    ``data/synth_phones.tsv`` (festival's and flite's set is the CMU dictionary's)."""
    table = {}
    for line in data_path("synth_phones.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            phone, timit = line.split("\t")
            table[phone] = tuple(timit.split())
            for t in table[phone]:
                if t not in PHONE_INDEX:
                    raise PhonelabelError(f"synth_phones.tsv: {t!r} is not a TIMIT phone")
    return table


def map_segments(
    phones: Sequence[tuple[str, int, int]],
    table: Mapping[str, tuple[str, ...]],
    samples: np.ndarray,
    silences: Collection[str],
) -> list[tuple[int, int, str]]:
    """Labelled sample spans (label, start, end), in order -> TIMIT (start, end, phone).

    ``silences``: labels that are silence (ends -> h#, inside -> pau, touching pauses
    merged); every other label goes through ``table`` (a label mapped to ``()`` leaves a
    gap; to two phones: split at the sharpest energy rise of ``samples`` (N,)). Gaps in
    the input stay gaps. Every label must be in ``table`` or ``silences``.
    """
    phones = [p for p in phones if p[2] > p[1]]
    speech = [i for i, p in enumerate(phones) if p[0] not in silences]
    if not speech:  # silence only: all of it is the utterance's edge
        return [(start, end, "h#") for _, start, end in phones]
    first, last = speech[0], speech[-1]
    out: list[tuple[int, int, str]] = []
    if first > 0:
        out.append((phones[0][1], phones[first][1], "h#"))
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    for label, start, end in phones[first : last + 1]:
        timit = ("pau",) if label in silences else table[label]
        if not timit:
            continue
        if len(timit) == 2 and end - start >= 2:
            cut = sharpest_rise(energy, start, end)
            out += [(start, cut, timit[0]), (cut, end, timit[1])]
        elif out and out[-1][2] == timit[-1] == "pau" and out[-1][1] == start:  # pau brth
            out[-1] = (out[-1][0], end, "pau")
        else:
            out.append((start, end, timit[-1]))
    if last < len(phones) - 1:
        out.append((phones[last][2], phones[-1][2], "h#"))
    return out


def sharpest_rise(energy: np.ndarray, start: int, end: int) -> int:
    """The sample in (start, end) where log energy rises most from the window before it
    to the window after it (a stop's burst, an affricate's frication onset).
    ``energy``: (N + 1,) cumulative sum of squared samples, 0 first."""
    width = max(1, min(80, (end - start) // 4))  # 5 ms windows, narrower in short segments
    cuts = np.arange(start + width, end - width + 1)
    lo, hi = np.maximum(cuts - width, 0), np.minimum(cuts + width, len(energy) - 1)
    floor = width * 10 ** (ENERGY_FLOOR_DB / 10)  # energies below the dither are not a rise
    before = energy[cuts] - energy[lo] + floor
    after = energy[hi] - energy[cuts] + floor
    return int(cuts[np.argmax(np.log(after) - np.log(before))])
