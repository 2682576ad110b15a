"""Metric functions on hand-made sequences whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from phonelabel.metrics import (
    NO_LABEL,
    EditCounts,
    confusion_61,
    edit_counts,
    fold_confusion,
    folded_frame_accuracy,
    frame_accuracy,
    hypothesis_string,
    levenshtein,
    most_confused,
    per_phone_accuracy,
    phone_errors,
    reference_string,
)
from phonelabel.phones import PHONE_INDEX, PHONE_INDEX_39, PHONES_39, PHONES_61


def ids(text: str) -> np.ndarray:
    """'aa aa q' -> 61-class indices; '-' is an unlabelled frame."""
    return np.array([NO_LABEL if p == "-" else PHONE_INDEX[p] for p in text.split()])


def ids39(text: str) -> list[int]:
    return [PHONE_INDEX_39[p] for p in text.split()]


def test_frame_accuracy_counts_exact_61_class_matches():
    reference = ids("aa aa ao ix s s")
    predicted = ids("aa ao ao ih s z")
    assert frame_accuracy(reference, predicted) == pytest.approx(3 / 6)


def test_folded_accuracy_forgives_within_class_confusions():
    # ao->aa and ix->ih fold together; s/z do not.
    reference = ids("aa aa ao ix s s")
    predicted = ids("aa ao ao ih s z")
    assert folded_frame_accuracy(reference, predicted) == pytest.approx(5 / 6)


def test_silences_fold_to_one_scored_class():
    reference = ids("h# pau bcl epi tcl s")
    predicted = ids("pau h# h# kcl s s")
    # 4 sil frames predicted as another sil phone are right at 39 classes; tcl->s is wrong.
    assert folded_frame_accuracy(reference, predicted) == pytest.approx(5 / 6)
    assert frame_accuracy(reference, predicted) == pytest.approx(1 / 6)


def test_reference_q_frames_are_not_scored_at_39_classes():
    reference = ids("q q aa aa")
    predicted = ids("s aa aa s")
    assert folded_frame_accuracy(reference, predicted) == pytest.approx(1 / 2)
    assert frame_accuracy(reference, predicted) == pytest.approx(1 / 4)  # 61 classes: scored


def test_predicted_q_on_a_scored_frame_is_an_error():
    reference = ids("aa aa q")
    predicted = ids("q aa q")
    folded = fold_confusion(confusion_61(reference, predicted))
    assert folded.frames == 2
    assert folded.accuracy == pytest.approx(1 / 2)
    assert folded.q_predicted[PHONE_INDEX_39["aa"]] == 1
    assert folded.matrix.sum() == 1  # the q prediction has no column


def test_unlabelled_frames_are_never_scored():
    reference = ids("- aa - s")
    predicted = ids("s aa s z")
    assert frame_accuracy(reference, predicted) == pytest.approx(1 / 2)
    assert confusion_61(reference, predicted).sum() == 2


def test_accuracy_of_nothing_is_none_not_zero():
    assert frame_accuracy(ids("- -"), ids("aa aa")) is None
    assert folded_frame_accuracy(ids("q"), ids("aa")) is None


def test_confusion_39_rows_reference_columns_prediction():
    folded = fold_confusion(confusion_61(ids("s s s z ao"), ids("s z z z aa")))
    s, z, aa = PHONE_INDEX_39["s"], PHONE_INDEX_39["z"], PHONE_INDEX_39["aa"]
    assert folded.matrix[s, s] == 1 and folded.matrix[s, z] == 2
    assert folded.matrix[z, z] == 1 and folded.matrix[aa, aa] == 1
    assert folded.matrix.shape == (39, 39) and folded.frames == 5


def test_per_phone_accuracy_and_support():
    confusion = confusion_61(ids("s s s z"), ids("s z z z"))
    table = per_phone_accuracy(confusion, PHONES_61)
    assert table["s"] == {"frames": 3, "accuracy": pytest.approx(1 / 3)}
    assert table["z"] == {"frames": 1, "accuracy": 1.0}
    assert table["aa"] == {"frames": 0, "accuracy": None}
    folded = fold_confusion(confusion_61(ids("aa aa"), ids("q aa")))
    table39 = per_phone_accuracy(folded.matrix, PHONES_39, folded.support)
    assert table39["aa"] == {"frames": 2, "accuracy": 0.5}


def test_most_confused_pairs_largest_first():
    folded = fold_confusion(confusion_61(ids("s s s z m m n"), ids("z z s s n n n")))
    pairs = most_confused(folded, top=5)
    assert [(p["reference"], p["predicted"], p["frames"]) for p in pairs] == [
        ("m", "n", 2),
        ("s", "z", 2),
        ("z", "s", 1),
    ]
    assert pairs[1]["fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("a b c", "a b c", EditCounts(0, 0, 0, 3)),
        ("a b c", "a x c", EditCounts(1, 0, 0, 3)),
        ("a b c", "a c", EditCounts(0, 1, 0, 3)),
        ("a b c", "a b y c", EditCounts(0, 0, 1, 3)),
        ("", "a b", EditCounts(0, 0, 2, 0)),
        ("a b", "", EditCounts(0, 2, 0, 2)),
        # kitten -> sitting: the textbook distance 3 (2 substitutions, 1 insertion)
        ("k i t t e n", "s i t t i n g", EditCounts(2, 0, 1, 6)),
        # equal-cost alignments: substitution preferred over a deletion + insertion pair
        ("a b", "b c", EditCounts(2, 0, 0, 2)),
    ],
)
def test_edit_counts_count_substitutions_deletions_insertions(reference, hypothesis, expected):
    assert edit_counts(reference.split(), hypothesis.split()) == expected


def test_levenshtein_walks_both_strings_in_order_at_minimal_cost_and_counts_s_d_i():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = list(rng.integers(0, 3, rng.integers(0, 8)))
        b = list(rng.integers(0, 3, rng.integers(0, 8)))
        pairs = levenshtein(a, b)
        assert [i for i, _ in pairs if i is not None] == list(range(len(a)))
        assert [j for _, j in pairs if j is not None] == list(range(len(b)))
        cost = sum(i is None or j is None or a[i] != b[j] for i, j in pairs)
        counts = edit_counts(a, b)
        assert cost == counts.errors == _brute_distance(tuple(a), tuple(b))
        # every reference symbol is matched, substituted or deleted; likewise hypothesis
        assert len(b) - counts.insertions == len(a) - counts.deletions
    # equal costs: substitutions before a deletion + insertion; a deletion before an insertion
    assert levenshtein("ab", "ba") == [(0, 0), (1, 1)]
    assert levenshtein("a", "") == [(0, None)] and levenshtein("", "a") == [(None, 0)]
    assert levenshtein("abc", "bcd") == [(0, None), (1, 0), (2, 1), (None, 2)]


def _brute_distance(a: tuple, b: tuple) -> int:
    if not a or not b:
        return len(a) + len(b)
    return min(
        _brute_distance(a[1:], b[1:]) + (a[0] != b[0]),
        _brute_distance(a[1:], b) + 1,
        _brute_distance(a, b[1:]) + 1,
    )


def test_reference_string_is_the_phn_tokens_folded_one_by_one():
    """Kaldi's TIMIT scoring: 60 -> 39 token by token, q deleted, nothing merged."""
    phones = "h# pau bcl b q aa ao ix ih s h#".split()
    assert reference_string(phones) == ids39("sil sil sil b aa aa ih ih s sil")
    assert reference_string(["q", "q"]) == []


