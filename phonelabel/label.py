"""Label new recordings: audio -> features -> LSTM -> decoder -> timed phone segments.

Everything runs block by block, so an hour-long file needs bounded memory and stdin can
stream. This module holds only the pipeline; its pieces live where they belong:
``audio.AudioFile`` / ``audio.pcm_blocks`` read the blocks, ``features.FeatureStream``
yields exactly the frames ``compute_features`` gives the whole signal,
``model.PosteriorStream`` carries the LSTM state across blocks and honours the target
delay as the whole-utterance pass does, and ``decode.ViterbiDecoder`` emits frames once all
surviving paths agree. Files get two passes when the model normalises per speaker (a
recording is one speaker): the first gathers the recording's ``features.Moments``, the
second labels. A stream cannot look ahead, so ``features.RunningNormalizer`` normalises
each frame by the statistics of the frames so far (the same rule); its output then differs
slightly from a whole-file run. With "global" normalisation streaming and files give the
same segments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from phonelabel.audio import BLOCK_SECONDS, AudioFile, pcm_blocks
from phonelabel.core import SAMPLE_RATE, Segment
from phonelabel.corpus.timit import read_phn
from phonelabel.decode import DecoderParams, SegmentBuilder, make_decoder
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    FeatureConfig,
    FeatureStream,
    Moments,
    RunningNormalizer,
    frame_count,
    normalization_stats,
    normalize,
)
from phonelabel.fileio import output_lock
from phonelabel.formats import EXTENSIONS, check_format, fold_segments, write_segments
from phonelabel.model import PosteriorStream, resolve_device
from phonelabel.modeldir import TrainedModel, default_model_dir, load_model
from phonelabel.plots import plot_audio_file

CACHE_SECONDS = 1200.0  # files up to 20 min keep first-pass features (19 MB at 39 dims)

Progress = Callable[[float, float], None]  # (seconds done, seconds in all)


# --- the model and its decoder -------------------------------------------------------------


@dataclass
class Labeller:
    """A loaded model plus how to decode its output."""

    trained: TrainedModel
    params: DecoderParams = field(default_factory=DecoderParams)
    smooth: bool = True
    device: Any = "cpu"  # a torch.device

    @property
    def feature(self) -> FeatureConfig:
        return self.trained.feature

    def decoder_description(self) -> dict[str, Any]:
        if not self.smooth:
            return {"method": "argmax"}
        return {"method": "viterbi", **self.params.to_dict()}


def load_labeller(
    model: str | Path | None = None, device: str = "auto", smooth: bool = True
) -> Labeller:
    """Load a model dir (None: the shipped default); its config's decoder parameters."""
    device = resolve_device(device)
    trained = load_model(model if model is not None else default_model_dir(), device)
    return Labeller(trained, trained.decoder_params, smooth, device)


# --- the pipeline ----------------------------------------------------------------------------


def segment_stream(
    raw_features: Iterable[np.ndarray],
    features: FeatureStream,
    labeller: Labeller,
    normalizer: Callable[[np.ndarray], np.ndarray],
    name: str = "<stdin>",
    check_every: int = 10,
) -> Iterator[Segment]:
    """Blocks of raw features (made by ``features``) -> 61-class segments, each yielded as
    soon as it is final. ``check_every``: frames between the Viterbi's convergence checks
    (streaming latency vs. a little speed)."""
    config = labeller.feature
    posteriors = PosteriorStream(labeller.trained.model, labeller.device)
    decoder = make_decoder(labeller.params, labeller.smooth, check_every=check_every)
    builder = SegmentBuilder(config)
    pending = np.zeros((0, labeller.trained.model.config.num_classes), dtype=np.float32)

    def decode(log_posteriors: np.ndarray, final: bool) -> list[Segment]:
        nonlocal pending
        pending = np.concatenate([pending, log_posteriors])  # rows not yet decided
        classes = decoder.push(log_posteriors)
        if final:
            classes = np.concatenate([classes, decoder.finish()])
        rows, pending = pending[: len(classes)], pending[len(classes) :]
        return builder.push(classes, rows)

    for raw in raw_features:
        yield from decode(posteriors.push(normalizer(raw)), final=False)
    if features.done == 0:
        seconds = config.win_length / config.sample_rate
        raise PhonelabelError(
            f"{name}: audio is shorter than one frame ({features.samples} samples; "
            f"at least {config.win_length} = {seconds * 1000:.0f} ms needed)"
        )
    yield from decode(posteriors.finish(), final=True)
    yield from builder.finish(features.samples)


