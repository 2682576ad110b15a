"""Label new recordings: audio -> features -> LSTM -> decoder -> timed phone segments.

Everything runs block by block, so an hour-long file needs bounded memory and stdin can
stream. This module holds only the pipeline; its pieces live where they belong:
``audio.AudioFile`` / ``audio.pcm_blocks`` read the blocks, ``features.FeatureStream``
yields exactly the frames ``compute_features`` gives the whole signal,
``model.PosteriorStream`` carries the LSTM state across blocks and honours the target
delay as the whole-utterance pass does, and ``decode.ViterbiDecoder`` emits frames once all
surviving paths agree. Files are read twice when the model normalises per speaker (a
recording is one speaker) but featurized once: the first read gathers the recording's
``features.Moments`` while its raw features are kept (``features.FeatureSpool``: in memory,
or an anonymous temp file for a long one), the second labels them; ``run_label`` makes the
first file's first read while torch and the weights load. A stream cannot look
ahead, so ``features.RunningNormalizer`` normalises each frame by the statistics of the
frames so far (the same rule); its output then differs slightly from a whole-file run.
With "global" normalisation streaming and files give the same segments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from phonelabel.audio import BLOCK_SECONDS, AudioFile, pcm_blocks
from phonelabel.core import SAMPLE_RATE, Segment
from phonelabel.corpus.timit import read_phn
from phonelabel.decode import DecoderParams, SegmentBuilder, make_decoder
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    FeatureConfig,
    FeatureSpool,
    FeatureStream,
    Moments,
    RunningNormalizer,
    frame_count,
    normalization_stats,
    normalize,
)
from phonelabel.formats import (
    check_format,
    check_streamable,
    fold_segments,
    fold_stream,
    output_names,
    stream_lines,
    write_segments,
)
from phonelabel.modeldir import default_model_dir, load_model, read_header
from phonelabel.plots import plot_audio_file
from phonelabel.workers import (
    Failure,
    Shard,
    beside_an_import,
    check_counts,
    resolve_shard,
    run_files,
    torchrun_place,
    work_units,
)

if TYPE_CHECKING:  # torch (a second to import) is imported where the model runs: ``run_label``
    from phonelabel.modeldir import TrainedModel  # featurizes the first file meanwhile

CACHE_SECONDS = 120.0  # files up to 2 min keep their features in memory, longer ones on disk
BATCH_SECONDS = 60.0  # label_batch: longer files are labelled alone, in blocks
GPU_BATCH_FILES = 32  # recordings per LSTM pass on a GPU (default_batch_files)
FIRST_BLOCK = 30.0  # s, the first read's blocks beside torch's import (fewer GIL waits)

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

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (for a worker process) as its model dir, loaded again on unpickling: a
        file path travels, not the weights."""
        directory = self.trained.directory
        if directory is None:
            raise PhonelabelError("a model that is not in a model dir cannot go to workers")
        return _reload_labeller, (str(directory), str(self.device), self.smooth, self.params)


def _reload_labeller(directory: str, device: str, smooth: bool, params: DecoderParams) -> Labeller:
    import torch

    return Labeller(load_model(directory, device), params, smooth, torch.device(device))


def default_batch_files(labeller: Labeller) -> int:
    """Recordings per LSTM pass when not given: ``GPU_BATCH_FILES`` on a GPU, where one
    recording at a time leaves it idle; one on a CPU, where a batch gains little (the
    LSTM is a fifth of the time; features and decoding the rest) and one at a time keeps
    outputs byte for byte those of every earlier version."""
    import torch

    return GPU_BATCH_FILES if torch.device(labeller.device).type == "cuda" else 1


