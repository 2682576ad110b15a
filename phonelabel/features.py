"""Audio -> 10 ms feature frames and frame labels (DESIGN.md §4).

Frame i covers samples [hop * i, hop * i + win) with no centre padding, so an
utterance of N samples has ``frame_count(N)`` = 1 + (N - win) // hop frames; its label
is the segment holding the frame's centre sample. ``frame_count`` is the one place
where samples become frames (featurize, evaluate and label all use it).

Features: pre-emphasis, Hamming window, power spectrum (n_fft 512), librosa's Slaney
mel filterbank, log; MFCC = orthonormal DCT-II of the log-mel (c0 kept); then
Savitzky-Golay deltas as ``librosa.feature.delta(mode="nearest")``. Two implementations:
``compute_features_reference`` calls librosa and is the definition;
``compute_features`` is plain numpy (the same matrices rebuilt here; tests hold it to the
reference within 1e-4). It runs about as fast as librosa per frame (both ~800x real time
per core), but needs no librosa/scipy import (~2.5 s), so a featurize worker or a
``label`` call on one short file starts in a fraction of a second, and it works through
long recordings in blocks of frames (bounded memory).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from math import factorial
from typing import Any

import numpy as np

from phonelabel.core import SAMPLE_RATE, Segment, dataclass_from_dict
from phonelabel.errors import PhonelabelError
from phonelabel.phones import phone_index

NO_LABEL = 255  # uint8 label of a frame whose centre falls between segments: not trained/scored
PRIOR_FRAMES = 100.0  # weight of the global variance in per-speaker statistics, in frames
PRIOR_MEAN_FRAMES = 10.0  # ... and of the global mean (small: the speaker's own mean rules)
STD_FLOOR = 1e-5  # a constant feature dimension (digital silence) must not divide by zero
SILENCE_DBFS = -60.0  # frames quieter than white noise at this level carry no signal
MIN_SIGNAL_FRAMES = 50  # a speaker needs 0.5 s above it for statistics of its own
# ... and frame energy that varies: c0's spread over the training data's. Measured: steady
# white noise 0.06 at every level, speech 0.38-0.63 (real) and >= 0.44 (synthetic), speech in
# white noise at 0 dB SNR 0.25
STEADY_RATIO = 0.15


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mfcc"  # "mfcc": 13 MFCC (c0 as energy); "fbank": 40 log-mel; + deltas
    sample_rate: int = SAMPLE_RATE
    win_length: int = 400  # 25 ms, Hamming
    hop_length: int = 160  # 10 ms
    preemphasis: float = 0.97
    n_mfcc: int = 13
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    n_fft: int = 512
    log_floor: float = 1e-10  # below 16-bit quantisation noise: only digital silence hits it
    delta_order: int = 2  # + delta + delta-delta
    delta_width: int = 5  # frames in the regression window (Kaldi's +-2)
    normalization: str = "speaker"  # "speaker" (per-speaker mean/variance), "global"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "win_length", "hop_length", "n_mfcc", "n_mels", "n_fft"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise PhonelabelError(f"feature {name} {getattr(self, name)!r}: must be >= 1")
        if self.kind not in ("mfcc", "fbank"):
            raise PhonelabelError(f"unknown feature kind {self.kind!r} (use mfcc or fbank)")
        if self.normalization not in ("speaker", "global"):
            raise PhonelabelError(
                f"unknown normalization {self.normalization!r} (use speaker or global)"
            )

    @property
    def base_dim(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def dim(self) -> int:
        return self.base_dim * (1 + self.delta_order)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "feature config") -> FeatureConfig:
        return dataclass_from_dict(cls, data, where)


def config_differences(model: FeatureConfig, other: FeatureConfig, what: str) -> list[str]:
    """'name: <model value> (model) vs <other value> (<what>)' for every differing field."""
    return [
        f"{f.name}: {getattr(model, f.name)!r} (model) vs {getattr(other, f.name)!r} ({what})"
        for f in fields(FeatureConfig)
        if getattr(model, f.name) != getattr(other, f.name)
    ]


def frame_count(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames in ``num_samples`` samples: 1 + (N - win) // hop, 0 when shorter than a window."""
    if num_samples < config.win_length:
        return 0
    return 1 + (num_samples - config.win_length) // config.hop_length