@dataclass
class Labelled:
    """One labelled recording: 61-class segments tiling [0, duration]."""

    source: str
    segments: list[Segment]
    duration: float  # seconds (16 kHz samples / 16000)
    output: Path | None = None
    plot: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def write(self, fmt: str, path_or_stream: Any) -> None:
        """Write the segments; .PHN sample numbers at the recording's own rate, as TIMIT's."""
        rate = self.metadata.get("source_sample_rate", SAMPLE_RATE)
        write_segments(self.segments, fmt, path_or_stream, self.duration, self.metadata, rate)


@dataclass
class RecordingFeatures:
    """A recording's raw feature blocks and how to normalise them (``recording_features``)."""

    stream: FeatureStream  # made the blocks: frames and samples seen so far
    blocks: Iterator[np.ndarray]  # raw (n, D) feature blocks, in order
    mean: np.ndarray  # (D,) normalisation
    std: np.ndarray
    normalization: str  # what the mean and std are, for the output's metadata

    def normalize(self, block: np.ndarray) -> np.ndarray:
        return normalize(block, self.mean, self.std)

    def normalized(self) -> Iterator[np.ndarray]:
        return map(self.normalize, self.blocks)


def recording_features(
    audio: AudioFile,
    config: FeatureConfig,
    prior: dict[str, Any],
    on_progress: Progress | None = None,
    block_seconds: float = BLOCK_SECONDS,
    cache_seconds: float = CACHE_SECONDS,
) -> RecordingFeatures:
    """One recording's features in blocks (bounded memory), normalised by
    ``features.normalization_stats`` with ``prior`` (a model's statistics): label and align
    read recordings through here.

    A speaker-normalised model needs the recording's statistics first (a recording is one
    speaker): pass one featurizes the file and sums; pass two reads the first pass's
    features when the file is at most ``cache_seconds`` long (39-dim features take 9.4 MB
    per 10 min), else featurizes it again. ``on_progress(done, total)`` counts seconds of
    audio over both passes.
    """
    if frame_count(int(audio.seconds * SAMPLE_RATE), config) == 0:
        raise PhonelabelError(
            f"{audio.path}: audio is shorter than one frame ({audio.seconds * 1000:.1f} ms; "
            f"at least {config.win_length / config.sample_rate * 1000:.0f} ms needed)"
        )
    speaker = config.normalization == "speaker"
    total = audio.seconds * (2 if speaker else 1)
    done = 0.0

    def reported(
        blocks: Iterable[np.ndarray], seconds_per_row: float, last: bool
    ) -> Iterator[np.ndarray]:
        nonlocal done
        for block in blocks:
            yield block
            done += len(block) * seconds_per_row
            if on_progress is not None:
                on_progress(min(done, total), total)
        if on_progress is not None and last:  # frames stop short of the last samples
            on_progress(total, total)

    def first_pass(last: bool) -> tuple[FeatureStream, Iterator[np.ndarray]]:
        stream = FeatureStream(config)
        samples = reported(audio.blocks(block_seconds), 1 / SAMPLE_RATE, last)
        return stream, stream.frames(samples)

    stream, raw = first_pass(last=not speaker)
    if not speaker:
        mean, std = normalization_stats(config, prior)
        return RecordingFeatures(stream, raw, mean, std, "global")
    cache: list[np.ndarray] | None = [] if audio.seconds <= cache_seconds else None
    moments = Moments()
    for block in raw:
        moments.add(block, config)
        if cache is not None:
            cache.append(block)
    if cache is None:
        stream, raw = first_pass(last=True)
    else:
        raw = reported(cache, config.hop_length / config.sample_rate, last=True)
    mean, std = normalization_stats(config, prior, moments)
    described = "speaker (this recording, blended with the model's prior)"
    return RecordingFeatures(stream, raw, mean, std, described)


def label_file(
    path: str | Path,
    labeller: Labeller,
    on_progress: Progress | None = None,
    block_seconds: float = BLOCK_SECONDS,
    cache_seconds: float = CACHE_SECONDS,
) -> Labelled:
    """Label one audio file in blocks (``recording_features``)."""
    audio = AudioFile(path)
    features = recording_features(
        audio, labeller.feature, labeller.trained.stats, on_progress, block_seconds, cache_seconds
    )
    segments = list(
        segment_stream(
            features.blocks,
            features.stream,
            labeller,
            features.normalize,
            str(audio.path),
            check_every=100,
        )
    )
    metadata = {
        "source": str(audio.path),
        "source_sample_rate": audio.source_rate,
        "normalization": features.normalization,
    }
    duration = features.stream.samples / SAMPLE_RATE
    return Labelled(str(audio.path), segments, duration, metadata=metadata)