def load_labeller(
    model: str | Path | None = None, device: str = "auto", smooth: bool = True
) -> Labeller:
    """Load a model dir (None: the shipped default); its config's decoder parameters.

    ``auto`` under torchrun on a machine with GPUs: the GPU of the process's LOCAL_RANK
    (``workers.torchrun_place``), so that the processes of a node spread over its GPUs. A
    run without a GPU never reads torchrun's variables here (``workers.resolve_shard``
    checks them for its shard)."""
    import torch

    from phonelabel.model import resolve_device

    if device == "auto" and torch.cuda.is_available():
        place = torchrun_place()
        if place is not None:
            device = f"cuda:{place[2] % torch.cuda.device_count()}"
    device = resolve_device(device)
    trained = load_model(model if model is not None else default_model_dir(), device)
    return Labeller(trained, trained.decoder_params, smooth, device)


# --- the pipeline ----------------------------------------------------------------------------


class SegmentDecoder:
    """(n, 61) log-posterior blocks -> 61-class segments, each returned once it is final.
    ``check_every``: frames between the Viterbi's convergence checks (streaming latency vs.
    a little speed)."""

    def __init__(self, labeller: Labeller, check_every: int = 10):
        self.decoder = make_decoder(labeller.params, labeller.smooth, check_every=check_every)
        self.builder = SegmentBuilder(labeller.feature)
        classes = labeller.trained.model.config.num_classes
        self.pending = np.zeros((0, classes), dtype=np.float32)  # rows not yet decided

    def push(self, log_posteriors: np.ndarray, final: bool = False) -> list[Segment]:
        self.pending = np.concatenate([self.pending, log_posteriors])
        classes = self.decoder.push(log_posteriors)
        if final:
            classes = np.concatenate([classes, self.decoder.finish()])
        rows, self.pending = self.pending[: len(classes)], self.pending[len(classes) :]
        return self.builder.push(classes, rows)

    def finish(self, log_posteriors: np.ndarray, samples: int) -> list[Segment]:
        """The last rows; the last segment ends at the end of the audio's ``samples``."""
        return self.push(log_posteriors, final=True) + self.builder.finish(samples)


def segment_stream(
    raw_features: Iterable[np.ndarray],
    features: FeatureStream,
    labeller: Labeller,
    normalizer: Callable[[np.ndarray], np.ndarray],
    name: str = "<stdin>",
    check_every: int = 10,
) -> Iterator[Segment]:
    """Blocks of raw features (made by ``features``) -> 61-class segments, each yielded as
    soon as it is final (``SegmentDecoder``)."""
    from phonelabel.model import PosteriorStream

    posteriors = PosteriorStream(labeller.trained.model, labeller.device)
    decoder = SegmentDecoder(labeller, check_every)
    for raw in raw_features:
        yield from decoder.push(posteriors.push(normalizer(raw)))
    if features.done == 0:
        raise _shorter_than_a_frame(name, features)
    yield from decoder.finish(posteriors.finish(), features.samples)


def _shorter_than_a_frame(name: str, features: FeatureStream) -> PhonelabelError:
    config = features.config
    return PhonelabelError(
        f"{name}: audio is shorter than one frame ({features.samples} samples; at least "
        f"{config.win_length} = {config.win_length / config.sample_rate * 1000:.0f} ms needed)"
    )


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
    speaker): the file is featurized once, its statistics summed while the raw blocks are
    kept for the second read, in memory when the file is at most ``cache_seconds`` long
    (39-dim features take 9.4 MB per 10 min), else in an anonymous temporary file
    (``features.FeatureSpool``). ``on_progress(done, total)`` counts seconds of audio over
    both reads.
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

    stream = FeatureStream(config)
    raw = stream.frames(reported(audio.blocks(block_seconds), 1 / SAMPLE_RATE, not speaker))
    if not speaker:
        mean, std = normalization_stats(config, prior)
        return RecordingFeatures(stream, raw, mean, std, "global")
    moments = Moments()
    spool = FeatureSpool(config.dim, in_memory=audio.seconds <= cache_seconds)
    try:
        for block in raw:
            moments.add(block, config)
            spool.append(block)
    except BaseException:
        spool.close()
        raise
    raw = reported(spool.replay(), config.hop_length / config.sample_rate, last=True)
    mean, std = normalization_stats(config, prior, moments)
    described = "speaker (this recording, blended with the model's prior)"
    return RecordingFeatures(stream, raw, mean, std, described)


