"""Forced alignment: a recording and the words said in it -> timed words and TIMIT-61 phones.

1. Words -> pronunciations (``lexicon.py``: user dictionary, CMU dictionary, festival).
2. Pronunciations -> a phone graph in TIMIT-61 (``build_graph``): each dictionary phone
   becomes its TIMIT realisations (stops and affricates with or without their closure,
   flaps and glottal stops for t/d between vowels, reduced vowels for unstressed ah/ih/er,
   syllabic el/em/en for an unstressed ah before l/m/n, hh or hv), every pronunciation of a
   word is a branch, and an optional ``pau`` between words and ``h#`` at both ends. A
   realisation using a phone the model never saw in training (its prior is 0) is left out.
3. The graph -> frame states (``FrameGraph``): each phone is a left-to-right chain of
   ``min_frames`` states, the last one looping, so a phone lasts at least that long.
4. Viterbi over the LSTM's scaled log-likelihoods, log p(phone | x) - prior_scale *
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

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.audio import AudioFile
from phonelabel.core import SAMPLE_RATE, Segment
from phonelabel.corpus.timit import read_transcript
from phonelabel.decode import boundary_seconds
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig, frame_count
from phonelabel.fileio import output_lock
from phonelabel.formats import EXTENSIONS, check_format, fold_segments, write_segments
from phonelabel.label import Failure, load_labeller, output_names, recording_features
from phonelabel.lexicon import (
    ARPABET_VOWELS,
    Lexicon,
    Pronunciation,
    normalize_text,
    pronounce,
    read_dictionary,
)
from phonelabel.model import PosteriorStream
from phonelabel.phones import NUM_PHONES, PHONE_INDEX
from phonelabel.workers import Shard, check_counts, map_in_workers, work_units

SILENCE_WORD = ""  # the word of h#/pau states (an empty interval in the words tier)
# Silence nodes score the posterior of h# and pau together: the model calls a long pause in
# real speech h# as often as pau (it learnt h# from leading and trailing silence). The node
# keeps its name (h# at the ends, pau between words) in the output.
SILENCE_CLASS = NUM_PHONES


@dataclass(frozen=True)
class AlignParams:
    """Decoding parameters of the aligner (tuned on synthetic unseen voices)."""

    min_frames: int = 3  # frames every phone lasts at least (stop releases, flaps: short_frames)
    short_frames: int = 1  # minimum for stop releases, flaps and glottal stops
    prior_scale: float = 0.5  # exponent of the phone prior dividing the posteriors
    prior_floor: float = 1e-5  # phone priors are floored here before the log
    transition_penalty: float = 0.0  # log-score cost of entering a new phone
    beam: float = 400.0  # prune states this far (log-score) below the best of the frame
    check_every: int = 50  # frames between traceback convergence checks
    max_lag: int = 3000  # frames of undecided path before the best one is forced (30 s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- 1. TIMIT realisations of dictionary phones -------------------------------------------------

STOP_CLOSURES = {"B": "bcl", "D": "dcl", "G": "gcl", "P": "pcl", "T": "tcl", "K": "kcl"}
AFFRICATES = {"CH": ("tcl", "ch"), "JH": ("dcl", "jh")}
SHORT_PHONES = frozenset({"b", "d", "g", "p", "t", "k", "dx", "q"})  # releases and taps
REDUCED = {"AH": ("ah", "ax", "ix", "ax-h"), "IH": ("ih", "ix", "ax"), "ER": ("er", "axr")}
SYLLABIC = {"L": "el", "M": "em", "N": "en"}


def _base(phone: str) -> str:
    return phone.rstrip("012")


def _is_vowel(phone: str | None) -> bool:
    return phone is not None and _base(phone) in ARPABET_VOWELS


def _unstressed(phone: str) -> bool:
    """Stress 0, or no stress written (a user's dictionary): allow the reduced forms."""
    return phone[-1] not in "12"


def realisations(phone: str, before: str | None, after: str | None) -> list[tuple[str, ...]]:
    """The TIMIT-61 phone sequences a dictionary phone may be spoken as, between its
    neighbours in the word (None at the word's edges). A TIMIT phone stands for itself."""
    if phone.islower():  # a TIMIT-61 phone from a user's dictionary: exactly that
        return [(phone,)]
    base = _base(phone)
    if base in STOP_CLOSURES:
        closure, release = STOP_CLOSURES[base], base.lower()
        forms = [(closure, release), (release,)]
        if after is None or (_base(after) in STOP_CLOSURES or _base(after) in AFFRICATES):
            forms.append((closure,))  # unreleased before another stop, and word-finally
        if base in ("T", "D") and _is_vowel(before) and (_is_vowel(after) or after is None):
            forms.append(("dx",))
        if base == "T":
            forms.append(("q",))
        return forms
    if base in AFFRICATES:
        closure, release = AFFRICATES[base]
        return [(closure, release), (release,)]
    if base in ARPABET_VOWELS:
        if base in REDUCED and _unstressed(phone):
            return [(p,) for p in REDUCED[base]]
        return [(base.lower(),), ("ux",)] if base == "UW" else [(base.lower(),)]
    if base == "HH":
        return [("hh",), ("hv",)]
    if base == "N" and _is_vowel(before) and _is_vowel(after):
        return [("n",), ("nx",)]
    if base == "NG":
        return [("ng",), ("eng",)]
    return [(base.lower(),)]


# --- 2. the phone graph -------------------------------------------------------------------------


@dataclass
class PhoneGraph:
    """A DAG of TIMIT phones, nodes numbered in topological order (every arc goes forward).

    ``starts``: nodes a path may begin with; ``ends``: nodes it may end with.
    """

    phones: list[str] = field(default_factory=list)
    words: list[int] = field(default_factory=list)  # word index per node, -1 for silence
    arcs: list[set[int]] = field(default_factory=list)  # successors per node
    starts: set[int] = field(default_factory=set)
    ends: set[int] = field(default_factory=set)

    def add(self, phone: str, word: int) -> int:
        self.phones.append(phone)
        self.words.append(word)
        self.arcs.append(set())
        return len(self.phones) - 1

    def paths(self, limit: int = 10000) -> list[tuple[str, ...]]:
        """Every phone string the graph accepts (for tests and inspection; small graphs)."""
        found: list[tuple[str, ...]] = []
        stack = [(n, (self.phones[n],)) for n in sorted(self.starts, reverse=True)]
        while stack and len(found) < limit:
            node, path = stack.pop()
            if node in self.ends:
                found.append(path)
            stack += [(s, path + (self.phones[s],)) for s in sorted(self.arcs[node], reverse=True)]
        return sorted(set(found))


class _Builder:
    """Builds a PhoneGraph over junctions: a chain of phones runs from one junction to
    another; ``skip`` joins two junctions with no phone (an optional item). Arcs are made
    at the end: every chain ending at junction j goes to every chain starting at a junction
    reachable from j by skips."""

    def __init__(self) -> None:
        self.graph = PhoneGraph()
        self.chain_starts: list[list[int]] = [[]]  # per junction: first nodes of chains
        self.chain_ends: list[list[int]] = [[]]  # per junction: last nodes of chains into it
        self.skips: list[list[int]] = [[]]

    def junction(self) -> int:
        for table in (self.chain_starts, self.chain_ends, self.skips):
            table.append([])
        return len(self.skips) - 1

    def chain(self, source: int, target: int, phones: Sequence[str], word: int) -> None:
        nodes = [self.graph.add(p, word) for p in phones]
        for a, b in zip(nodes, nodes[1:], strict=False):
            self.graph.arcs[a].add(b)
        self.chain_starts[source].append(nodes[0])
        self.chain_ends[target].append(nodes[-1])

    def finish(self, first: int, last: int) -> PhoneGraph:
        closure: list[set[int]] = [set() for _ in self.skips]  # junctions reachable by skips
        for j in range(len(self.skips) - 1, -1, -1):
            closure[j] = {j}.union(*(closure[k] for k in self.skips[j]))
        for j, ends in enumerate(self.chain_ends):
            following = [n for k in closure[j] for n in self.chain_starts[k]]
            for node in ends:
                self.graph.arcs[node].update(following)
        self.graph.starts = {n for k in closure[first] for n in self.chain_starts[k]}
        self.graph.ends = {
            n for j, ends in enumerate(self.chain_ends) if last in closure[j] for n in ends
        }
        return self.graph


def _add_pronunciation(
    builder: _Builder, source: int, target: int, pron: Pronunciation, word: int, allowed
) -> None:
    """One pronunciation from junction ``source`` to ``target``: a junction between each pair
    of dictionary phones, every realisation a chain between them; an unstressed ah before
    l/m/n may also be one syllabic el/em/en spanning both."""
    junctions = [source] + [builder.junction() for _ in pron[1:]] + [target]
    for i, phone in enumerate(pron):
        before = pron[i - 1] if i else None
        after = pron[i + 1] if i + 1 < len(pron) else None
        forms = realisations(phone, before, after)
        kept = [f for f in forms if all(allowed(p) for p in f)] or forms[:1]
        for form in kept:
            builder.chain(junctions[i], junctions[i + 1], form, word)
        if (
            phone.isupper()
            and _base(phone) == "AH"
            and _unstressed(phone)
            and after in SYLLABIC
            and allowed(SYLLABIC[after])
        ):
            builder.chain(junctions[i], junctions[i + 2], (SYLLABIC[after],), word)


def build_graph(
    pronunciations: Sequence[Sequence[Pronunciation]],
    allowed: Callable[[str], bool] = lambda phone: True,
) -> PhoneGraph:
    """The phone graph of a word sequence (one list of pronunciations per word): optional
    h# at the start and end, optional pau between words. ``allowed(phone)``: whether a
    realisation may use the phone (the canonical one is kept when none is allowed)."""
    builder = _Builder()
    first = 0
    position = builder.junction()
    builder.chain(first, position, ("h#",), -1)
    builder.skips[first].append(position)
    for word, prons in enumerate(pronunciations):
        if word:  # optional pause between words
            after_pause = builder.junction()
            builder.chain(position, after_pause, ("pau",), -1)
            builder.skips[position].append(after_pause)
            position = after_pause
        word_end = builder.junction()
        for pron in prons:
            _add_pronunciation(builder, position, word_end, pron, word, allowed)
        position = word_end
    last = builder.junction()
    builder.chain(position, last, ("h#",), -1)
    builder.skips[position].append(last)
    return builder.finish(first, last)


# --- 3. frame states ----------------------------------------------------------------------------


@dataclass
class FrameGraph:
    """The phone graph as frame states: node n is the chain of states
    ``first[n] .. first[n] + length[n] - 1``; the last state of a chain loops.

    ``predecessors``: (S, P) int32 states a state may be entered from, padded with S (a
    sentinel whose score is always -inf); ``reach``: (S,) the highest state index a state
    leads to in one frame; ``to_end``: (S,) frames still needed after this one to finish.
    """

    node: np.ndarray  # (S,) int32 node of each state
    phone: np.ndarray  # (S,) int64 emission column: TIMIT-61 class, or SILENCE_CLASS
    loops: np.ndarray  # (S,) bool
    entry_cost: np.ndarray  # (S,) float64 cost of entering (first state of a chain)
    predecessors: np.ndarray  # (S, P) int32
    reach: np.ndarray  # (S,) int64
    to_end: np.ndarray  # (S,) int64
    initial: np.ndarray  # (S,) bool: may be the state of frame 0
    final: np.ndarray  # (S,) bool: may be the state of the last frame
    firsts: np.ndarray  # (N,) int64 sorted: the first state of each phone

    @property
    def size(self) -> int:
        return len(self.node)

    @property
    def min_frames(self) -> int:
        """The fewest frames any complete path takes."""
        return int(self.to_end[self.initial].min()) + 1


def frame_graph(graph: PhoneGraph, params: AlignParams) -> FrameGraph:
    lengths = np.array(
        [params.short_frames if p in SHORT_PHONES else params.min_frames for p in graph.phones]
    )
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    last = first + lengths - 1
    size = int(lengths.sum())
    incoming: list[list[int]] = [[] for _ in graph.phones]
    for a, successors in enumerate(graph.arcs):
        for b in successors:
            incoming[b].append(int(last[a]))
    width = max(1, max(len(i) for i in incoming))
    predecessors = np.full((size, width), size, dtype=np.int32)
    node = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    classes = [SILENCE_CLASS if p in ("h#", "pau") else PHONE_INDEX[p] for p in graph.phones]
    phone = np.array(classes, dtype=np.int64)[node]  # emission column of each state
    loops = np.zeros(size, dtype=bool)
    loops[last] = True
    entry_cost = np.zeros(size)
    entry_cost[first] = params.transition_penalty
    inner = np.setdiff1d(np.arange(size), first)
    predecessors[inner, 0] = inner - 1
    for n, sources in enumerate(incoming):
        predecessors[first[n], : len(sources)] = sources
    # reach: the chain's next state, or the first state of any successor node
    reach = np.arange(size, dtype=np.int64) + 1
    for n, successors in enumerate(graph.arcs):
        reach[last[n]] = max([int(first[s]) for s in successors], default=int(last[n]))
    # to_end: frames after this one to reach a final state, by one backward pass over nodes
    node_to_end = np.zeros(len(lengths), dtype=np.int64)  # from the node's last state
    for n in range(len(lengths) - 1, -1, -1):
        nxt = [int(node_to_end[s] + lengths[s]) for s in graph.arcs[n]]
        if n in graph.ends:
            nxt.append(0)
        node_to_end[n] = min(nxt) if nxt else 10**9
    to_end = node_to_end[node] + (last[node] - np.arange(size))
    initial = np.zeros(size, dtype=bool)
    initial[[first[n] for n in graph.starts]] = True
    final = np.zeros(size, dtype=bool)
    final[[last[n] for n in graph.ends]] = True
    return FrameGraph(
        node, phone, loops, entry_cost, predecessors, reach, to_end, initial, final, first
    )


# --- 4. the decoder -----------------------------------------------------------------------------


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


# --- 5. words and phones in time ----------------------------------------------------------------


@dataclass
class Alignment:
    """One aligned recording: word and phone segments tiling [0, duration]."""

    source: str
    words: list[Segment]  # silence between words as SILENCE_WORD intervals
    phones: list[Segment]
    duration: float
    metadata: dict[str, Any] = field(default_factory=dict)
    output: Path | None = None


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, first, stop) of each run of equal values."""
    starts = np.flatnonzero(np.diff(values, prepend=values[0] - 1))
    stops = [*starts[1:], len(values)]
    return [(int(values[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def path_segments(
    graph: PhoneGraph,
    frame_graph_: FrameGraph,
    path: np.ndarray,
    words: Sequence[str],
    duration: float,
    config: FeatureConfig,
) -> tuple[list[Segment], list[Segment]]:
    """(word segments, phone segments) of a state path; boundaries midway between frame
    centres (``decode.boundary_seconds``), the first at 0, the last at ``duration``."""

    def seconds(frame: int, stop: bool) -> float:
        if frame == 0:
            return 0.0
        if frame == len(path):
            return duration
        return boundary_seconds(frame, config)

    nodes = frame_graph_.node[path]  # (T,)
    phones = [
        Segment(seconds(a, False), seconds(b, True), graph.phones[n]) for n, a, b in _runs(nodes)
    ]
    word_of_frame = np.array(graph.words, dtype=np.int64)[nodes]  # (T,)
    word_segments = [
        Segment(seconds(a, False), seconds(b, True), words[w] if w >= 0 else SILENCE_WORD)
        for w, a, b in _runs(word_of_frame)
    ]
    return word_segments, phones


# --- the recording ------------------------------------------------------------------------------


def phone_priors(trained: Any) -> np.ndarray | None:
    """(61,) the training split's phone frequencies stored with a model, or None."""
    if trained.phone_priors is None:
        return None
    priors = np.asarray(trained.phone_priors, dtype=np.float64)
    if priors.shape != (NUM_PHONES,) or not np.all(priors >= 0) or priors.sum() <= 0:
        raise PhonelabelError(
            f"{trained.directory}: phone_priors in config.json are not 61 non-negative numbers"
        )
    return priors / priors.sum()


