"""Frame log-posteriors -> phone segments: argmax, or Viterbi with a switch penalty and a
minimum duration (DESIGN.md §2); boundary and phone-error scoring of the result.

The Viterbi runs over a left-to-right chain of ``min_duration`` states per phone (state k
= the k-th frame of the phone, the last state loops), vectorised over phones and looping
over time. ``ViterbiDecoder`` is incremental: it emits a frame as soon as every surviving
path agrees on it (traceback convergence), so chunked and streaming decoding give exactly
the whole-utterance Viterbi path, in memory bounded by the convergence lag.

Frames -> seconds happens once, in ``boundary_seconds``: the boundary between frames
a - 1 and a lies midway between their centre samples (frame labels come from the centre
sample, DESIGN.md §4), at sample ``a * hop + (win - hop) / 2``; the first segment starts at
0 and the last ends at the end of the audio, so segments tile the recording.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from phonelabel.core import Reference, Segment, dataclass_from_dict
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig
from phonelabel.metrics import BoundaryCounts, EditCounts, match_boundaries, phone_errors
from phonelabel.phones import NUM_PHONES, PHONES_61


@dataclass(frozen=True)
class DecoderParams:
    """Viterbi smoothing parameters; stored as ``decoder`` in a model's config.json."""

    transition_penalty: float = 2.0  # subtracted from the path's log-probability per phone switch
    min_duration: int = 2  # frames; every phone lasts at least this long (1 = no minimum)
    max_lag: int = 2000  # frames; incremental decoding forces a decision past this lag

    def __post_init__(self) -> None:
        if self.min_duration < 1:
            raise PhonelabelError(f"decoder min_duration {self.min_duration}: must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "decoder") -> DecoderParams:
        return dataclass_from_dict(cls, data or {}, where)


class ArgmaxDecoder:
    """Best class per frame; every frame is final at once."""

    def push(self, log_posteriors: np.ndarray) -> np.ndarray:
        return np.argmax(log_posteriors, axis=1)  # (n, 61) -> (n,)

    def finish(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)


class ViterbiDecoder:
    """Incremental Viterbi over (phone, frames-so-far) states.

    ``push`` takes the next (n, 61) log-posterior rows and returns the classes of the frames
    that became final (possibly none); ``finish`` returns the rest. Concatenated, they are
    exactly the whole-utterance best path, unless a lag exceeded ``max_lag`` (then the best
    path so far is forced there, and later frames must agree with it).
    """

    def __init__(self, params: DecoderParams | None = None, check_every: int | None = 10):
        self.params = params or DecoderParams()
        self.check_every = check_every  # frames between convergence checks (None: never)
        self._next_check = check_every or 0
        self._shape = (self.params.min_duration, NUM_PHONES)
        self.scores: np.ndarray | None = None  # (m, 61): best log-score ending in state (k, p)
        self._spare = np.empty(self._shape)  # double buffer: no allocation per frame
        # Backpointers of the undecided frames decided..frames-1. switch[t] = (best, second):
        # a switch into phone q at frame t came from ``best``'s last state, or from
        # ``second`` when q is best itself (one state per phone and a penalty >= 0: never,
        # so (best, best)); stay[t][p]: whether (m-1, p) at t came from itself, else (m-2, p).
        self.switch: list[tuple[int, int]] = []
        self.stay: list[np.ndarray] = []
        self.frames = 0  # frames pushed
        self.decided = 0  # frames emitted

    def push(self, log_posteriors: np.ndarray) -> np.ndarray:
        decided = []
        for row in np.asarray(log_posteriors, dtype=np.float64):
            self._step(row)
            if self.check_every and self.frames >= self._next_check:
                decided.append(self._emit_converged())
        return np.concatenate(decided) if decided else np.zeros(0, dtype=np.int64)

    def finish(self) -> np.ndarray:
        """The rest of the best path; ends in a phone's last state when one is reachable."""
        if self.scores is None or self.decided == self.frames:
            return np.zeros(0, dtype=np.int64)
        last = self.scores[-1]
        if np.isfinite(last).any():  # a final phone that met the minimum duration
            k, p = self._shape[0] - 1, int(np.argmax(last))
        else:
            k, p = np.unravel_index(int(np.argmax(self.scores)), self._shape)
        return self._emit(int(k), int(p), self.frames - 1)

    def _step(self, emission: np.ndarray) -> None:
        """One frame of the recursion; (61,) emission log-posteriors."""
        if self.scores is None:  # first frame: any phone may start
            self.scores = np.full(self._shape, -np.inf)
            self.scores[0] = emission
            self.switch.append((0, 0))
            self.stay.append(np.zeros(NUM_PHONES, dtype=bool))
            self.frames += 1
            return
        scores, new = self.scores, self._spare
        exit_scores = scores[-1]  # (61,) phones that may end here
        best = int(exit_scores.argmax())
        best_score = exit_scores[best]
        if self._shape[0] == 1 and self.params.transition_penalty >= 0:
            # one state per phone: the best phone always stays (its own score is the best
            # entry), so every phone takes max(itself, best - penalty), the runner-up unused
            # (the general path below gives the same bits in 12 numpy calls instead of 4)
            entry = best_score - self.params.transition_penalty
            stay = exit_scores >= entry
            np.add(np.maximum(exit_scores, entry, out=new[0]), emission, out=new[0])
            self.scores, self._spare = new, scores
            self.switch.append((best, best))
            self.stay.append(stay)
            self.frames += 1
            return
        exit_scores[best] = -np.inf  # (restored below) to find the runner-up
        second = int(exit_scores.argmax())
        second_score = exit_scores[second]
        exit_scores[best] = best_score
        # new[0]: entering each phone from the best other phone's last state
        new[0].fill(best_score - self.params.transition_penalty)
        new[0, best] = second_score - self.params.transition_penalty
        if self._shape[0] == 1:
            stay = exit_scores >= new[0]
            np.maximum(exit_scores, new[0], out=new[0])
        else:
            stay = exit_scores >= scores[-2]
            new[1:-1] = scores[:-2]
            np.maximum(exit_scores, scores[-2], out=new[-1])
        new += emission
        self.scores, self._spare = new, scores
        self.switch.append((best, second))
        self.stay.append(stay)
        self.frames += 1

    def _back(self, k: np.ndarray, p: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The states at frame t - 1 that states (k, p) at frame t came from."""
        best, second = self.switch[t - self.decided]
        stay = self.stay[t - self.decided][p]
        source = np.where(p == best, second, best)
        m = self._shape[0]
        if m == 1:
            return k, np.where(stay, p, source)
        at_start, at_last = k == 0, k == m - 1
        return np.where(at_start | (at_last & stay), m - 1, k - 1), np.where(at_start, source, p)

    def _emit(self, k: int, p: int, end: int) -> np.ndarray:
        """Emit frames decided..end: the phones of the path through state (k, p) at ``end``
        (``_back`` for one state, in plain Python: faster for scalars)."""
        m = self._shape[0]
        phones = np.empty(end - self.decided + 1, dtype=np.int64)
        for i in range(end - self.decided, -1, -1):
            phones[i] = p
            if i == 0:
                break
            best, second = self.switch[i]
            if k == 0 and (m > 1 or not self.stay[i][p]):
                k, p = m - 1, (second if p == best else best)
            elif k != m - 1 or not self.stay[i][p]:
                k -= 1
        del self.switch[: len(phones)], self.stay[: len(phones)]
        self.decided = end + 1
        return phones

    def _emit_converged(self) -> np.ndarray:
        """Emit the frames before the newest point where all surviving paths meet.

        Going back from the newest frame, the surviving states' ancestors merge; once they
        are one state, every earlier frame is final whichever path wins. A failed check
        waits longer before the next (their cost grows with the lag); past ``max_lag`` the
        best path is forced and survivors that disagree with it are dropped.
        """
        alive_k, alive_p = np.nonzero(np.isfinite(self.scores))
        k, p, t = alive_k, alive_p, self.frames - 1
        while not (np.all(p == p[0]) and np.all(k == k[0])):
            if t == self.decided:
                break
            k, p = self._back(k, p, t)
            t -= 1
        else:
            self._next_check = self.frames + self.check_every
            return self._emit(int(k[0]), int(p[0]), t)
        pending = self.frames - self.decided
        if pending <= self.params.max_lag:
            self._next_check = self.frames + max(self.check_every, pending // 2)
            return np.zeros(0, dtype=np.int64)
        end = self.frames - 1 - self.params.max_lag // 2
        k, p = alive_k, alive_p
        for t in range(self.frames - 1, end, -1):
            k, p = self._back(k, p, t)  # every survivor's state at frame `end`
        best = int(np.argmax(self.scores[alive_k, alive_p]))
        agree = (k == k[best]) & (p == p[best])
        dropped = np.ones(self._shape, dtype=bool)
        dropped[alive_k[agree], alive_p[agree]] = False
        self.scores[dropped] = -np.inf
        self._next_check = self.frames + self.check_every
        return self._emit(int(k[best]), int(p[best]), end)


def make_decoder(params: DecoderParams | None = None, smooth: bool = True, **kwargs: Any):
    """A frame decoder with ``push(rows) -> final classes`` and ``finish() -> classes``."""
    return ViterbiDecoder(params, **kwargs) if smooth else ArgmaxDecoder()


def decode_frames(
    log_posteriors: np.ndarray, params: DecoderParams | None = None, smooth: bool = True
) -> np.ndarray:
    """(T, 61) log-posteriors -> (T,) int64 class per frame (argmax, or Viterbi-smoothed)."""
    decoder = ViterbiDecoder(params, check_every=None) if smooth else ArgmaxDecoder()
    return np.concatenate([decoder.push(log_posteriors), decoder.finish()]).astype(np.int64)


def boundary_seconds(frame: int, config: FeatureConfig = FeatureConfig()) -> float:
    """Time of the boundary just before ``frame``: midway between frame centres."""
    return (frame * config.hop_length + (config.win_length - config.hop_length) / 2) / (
        config.sample_rate
    )


class SegmentBuilder:
    """Final frame classes -> finished segments, confidence = mean posterior of the phone."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        self.config = config
        self.frames = 0
        self.phone = -1
        self.start_frame = 0
        self.posterior_sum = 0.0

    def push(self, classes: np.ndarray, log_posteriors: np.ndarray) -> list[Segment]:
        """Add final frames (n,) with their (n, 61) rows; returns the segments they closed."""
        classes = np.asarray(classes, dtype=np.int64)
        chosen = np.exp(log_posteriors[np.arange(len(classes)), classes])  # (n,)
        starts = np.nonzero(np.diff(classes, prepend=self.phone))[0]  # frames opening a segment
        head = int(starts[0]) if starts.size else len(classes)
        self.posterior_sum += float(chosen[:head].sum())  # frames continuing the open segment
        done = []
        ends = [*starts[1:], len(classes)] if starts.size else []
        for begin, end in zip(starts, ends, strict=True):
            if self.phone >= 0:
                done.append(self._segment(self.frames + int(begin)))
            self.phone = int(classes[begin])
            self.start_frame = self.frames + int(begin)
            self.posterior_sum = float(chosen[begin:end].sum())
        self.frames += len(classes)
        return done

    def finish(self, num_samples: int) -> list[Segment]:
        """The last segment, ending at the end of the audio."""
        if self.phone < 0:
            return []
        last = self._segment(self.frames)
        self.phone = -1
        return [
            Segment(last.start, num_samples / self.config.sample_rate, last.phone, last.confidence)
        ]

    def _segment(self, end_frame: int) -> Segment:
        start = 0.0 if self.start_frame == 0 else boundary_seconds(self.start_frame, self.config)
        confidence = self.posterior_sum / (end_frame - self.start_frame)
        return Segment(
            start, boundary_seconds(end_frame, self.config), PHONES_61[self.phone], confidence
        )


def frames_to_segments(
    frame_classes: np.ndarray,
    log_posteriors: np.ndarray,
    num_samples: int,
    config: FeatureConfig = FeatureConfig(),
) -> list[Segment]:
    """(T,) classes + (T, 61) log-posteriors -> segments tiling [0, num_samples / rate]."""
    builder = SegmentBuilder(config)
    return builder.push(np.asarray(frame_classes), np.asarray(log_posteriors)) + builder.finish(
        num_samples
    )


# --- scoring (counting itself is phonelabel.metrics') ------------------------------------


def boundary_precision_recall(
    reference: Sequence[Segment], hypothesis: Sequence[Segment], tolerance: float = 0.02
) -> BoundaryCounts:
    """Inner segment boundaries matched one-to-one within ``tolerance`` seconds.

    ``.recall`` is the share of reference boundaries (e.g. a .PHN file's) with a hypothesis
    boundary that close; the recording's own start and end are not boundaries.
    """
    ref = np.array([s.start for s in reference[1:]])
    hyp = np.array([s.start for s in hypothesis[1:]])
    return match_boundaries(ref, hyp, tolerance + 1e-9)  # 1e-9: float seconds at the edge


def phone_error_rate(
    log_posteriors_list: Sequence[np.ndarray],
    references_list: Sequence[Reference],
    params: DecoderParams | None = None,
    smooth: bool = True,
) -> float:
    """39-class PER (Kaldi's scoring, ``metrics``) of the decoded frames against references."""
    counts = EditCounts()
    for log_posteriors, reference in zip(log_posteriors_list, references_list, strict=True):
        decoded = decode_frames(log_posteriors, params, smooth)
        counts += phone_errors(reference.phones, decoded, reference.frames)
    return counts.error_rate or 0.0


def tune_decoder(
    log_posteriors_list: Sequence[np.ndarray],
    references_list: Sequence[Reference],
    penalties: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
    min_durations: Sequence[int] = (1, 2, 3, 4),
) -> DecoderParams:
    """The grid point with the lowest 39-class PER on a dev set (ties: the earlier point).

    ``log_posteriors_list``: (T, 61) per utterance; ``references_list``: its reference.
    """
    best: tuple[float, DecoderParams] | None = None
    for penalty, duration in itertools.product(penalties, min_durations):
        params = DecoderParams(transition_penalty=float(penalty), min_duration=int(duration))
        per = phone_error_rate(log_posteriors_list, references_list, params)
        if best is None or per < best[0]:
            best = (per, params)
    if best is None:
        raise PhonelabelError("empty decoder tuning grid")
    return best[1]
