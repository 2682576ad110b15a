"""Label new recordings: audio -> features -> LSTM -> decoder -> timed phone segments.

Everything runs block by block, so an hour-long file needs bounded memory and stdin can
stream: ``FeatureStream`` yields exactly the frames ``compute_features`` gives the whole
signal (a few frames of context kept across block edges), ``PosteriorStream`` carries the
LSTM state across blocks and honours the target delay as ``utterance_log_posteriors``
does, and the incremental Viterbi emits frames once all surviving paths agree. Files get
two passes when the model normalises per speaker (a recording is one speaker): the first
gathers the recording's statistics, the second labels. A stream cannot look ahead, so it
normalises each frame by the running statistics of the frames so far, blended with the
model's global prior (``features.speaker_stats``' rule); its output then differs slightly
from a whole-file run. With "global" normalisation streaming and files give the same
segments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile

from phonelabel.audio import check_truncated
from phonelabel.corpus.timit import Segment
from phonelabel.decode import DecoderParams, SegmentBuilder, make_decoder
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    FeatureConfig,
    blend_moments,
    compute_features,
    frame_count,
    normalize,
)
from phonelabel.fileio import output_lock
from phonelabel.formats import EXTENSIONS, check_format, fold_segments, write_segments
from phonelabel.model import resolve_device
from phonelabel.modeldir import TrainedModel, load_model

BLOCK_SECONDS = 10.0  # file blocks: 10 s of audio (160,000 samples) in memory at a time
CACHE_SECONDS = 1200.0  # files up to 20 min keep first-pass features (19 MB at 39 dims)
STREAM_BYTES = 3200  # stdin reads: 100 ms of 16-bit PCM
SAMPLE_RATE = 16000

Progress = Callable[[float, float], None]  # (seconds done, seconds in all)


# --- the model and its decoder -------------------------------------------------------------


def default_model_dir() -> Path:
    """The model shipped in the package (``phonelabel/models/default``)."""
    directory = Path(str(resources.files("phonelabel.models") / "default"))
    if not (directory / "config.json").is_file():
        raise PhonelabelError(
            f"{directory}: no default model is installed; pass --model DIR (a `phonelabel "
            "train` output)"
        )
    return directory


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
    if trained.feature.sample_rate != SAMPLE_RATE:
        raise PhonelabelError(f"{trained.directory}: models of {SAMPLE_RATE} Hz audio only")
    return Labeller(trained, DecoderParams.from_dict(trained.decoder), smooth, device)


# --- audio in blocks -----------------------------------------------------------------------


def _audio_error(path: Path, error: Exception) -> PhonelabelError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PhonelabelError(f"{path}: not readable audio ({reason})")


class AudioFile:
    """An audio file read as 16 kHz mono float32 blocks (downmixed and resampled per block).

    Resampling uses soxr's streaming resampler, the algorithm ``read_audio`` applies to the
    whole file; block edges may change the result in the last bits only.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PhonelabelError(f"{self.path}: no such audio file")
        try:
            with soundfile.SoundFile(str(self.path)) as sound:
                self.source_rate = sound.samplerate
                self.source_frames = sound.frames
                check_truncated(self.path, sound)
        except PhonelabelError:
            raise
        except Exception as error:  # libsndfile raises RuntimeError/LibsndfileError subclasses
            raise _audio_error(self.path, error) from None
        if self.source_frames <= 0:
            raise PhonelabelError(f"{self.path}: audio file holds no samples")

    @property
    def seconds(self) -> float:
        return self.source_frames / self.source_rate

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """(n,) float32 blocks at 16 kHz, from the start each time it is called."""
        size = max(1, int(seconds * self.source_rate))
        resampler = None
        if self.source_rate != SAMPLE_RATE:
            import soxr

            resampler = soxr.ResampleStream(
                self.source_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )
        try:
            with soundfile.SoundFile(str(self.path)) as sound:
                while True:
                    block = sound.read(size, dtype="float32", always_2d=True)
                    last = len(block) < size
                    mono = (
                        block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                    )
                    if resampler is not None:
                        mono = resampler.resample_chunk(mono, last=last)
                    if not np.all(np.isfinite(mono)):
                        raise PhonelabelError(f"{self.path}: audio holds NaN or infinite samples")
                    if len(mono):
                        yield np.ascontiguousarray(mono, dtype=np.float32)
                    if last:
                        return
        except PhonelabelError:
            raise
        except Exception as error:
            raise _audio_error(self.path, error) from None


CONTAINERS = {b"RIFF": "WAV", b"NIST": "NIST SPHERE", b"fLaC": "FLAC", b"OggS": "Ogg"}