@dataclass
class Aligner:
    """A loaded model, its phone priors and the decoding parameters."""

    labeller: Any  # label.Labeller; None to align posteriors given directly
    priors: np.ndarray | None
    params: AlignParams = field(default_factory=AlignParams)
    user_lexicon: Lexicon | None = None
    guess: bool = True  # festival's letter-to-sound rules for words in no dictionary

    @property
    def feature(self) -> FeatureConfig:
        return self.labeller.feature if self.labeller is not None else FeatureConfig()

    def allowed(self, phone: str) -> bool:
        """A phone the model saw in training (every phone when the priors are unknown)."""
        return self.priors is None or self.priors[PHONE_INDEX[phone]] > 0

    def description(self) -> dict[str, Any]:
        return {
            "method": "forced alignment (beam-pruned Viterbi through the transcript's phone graph)",
            **self.params.to_dict(),
            "priors": "model's training split" if self.priors is not None else "none (uniform)",
        }


def load_aligner(
    model: str | Path | None = None,
    device: str = "cpu",
    dictionary: str | Path | None = None,
    guess: bool = True,
    params: AlignParams | None = None,
) -> Aligner:
    labeller = load_labeller(model, device)
    priors = phone_priors(labeller.trained)
    user = read_dictionary(dictionary) if dictionary is not None else None
    return Aligner(labeller, priors, params or AlignParams(), user, guess)


