"""Forced alignment's decoder: beam-pruned Viterbi through a ``FrameGraph``.

Viterbi runs over the LSTM's scaled log-likelihoods, log p(phone | x) - prior_scale *
log p(phone) (the hybrid HMM/ANN recipe: posteriors divided by the training split's
phone frequencies), target delay honoured by the posterior stream.

Memory stays bounded for long recordings (``AlignmentDecoder``): states outside a beam of
the best score are pruned, so each frame touches a window of the graph only, a state that
cannot reach the end of the graph in the frames left is never entered, and back-pointers
are kept for the undecided frames only: every ``check_every`` frames the surviving paths
are traced back until they meet; frames before that point are final and their
back-pointers are dropped. If paths have not met after ``max_lag`` frames the best path is
forced there (survivors that disagree are dropped), so memory never exceeds
``max_lag`` x window. Posteriors reach the decoder block by block from the audio, so an
hour of speech never exists as an hour x 61 matrix either.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from phonelabel.align_graph import AlignParams, FrameGraph
from phonelabel.errors import PhonelabelError
from phonelabel.phones import PHONE_INDEX


class AlignmentDecoder:
    """Beam-pruned Viterbi through a FrameGraph over ``total_frames`` frames of emission
    scores, pushed block by block; ``push`` returns the states of the frames that became
    final, ``finish`` the rest (see the module docstring for the memory bound).

    With ``beam=inf`` and ``max_lag`` above the recording's length it is the exact Viterbi
    path (tests compare it with a whole-lattice Viterbi).
    """

    def __init__(self, graph: FrameGraph, total_frames: int, params: AlignParams):
        if total_frames < graph.min_frames:
            raise PhonelabelError(
                f"the transcript needs at least {graph.min_frames} frames "
                f"({graph.min_frames / 100:.2f} s at the minimum phone durations), "
                f"the audio has {total_frames}"
            )
        self.graph = graph
        self.params = params
        self.total = total_frames
        self.frames = 0  # frames pushed
        self.decided = 0  # frames emitted
        self.score = np.full(graph.size + 1, -np.inf)  # (S + 1,): index S is the sentinel
        self.lo = self.hi = 0  # the window of states alive at the last frame
        self.back: list[tuple[int, np.ndarray]] = []  # per undecided frame: (lo, predecessor)
        self.next_check = params.check_every

    def push(self, emissions: np.ndarray) -> np.ndarray:
        """(n, 61) emission scores of the next frames -> (m,) states of frames now final."""
        done: list[np.ndarray] = []
        for row in np.asarray(emissions, dtype=np.float64):
            if self.frames >= self.total:
                raise PhonelabelError(f"more than the announced {self.total} frames")
            self._step(row)
            if self.frames >= self.next_check and self.frames < self.total:
                done.append(self._emit_converged())
        return np.concatenate(done) if done else np.zeros(0, dtype=np.int64)

    def finish(self) -> np.ndarray:
        if self.frames != self.total:
            raise PhonelabelError(f"{self.frames} frames given, {self.total} announced")
        window = self.score[self.lo : self.hi]
        final = self.graph.final[self.lo : self.hi] & np.isfinite(window)
        if not final.any():
            raise PhonelabelError("no path reached the end of the transcript within the beam")
        best = self.lo + int(np.flatnonzero(final)[np.argmax(window[final])])
        return self._emit(best, self.frames - 1)

    @property
    def pending_bytes(self) -> int:
        """Memory held by back-pointers of undecided frames."""
        return sum(b.nbytes for _, b in self.back)

    def _step(self, emission: np.ndarray) -> None:
        g, t = self.graph, self.frames
        frames_left = self.total - 1 - t  # frames after this one
        if t == 0:
            alive = g.initial & (g.to_end <= frames_left)
            lo, hi = int(np.argmax(alive)), g.size - int(np.argmax(alive[::-1]))
            new = np.where(alive[lo:hi], emission[g.phone[lo:hi]], -np.inf)
            back = np.full(hi - lo, -1, dtype=np.int32)
        else:
            lo, hi = self.lo, min(g.size, int(g.reach[self.lo : self.hi].max()) + 1)
            states = np.arange(lo, hi)
            # inside a phone's chain a state is entered from the one before it; only the
            # first state of a phone has a list of predecessors to choose from
            source = states - 1  # (W,)
            enter = self.score[source]  # lo = 0: index -1 is the -inf sentinel
            a, b = np.searchsorted(g.firsts, (lo, hi))
            firsts = g.firsts[a:b]  # (K,)
            options = g.predecessors[firsts]  # (K, P)
            entering = self.score[options]  # (K, P)
            which = entering.argmax(axis=1)
            enter[firsts - lo] = entering[np.arange(len(firsts)), which]
            source[firsts - lo] = options[np.arange(len(firsts)), which]
            enter -= g.entry_cost[lo:hi]
            stay = np.where(g.loops[lo:hi], self.score[lo:hi], -np.inf)
            stays = stay >= enter
            new = np.maximum(stay, enter) + emission[g.phone[lo:hi]]
            new[g.to_end[lo:hi] > frames_left] = -np.inf  # cannot finish in time
            back = np.where(stays, states, source).astype(np.int32)
        best = new.max()
        if not np.isfinite(best):
            raise PhonelabelError("no path through the transcript fits the audio")
        new[new < best - self.params.beam] = -np.inf
        alive = np.flatnonzero(np.isfinite(new))
        first, stop = int(alive[0]), int(alive[-1]) + 1  # trim the window to the survivors
        self.score[self.lo : self.hi] = -np.inf
        self.score[lo + first : lo + stop] = new[first:stop]
        self.back.append((lo + first, back[first:stop]))
        self.lo, self.hi = lo + first, lo + stop
        self.frames += 1

    def _trace(self, states: np.ndarray, t: int) -> np.ndarray:
        """The states at frame t - 1 that ``states`` at frame t came from."""
        lo, back = self.back[t - self.decided]
        return back[states - lo].astype(np.int64)

    def _emit(self, state: int, end: int) -> np.ndarray:
        """Final states of frames decided..end along the path through ``state`` at ``end``."""
        path = np.empty(end - self.decided + 1, dtype=np.int64)
        states = np.array([state])
        for t in range(end, self.decided - 1, -1):
            path[t - self.decided] = states[0]
            if t > self.decided:
                states = self._trace(states, t)
        del self.back[: len(path)]
        self.decided = end + 1
        return path

    def _emit_converged(self) -> np.ndarray:
        """Emit the frames before the newest point where all surviving paths meet; past
        ``max_lag`` undecided frames, force the best path (see the module docstring)."""
        alive = self.lo + np.flatnonzero(np.isfinite(self.score[self.lo : self.hi]))
        states, t = alive, self.frames - 1
        while len(states) > 1 and t > self.decided:
            states = np.unique(self._trace(states, t))
            t -= 1
        if len(states) == 1:
            self.next_check = self.frames + self.params.check_every
            return self._emit(int(states[0]), t)
        pending = self.frames - self.decided
        if pending <= self.params.max_lag:  # checks thin out as the lag grows, up to max_lag
            later = self.frames + max(self.params.check_every, pending // 2)
            self.next_check = min(later, self.decided + self.params.max_lag + 1)
            return np.zeros(0, dtype=np.int64)
        end = self.frames - 1 - self.params.max_lag // 2
        ancestors = alive
        for t in range(self.frames - 1, end, -1):
            ancestors = self._trace(ancestors, t)
        best = int(np.argmax(self.score[alive]))
        dropped = alive[ancestors != ancestors[best]]
        self.score[dropped] = -np.inf
        self.next_check = self.frames + self.params.check_every
        return self._emit(int(ancestors[best]), end)


def emission_scores(
    log_posteriors: np.ndarray, priors: np.ndarray | None, params: AlignParams
) -> np.ndarray:
    """(T, 61) log p(phone | x) -> (T, 62) scaled log-likelihoods log p(x | phone) + const;
    column 61 (``SILENCE_CLASS``) is silence of either kind, h# or pau."""
    silence = np.logaddexp(
        log_posteriors[:, PHONE_INDEX["h#"]], log_posteriors[:, PHONE_INDEX["pau"]]
    )
    scores = np.concatenate([log_posteriors, silence[:, None]], axis=1)  # (T, 62)
    if priors is None:
        return scores
    floored = np.maximum(priors, params.prior_floor)
    silence_prior = floored[PHONE_INDEX["h#"]] + floored[PHONE_INDEX["pau"]]
    log_prior = np.log(np.append(floored, silence_prior))  # (62,)
    return scores - params.prior_scale * log_prior


def viterbi_align(
    graph: FrameGraph, blocks: Iterable[np.ndarray], total_frames: int, params: AlignParams
) -> np.ndarray:
    """(T,) state per frame: the decoder over emission-score blocks."""
    decoder = AlignmentDecoder(graph, total_frames, params)
    path = [decoder.push(block) for block in blocks]
    path.append(decoder.finish())
    return np.concatenate(path)
