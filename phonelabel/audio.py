"""Read audio of any common format as 16 kHz mono float32."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import soundfile
import soxr

from phonelabel.core import SAMPLE_RATE
from phonelabel.errors import PhonelabelError

BLOCK_SECONDS = 10.0  # file blocks: 10 s of audio (160,000 samples) in memory at a time
STREAM_BYTES = 3200  # stdin reads: 100 ms of 16-bit PCM
# What ``read_audio`` reads (libsndfile): WAV, FLAC, Ogg Vorbis, NIST SPHERE, AIFF. Corpus
# readers and ``align``'s transcript pairing find audio by these (any letter case).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph", ".nist", ".aif", ".aiff")


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
    """Downmix (frames, channels) or (frames,) audio and resample it (soxr, high quality),
    to ceil(N * target / rate) samples as ``librosa.resample(res_type="soxr_hq")`` gives."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != target_rate:
        wanted = int(np.ceil(len(samples) * target_rate / rate))
        samples = soxr.resample(samples, rate, target_rate, quality="soxr_hq")[:wanted]
        samples = np.pad(samples, (0, wanted - len(samples)))
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


# libsndfile raises RuntimeError (LibsndfileError) for a file it cannot parse
AUDIO_ERRORS = (RuntimeError, OSError, ValueError)


def _audio_error(path: Path, error: Exception) -> PhonelabelError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PhonelabelError(f"{path}: not readable audio ({reason})")


def _check_samples(path: Path, samples: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(samples)):
        raise PhonelabelError(f"{path}: audio holds NaN or infinite samples")
    return samples


def open_audio(path: Path) -> soundfile.SoundFile:
    """The file opened by libsndfile, its header checked (exists, not truncated, not empty)."""
    if path.is_dir():
        raise PhonelabelError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        raise PhonelabelError(f"{path}: no such audio file")
    try:
        sound = soundfile.SoundFile(str(path))
        check_truncated(path, sound)
    except AUDIO_ERRORS as error:
        raise _audio_error(path, error) from None
    if sound.frames <= 0:
        sound.close()
        raise PhonelabelError(f"{path}: audio file holds no samples")
    return sound


def read_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> Audio:
    """Read WAV, NIST SPHERE, FLAC, OGG (anything libsndfile reads); mono, `target_rate` Hz."""
    path = Path(path)
    with open_audio(path) as sound:
        try:
            samples = sound.read(dtype="float32", always_2d=True)
        except AUDIO_ERRORS as error:
            raise _audio_error(path, error) from None
        rate, channels = int(sound.samplerate), int(sound.channels)
    mono = _check_samples(path, to_mono_16k(samples, rate, target_rate))
    return Audio(mono, target_rate, rate, channels, int(samples.shape[0]))


class AudioFile:
    """An audio file, its header checked; read whole (``read_audio``) or as 16 kHz mono
    float32 blocks (downmixed and resampled per block, bounded memory).

    Block resampling uses soxr's streaming resampler, the algorithm ``read_audio`` applies to
    the whole file; block edges may change the result in the last bits only.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open_audio(self.path) as sound:
            self.source_rate = int(sound.samplerate)
            self.source_frames = int(sound.frames)
            self.channels = int(sound.channels)

    @property
    def seconds(self) -> float:
        return self.source_frames / self.source_rate

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        """(n,) float32 blocks at 16 kHz, from the start each time it is called."""
        size = max(1, int(seconds * self.source_rate))
        resampler = None
        if self.source_rate != SAMPLE_RATE:
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
                    if len(mono):
                        yield np.ascontiguousarray(_check_samples(self.path, mono))
                    if last:
                        return
        except AUDIO_ERRORS as error:
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
