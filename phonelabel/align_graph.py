"""Forced alignment's graph: words' pronunciations -> TIMIT realisations -> phone graph ->
frame states.

1. Pronunciations -> a phone graph in TIMIT-61 (``build_graph``): each dictionary phone
   becomes its TIMIT realisations (stops and affricates with or without their closure,
   flaps and glottal stops for t/d between vowels, reduced vowels for unstressed ah/ih/er,
   syllabic el/em/en for an unstressed ah before l/m/n, hh or hv), every pronunciation of a
   word is a branch, and an optional ``pau`` between words and ``h#`` at both ends. A
   realisation using a phone the model never saw in training (its prior is 0) is left out.
2. The graph -> frame states (``FrameGraph``): each phone is a left-to-right chain of
   ``min_frames`` states, the last one looping, so a phone lasts at least that long.

``align_viterbi`` decodes through the frame states; ``align`` runs recordings and files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from phonelabel.lexicon import Pronunciation
from phonelabel.phones import (
    AFFRICATES,
    ARPABET_VOWELS,
    NUM_PHONES,
    PHONE_INDEX,
    SILENCES,
    STOP_CLOSURES,
)

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

# the phone classes of ``phones``, keyed by the dictionary's (ARPAbet, upper-case) phones
ARPABET_STOPS = {release.upper(): closure for release, closure in STOP_CLOSURES.items()}
ARPABET_AFFRICATES = {name.upper(): pair for name, pair in AFFRICATES.items()}
SHORT_PHONES = frozenset(STOP_CLOSURES) | {"dx", "q"}  # stop releases and taps
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
    if base in ARPABET_STOPS:
        closure, release = ARPABET_STOPS[base], base.lower()
        forms = [(closure, release), (release,)]
        if after is None or (_base(after) in ARPABET_STOPS or _base(after) in ARPABET_AFFRICATES):
            forms.append((closure,))  # unreleased before another stop, and word-finally
        if base in ("T", "D") and _is_vowel(before) and (_is_vowel(after) or after is None):
            forms.append(("dx",))
        if base == "T":
            forms.append(("q",))
        return forms
    if base in ARPABET_AFFRICATES:
        closure, release = ARPABET_AFFRICATES[base]
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
    classes = [SILENCE_CLASS if p in SILENCES else PHONE_INDEX[p] for p in graph.phones]
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