Opened = tuple[AudioFile, RecordingFeatures]  # a recording and its features, ready to label


def open_recording(
    path: str | Path,
    feature: FeatureConfig,
    stats: dict[str, Any],
    on_progress: Progress | None = None,
    block_seconds: float = BLOCK_SECONDS,
    cache_seconds: float = CACHE_SECONDS,
) -> Opened:
    """A recording and its features for a model of ``feature`` and ``stats`` (its prior):
    ``recording_features``, the first read done."""
    audio = AudioFile(path)
    return audio, recording_features(
        audio, feature, stats, on_progress, block_seconds, cache_seconds
    )


def label_file(
    path: str | Path,
    labeller: Labeller,
    on_progress: Progress | None = None,
    block_seconds: float = BLOCK_SECONDS,
    cache_seconds: float = CACHE_SECONDS,
    opened: Opened | None = None,
) -> Labelled:
    """Label one audio file in blocks (``recording_features``); ``opened``: its features
    already made (``open_recording``)."""
    if opened is None:
        opened = open_recording(
            path, labeller.feature, labeller.trained.stats, on_progress, block_seconds,
            cache_seconds,
        )  # fmt: skip
    audio, features = opened
    segments = segment_stream(
        features.blocks,
        features.stream,
        labeller,
        features.normalize,
        str(audio.path),
        check_every=100,
    )
    return _labelled(audio, features, list(segments))


def _labelled(audio: AudioFile, features: RecordingFeatures, segments: list[Segment]) -> Labelled:
    metadata = {
        "source": str(audio.path),
        "source_sample_rate": audio.source_rate,
        "normalization": features.normalization,
    }
    duration = features.stream.samples / SAMPLE_RATE
    return Labelled(str(audio.path), segments, duration, metadata=metadata)


def label_batch(
    paths: Sequence[str | Path],
    labeller: Labeller,
    on_progress: Callable[[str], Progress | None] | None = None,
    max_seconds: float = BATCH_SECONDS,
    opened: dict[str, Opened] | None = None,
) -> list[Labelled | PhonelabelError]:
    """Label recordings together: each one's features as ``label_file`` makes them, then one
    padded forward pass of the LSTM for all (``model.batched_log_posteriors``: what keeps a
    GPU busy), then each one decoded. Returns a Labelled or the error per path, in order.

    The LSTM is causal, so the padding after a short recording never reaches its frames:
    the segments are ``label_file``'s, and the posteriors differ from one-at-a-time only by
    float rounding (other matrix shapes, about 1e-5), which a near-tie between two phones
    could in principle turn into another boundary. Files over ``max_seconds`` (whose
    features a batch would hold whole) go through ``label_file`` alone. ``opened``: the
    recordings whose features are already made (``open_recording``), by path.
    """
    from phonelabel.model import batched_log_posteriors

    opened = {} if opened is None else opened
    results: dict[int, Labelled | PhonelabelError] = {}
    batch: list[tuple[int, AudioFile, RecordingFeatures, np.ndarray]] = []
    for i, path in enumerate(map(str, paths)):
        progress = on_progress(path) if on_progress is not None else None
        try:
            ready = opened.pop(path, None)
            audio = AudioFile(path) if ready is None else ready[0]
            if audio.seconds > max_seconds:
                results[i] = label_file(path, labeller, progress, opened=ready)
                continue
            if ready is None:
                ready = open_recording(path, labeller.feature, labeller.trained.stats, progress)
            features = ready[1]
            normalized = list(features.normalized())  # (n, D) blocks
            if features.stream.done == 0:
                raise _shorter_than_a_frame(str(audio.path), features.stream)
            batch.append((i, audio, features, np.concatenate(normalized)))  # (T_i, D)
        except PhonelabelError as error:
            results[i] = error
    model = labeller.trained.model
    lengths = [len(features) for *_, features in batch]
    for j, log_posteriors in batched_log_posteriors(
        model, lambda j: batch[j][3], lengths, labeller.device, batch=max(1, len(batch))
    ):  # (T_j, 61), row t labelling frame t
        i, audio, features, _ = batch[j]
        decoder = SegmentDecoder(labeller, check_every=100)
        results[i] = _labelled(
            audio, features, decoder.finish(log_posteriors, features.stream.samples)
        )
    return [results[i] for i in range(len(paths))]


