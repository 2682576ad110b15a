"""decode.py: argmax and Viterbi smoothing, incremental decoding, frames -> segments, scoring."""

from __future__ import annotations

import numpy as np
import pytest

from phonelabel.core import Reference, Segment
from phonelabel.decode import (
    DecoderParams,
    SegmentBuilder,
    ViterbiDecoder,
    boundary_precision_recall,
    boundary_seconds,
    decode_frames,
    frames_to_segments,
    phone_error_rate,
    tune_decoder,
)
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig
from phonelabel.phones import PHONE_INDEX, PHONES_61

AA, IY, S, SH = (PHONE_INDEX[p] for p in ("aa", "iy", "s", "sh"))


def random_log_posteriors(frames: int, seed: int = 0, concentration: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.log(rng.dirichlet(np.full(61, concentration), size=frames))  # (T, 61)


def one_hot_log_posteriors(classes: list[int], peak: float = 0.9) -> np.ndarray:
    """(T, 61): ``peak`` on the given class, the rest spread evenly."""
    posteriors = np.full((len(classes), 61), (1 - peak) / 60)
    posteriors[np.arange(len(classes)), classes] = peak
    return np.log(posteriors)


def path_score(log_posteriors: np.ndarray, path: np.ndarray, penalty: float) -> float:
    switches = np.count_nonzero(np.diff(path))
    return float(log_posteriors[np.arange(len(path)), path].sum() - penalty * switches)


def run_lengths(path: np.ndarray) -> np.ndarray:
    edges = np.flatnonzero(np.diff(path)) + 1
    return np.diff(np.concatenate([[0], edges, [len(path)]]))


def brute_force_best_score(log_posteriors: np.ndarray, penalty: float, min_duration: int) -> float:
    """Best score over paths whose every run lasts >= min_duration (the last run too),
    by a plain dynamic programme over (time, phone, run length so far capped at m)."""
    frames, phones = log_posteriors.shape
    m = min_duration
    best = np.full((m, phones), -np.inf)  # best[k, p]: run of p with k + 1 frames (capped)
    best[0] = log_posteriors[0]
    for t in range(1, frames):
        new = np.full((m, phones), -np.inf)
        for p in range(phones):
            switch = max(best[m - 1, q] for q in range(phones) if q != p) - penalty
            new[0, p] = (max(switch, best[0, p]) if m == 1 else switch) + log_posteriors[t, p]
            for k in range(1, m):
                previous = best[k - 1, p] if k < m - 1 else max(best[k - 1, p], best[k, p])
                new[k, p] = previous + log_posteriors[t, p]
        best = new
    return float(best[m - 1].max())


def test_no_smooth_is_the_per_frame_argmax():
    log_posteriors = random_log_posteriors(50)
    np.testing.assert_array_equal(
        decode_frames(log_posteriors, smooth=False), log_posteriors.argmax(axis=1)
    )


@pytest.mark.parametrize(
    "min_duration,penalty", [(1, 0.5), (1, 0.0), (1, 4.0), (1, -0.5), (2, 2.0), (3, 1.0)]
)  # one state per phone and a penalty >= 0: ViterbiDecoder's shorter recursion
def test_viterbi_finds_the_best_path_of_a_brute_force_search(min_duration, penalty):
    log_posteriors = random_log_posteriors(25, seed=min_duration)
    path = decode_frames(log_posteriors, DecoderParams(penalty, min_duration))
    assert run_lengths(path).min() >= min_duration
    expected = brute_force_best_score(log_posteriors, penalty, min_duration)
    assert path_score(log_posteriors, path, penalty) == pytest.approx(expected, abs=1e-9)


def test_smoothing_removes_a_one_frame_blip_that_argmax_keeps():
    classes = [AA] * 10 + [IY] + [AA] * 10 + [S] * 6
    log_posteriors = one_hot_log_posteriors(classes, peak=0.6)
    assert list(decode_frames(log_posteriors, smooth=False)) == classes
    smoothed = decode_frames(log_posteriors, DecoderParams(transition_penalty=1.0, min_duration=3))
    assert list(smoothed) == [AA] * 21 + [S] * 6


def test_every_run_lasts_the_minimum_duration():
    log_posteriors = random_log_posteriors(400, seed=4)
    assert run_lengths(decode_frames(log_posteriors, DecoderParams(0.0, 4))).min() >= 4
    assert run_lengths(decode_frames(log_posteriors, smooth=False)).min() == 1


def test_shorter_than_minimum_duration_still_decodes():
    # two frames cannot hold a 5-frame phone: the best single phone over both frames is
    # chosen (no switch, which would make two runs shorter still)
    log_posteriors = random_log_posteriors(2)
    assert log_posteriors[0].argmax() != log_posteriors[1].argmax()  # argmax would switch
    path = decode_frames(log_posteriors, DecoderParams(1.0, 5))
    best = int(log_posteriors.sum(axis=0).argmax())
    assert path.tolist() == [best, best]


@pytest.mark.parametrize("block,check_every", [(1, 1), (7, 3), (64, 50)])
@pytest.mark.parametrize("params", [DecoderParams(1.5, 3), DecoderParams(4.0, 1)])
def test_incremental_viterbi_equals_whole_utterance_viterbi(block, check_every, params):
    log_posteriors = random_log_posteriors(600, seed=block)
    decoder = ViterbiDecoder(params, check_every=check_every)
    emitted = [decoder.push(log_posteriors[i : i + block]) for i in range(0, 600, block)]
    path = np.concatenate(emitted + [decoder.finish()])
    np.testing.assert_array_equal(path, decode_frames(log_posteriors, params))
    # frames come out while input is still arriving, not only at the end
    assert sum(len(e) for e in emitted) > 500


def test_forced_decision_past_max_lag_keeps_a_valid_path():
    log_posteriors = random_log_posteriors(500, seed=9)
    decoder = ViterbiDecoder(DecoderParams(1.0, 3, max_lag=6), check_every=2)
    emitted = [decoder.push(log_posteriors[i : i + 4]) for i in range(0, 500, 4)]
    path = np.concatenate(emitted + [decoder.finish()])
    assert len(path) == 500
    assert run_lengths(path).min() >= 3
    assert max(len(e) for e in emitted) <= 12  # never more than ~max_lag frames held back


def test_decoder_params_round_trip_and_refuse_unknown_keys():
    params = DecoderParams(transition_penalty=3.5, min_duration=4)
    assert DecoderParams.from_dict(params.to_dict()) == params
    with pytest.raises(PhonelabelError, match="future"):
        DecoderParams.from_dict(params.to_dict() | {"future": 1})
    assert DecoderParams.from_dict(None) == DecoderParams()
    with pytest.raises(PhonelabelError):
        DecoderParams(min_duration=0)


def test_frames_to_segments_tiles_the_recording_with_boundaries_between_frame_centres():
    config = FeatureConfig()
    classes = np.array([AA, AA, IY, IY, IY, S])
    log_posteriors = one_hot_log_posteriors(list(classes), peak=0.8)
    log_posteriors[0, AA] = np.log(0.6)
    num_samples = 160 * 5 + 400 + 100  # 6 frames and 100 trailing samples
    segments = frames_to_segments(classes, log_posteriors, num_samples, config)
    assert [s.phone for s in segments] == ["aa", "iy", "s"]
    # boundary before frame a: midway between the centres of frames a - 1 and a
    assert segments[0].start == 0.0
    assert segments[0].end == segments[1].start == (2 * 160 + 120) / 16000
    assert segments[1].end == segments[2].start == boundary_seconds(5, config)
    assert segments[2].end == num_samples / 16000
    assert segments[0].confidence == pytest.approx(0.7)
    assert segments[1].confidence == pytest.approx(0.8)


def test_segment_builder_fed_in_pieces_equals_whole():
    classes = decode_frames(random_log_posteriors(300, seed=2), smooth=False)
    log_posteriors = random_log_posteriors(300, seed=2)
    whole = frames_to_segments(classes, log_posteriors, 160 * 299 + 400)
    builder = SegmentBuilder()
    pieces = []
    for start in range(0, 300, 13):
        pieces += builder.push(classes[start : start + 13], log_posteriors[start : start + 13])
    pieces += builder.finish(160 * 299 + 400)
    assert [(s.start, s.end, s.phone) for s in pieces] == [(s.start, s.end, s.phone) for s in whole]
    assert [s.confidence for s in pieces] == pytest.approx([s.confidence for s in whole])


def test_boundary_precision_recall_counts_boundaries_within_tolerance():
    reference = [Segment(0, 0.1, "h#"), Segment(0.1, 0.2, "aa"), Segment(0.2, 0.5, "s")]
    hypothesis = [
        Segment(0, 0.115, "h#"),  # 15 ms off: matched
        Segment(0.115, 0.16, "aa"),  # an extra boundary at 0.16, 40 ms from 0.2: unmatched
        Segment(0.16, 0.5, "s"),
    ]
    counts = boundary_precision_recall(reference, hypothesis, tolerance=0.02)
    assert (counts.matched, counts.reference, counts.hypothesis) == (1, 2, 2)
    assert counts.recall == 0.5 and counts.precision == 0.5
    assert boundary_precision_recall(reference, reference).recall == 1.0


def test_tuning_picks_smoothing_that_lowers_phone_error_rate_on_noisy_posteriors():
    rng = np.random.default_rng(0)
    references, noisy = [], []
    for _ in range(6):
        reference = np.repeat(rng.choice([AA, IY, S, SH], size=12), rng.integers(5, 12, size=12))
        flips = rng.random(len(reference)) < 0.15  # 15 % of frames: a random other phone
        observed = np.where(flips, rng.choice([AA, IY, S, SH], size=len(reference)), reference)
        runs = np.concatenate([[True], reference[1:] != reference[:-1]])
        references.append(Reference(reference, tuple(PHONES_61[p] for p in reference[runs])))
        noisy.append(one_hot_log_posteriors(list(observed), peak=0.7))
    argmax_per = phone_error_rate(noisy, references, smooth=False)
    params = tune_decoder(noisy, references)
    assert params.transition_penalty > 0 or params.min_duration > 1
    assert phone_error_rate(noisy, references, params) < 0.5 * argmax_per