# --- features ---------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


@lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64: ``librosa.filters.mel(norm="slaney")`` in numpy."""
    bins = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2)
    )
    ramps = edges[:, None] - bins[None, :]  # (n_mels + 2, bins)
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band


@lru_cache(maxsize=8)
def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) orthonormal DCT-II (``scipy.fft.dct(norm="ortho")``), rows cut at n_out."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
    matrix[0] /= np.sqrt(2.0)
    return matrix


@lru_cache(maxsize=8)
def _delta_weights(width: int, order: int) -> np.ndarray:
    """(width,) Savitzky-Golay weights of the ``order``-th derivative of a degree-``order`` fit
    (what ``librosa.feature.delta`` uses), applied as a correlation."""
    if width < 3 or width % 2 != 1:
        raise PhonelabelError(f"delta width {width}: must be an odd number >= 3")
    offsets = np.arange(width) - width // 2
    vandermonde = np.vander(offsets, order + 1, increasing=True)  # (width, order + 1)
    return factorial(order) * np.linalg.pinv(vandermonde)[order]


def _delta(static: np.ndarray, width: int, order: int) -> np.ndarray:
    """(T, D) -> (T, D): derivative along time, edges extended (mode="nearest")."""
    half = width // 2
    padded = np.pad(static, ((half, half), (0, 0)), mode="edge")
    weights = _delta_weights(width, order)
    out = np.zeros_like(static)
    for k, weight in enumerate(weights):
        out += weight * padded[k : k + len(static)]
    return out


def _log_mel(samples: np.ndarray, config: FeatureConfig, block: int = 2048) -> np.ndarray:
    """(N,) samples -> (T, n_mels) float64 log-mel, ``block`` frames at a time (bounded memory
    for an hour-long recording)."""
    num_frames = frame_count(len(samples), config)
    x = np.asarray(samples, dtype=np.float64)
    emphasised = np.empty_like(x)
    emphasised[1:] = x[1:] - config.preemphasis * x[:-1]
    emphasised[0] = (1.0 - config.preemphasis) * x[0]  # as if x[-1] == x[0]
    # (T, win) view of overlapping frames, no copy
    frames = np.lib.stride_tricks.sliding_window_view(emphasised, config.win_length)
    frames = frames[:: config.hop_length][:num_frames]
    window = _hamming(config.win_length)
    basis = mel_filterbank(config).T  # (bins, n_mels)
    out = np.empty((num_frames, config.n_mels))
    # zero-padded (block, n_fft) buffer: rfft of a padded array beats rfft(n=n_fft) padding
    buffer = np.zeros((min(block, num_frames), config.n_fft))
    for start in range(0, num_frames, block):
        chunk = frames[start : start + block]
        padded = buffer[: len(chunk)]
        np.multiply(chunk, window, out=padded[:, : config.win_length])
        spectrum = np.fft.rfft(padded)
        power = np.abs(spectrum) ** 2  # (block, bins)
        out[start : start + block] = np.log(np.maximum(power @ basis, config.log_floor))
    return out


@lru_cache(maxsize=4)
def _hamming(length: int) -> np.ndarray:
    """Periodic Hamming window, as ``scipy.signal.get_window("hamming", length)``."""
    return 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(length) / length)


def _stack_deltas(static: np.ndarray, config: FeatureConfig) -> np.ndarray:
    parts = [static] + [
        _delta(static, config.delta_width, order) for order in range(1, config.delta_order + 1)
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)  # (T, dim)


def compute_features(samples: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """(N,) 16 kHz samples -> (T, config.dim) float32 raw (unnormalised) features, numpy path.

    T = frame_count(N); (0, dim) when shorter than one window.
    """
    if frame_count(len(samples), config) == 0:
        return np.zeros((0, config.dim), dtype=np.float32)
    static = _log_mel(samples, config)  # (T, n_mels)
    if config.kind == "mfcc":
        static = static @ _dct_matrix(config.n_mfcc, config.n_mels).T  # (T, n_mfcc)
    return _stack_deltas(static, config)


def compute_features_reference(
    samples: np.ndarray, config: FeatureConfig = FeatureConfig()
) -> np.ndarray:
    """The definition of the features, in librosa calls (slower; ``compute_features`` matches
    it to 1e-4)."""
    import librosa

    if frame_count(len(samples), config) == 0:
        return np.zeros((0, config.dim), dtype=np.float32)
    x = np.asarray(samples, dtype=np.float64)
    x = librosa.effects.preemphasis(x, coef=config.preemphasis, zi=[-config.preemphasis * x[0]])
    # librosa centres a short window inside each n_fft frame; padding (n_fft - win) / 2 on
    # both sides puts window i exactly on samples [hop * i, hop * i + win).
    pad = (config.n_fft - config.win_length) // 2
    power = (
        np.abs(
            librosa.stft(
                np.pad(x, (pad, config.n_fft - config.win_length - pad)),
                n_fft=config.n_fft,
                hop_length=config.hop_length,
                win_length=config.win_length,
                window="hamming",
                center=False,
            )
        )
        ** 2
    )  # (bins, T)
    mel = librosa.feature.melspectrogram(
        S=power, sr=config.sample_rate, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
    )
    static = np.log(np.maximum(mel, config.log_floor))  # (n_mels, T)
    if config.kind == "mfcc":
        static = librosa.feature.mfcc(S=static, n_mfcc=config.n_mfcc, dct_type=2, norm="ortho")
    parts = [static] + [
        librosa.feature.delta(static, width=config.delta_width, order=order, mode="nearest")
        for order in range(1, config.delta_order + 1)
    ]
    return np.concatenate(parts, axis=0).T.astype(np.float32)  # (T, dim)


# --- labels -----------------------------------------------------------------------------


def frame_labels(segments: list[Segment], num_frames: int, config: FeatureConfig) -> np.ndarray:
    """(T,) uint8: 61-class index of the segment holding frame i's centre sample
    hop * i + win // 2; NO_LABEL where the centre falls in a gap (or past the last segment).

    Segment times are seconds, turned into samples with round(t * sample_rate); a sample s
    belongs to [start, end) when start <= s < end.
    """
    labels = np.full(num_frames, NO_LABEL, dtype=np.uint8)
    if not segments or num_frames == 0:
        return labels
    ordered = sorted(segments, key=lambda seg: seg.start)
    rate = config.sample_rate
    starts = np.array([round(seg.start * rate) for seg in ordered])
    ends = np.array([round(seg.end * rate) for seg in ordered])
    classes = np.array([phone_index(seg.phone) for seg in ordered], dtype=np.uint8)
    centres = config.hop_length * np.arange(num_frames) + config.win_length // 2
    which = np.searchsorted(starts, centres, side="right") - 1  # last segment starting <= c
    inside = (which >= 0) & (centres < ends[np.maximum(which, 0)])
    labels[inside] = classes[which[inside]]
    return labels


# --- normalisation -------------------------------------------------------------------
# One rule, used by featurize (per speaker), evaluate (per speaker) and label (per recording,
# or running over a stream): ``normalization_stats``. It reads raw frames only through
# ``Moments`` (count, sum, sum of squares), so a split read from a memory map, a long file
# read in blocks and a stream's running totals all get the same numbers.


@dataclass
class Moments:
    """Frame count, sum and sum of squares (float64) of raw feature frames, and how many of
    them carry signal (above ``silence_floor``). Fields may also be running totals, one row
    per frame ((n, 1) counts, (n, D) sums), for a stream normalised causally."""

    count: Any = 0
    total: Any = 0.0
    squares: Any = 0.0
    signal: Any = 0

    def add(
        self, features: np.ndarray, config: FeatureConfig | None = None, chunk: int = 65536
    ) -> Moments:
        """Accumulate (N, D) raw frames, ``chunk`` rows at a time (memory maps); returns self.
        Without ``config`` no frame is counted as signal."""
        for start in range(0, len(features), chunk):
            block = np.asarray(features[start : start + chunk], dtype=np.float64)
            signal = 0 if config is None else int(np.count_nonzero(carries_signal(block, config)))
            self.merge(Moments(len(block), block.sum(axis=0), (block * block).sum(axis=0), signal))
        return self

    def merge(self, other: Moments) -> Moments:
        """Add ``other``'s frames to these (a speaker over several splits); returns self."""
        self.count += other.count
        self.total = self.total + other.total
        self.squares = self.squares + other.squares
        self.signal += other.signal
        return self

    def running(self, features: np.ndarray, config: FeatureConfig) -> Moments:
        """Per-frame running totals over the frames so far plus (n, D) ``features``; advances
        self to the end of them."""
        x = np.asarray(features, dtype=np.float64)  # (n, D)
        n = np.arange(1, len(x) + 1)[:, None]
        running = Moments(
            self.count + n,
            self.total + np.cumsum(x, axis=0),
            self.squares + np.cumsum(x * x, axis=0),
            self.signal + np.cumsum(carries_signal(x, config))[:, None],
        )
        if len(x):
            self.count, self.total = int(running.count[-1, 0]), running.total[-1]
            self.squares, self.signal = running.squares[-1], int(running.signal[-1, 0])
        return running

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": int(self.count),
            "signal_frames": int(self.signal),
            "sum": np.asarray(self.total, dtype=np.float64).tolist(),
            "squares": np.asarray(self.squares, dtype=np.float64).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(
            data["frames"],
            np.asarray(data["sum"]),
            np.asarray(data["squares"]),
            data["signal_frames"],
        )