def label_stream(stream: IO[bytes], labeller: Labeller) -> Iterator[Segment]:
    """Label raw 16 kHz 16-bit mono PCM from a byte stream, yielding final segments.

    A speaker-normalised model uses running statistics here (see the module docstring).
    """
    normalizer = RunningNormalizer(labeller.feature, labeller.trained.stats)
    features = FeatureStream(labeller.feature)
    return segment_stream(features.frames(pcm_blocks(stream)), features, labeller, normalizer)


# --- many files, outputs ---------------------------------------------------------------------


def label_files(
    paths: Iterable[str | Path],
    labeller: Labeller,
    fmt: str = "phn",
    out: str | Path | None = None,
    fold39: bool = False,
    plot: bool = False,
    on_progress: Callable[[str], Progress | None] | None = None,
    jobs: int = 1,
    batch_files: int | None = None,
    shard: Shard | None = None,
    opened: dict[str, Opened] | None = None,
) -> Iterator[Labelled | Failure]:
    """Label each file; write ``out/<stem><ext>`` (and ``<stem>.png`` with ``plot``, under
    ``out`` or the current directory). A file that fails yields a Failure, the rest go on.

    ``on_progress(source)`` may return a progress callback for that file (with ``jobs``
    1; worker processes report none: count the results). ``jobs`` worker processes share
    the files (``workers.run_files``: each its own copy of the model and its share of the
    cores); ``batch_files`` recordings go through the LSTM together (``label_batch``;
    default ``default_batch_files``); ``shard`` labels only its share of the files. The
    outputs are the same whatever ``jobs`` and ``shard``: each file is labelled as one
    process labels it (batches are cut from the sorted list, the same in every shard), and
    output names (``formats.output_names``) come from the whole list. Results arrive in the
    order given (a batch's files together). ``opened``: recordings whose features are
    already made (``open_recording``), by path, with ``jobs`` 1.
    """
    check_format(fmt)
    batch_files = default_batch_files(labeller) if batch_files is None else batch_files
    check_counts(jobs=jobs, batch_files=batch_files)
    paths = [str(p) for p in paths]
    directory = Path(out) if out is not None else None
    # workers report no progress of their own: a caller counts the files as they come
    progress = on_progress if jobs == 1 else None
    opened = {} if opened is None or jobs > 1 else opened
    run = _LabelRun(labeller, fmt, directory, fold39, plot, batch_files, progress, opened)
    names = output_names(paths, fmt)
    try:
        yield from run_files(
            _label_unit, run, paths, names, directory, "labels", jobs, batch_files, shard
        )
    finally:
        _close(run.opened)


@dataclass
class _LabelRun:
    """What every file of a ``label_files`` run shares (pickled once per worker)."""

    labeller: Labeller
    fmt: str
    directory: Path | None
    fold39: bool
    plot: bool
    batch_files: int
    on_progress: Callable[[str], Progress | None] | None
    opened: dict[str, Opened]  # features made before the run (one process only)