def pcm_blocks(stream: IO[bytes], block_bytes: int = STREAM_BYTES) -> Iterator[np.ndarray]:
    """Raw 16 kHz 16-bit little-endian mono PCM from a byte stream, as float32 blocks."""
    read = getattr(stream, "read1", stream.read)  # read1: return what is there, don't wait
    carry, checked = b"", False
    while True:
        data = read(block_bytes)
        if not data:
            break
        data = carry + data
        if not checked:  # a file's header would be "labelled" as sound
            if len(data) < 4:
                carry = data
                continue
            kind = CONTAINERS.get(data[:4])
            if kind:
                raise PhonelabelError(
                    f"-: stdin holds a {kind} file, not raw PCM; give its name instead of -, "
                    "or convert it (sox in.wav -t raw -r 16000 -e signed -b 16 -c 1 -)"
                )
            checked = True
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


# --- features, normalisation, posteriors as streams ------------------------------------------


class FeatureStream:
    """Raw features of a growing signal, equal to ``compute_features`` of the whole signal.

    Frame i is computed once the signal reaches ``delta_width // 2`` frames past it (its
    delta window); each block is featurized with one extra frame of context on the left so
    that pre-emphasis and delta edge effects fall on frames already emitted.
    """

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.right = config.delta_width // 2
        self.left = self.right + 1
        self.buffer = np.zeros(0, dtype=np.float32)  # samples from frame `buffer_frame` on
        self.buffer_frame = 0
        self.done = 0  # frames emitted
        self.samples = 0  # samples pushed

    def _available(self) -> int:
        return self.buffer_frame + frame_count(len(self.buffer), self.config)

    def push(self, samples: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, samples])
        self.samples += len(samples)
        return self._compute(self._available() - self.right, self._available())

    def finish(self) -> np.ndarray:
        return self._compute(self._available(), self._available())

    def _compute(self, upto: int, context_end: int) -> np.ndarray:
        """Frames [done, upto), featurized over frames [done - left, context_end)."""
        config = self.config
        if upto <= self.done:
            return np.zeros((0, config.dim), dtype=np.float32)
        first = max(self.done - self.left, self.buffer_frame)
        begin = (first - self.buffer_frame) * config.hop_length
        end = (context_end - 1 - self.buffer_frame) * config.hop_length + config.win_length
        features = compute_features(self.buffer[begin:end], config)  # (frames, D)
        out = features[self.done - first : upto - first]
        self.done = upto
        keep = max(self.done - self.left, self.buffer_frame)  # drop samples no longer needed
        self.buffer = self.buffer[(keep - self.buffer_frame) * config.hop_length :]
        self.buffer_frame = keep
        return out


class RunningNormalizer:
    """Causal speaker normalisation: frame t by the statistics of frames 0..t + prior."""

    def __init__(self, prior: dict[str, Any]):
        self.prior = prior
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)  # (n, D)
        totals = self.total + np.cumsum(x, axis=0)
        squares = self.squares + np.cumsum(x * x, axis=0)
        counts = self.count + np.arange(1, len(x) + 1)[:, None]
        if len(x):
            self.count, self.total, self.squares = int(counts[-1, 0]), totals[-1], squares[-1]
        mean, std = blend_moments(counts, totals, squares, self.prior)  # (n, D) each
        return ((x - mean) / std).astype(np.float32)


def _featurized(blocks: Iterable[np.ndarray], stream: FeatureStream) -> Iterator[np.ndarray]:
    for block in blocks:
        yield stream.push(block)
    yield stream.finish()


class PosteriorStream:
    """LSTM log-posteriors with the state carried across blocks; row t labels frame t.

    The output at input frame t + d labels frame t (target delay d): the first d outputs
    are dropped, and at the end the last frame is fed d more times, as
    ``model.utterance_log_posteriors`` pads a whole utterance.
    """

    def __init__(self, trained: TrainedModel, device: str = "cpu"):
        self.model = trained.model
        self.device = device
        self.delay = trained.delay
        self.to_skip = self.delay
        self.state = None
        self.last: np.ndarray | None = None

    def push(self, features: np.ndarray) -> np.ndarray:
        import torch

        if len(features) == 0:
            return np.zeros((0, self.model.config.num_classes), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(features)).to(self.device)[None]  # (1, n, D)
        log_posteriors, self.state = self.model.posteriors(x, self.state)  # (1, n, 61)
        self.last = features[-1:]
        out = log_posteriors[0].cpu().numpy()
        skip = min(self.to_skip, len(out))
        self.to_skip -= skip
        return out[skip:]

    def finish(self) -> np.ndarray:
        if self.last is None or self.delay == 0:
            return np.zeros((0, self.model.config.num_classes), dtype=np.float32)
        return self.push(np.repeat(self.last, self.delay, axis=0))


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
    posteriors = PosteriorStream(labeller.trained, labeller.device)
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