def log_posterior_blocks(path: str | Path, labeller: Any) -> tuple[Any, int, Iterator[np.ndarray]]:
    """(audio file, frames, blocks of (n, 61) log-posteriors): a recording read as ``label``
    reads it (``label.recording_features``: features and normalisation in blocks), through
    the LSTM with its state carried across blocks and the target delay honoured."""
    audio = AudioFile(path)
    config = labeller.feature
    frames = frame_count(round(audio.seconds * SAMPLE_RATE), config)
    features = recording_features(audio, config, labeller.trained.stats)

    def blocks() -> Iterator[np.ndarray]:
        posteriors = PosteriorStream(labeller.trained.model, labeller.device)
        for block in features.normalized():
            yield posteriors.push(block)
        yield posteriors.finish()

    return audio, frames, _exactly(blocks(), frames)


def _exactly(blocks: Iterable[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """Exactly ``frames`` rows: resampling may make the stream a frame longer or shorter
    than the header's sample count promises (the last row repeats, or the excess goes)."""
    given, last = 0, None
    for block in blocks:
        block = block[: frames - given]
        given += len(block)
        if len(block):
            last = block[-1:]
            yield block
    if given < frames and last is not None:
        yield np.repeat(last, frames - given, axis=0)


def align_words(
    words: Sequence[str],
    aligner: Aligner,
    log_posteriors: Iterable[np.ndarray],
    frames: int,
    duration: float,
    source: str = "<posteriors>",
) -> Alignment:
    """Align normalised words to blocks of (n, 61) log-posteriors of ``frames`` frames."""
    if not words:
        raise PhonelabelError(f"{source}: the transcript holds no words")
    pronunciations, guessed = pronounce(words, aligner.user_lexicon, aligner.guess)
    graph = build_graph(pronunciations, aligner.allowed)
    states = frame_graph(graph, aligner.params)
    if frames < states.min_frames:
        raise PhonelabelError(
            f"{source}: {len(words)} words need at least {states.min_frames} frames "
            f"({states.min_frames / 100:.2f} s at the minimum phone durations); the audio has "
            f"{frames} ({duration:.2f} s)"
        )
    scores = (emission_scores(block, aligner.priors, aligner.params) for block in log_posteriors)
    try:
        path = viterbi_align(states, scores, frames, aligner.params)
    except PhonelabelError as error:
        raise PhonelabelError(f"{source}: {error}") from None
    word_segments, phone_segments = path_segments(
        graph, states, path, words, duration, aligner.feature
    )
    metadata = {"words": list(words), "guessed_pronunciations": guessed}
    return Alignment(source, word_segments, phone_segments, duration, metadata)


def align_file(path: str | Path, text: str, aligner: Aligner) -> Alignment:
    """Align one recording with its transcript (text as written; normalised here)."""
    words = normalize_text(text)
    if not words:
        raise PhonelabelError(f"{path}: the transcript is empty (no words)")
    audio, frames, blocks = log_posterior_blocks(path, aligner.labeller)
    duration = audio.source_frames / audio.source_rate
    result = align_words(words, aligner, blocks, frames, duration, str(audio.path))
    result.metadata.update(source=str(audio.path), source_sample_rate=audio.source_rate)
    return result


# --- files: transcripts beside the audio, outputs ----------------------------------------------

TRANSCRIPT_SUFFIXES = (".txt", ".lab")  # any letter case; TIMIT's .TXT starts with two numbers
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph", ".nist", ".aif", ".aiff")


def _sibling(path: Path, suffixes: Sequence[str]) -> Path | None:
    """A file beside ``path`` with its stem and one of ``suffixes`` (any letter case)."""
    if not path.parent.is_dir():
        return None
    for candidate in sorted(path.parent.iterdir()):
        stem, suffix = candidate.name[: -len(candidate.suffix) or None], candidate.suffix
        if stem == path.stem and suffix.lower() in suffixes and candidate != path:
            return candidate
    return None


def pair_inputs(paths: Sequence[str | Path], text: str | None) -> list[tuple[Path, Any]]:
    """(audio, transcript text or PhonelabelError) per input. An input may be the audio or
    its transcript file; ``text`` is the transcript of every input when given."""
    pairs: list[tuple[Path, Any]] = []
    for given in map(Path, paths):
        if given.suffix.lower() in TRANSCRIPT_SUFFIXES:
            audio = _sibling(given, AUDIO_SUFFIXES)
            if audio is None:
                problem = (
                    f"{given}: no such transcript"
                    if not given.is_file()
                    else (
                        f"{given}: a transcript with no audio beside it ({given.stem}.wav, .flac, ...)"
                    )
                )
                pairs.append((given, PhonelabelError(problem)))
                continue
            transcript: Any = given
        else:
            audio, transcript = given, None
        try:
            if text is not None:
                pairs.append((audio, text))
                continue
            transcript = transcript or _sibling(audio, TRANSCRIPT_SUFFIXES)
            if transcript is None:
                raise PhonelabelError(
                    f"{audio}: no transcript beside it ({audio.stem}.txt, .lab or TIMIT .TXT)"
                    if audio.is_file()
                    else f"{audio}: no such audio file"
                )
            pairs.append((audio, read_transcript(transcript)))
        except PhonelabelError as error:
            pairs.append((audio, error))
    return pairs


def align_files(
    paths: Sequence[str | Path],
    aligner: Aligner,
    out: str | Path,
    fmt: str = "textgrid",
    text: str | None = None,
    fold39: bool = False,
    jobs: int = 1,
    shard: Shard | None = None,
) -> Iterator[Any]:
    """Align each input and write ``out/<stem><ext>`` (phn: also ``<stem>.wrd``; csv: also
    ``<stem>.words.csv``). Yields an Alignment or a ``label.Failure`` per input, in the
    order given; a failure does not stop the others. ``jobs`` worker processes share the
    inputs and ``shard`` aligns only its share of them, as ``label.label_files`` does; the
    outputs are the same whatever both are."""
    check_format(fmt)
    check_counts(jobs=jobs)
    given = [str(path) for path in paths]
    names = output_names(given, fmt)  # a transcript's audio has its stem and folder
    chosen = [i for unit in work_units(given, 1, shard) for i in unit]
    lock = output_lock(out, "alignments", shard.name if shard is not None else None)
    with lock as directory:  # one writer per output (or shard of it)
        pairs = pair_inputs([given[i] for i in chosen], text)
        units = [(*pair, directory / names[i]) for pair, i in zip(pairs, chosen, strict=True)]
        run = _AlignRun(aligner, fmt, fold39)
        yield from map_in_workers(_align_unit, run, units, jobs)


@dataclass
class _AlignRun:
    """What every input of an ``align_files`` run shares (pickled once per worker)."""

    aligner: Aligner
    fmt: str
    fold39: bool


def _align_unit(run: _AlignRun, unit: tuple[Path, Any, Path]) -> Any:
    """Align and write one input of ``align_files``: an Alignment, or a Failure."""
    audio, transcript, target = unit
    aligner = run.aligner
    try:
        if isinstance(transcript, PhonelabelError):
            raise transcript
        if target.exists() and target.resolve().parent == audio.resolve().parent:
            raise PhonelabelError(f"{target}: exists beside its recording; give another --out")
        result = align_file(audio, transcript, aligner)
        if run.fold39:
            result.phones = fold_segments(result.phones)
        result.metadata.update(
            model=str(aligner.labeller.trained.directory),
            phone_set="timit-39" if run.fold39 else "timit-61",
            decoder=aligner.description(),
        )
        result.output = target
        _write(result, run.fmt, target, EXTENSIONS[run.fmt])
        return result
    except PhonelabelError as error:
        return Failure(str(audio), str(error))


def _write(result: Alignment, fmt: str, target: Path, extension: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    rate = result.metadata.get("source_sample_rate", SAMPLE_RATE)
    args = (result.duration, result.metadata, rate)
    if fmt in ("textgrid", "json"):
        write_segments(result.phones, fmt, target, *args, words=result.words)
        return
    write_segments(result.phones, fmt, target, *args)
    spoken = [w for w in result.words if w.phone != SILENCE_WORD]
    words_file = target.with_name(
        target.name[: -len(extension)] + (".wrd" if fmt == "phn" else ".words.csv")
    )
    write_segments(spoken, fmt, words_file, *args)