def test_hypothesis_string_is_the_decoded_segments_folded_one_by_one():
    frames = ids("h# h# pau bcl b q aa ao ao - ix ih s s h#")
    # runs are segments: h# pau bcl stay three sils, aa ao two aa, the gap ends a segment
    assert hypothesis_string(frames) == ids39("sil sil sil b aa aa ih ih s sil")
    assert hypothesis_string(ids("aa aa q aa")) == ids39("aa aa")


def test_kaldi_style_per_on_a_hand_made_example():
    """Reference .PHN "h# pcl p aa q aa h#" -> sil sil p aa aa sil (6 tokens; q deleted).
    The hypothesis frames decode to h# p aa aa... : "h# p aa h#" -> sil p aa sil: the
    missing closure and the second aa are 2 deletions, nothing else."""
    reference_phones = "h# pcl p aa q aa h#".split()
    hypothesis = ids("h# h# p p aa aa aa aa h#")
    counts = phone_errors(reference_phones, hypothesis)
    assert counts == EditCounts(0, 2, 0, 6)
    assert counts.error_rate == pytest.approx(2 / 6)
    # the old merged string would have read "sil p aa sil" for both: PER 0
    exact = ids("h# h# pcl p aa aa q aa h#")
    assert phone_errors(reference_phones, exact) == EditCounts(0, 0, 0, 6)


def test_phone_errors_over_frame_sequences():
    reference_phones = "h# s iy t h#".split()
    hypothesis = ids("h# z s s iy iy h#")  # z inserted before s; t deleted
    counts = phone_errors(reference_phones, hypothesis)
    assert counts == EditCounts(0, 1, 1, 5)
    assert counts.error_rate == pytest.approx(2 / 5)


def test_hypothesis_frames_in_reference_gaps_are_not_scored():
    reference = ids("s s - - iy iy")  # a gap in the .PHN: no label
    hypothesis = ids("s s t t iy iy")  # whatever the model says there is not an insertion
    assert phone_errors(["s", "iy"], hypothesis, reference) == EditCounts(0, 0, 0, 2)