def _label_unit(run: _LabelRun, unit: list[tuple[str, Path]]) -> list[Labelled | PhonelabelError]:
    """Label (and write) a unit of ``label_files``: one file, or one batch of them."""
    paths = [path for path, _ in unit]
    if run.batch_files > 1:
        labelled = label_batch(paths, run.labeller, run.on_progress, opened=run.opened)
    else:
        labelled = [_attempt(_label_one, run, path) for path in paths]
    return [
        result
        if isinstance(result, PhonelabelError)
        else _attempt(_finish, run, path, name, result)
        for (path, name), result in zip(unit, labelled, strict=True)
    ]


def _label_one(run: _LabelRun, path: str) -> Labelled:
    opened = run.opened.pop(str(path), None)
    return label_file(path, run.labeller, _progress(run, path), opened=opened)


def _progress(run: _LabelRun, path: str) -> Progress | None:
    return run.on_progress(path) if run.on_progress is not None else None


def _attempt(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, or the PhonelabelError it raised (a file's failure, not the run's)."""
    try:
        return function(*args)
    except PhonelabelError as error:
        return error


def _finish(run: _LabelRun, path: str, name: Path, result: Labelled) -> Labelled:
    """Fold, describe, write and plot one labelled file."""
    labeller = run.labeller
    if run.fold39:
        result.segments = fold_segments(result.segments)
    result.metadata.update(
        model=str(labeller.trained.directory),
        phone_set="timit-39" if run.fold39 else "timit-61",
        decoder=labeller.decoder_description(),
    )
    if run.directory is not None:
        result.output = run.directory / name
        result.output.parent.mkdir(parents=True, exist_ok=True)
        result.write(run.fmt, result.output)
    if run.plot:
        result.plot = (run.directory or Path.cwd()) / name.with_suffix(".png")
        result.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_audio_file(path, {"phones": result.segments}, result.plot)
    return result


# --- one `label` run: stdin or files ---------------------------------------------------------


@dataclass
class LabelRun:
    """A ``label`` run as ``run_label`` set it up: stdin's output ``lines``, or the files'
    ``results`` (iterate the run itself: it counts what was written and what failed)."""

    fmt: str
    inputs: int  # given
    total: int  # labelled by this run: its shard's share of the inputs
    shard: Shard | None
    out: Path | None
    lines: Iterator[str] | None = None  # stdin: each line once its segment is final
    results: Iterator[Labelled | Failure] = field(default_factory=lambda: iter(()))
    written: int = 0
    failed: int = 0

    def __iter__(self) -> Iterator[Labelled | Failure]:
        for result in self.results:
            if isinstance(result, Failure):
                self.failed += 1
            elif result.output is not None:
                self.written += 1
            yield result

    def close(self) -> None:
        """Stop the run's workers now (on Ctrl-C), not when the garbage collector gets to it."""
        for generator in (self.lines, self.results):
            close = getattr(generator, "close", None)
            if close is not None:
                close()

    def kept(self) -> str:
        """What an interrupted run leaves: every output is written whole or not at all."""
        if self.out is None:
            return "no output half-written"
        return f"kept {self.written} whole outputs in {self.out}; run the same command again"


def run_label(
    inputs: Sequence[str],
    model: str | Path | None = None,
    fmt: str = "phn",
    out: str | Path | None = None,
    smooth: bool = True,
    fold39: bool = False,
    device: str = "auto",
    plot: bool = False,
    jobs: int = 1,
    batch_files: int | None = None,
    shard: str | None = None,
    on_progress: Callable[[str], Progress | None] | None = None,
    stdin: IO[bytes] | None = None,
) -> LabelRun:
    """Set up a ``label`` run: the checks, the model, then a lazy run (``LabelRun``).

    ``inputs`` ``["-"]`` labels raw 16 kHz PCM from ``stdin`` (``label_stream``, folded to
    39 classes one segment at a time with ``fold39``) into line-format output; files go
    through ``label_files`` with ``batch_files`` resolved once here
    (``default_batch_files``), writing under ``out`` (one input may go without it);
    ``shard`` is ``K/N`` (``workers.resolve_shard``: by default torchrun's share)."""
    fmt = check_format(fmt)
    if "-" in inputs:
        if len(inputs) > 1 or out is not None or plot or jobs != 1 or shard is not None:
            raise PhonelabelError(
                "-: stdin must be the only input, without out, plot, jobs or shard"
            )
        check_streamable(fmt)  # before loading the model
        if stdin is None:
            raise PhonelabelError("-: no stdin to read")
        labeller = load_labeller(model, device, smooth)
        segments = label_stream(stdin, labeller)
        lines = stream_lines(fold_stream(segments) if fold39 else segments, fmt)
        return LabelRun(fmt, 1, 1, None, None, lines=lines)
    if len(inputs) > 1 and out is None:
        raise PhonelabelError(f"{len(inputs)} inputs: give out DIR for their outputs")
    check_counts(jobs=jobs, **({"batch_files": batch_files} if batch_files is not None else {}))
    share = resolve_shard(shard)
    loader = ThreadPoolExecutor(1)  # torch's import and the weights, meanwhile ...
    first = None  # (a failed load leaves it to the collector: a spool has no name on disk)
    try:
        with beside_an_import():
            loading = loader.submit(load_labeller, model, device, smooth)
            if jobs == 1:
                first = _open_first(inputs, model, share, batch_files, on_progress, loading)
        labeller = loading.result()
    finally:
        loader.shutdown(wait=False)
    batch_files = default_batch_files(labeller) if batch_files is None else batch_files
    units = work_units(inputs, batch_files, share)
    total = sum(map(len, units))
    mine = {str(inputs[i]) for unit in units for i in unit}
    opened: dict[str, Opened] = {}
    if first is not None:
        path, opened[path], read_with = first
        # config.json is read twice (a training run could rewrite it in between); the file
        # may be another shard's (the run groups by its --batch-files)
        if read_with != (labeller.feature, labeller.trained.stats) or path not in mine:
            _close(opened)
    results = label_files(
        inputs, labeller, fmt, out, fold39, plot, on_progress, jobs, batch_files, share, opened
    )
    directory = Path(out) if out is not None else None
    return LabelRun(fmt, len(inputs), total, share, directory, results=results)


class _LoadFailed(Exception):
    """The model failed to load: the first read stops, the load's error is the run's."""


def _open_first(
    inputs: Sequence[str],
    model: str | Path | None,
    share: Shard | None,
    batch_files: int | None,
    on_progress: Callable[[str], Progress | None] | None,
    loading: Future[Labeller],
) -> tuple[str, Opened, tuple[Any, Any]] | None:
    """... the first file's first read (its features, and a speaker-normalised model's
    statistics of it: only config.json needed; ``beside_an_import``). A file that cannot be
    read fails later, in its turn; a failed load stops the read at the next block. Returns
    the path, its recording, and the feature config and statistics it was read with."""
    units = work_units(inputs, batch_files or 1, share)
    if not units:
        return None
    path = str(inputs[units[0][0]])
    header = read_header(model if model is not None else default_model_dir())
    progress = on_progress(path) if on_progress is not None else None

    def reported(done: float, total: float) -> None:
        if loading.done() and loading.exception() is not None:
            raise _LoadFailed
        if progress is not None:
            progress(done, total)

    try:
        opened = open_recording(path, header.feature, header.stats, reported, FIRST_BLOCK)
    except (PhonelabelError, OSError, _LoadFailed):
        return None
    return path, opened, (header.feature, header.stats)


def _close(opened: dict[str, Opened]) -> None:
    """Let go of features read but not used (a long recording's temp file)."""
    for _, features in opened.values():
        getattr(features.blocks, "close", lambda: None)()  # a generator: its finally runs
    opened.clear()


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