def label_file(
    path: str | Path,
    labeller: Labeller,
    on_progress: Progress | None = None,
    block_seconds: float = BLOCK_SECONDS,
    cache_seconds: float = CACHE_SECONDS,
) -> Labelled:
    """Label one audio file in blocks.

    A speaker-normalised model needs the recording's statistics first: pass one featurizes
    the file and sums; pass two labels, from the first pass's features when the file is at
    most ``cache_seconds`` long (39-dim features take 9.4 MB per 10 min), else featurizing
    again.
    """
    audio = AudioFile(path)
    config = labeller.feature
    if frame_count(int(audio.seconds * SAMPLE_RATE), config) == 0:
        raise PhonelabelError(
            f"{audio.path}: audio is shorter than one frame ({audio.seconds * 1000:.1f} ms; "
            f"at least {config.win_length / config.sample_rate * 1000:.0f} ms needed)"
        )
    speaker = config.normalization == "speaker"
    total = audio.seconds * (2 if speaker else 1)
    done = 0.0

    def reported(blocks: Iterable[np.ndarray], seconds_per_row: float) -> Iterator[np.ndarray]:
        nonlocal done
        for block in blocks:
            yield block
            done += len(block) * seconds_per_row
            if on_progress is not None:
                on_progress(min(done, total), total)

    def first_pass() -> tuple[FeatureStream, Iterator[np.ndarray]]:
        stream = FeatureStream(config)
        return stream, _featurized(reported(audio.blocks(block_seconds), 1 / SAMPLE_RATE), stream)

    features, raw = first_pass()
    if speaker:
        cache: list[np.ndarray] | None = [] if audio.seconds <= cache_seconds else None
        count, sums, squares = 0, np.zeros(config.dim), np.zeros(config.dim)
        for block in raw:
            x = block.astype(np.float64)
            count, sums, squares = count + len(x), sums + x.sum(0), squares + (x * x).sum(0)
            if cache is not None:
                cache.append(block)
        mean, std = blend_moments(count, sums, squares, labeller.trained.stats)
        if cache is None:
            features, raw = first_pass()
        else:
            raw = reported(cache, config.hop_length / config.sample_rate)
        normalization = "speaker (this recording, blended with the model's prior)"
    else:
        mean, std = labeller.trained.stats["mean"], labeller.trained.stats["std"]
        normalization = "global"
    segments = list(
        segment_stream(
            raw,
            features,
            labeller,
            lambda block: normalize(block, mean, std),
            str(audio.path),
            check_every=100,
        )
    )
    if on_progress is not None:
        on_progress(total, total)
    metadata = {
        "source": str(audio.path),
        "source_sample_rate": audio.source_rate,
        "normalization": normalization,
    }
    duration = features.samples / SAMPLE_RATE
    return Labelled(str(audio.path), segments, duration, metadata=metadata)


def label_stream(stream: IO[bytes], labeller: Labeller) -> Iterator[Segment]:
    """Label raw 16 kHz 16-bit mono PCM from a byte stream, yielding final segments.

    A speaker-normalised model uses running statistics here (see the module docstring).
    """
    stats = labeller.trained.stats
    if labeller.feature.normalization == "speaker":
        normalizer: Callable[[np.ndarray], np.ndarray] = RunningNormalizer(stats)
    else:

        def normalizer(features: np.ndarray) -> np.ndarray:
            return normalize(features, stats["mean"], stats["std"])

    features = FeatureStream(labeller.feature)
    raw = _featurized(pcm_blocks(stream), features)
    return segment_stream(raw, features, labeller, normalizer)


# --- many files, outputs ---------------------------------------------------------------------


@dataclass
class Failure:
    source: str
    error: str


def output_dir(out: str | Path) -> Path:
    """Create ``out`` if needed and check it can be written to."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PhonelabelError(
            f"{out}: cannot create the output directory ({error.strerror})"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PhonelabelError(f"{out}: output directory is not writable")
    return out


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
    directory = output_dir(out) if out is not None else None
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
                    from phonelabel.plot import plot_audio_file

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
    ``plot.PLOT_SECONDS`` from ``start``)."""
    from phonelabel.corpus.timit import read_phn
    from phonelabel.plot import plot_audio_file

    labelled = labelled or label_file(path, labeller)
    tiers = {"model": labelled.segments}
    if reference is not None:  # its sample numbers count the recording's own samples
        audio = AudioFile(path)
        tiers["reference"] = read_phn(reference, audio.source_frames, audio.source_rate)
    if fold39:
        tiers = {name: fold_segments(segments) for name, segments in tiers.items()}
    return plot_audio_file(path, tiers, output, start=start, end=end)
