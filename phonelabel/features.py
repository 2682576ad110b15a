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

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from math import factorial
from typing import TYPE_CHECKING, Any

import numpy as np

from phonelabel.errors import PhonelabelError
from phonelabel.phones import phone_index

if TYPE_CHECKING:
    from phonelabel.corpus.timit import Segment

NO_LABEL = 255  # uint8 label of a frame whose centre falls between segments: not trained/scored
PRIOR_FRAMES = 100.0  # weight of the global variance in per-speaker statistics, in frames
PRIOR_MEAN_FRAMES = 10.0  # ... and of the global mean (small: the speaker's own mean rules)
STD_FLOOR = 1e-5  # a constant feature dimension (digital silence) must not divide by zero


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mfcc"  # "mfcc": 13 MFCC (c0 as energy); "fbank": 40 log-mel; + deltas
    sample_rate: int = 16000
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
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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


# --- normalisation ----------------------------------------------------------------------


def _moments(features: np.ndarray, chunk: int = 65536) -> tuple[int, np.ndarray, np.ndarray]:
    """Frame count, sum and sum of squares in float64, ``chunk`` rows at a time (memmaps)."""
    total = np.zeros(features.shape[1])
    squares = np.zeros(features.shape[1])
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    return len(features), total, squares


def global_stats(features: np.ndarray) -> dict[str, Any]:
    """{"mean", "std", "frames"} of (N, D) raw features (std floored at STD_FLOOR)."""
    count, total, squares = _moments(features)
    if count == 0:
        raise PhonelabelError("no feature frames to compute normalisation statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return {
        "mean": mean.tolist(),
        "std": np.maximum(std, STD_FLOOR).tolist(),
        "frames": int(count),
    }


def speaker_stats(
    features: np.ndarray, prior: dict[str, Any], prior_frames: float = PRIOR_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """(D,) mean and std of one speaker's (N, D) raw frames, steadied by the global prior.

    The mean is the speaker's own (the prior counts as ``PRIOR_MEAN_FRAMES`` frames, only
    so that a handful of frames has one): that removes the level and the channel (a gain,
    a microphone, a telephone band) as cepstral mean normalisation does. The variance
    around it takes the global variance as ``prior_frames`` extra frames, so a 1 s
    recording (or one long silence) keeps sane scales while a speaker's minutes of speech
    are scaled by their own.
    """
    return blend_moments(*_moments(features), prior, prior_frames)


def blend_moments(
    count: Any,
    total: np.ndarray,
    squares: np.ndarray,
    prior: dict[str, Any],
    prior_frames: float = PRIOR_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """``speaker_stats`` from frame count, sum and sum of squares (float64), so a long
    recording read in blocks, or a stream's running totals ((n, 1) counts with (n, D)
    sums: one row per frame), get the same rule."""
    prior_mean = np.asarray(prior["mean"], dtype=np.float64)
    prior_variance = np.asarray(prior["std"], dtype=np.float64) ** 2
    count = np.asarray(count, dtype=np.float64)
    if np.any(count + PRIOR_MEAN_FRAMES <= 0):
        raise PhonelabelError("no frames and no prior to compute speaker statistics from")
    mean = (total + PRIOR_MEAN_FRAMES * prior_mean) / (count + PRIOR_MEAN_FRAMES)
    own_mean = total / np.maximum(count, 1.0)
    scatter = squares - count * own_mean**2 + count * (own_mean - mean) ** 2  # about `mean`
    variance = (scatter + prior_frames * prior_variance) / (count + prior_frames)
    return mean, np.maximum(np.sqrt(np.maximum(variance, 0.0)), STD_FLOOR)


def normalize(features: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """(T, D) -> (T, D) float32: (x - mean) / std."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return ((np.asarray(features, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)


def normalize_recording(
    features: np.ndarray, config: FeatureConfig, stats: dict[str, Any]
) -> np.ndarray:
    """Normalise ONE recording of one speaker as ``config.normalization`` says (label and
    evaluate time): "speaker" uses its own statistics blended with the global ``stats``;
    "global" uses ``stats`` alone."""
    if config.normalization == "speaker":
        mean, std = speaker_stats(features, stats)
        return normalize(features, mean, std)
    return normalize(features, stats["mean"], stats["std"])


def featurize_audio(
    samples: np.ndarray, config: FeatureConfig, stats: dict[str, Any]
) -> np.ndarray:
    """(N,) 16 kHz samples -> (T, dim) normalised float32 features (what ``label`` feeds
    the model)."""
    return normalize_recording(compute_features(samples, config), config, stats)
