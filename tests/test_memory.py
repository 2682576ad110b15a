"""Bounded memory: `label` and `align` reach the same peak memory on a short and a long
recording (blocks of audio, spooled features and a converging Viterbi, never the whole
recording), measured as each command's peak resident set size in a subprocess of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import save_random_model, tone_recording

from phonelabel.decode import DecoderParams
from phonelabel.features import FeatureConfig
from phonelabel.model import ModelConfig

PHONELABEL = [sys.executable, "-c", "from phonelabel.cli import main; main()"]
RATE = 16000
SHORT, LONG = 60, 600  # seconds: 1 and 10 minutes
# What may grow with the recording: `label`'s segments, the list the library returns (about
# 0.3 KB each: 17,000 segments, 4 MB, in 10 min of this peaky model's output). Measured peaks
# (MB, 1 / 10 / 20 min): label 272 / 276 / 283, align 353 / 352 / 352; 0.3.0, which kept
# features of files up to 20 min in memory: label 272 / 284 / 300, align 353 / 362 / 371.
MARGIN_MB = 6.0


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """Random small weights, peaky output (Viterbi paths merge as a trained model's do)."""
    out = tmp_path_factory.mktemp("memory_model") / "model"
    shape = ModelConfig(hidden=32, layers=1, delay=2)
    return save_random_model(
        out, shape, FeatureConfig(), tone_recording(5.0), DecoderParams(1.0, 2)
    )


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[int, Path]:
    """A short and a long WAV: one minute of tones, repeated."""
    folder = tmp_path_factory.mktemp("memory_audio")
    minute = (tone_recording(60.0, seed=1) * 32767).astype(np.int16)
    paths = {}
    for seconds in (SHORT, LONG):
        paths[seconds] = folder / f"r{seconds}.wav"
        soundfile.write(paths[seconds], np.tile(minute, seconds // 60), RATE, subtype="PCM_16")
    return paths


def peak_rss_mb(*args: str) -> float:
    """Run ``phonelabel *args`` and return its peak resident set size (MB, ``wait4``'s
    ru_maxrss: the process's own high-water mark)."""
    with tempfile.TemporaryFile("w+") as log:
        run = subprocess.Popen([*PHONELABEL, *args], stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(run.pid, 0)
        run.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        assert run.returncode == 0, log.read()
    return usage.ru_maxrss / 1024


def test_label_peak_memory_does_not_grow_with_the_recording(tmp_path, model, recordings):
    peaks = {
        seconds: peak_rss_mb("label", str(path), "--model", str(model), "--out", str(tmp_path))
        for seconds, path in recordings.items()
    }
    assert peaks[LONG] < peaks[SHORT] + MARGIN_MB, peaks
    lines = (tmp_path / f"r{LONG}.phn").read_text().splitlines()
    assert lines[-1].split()[1] == str(LONG * RATE)  # the whole recording was labelled


def test_align_peak_memory_does_not_grow_with_the_recording(tmp_path, model, recordings):
    peaks = {
        seconds: peak_rss_mb(
            "align",
            str(path),
            "--text",
            "she had your dark suit",
            "--model",
            str(model),
            "--out",
            str(tmp_path),
            "--no-festival",
            "--device",
            "cpu",
        )  # fmt: skip
        for seconds, path in recordings.items()
    }
    assert peaks[LONG] < peaks[SHORT] + MARGIN_MB, peaks
    assert (tmp_path / f"r{LONG}.TextGrid").is_file() or any(tmp_path.glob(f"r{LONG}.*"))
