"""Phone classes have one home (``phones.py``); the synth table agrees with it."""

from __future__ import annotations

from phonelabel.corpus.phonemap import arpabet_table
from phonelabel.phones import (
    AFFRICATES,
    ARPABET_VOWELS,
    PHONE_INDEX,
    RELEASES,
    SILENCES,
    STOP_CLOSURES,
    VOWELS,
)


def test_phone_classes_are_timit_phones_and_closures_pair_with_their_stops():
    for phone in VOWELS | SILENCES | set(STOP_CLOSURES) | set(RELEASES) | set(AFFRICATES):
        assert phone in PHONE_INDEX
    assert {RELEASES[STOP_CLOSURES[stop]] for stop in STOP_CLOSURES} == set(STOP_CLOSURES)
    assert all(closure in RELEASES for closure, _ in AFFRICATES.values())
    assert {v.lower() for v in ARPABET_VOWELS} <= VOWELS


def test_the_synth_table_splits_exactly_the_stops_and_affricates_of_phones():
    """data/synth_phones.tsv maps engine phones to TIMIT: its two-phone entries are the
    closure + release pairs phones.py defines, no more, no fewer."""
    split = {phone: timit for phone, timit in arpabet_table().items() if len(timit) == 2}
    expected = {stop: (closure, stop) for stop, closure in STOP_CLOSURES.items()}
    assert split == {**expected, **AFFRICATES}
