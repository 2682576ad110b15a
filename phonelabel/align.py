"""Forced alignment: a recording and the words said in it -> timed words and TIMIT-61 phones.

1. Words -> pronunciations (``lexicon.py``: user dictionary, CMU dictionary, festival).
2. Pronunciations -> TIMIT realisations -> phone graph -> frame states (``align_graph``).
3. Beam-pruned Viterbi over the LSTM's prior-scaled posteriors, block by block in bounded
   memory (``align_viterbi``).
4. The state path -> word and phone segments (here), for one recording (``align_file``) or
   many, each with its transcript beside it (``align_files``, through ``workers.run_files``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.align_graph import (
    AlignParams,
    FrameGraph,
    PhoneGraph,
    build_graph,
    frame_graph,
    realisations,
)
from phonelabel.align_viterbi import AlignmentDecoder, emission_scores, viterbi_align
from phonelabel.audio import AUDIO_SUFFIXES, AudioFile
from phonelabel.core import SAMPLE_RATE, Segment, Word
from phonelabel.corpus.timit import read_transcript
from phonelabel.decode import boundary_seconds
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig, frame_count
from phonelabel.formats import (
    EXTENSIONS,
    check_format,
    fold_segments,
    output_names,
    write_segments,
    write_words,
)
from phonelabel.label import load_labeller, recording_features
from phonelabel.lexicon import Lexicon, normalize_text, pronounce, read_dictionary
from phonelabel.model import PosteriorStream
from phonelabel.phones import NUM_PHONES, PHONE_INDEX
from phonelabel.workers import Failure, Shard, run_files

__all__ = [  # the aligner's public names, its graph's and decoder's included
    "AlignParams",
    "Aligner",
    "Alignment",
    "AlignmentDecoder",
    "FrameGraph",
    "PhoneGraph",
    "align_file",
    "align_files",
    "align_words",
    "build_graph",
    "emission_scores",
    "frame_graph",
    "load_aligner",
    "log_posterior_blocks",
    "normalize_text",
    "pair_inputs",
    "path_segments",
    "phone_priors",
    "realisations",
    "viterbi_align",
]

SILENCE_WORD = ""  # the word of h#/pau states (an empty interval in the words tier)

# --- 5. words and phones in time ----------------------------------------------------------------


@dataclass
class Alignment:
    """One aligned recording: word and phone segments tiling [0, duration]."""

    source: str
    words: list[Word]  # silence between words as SILENCE_WORD intervals
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

    def seconds(frame: int) -> float:
        if frame == 0:
            return 0.0
        if frame == len(path):
            return duration
        return boundary_seconds(frame, config)

    nodes = frame_graph_.node[path]  # (T,)
    phones = [Segment(seconds(a), seconds(b), graph.phones[n]) for n, a, b in _runs(nodes)]
    word_of_frame = np.array(graph.words, dtype=np.int64)[nodes]  # (T,)
    word_segments = [
        Word(seconds(a), seconds(b), words[w] if w >= 0 else SILENCE_WORD)
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
    device: str = "auto",
    dictionary: str | Path | None = None,
    guess: bool = True,
    params: AlignParams | None = None,
) -> Aligner:
    """A model dir (None: the shipped default) on ``device`` (``auto``: a GPU when there is
    one, as ``label.load_labeller``), its phone priors, and a user's dictionary."""
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
) -> Iterator[Alignment | Failure]:
    """Align each input and write ``out/<stem><ext>`` (phn: also ``<stem>.wrd``; csv: also
    ``<stem>.words.csv``). Yields an Alignment or a ``workers.Failure`` per input, in the
    order given; a failure does not stop the others. ``jobs`` worker processes share the
    inputs and ``shard`` aligns only its share of them (``workers.run_files``, as
    ``label.label_files`` does); the outputs are the same whatever both are."""
    check_format(fmt)
    given = [str(path) for path in paths]
    names = output_names(given, fmt)  # a transcript's audio has its stem and folder
    run = _AlignRun(aligner, fmt, fold39, text, Path(out))
    yield from run_files(_align_unit, run, given, names, out, "alignments", jobs, 1, shard)


@dataclass
class _AlignRun:
    """What every input of an ``align_files`` run shares (pickled once per worker)."""

    aligner: Aligner
    fmt: str
    fold39: bool
    text: str | None
    directory: Path


def _align_unit(run: _AlignRun, unit: list[tuple[str, Path]]) -> list[Alignment | Failure]:
    """Align and write the input of a unit of ``align_files``: an Alignment, or a Failure."""
    ((given, name),) = unit
    audio, transcript = pair_inputs([given], run.text)[0]
    aligner = run.aligner
    try:
        if isinstance(transcript, PhonelabelError):
            raise transcript
        result = align_file(audio, transcript, aligner)
        if run.fold39:
            result.phones = fold_segments(result.phones)
        result.metadata.update(
            model=str(aligner.labeller.trained.directory),
            phone_set="timit-39" if run.fold39 else "timit-61",
            decoder=aligner.description(),
        )
        result.output = run.directory / name
        _write(result, run.fmt, result.output, EXTENSIONS[run.fmt])
        return [result]
    except PhonelabelError as error:
        return [Failure(str(audio), str(error))]


def _write(result: Alignment, fmt: str, target: Path, extension: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    rate = result.metadata.get("source_sample_rate", SAMPLE_RATE)
    args = (result.duration, result.metadata, rate)
    if fmt in ("textgrid", "json"):
        write_segments(result.phones, fmt, target, *args, words=result.words)
        return
    write_segments(result.phones, fmt, target, *args)
    spoken = [w for w in result.words if w.word != SILENCE_WORD]
    words_file = target.with_name(
        target.name[: -len(extension)] + (".wrd" if fmt == "phn" else ".words.csv")
    )
    write_words(spoken, fmt, words_file, *args)
