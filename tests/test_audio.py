"""Audio suffixes: every suffix the corpus readers and ``align`` look for is one ``read_audio``
reads."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from phonelabel.audio import AUDIO_SUFFIXES, read_audio

FORMAT_OF = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".sph": "NIST", ".nist": "NIST"}


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_every_audio_suffix_is_one_read_audio_reads(tmp_path, suffix):
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    path = tmp_path / f"tone{suffix.upper()}"  # any letter case
    fmt = FORMAT_OF.get(suffix, "AIFF")
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    soundfile.write(path, tone, 8000, format=fmt, subtype=subtype)
    audio = read_audio(path)
    assert audio.sample_rate == 16000 and audio.source_rate == 8000
    assert len(audio.samples) == 16000  # one second, resampled
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins: the tone survived