def frame_log_energy(features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(T, D) raw features -> (T,) mean log-mel power of each frame (MFCC: c0 / sqrt(n_mels),
    since the orthonormal DCT's first row is 1 / sqrt(n_mels))."""
    features = np.asarray(features)
    if config.kind == "mfcc":
        return features[:, 0] / np.sqrt(config.n_mels)
    return features[:, : config.n_mels].mean(axis=1)


@lru_cache(maxsize=8)
def silence_floor(config: FeatureConfig) -> float:
    """Mean log-mel power of white noise at SILENCE_DBFS: quieter frames carry no signal."""
    noise = np.random.default_rng(0).standard_normal(config.sample_rate)
    noise *= 10 ** (SILENCE_DBFS / 20) / np.sqrt(np.mean(noise**2))
    return float(np.median(frame_log_energy(compute_features(noise, config), config)))


def carries_signal(features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(T, D) raw features -> (T,) bool: louder than white noise at SILENCE_DBFS."""
    return frame_log_energy(features, config) > silence_floor(config)


def global_stats(features: np.ndarray) -> dict[str, Any]:
    """{"mean", "std", "frames"} of (N, D) raw features (std floored at STD_FLOOR)."""
    moments = Moments().add(features)
    if moments.count == 0:
        raise PhonelabelError("no feature frames to compute normalisation statistics from")
    mean = moments.total / moments.count
    std = np.sqrt(np.maximum(moments.squares / moments.count - mean**2, 0.0))
    return {
        "mean": mean.tolist(),
        "std": np.maximum(std, STD_FLOOR).tolist(),
        "frames": int(moments.count),
    }


def normalization_stats(
    config: FeatureConfig,
    prior: dict[str, Any],
    moments: Moments | None = None,
    prior_frames: float = PRIOR_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """(D,) mean and std to normalise one speaker (or recording) with: the global ``prior``
    (``{"mean", "std"}`` of the training split) for "global" normalisation; for "speaker",
    the speaker's own ``moments`` steadied by the prior. With running ``moments`` (one row
    per frame) the results have one row per frame too.

    Speaker rule: the mean is the speaker's own (the prior counts as ``PRIOR_MEAN_FRAMES``
    frames, only so that a handful of frames has one): that removes the level and the
    channel (a gain, a microphone, a telephone band) as cepstral mean normalisation does.
    The variance around it takes the global variance as ``prior_frames`` extra frames, so a
    1 s recording (or one long pause) keeps sane scales while a speaker's minutes of speech
    are scaled by their own. A speaker with fewer than ``MIN_SIGNAL_FRAMES`` frames above
    the silence floor (digital silence, a near-silent recording), or whose frame energy
    hardly varies (steady noise or hum at any level: under ``STEADY_RATIO`` of the training
    data's spread) has no speech whose level or channel could be removed: the prior alone
    normalises it, so silence stays silence instead of its noise floor being blown up to
    the scale of speech.
    """
    prior_mean = np.asarray(prior["mean"], dtype=np.float64)
    prior_std = np.asarray(prior["std"], dtype=np.float64)
    if config.normalization == "global" or moments is None:
        return prior_mean, prior_std
    count = np.asarray(moments.count, dtype=np.float64)
    mean = (moments.total + PRIOR_MEAN_FRAMES * prior_mean) / (count + PRIOR_MEAN_FRAMES)
    own_mean = moments.total / np.maximum(count, 1.0)
    scatter = moments.squares - count * own_mean**2 + count * (own_mean - mean) ** 2
    variance = (scatter + prior_frames * prior_std**2) / (count + prior_frames)
    std = np.maximum(np.sqrt(np.maximum(variance, 0.0)), STD_FLOOR)
    own_variance = moments.squares / np.maximum(count, 1.0) - own_mean**2
    own_std = np.broadcast_to(np.sqrt(np.maximum(own_variance, 0.0)), np.shape(mean))
    steady = energy_spread(own_std, config) < STEADY_RATIO * energy_spread(prior_std, config)
    silent = (np.asarray(moments.signal) < MIN_SIGNAL_FRAMES) | np.asarray(steady)[..., None]
    return np.where(silent, prior_mean, mean), np.where(silent, prior_std, std)


def energy_spread(std: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """How much the frame energy varies, from (..., D) standard deviations: c0's for MFCC, the
    mean log-mel band's for fbank. Speech swings tens of dB; steady noise hardly moves."""
    std = np.asarray(std)
    if config.kind == "mfcc":
        return std[..., 0]
    return std[..., : config.n_mels].mean(axis=-1)


def normalize(features: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """(T, D) -> (T, D) float32: (x - mean) / std."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return ((np.asarray(features, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)


def normalize_speaker(
    utterances: list[np.ndarray], config: FeatureConfig, prior: dict[str, Any]
) -> list[np.ndarray]:
    """One speaker's (or one recording's) raw (T_i, D) features, normalised together."""
    moments = Moments()
    for features in utterances:
        moments.add(features, config)
    mean, std = normalization_stats(config, prior, moments)
    return [normalize(features, mean, std) for features in utterances]


class RunningNormalizer:
    """Causal normalisation of a stream: frame t by the statistics of frames 0..t (the same
    rule as ``normalization_stats``; a stream cannot look ahead)."""

    def __init__(self, config: FeatureConfig, prior: dict[str, Any]):
        self.config = config
        self.prior = prior
        self.moments = Moments()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if self.config.normalization == "global":
            return normalize(features, *normalization_stats(self.config, self.prior))
        running = self.moments.running(features, self.config)
        mean, std = normalization_stats(self.config, self.prior, running)  # (n, D) each
        return ((np.asarray(features, np.float64) - mean) / std).astype(np.float32)


# --- features of a growing signal --------------------------------------------------------


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

    def frames(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Blocks of samples -> blocks of raw feature frames, the last ones at the end."""
        for block in blocks:
            yield self.push(block)
        yield self.finish()

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


class FeatureSpool:
    """Raw (n, D) float32 feature blocks written once and read back once, in order: a list
    in memory, or an anonymous temporary file (``tempfile.TemporaryFile``: it has no name,
    so the system frees it when it is closed or the process ends, also on Ctrl-C or
    SIGKILL). The file is written and read with plain I/O, not memory-mapped: mapped pages
    would count in the process's resident memory, the page cache's do not."""

    def __init__(self, dim: int, in_memory: bool):
        self.dim = dim
        self.blocks: list[np.ndarray] = []
        self.rows: list[int] = []  # rows of each block in the file
        self.file = None if in_memory else tempfile.TemporaryFile(prefix="phonelabel-features-")

    def append(self, block: np.ndarray) -> None:
        if self.file is None:
            self.blocks.append(block)
            return
        self.file.write(np.ascontiguousarray(block, dtype=np.float32).data)
        self.rows.append(len(block))

    def replay(self) -> Iterator[np.ndarray]:
        """The blocks as appended; closes the file after the last (or when dropped early)."""
        if self.file is None:
            blocks, self.blocks = self.blocks, []
            yield from blocks
            return
        try:
            self.file.seek(0)
            for rows in self.rows:
                block = np.empty((rows, self.dim), dtype=np.float32)
                if self.file.readinto(memoryview(block).cast("B")) != block.nbytes:
                    raise OSError("temporary feature file ended early")
                yield block
        finally:
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