def label_stream(stream: IO[bytes], labeller: Labeller) -> Iterator[Segment]:
    """Label raw 16 kHz 16-bit mono PCM from a byte stream, yielding final segments.

    A speaker-normalised model uses running statistics here (see the module docstring).
    """
    normalizer = RunningNormalizer(labeller.feature, labeller.trained.stats)
    features = FeatureStream(labeller.feature)
    return segment_stream(features.frames(pcm_blocks(stream)), features, labeller, normalizer)


# --- many files, outputs ---------------------------------------------------------------------


@dataclass
class Failure:
    source: str
    error: str


def output_names(sources: list[str], fmt: str) -> list[Path]:
    """``<stem><ext>`` per input; where stems collide (TIMIT's SX sentences are read by many
    speakers), the inputs' folders below their common parent, mirrored."""
    names = [Path(Path(p).stem + EXTENSIONS[fmt]) for p in sources]
    if len(set(names)) < len(names):
        folders = [Path(p).resolve().parent for p in sources]
        base = Path(os.path.commonpath(folders))
        names = [f.relative_to(base) / n for f, n in zip(folders, names, strict=True)]
    return names


def label_files(
    paths: Iterable[str | Path],
    labeller: Labeller,
    fmt: str = "phn",
    out: str | Path | None = None,
    fold39: bool = False,
    plot: bool = False,
    on_progress: Callable[[str], Progress | None] | None = None,
) -> Iterator[Labelled | Failure]:
    """Label each file; write ``out/<stem><ext>`` (and ``<stem>.png`` with ``plot``, under
    ``out`` or the current directory). A file that fails yields a Failure, the rest go on.

    ``on_progress(source)`` may return a progress callback for that file.
    """
    check_format(fmt)
    paths = [str(p) for p in paths]
    directory = Path(out) if out is not None else None
    lock = output_lock(directory, "labels") if directory is not None else nullcontext()
    with lock:  # a second run writing the same --out is refused, not interleaved
        names = output_names(paths, fmt)
        if directory is not None and len(set(names)) < len(names):
            twice = sorted({str(n) for n in names if names.count(n) > 1})
            raise PhonelabelError(f"{directory}: several inputs would write {', '.join(twice)}")
        if directory is not None:
            for path, name in zip(paths, names, strict=True):
                target = directory / name
                if target.exists() and target.resolve().parent == Path(path).resolve().parent:
                    raise PhonelabelError(
                        f"{target}: exists beside its recording (a reference alignment?); "
                        "give another --out"
                    )
        for path, name in zip(paths, names, strict=True):
            try:
                result = label_file(path, labeller, on_progress(path) if on_progress else None)
                if fold39:
                    result.segments = fold_segments(result.segments)
                result.metadata.update(
                    model=str(labeller.trained.directory),
                    phone_set="timit-39" if fold39 else "timit-61",
                    decoder=labeller.decoder_description(),
                )
                if directory is not None:
                    result.output = directory / name
                    result.output.parent.mkdir(parents=True, exist_ok=True)
                    result.write(fmt, result.output)
                if plot:
                    result.plot = (directory or Path.cwd()) / name.with_suffix(".png")
                    result.plot.parent.mkdir(parents=True, exist_ok=True)
                    plot_audio_file(path, {"phones": result.segments}, result.plot)
                yield result
            except PhonelabelError as error:
                yield Failure(path, str(error))


def plot_file(
    path: str | Path,
    labeller: Labeller,
    output: str | Path,
    reference: str | Path | None = None,
    fold39: bool = False,
    start: float = 0.0,
    end: float | None = None,
    labelled: Labelled | None = None,
) -> Path:
    """Label ``path`` (unless ``labelled`` is its result already) and draw its spectrogram with
    the segments (and a reference .PHN) under it, from ``start`` to ``end`` seconds (default:
    ``plots.PLOT_SECONDS`` from ``start``)."""
    labelled = labelled or label_file(path, labeller)
    tiers = {"model": labelled.segments}
    if reference is not None:  # its sample numbers count the recording's own samples
        audio = AudioFile(path)
        tiers["reference"] = read_phn(reference, audio.source_frames, audio.source_rate)
    if fold39:
        tiers = {name: fold_segments(segments) for name, segments in tiers.items()}
    return plot_audio_file(path, tiers, output, start=start, end=end)
