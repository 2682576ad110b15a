"""Scoring: frame accuracy (61/39), per-phone accuracy, confusion, PER, boundary P/R.

Scoring convention (DESIGN.md §4, Lee & Hon 1989 as in Kaldi's TIMIT recipe):
- Frames with no reference label (``NO_LABEL``: gaps between .PHN segments) are never scored.
- 61 classes: a frame is correct when the arg-max phone equals the reference phone.
- 39 classes: reference and prediction are folded (closures, epi, pau, h# -> one ``sil``
  class, scored like any other). Frames whose *reference* is ``q`` are not scored. A frame
  cannot be deleted from the hypothesis alone, so a ``q`` *predicted* on a scored frame
  matches no 39-class phone and counts as an error; the 39x39 confusion matrix has no
  column for it, so such frames are counted separately (``q_predicted``).
- Phone strings (PER), as Kaldi's TIMIT scoring: the reference is the .PHN's phones token
  by token, each folded 61 -> 39 and ``q`` deleted, nothing merged ("pau pcl p" stays
  "sil sil p", "aa q aa" is "aa aa"). The hypothesis is the decoder's 61-phone segments
  (runs of one label in its frames; frames where the reference has no label dropped first)
  folded token by token the same way. PER = (substitutions + deletions + insertions) /
  reference length, summed over utterances before dividing.
- Boundaries: frame indices where the 61-class frame label changes (not the utterance's
  own start and end), matched one-to-one within a tolerance.

Every function works on class-index arrays: 61-class indices into ``PHONES_61`` and
39-class indices into ``PHONES_39``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from phonelabel.features import NO_LABEL  # a frame in a gap between segments
from phonelabel.phones import (
    AFFRICATES,
    FOLD_39,
    FOLD_INDEX,
    NUM_PHONES,
    PHONE_INDEX,
    PHONES_39,
    RELEASES,
)

NUM_PHONES_39 = len(PHONES_39)
SCORING_CONVENTION = (
    "framewise arg-max; 39 classes by Lee & Hon folding; q deleted (frames whose reference "
    "is q are not scored, a predicted q is an error, q is removed from phone strings); "
    "h#/pau/epi/closures folded to sil and scored; unlabelled frames not scored; PER as "
    "Kaldi's TIMIT recipe: reference = the .PHN tokens folded 61->39 one by one, q deleted, "
    "no merging; hypothesis = the decoder's 61-phone segments folded one by one, q deleted, "
    "no merging"
)


def confusion_61(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(61, 61) int64 counts, row = reference phone, column = predicted phone.

    ``reference`` and ``predicted`` are (T,) 61-class indices; reference frames equal to
    NO_LABEL are skipped. Every frame metric below can be computed from this matrix, so
    a split is scored by summing the matrices of its utterances.
    """
    reference = np.asarray(reference, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if reference.shape != predicted.shape:
        raise ValueError(f"reference {reference.shape} and prediction {predicted.shape} differ")
    keep = reference != NO_LABEL
    flat = reference[keep] * NUM_PHONES + predicted[keep]
    return np.bincount(flat, minlength=NUM_PHONES * NUM_PHONES).reshape(NUM_PHONES, NUM_PHONES)


@dataclass(frozen=True)
class FoldedConfusion:
    matrix: np.ndarray  # (39, 39) int64, row = folded reference, column = folded prediction
    q_predicted: np.ndarray  # (39,) int64: frames of each reference class predicted as q

    @property
    def support(self) -> np.ndarray:
        """(39,) frames scored per reference class (row sums plus q predictions)."""
        return self.matrix.sum(axis=1) + self.q_predicted

    @property
    def frames(self) -> int:
        return int(self.support.sum())

    @property
    def accuracy(self) -> float | None:
        return _fraction(int(np.trace(self.matrix)), self.frames)


def fold_confusion(confusion: np.ndarray) -> FoldedConfusion:
    """Fold a (61, 61) confusion to 39 classes: rows of reference q dropped, q predictions
    set aside (they are errors with no column of their own)."""
    matrix = np.zeros((NUM_PHONES_39, NUM_PHONES_39), dtype=np.int64)
    q_predicted = np.zeros(NUM_PHONES_39, dtype=np.int64)
    for ref61 in range(NUM_PHONES):
        row = FOLD_INDEX[ref61]
        if row < 0:
            continue
        for hyp61 in range(NUM_PHONES):
            column = FOLD_INDEX[hyp61]
            if column < 0:
                q_predicted[row] += confusion[ref61, hyp61]
            else:
                matrix[row, column] += confusion[ref61, hyp61]
    return FoldedConfusion(matrix, q_predicted)


def confusion_accuracy(confusion: np.ndarray) -> float | None:
    """Frame accuracy from a square confusion: its diagonal's share of the frames (the one
    frame-accuracy rule: ``frame_accuracy``, ``evaluate`` and dev scoring use it)."""
    return _fraction(int(np.trace(confusion)), int(confusion.sum()))


def frame_accuracy(reference: np.ndarray, predicted: np.ndarray) -> float | None:
    """Fraction of labelled frames whose predicted 61-class phone is the reference's."""
    return confusion_accuracy(confusion_61(reference, predicted))


def folded_frame_accuracy(reference: np.ndarray, predicted: np.ndarray) -> float | None:
    """Frame accuracy after folding both sides to 39 classes (reference q not scored)."""
    return fold_confusion(confusion_61(reference, predicted)).accuracy


def per_phone_accuracy(
    confusion: np.ndarray, phones: Sequence[str], support: np.ndarray | None = None
) -> dict[str, dict]:
    """{phone: {"frames": support, "accuracy": fraction or None}} from a square confusion
    (61x61 with PHONES_61, or a FoldedConfusion's matrix and support with PHONES_39)."""
    if support is None:
        support = confusion.sum(axis=1)
    return {
        phone: {
            "frames": int(support[i]),
            "accuracy": _fraction(int(confusion[i, i]), int(support[i])),
        }
        for i, phone in enumerate(phones)
    }


def most_confused(folded: FoldedConfusion, top: int = 10) -> list[dict]:
    """The ``top`` largest off-diagonal cells of the 39x39 confusion, largest first:
    {"reference", "predicted", "frames", "fraction"} (fraction of the reference's frames)."""
    off = folded.matrix.copy()
    np.fill_diagonal(off, 0)
    support = folded.support
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        row, column = divmod(int(flat), NUM_PHONES_39)
        if off[row, column] == 0:
            break
        pairs.append(
            {
                "reference": PHONES_39[row],
                "predicted": PHONES_39[column],
                "frames": int(off[row, column]),
                "fraction": _fraction(int(off[row, column]), int(support[row])),
            }
        )
    return pairs


@dataclass(frozen=True)
class EditCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float | None:
        return _fraction(self.errors, self.reference_length)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def levenshtein(reference: Sequence, hypothesis: Sequence) -> list[tuple[int | None, int | None]]:
    """A minimum-cost alignment of two symbol sequences (substitution, deletion and insertion
    all cost 1), as its pairs in order: (i, j) pairs ``reference[i]`` with ``hypothesis[j]``
    (a match or a substitution), (i, None) deletes ``reference[i]``, (None, j) inserts
    ``hypothesis[j]``.

    Among alignments of equal cost the backtrace prefers match/substitution, then deletion,
    then insertion (as sclite does), which fixes how a given total splits into S, D and I.
    The one edit-distance alignment of the package: PER, boundary matching and the synth
    engines' word timings all use it.
    """
    n, m = len(reference), len(hypothesis)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)  # cost[i, j]: reference[:i] vs hyp[:j]
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1])
            cost[i, j] = min(diagonal, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            mismatch = reference[i - 1] != hypothesis[j - 1]
            if cost[i, j] == cost[i - 1, j - 1] + mismatch:
                i, j = i - 1, j - 1
                pairs.append((i, j))
                continue
        if i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    return pairs[::-1]


def edit_counts(reference: Sequence, hypothesis: Sequence) -> EditCounts:
    """S, D and I of the ``levenshtein`` alignment of two symbol sequences."""
    substitutions = deletions = insertions = 0
    for i, j in levenshtein(reference, hypothesis):
        if i is None:
            insertions += 1
        elif j is None:
            deletions += 1
        else:
            substitutions += int(reference[i] != hypothesis[j])
    return EditCounts(substitutions, deletions, insertions, len(reference))


def reference_string(phones: Sequence[str]) -> list[int]:
    """61-phone tokens (a .PHN's labels) -> 39-class string: each folded, q deleted."""
    folded = (int(FOLD_INDEX[PHONE_INDEX[p]]) for p in phones)
    return [f for f in folded if f >= 0]


def hypothesis_string(frames: np.ndarray, reference: np.ndarray | None = None) -> list[int]:
    """(T,) 61-class frames -> 39-class string: each run of one phone (a decoded segment)
    folded, q deleted, nothing merged. Frames the ``reference`` leaves unlabelled are
    dropped first (a gap also ends a segment)."""
    frames = np.asarray(frames, dtype=np.int64)
    if reference is not None:
        frames = np.where(np.asarray(reference) == NO_LABEL, NO_LABEL, frames)
    starts = np.concatenate([[True], frames[1:] != frames[:-1]]) if len(frames) else []
    tokens = frames[starts]
    folded = FOLD_INDEX[tokens[tokens != NO_LABEL]]
    return folded[folded >= 0].tolist()


def phone_errors(
    reference_phones: Sequence[str], hypothesis: np.ndarray, reference: np.ndarray | None = None
) -> EditCounts:
    """Edit counts of a (T,) 61-class decoded frame sequence against the reference's 61-phone
    tokens; ``reference``: its (T,) frame labels, whose gaps the hypothesis loses too."""
    return edit_counts(reference_string(reference_phones), hypothesis_string(hypothesis, reference))


def boundaries(frames: np.ndarray) -> np.ndarray:
    """(B,) frame indices t where label[t] != label[t - 1]: the segment boundaries."""
    frames = np.asarray(frames)
    return np.flatnonzero(frames[1:] != frames[:-1]) + 1


@dataclass(frozen=True)
class BoundaryCounts:
    matched: int = 0
    reference: int = 0
    hypothesis: int = 0

    @property
    def precision(self) -> float | None:
        return _fraction(self.matched, self.hypothesis)

    @property
    def recall(self) -> float | None:
        return _fraction(self.matched, self.reference)

    @property
    def f1(self) -> float | None:
        total = self.reference + self.hypothesis
        return _fraction(2 * self.matched, total)

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(
            self.matched + other.matched,
            self.reference + other.reference,
            self.hypothesis + other.hypothesis,
        )


def match_boundaries(
    reference: np.ndarray, hypothesis: np.ndarray, tolerance: int
) -> BoundaryCounts:
    """One-to-one matching of sorted boundary positions within ``tolerance`` frames.

    The two-pointer sweep pairs each boundary with the earliest unmatched one within
    reach; on a line with a symmetric tolerance this gives the largest possible matching.
    """
    matched = i = j = 0
    while i < len(reference) and j < len(hypothesis):
        if hypothesis[j] < reference[i] - tolerance:
            j += 1
        elif hypothesis[j] > reference[i] + tolerance:
            i += 1
        else:
            matched += 1
            i += 1
            j += 1
    return BoundaryCounts(matched, len(reference), len(hypothesis))


def boundary_counts(
    reference: np.ndarray, hypothesis: np.ndarray, tolerance: int
) -> BoundaryCounts:
    """Boundary matches between two (T,) frame-label sequences within ``tolerance`` frames."""
    return match_boundaries(boundaries(reference), boundaries(hypothesis), tolerance)


def _fraction(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None when nothing was counted (never a fake 0 or 1)."""
    return numerator / denominator if denominator else None


# --- forced alignment: boundaries of two phone strings --------------------------------------

ALIGN_TOLERANCES_MS = (10, 20, 25, 50)
ALIGNMENT_SCORING = (
    "reference and aligned phones are matched as strings first (Levenshtein alignment; a "
    "pair is equal when the phones fold to the same 39-class label, q counting as itself); "
    "each reference boundary (the start of a reference phone after the first) is paired with "
    "the start of the aligned phone matched or substituted to that reference phone; a "
    "reference phone left unmatched (deleted) gives a boundary outside every tolerance, "
    "excluded from the mean error."
)
CLOSURES_MERGED = (
    " Closures merged: a closure + release pair (bcl b, tcl ch, ...) is one phone on both "
    "sides, as MFA labels stops, and a lone closure counts as its stop."
)


def merge_closures(segments: Sequence) -> list:
    """Closure + release -> one segment labelled with the release (spanning both); a lone
    closure becomes its stop (as MFA and the CMU dictionary label stops)."""
    merged: list = []
    for segment in segments:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous.phone in RELEASES
            and (
                segment.phone == RELEASES[previous.phone]
                or (previous.phone, segment.phone) in AFFRICATES.values()
            )
        ):
            merged[-1] = type(segment)(previous.start, segment.end, segment.phone)
            continue
        merged.append(segment)
    return [
        type(s)(s.start, s.end, RELEASES[s.phone]) if s.phone in RELEASES else s for s in merged
    ]


def _scoring_label(phone: str) -> str:
    folded = FOLD_39.get(phone.lower())
    return folded if folded is not None else phone.lower()


def boundary_pairs(reference: Sequence, hypothesis: Sequence) -> list[tuple[float, float | None]]:
    """(reference boundary, matched aligned boundary or None) for each reference phone after
    the first, by an edit-distance match of the two phone strings (``ALIGNMENT_SCORING``)."""
    a = [_scoring_label(s.phone) for s in reference]
    b = [_scoring_label(s.phone) for s in hypothesis]
    partner = {i: j for i, j in levenshtein(a, b) if i is not None and j is not None}
    pairs: list[tuple[float, float | None]] = []
    for k in range(1, len(reference)):
        j = partner.get(k)  # matched to the first aligned phone: no boundary before it
        pairs.append((reference[k].start, hypothesis[j].start if j is not None and j > 0 else None))
    return pairs


@dataclass
class AlignmentErrors:
    """Boundary errors of forced alignments, summed over utterances."""

    errors: list[float] = field(default_factory=list)  # seconds, per matched boundary
    unmatched: int = 0

    def add(self, pairs: Sequence[tuple[float, float | None]]) -> None:
        for reference, aligned in pairs:
            if aligned is None:
                self.unmatched += 1
            else:
                self.errors.append(abs(reference - aligned))

    @property
    def boundaries(self) -> int:
        return len(self.errors) + self.unmatched

    def within(self, milliseconds: float) -> float | None:
        """Share of all reference boundaries with an aligned boundary that close."""
        hits = sum(e <= milliseconds / 1000 + 1e-9 for e in self.errors)
        return _fraction(hits, self.boundaries)

    def to_json(self) -> dict:
        errors = np.asarray(self.errors)
        return {
            "boundaries": self.boundaries,
            "unmatched_boundaries": self.unmatched,
            **{f"within_{ms}ms": self.within(ms) for ms in ALIGN_TOLERANCES_MS},
            "mean_absolute_error_ms": float(errors.mean() * 1000) if len(errors) else None,
            "median_absolute_error_ms": float(np.median(errors) * 1000) if len(errors) else None,
        }
