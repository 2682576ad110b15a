"""Read audio of any common format as 16 kHz mono float32."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from phonelabel.errors import PhonelabelError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # (N,) float32 in [-1, 1], mono, at `sample_rate`
    sample_rate: int
    source_rate: int  # the file's own rate before resampling
    source_channels: int  # the file's channel count before downmixing
    source_frames: int  # the file's own sample count (what its .PHN counts)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def converted(self) -> bool:
        return self.source_rate != self.sample_rate or self.source_channels != 1


def to_mono_16k(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) audio and resample it (soxr, high quality)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != target_rate:
        import librosa  # deferred: importing librosa costs ~1 s

        samples = librosa.resample(samples, orig_sr=rate, target_sr=target_rate, res_type="soxr_hq")
    return np.ascontiguousarray(samples, dtype=np.float32)


def check_truncated(path: Path, sound: soundfile.SoundFile) -> None:
    """libsndfile reads a cut-off WAV or SPHERE file silently; their headers tell."""
    if re.search(r"^data\s*:.*should be", sound.extra_info, re.MULTILINE):
        raise PhonelabelError(f"{path}: truncated audio (the WAV header promises more samples)")
    if sound.format == "NIST":
        with open(path, "rb") as handle:
            header = handle.read(1024).decode("ascii", errors="replace")
        match = re.search(r"sample_count -i (\d+)", header)
        if match and int(match.group(1)) > sound.frames:
            raise PhonelabelError(
                f"{path}: truncated audio (SPHERE header says {match.group(1)} samples, "
                f"the file holds {sound.frames})"
            )


def read_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> Audio:
    """Read WAV, NIST SPHERE, FLAC, OGG (anything libsndfile reads); mono, `target_rate` Hz."""
    path = Path(path)
    if not path.is_file():
        raise PhonelabelError(f"{path}: no such audio file")
    try:
        with soundfile.SoundFile(str(path)) as sound:
            check_truncated(path, sound)
            samples = sound.read(dtype="float32", always_2d=True)
            rate = sound.samplerate
    except PhonelabelError:
        raise
    except Exception as error:  # libsndfile's errors are plain RuntimeErrors / LibsndfileError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PhonelabelError(f"{path}: not readable audio ({reason})") from None
    if samples.shape[0] == 0:
        raise PhonelabelError(f"{path}: audio file holds no samples")
    mono = to_mono_16k(samples, rate, target_rate)
    if not np.all(np.isfinite(mono)):
        raise PhonelabelError(f"{path}: audio holds NaN or infinite samples")
    return Audio(mono, target_rate, int(rate), int(samples.shape[1]), int(samples.shape[0]))
