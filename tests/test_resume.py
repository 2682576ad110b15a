"""Resume is exact at any kill point: ``phonelabel train`` (a real process) is SIGKILLed at
moments spread over a run (inside checkpoint, model, config and metrics writes, through
``fileio``'s test hook, and at a moment picked by the clock) and resumed, again and again;
each chain ends with the uninterrupted run's weights, metrics (less timing), decoder and
files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phonelabel.fileio import KILL_WRITING

# dropout, input noise and SpecAugment on (the RNG matters); a checkpoint after every step
ARGS = ["--hidden", "16", "--layers", "1", "--k1", "10", "--batch-streams", "4", "--lr", "0.01",
        "--epochs", "2", "--seed", "1", "--device", "cpu", "--checkpoint-seconds", "0"]  # fmt: skip
TIMING = {"train_seconds", "train_frames_per_second"}
KILLED = -signal.SIGKILL


def command(store: Path, out: Path, resume: bool) -> list[str]:
    extra = ["--resume"] if resume else ARGS
    return [sys.executable, "-m", "phonelabel", "train", str(store), "--out", str(out), *extra]


def environment(kill: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_WRITING}
    return {**env, "OMP_NUM_THREADS": "1", **({KILL_WRITING: kill} if kill else {})}


def train_process(store: Path, out: Path, resume: bool = False, kill: str | None = None) -> int:
    """Run ``train`` (``kill``: "NAME:N", SIGKILLed in its Nth write of NAME); exit code."""
    done = subprocess.run(command(store, out, resume), env=environment(kill),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode in (0, KILLED), done.stderr[-3000:]
    return done.returncode


def outcome(model_dir: Path) -> tuple[dict, list[dict], dict, list[str]]:
    """(weights, metrics less timing, config.json's decoder and its tuning, file names)."""
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    metrics = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = [{k: v for k, v in record.items() if k not in TIMING} for record in metrics]
    config = json.loads((model_dir / "config.json").read_text())
    decoder = {"decoder": config["decoder"], "tuning": config["decoder_tuning"]}
    return weights, metrics, decoder, sorted(p.name for p in model_dir.iterdir())


def assert_same_run(resumed: Path, whole: Path) -> None:
    (a, metrics_a, decoder_a, files_a), (b, metrics_b, decoder_b, files_b) = map(
        outcome, (resumed, whole)
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics_a == metrics_b
    assert decoder_a == decoder_b and decoder_a["decoder"]
    assert files_a == files_b  # nothing half-written left behind


@pytest.fixture(scope="module")
def whole(tone_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    assert train_process(tone_store, out) == 0
    return out


def kill_by_clock(store: Path, out: Path, epoch: int, step: int) -> None:
    """Resume ``out``, SIGKILLed as soon as a checkpoint of (``epoch``, >= ``step``) is seen:
    between steps or inside one, wherever the clock falls."""
    run = subprocess.Popen(command(store, out, True), env=environment(None),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        try:
            saved = torch.load(out / "checkpoint.pt", weights_only=True)["run"]
            if saved["epoch"] == epoch and saved["step"] >= step:
                break
        except (OSError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    assert run.wait(60) == KILLED, "training finished before it could be killed"


@pytest.mark.slow
def test_a_run_killed_again_and_again_resumes_to_the_uninterrupted_run(tone_store, whole, tmp_path):
    out = tmp_path / "killed"
    # in the first checkpoint's write: nothing to resume, and a fresh start is still allowed
    assert train_process(tone_store, out, kill="checkpoint.pt:1") == KILLED
    assert not (out / "checkpoint.pt").exists() and any(out.iterdir())
    assert train_process(tone_store, out, kill="checkpoint.pt:7") == KILLED  # mid epoch 1
    # epoch 1's end: model.pt written, metrics not yet; then inside its epoch-end checkpoint
    assert train_process(tone_store, out, True, "metrics.jsonl:1") == KILLED
    assert train_process(tone_store, out, True, "checkpoint.pt:1") == KILLED
    assert torch.load(out / "checkpoint.pt", weights_only=True)["run"]["step"] > 0
    kill_by_clock(tone_store, out, epoch=1, step=3)
    # config.json is written once per new best epoch from here, then once with the decoder
    # tuned after training: kill inside that last write
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    writes = sum(r["best"] for r in records[1:]) + 1
    assert train_process(tone_store, out, True, f"config.json:{writes}") == KILLED
    assert not json.loads((out / "config.json").read_text())["decoder"]
    assert train_process(tone_store, out, resume=True) == 0
    assert_same_run(out, whole)
