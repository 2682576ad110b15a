"""`train --init`: a trained model's weights start the run (issue 23).

What it buys is measured against the same run from random weights (same seed, same epochs,
same store); a model that does not fit the run is refused; `--resume` continues from its
checkpoint, never from the `--init` weights again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.config import ModelConfig, TrainConfig
from phonelabel.modeldir import load_state_dict, save_state_dict
from phonelabel.train import train

runner = CliRunner()
# the tone_model fixture's size and delay (conftest): an --init run must match them
TONE_SIZE = ["--hidden", "48", "--layers", "1", "--delay", "0"]
QUICK = ["--k1", "10", "--batch-streams", "4", "--device", "cpu", "--no-tune-decoder"]
pytestmark = pytest.mark.usefixtures("one_thread")


def dev_accuracy(model_dir: Path) -> float:
    """The best epoch's dev frame accuracy (61 phones) in metrics.jsonl."""
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return max(r["dev_frame_accuracy_61"] for r in records)


def train_twice(store: Path, tmp_path: Path, init: str, *args: str) -> tuple[float, float]:
    """Dev accuracy after one epoch from random weights and from ``init``, all else equal."""
    accuracies = []
    for name, extra in (("random", []), ("init", ["--init", init])):
        out = tmp_path / name
        result = runner.invoke(app, ["train", str(store), "--out", str(out), *args, *extra])
        assert result.exit_code == 0, result.output
        accuracies.append(dev_accuracy(out))
    return accuracies[0], accuracies[1]


def test_init_from_a_model_dir_beats_random_weights(tone_store, tone_model, tmp_path):
    # measured (1 epoch, seeds 1/2/3): random 0.587/0.594/0.601, from tone_model
    # 0.763/0.728/0.696 dev frame accuracy: at least +0.09
    random, started = train_twice(
        tone_store, tmp_path, str(tone_model), *TONE_SIZE, *QUICK,
        "--lr", "0.01", "--time-mask", "0", "--freq-mask", "0", "--epochs", "1", "--seed", "1",
    )  # fmt: skip
    assert started > random + 0.08, (random, started)


@pytest.mark.slow  # two epochs of the default 2 x 256 model
def test_init_default_starts_from_the_shipped_model(tone_store, tmp_path):
    # measured (1 epoch, the default size 2 x 256, delay 3, seeds 1/2): random 0.361/0.304,
    # from the shipped model 0.514/0.542 dev frame accuracy
    random, started = train_twice(
        tone_store, tmp_path, "default", *QUICK, "--epochs", "1", "--seed", "1"
    )
    assert started > random + 0.08, (random, started)
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert config["training"]["init"] == "default"
    assert Path(config["run"]["init_model"]).name == "default"


def refusal(result) -> str:
    """A user error: exit 2 and one line."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_an_init_model_with_another_delay_is_refused(tone_store, tone_model, tmp_path):
    out = tmp_path / "m"
    size = ["--hidden", "48", "--layers", "1", "--delay", "2"]  # tone_model has delay 0
    result = runner.invoke(
        app, ["train", str(tone_store), "--out", str(out), *size, *QUICK, "--init", str(tone_model)]
    )
    line = refusal(result)
    assert "cannot start from this model" in line and "delay: 0 (model) vs 2 (this run)" in line
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_an_init_model_with_another_feature_config_is_refused(
    tone_global_store, tone_model, tmp_path
):
    store = tone_global_store  # tone_model's features are normalised per speaker
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["train", str(store), "--out", str(out), *TONE_SIZE, *QUICK, "--init", str(tone_model)]
    )
    line = refusal(result)
    assert "normalization: 'speaker' (model) vs 'global'" in line
    assert not (out / "model.pt").exists()


def test_resume_continues_from_its_checkpoint_not_the_init_weights(
    tone_store, tone_model, tmp_path
):
    start = tmp_path / "start"
    shutil.copytree(tone_model, start)
    config = TrainConfig(model=ModelConfig(hidden=48, layers=1), k1=10, batch_streams=4, lr=0.01,
                         time_mask=0, freq_mask=0, seed=1, device="cpu", tune_decoder=False,
                         init=str(start), checkpoint_seconds=0)  # fmt: skip
    train(tone_store, tmp_path / "whole", replace(config, epochs=2))
    stopped = tmp_path / "stopped"
    train(tone_store, stopped, replace(config, epochs=1))
    # the starting model changes after the run began: a resume that read it again would
    # start epoch 2 from zeros instead of epoch 1's weights
    zeros = {k: torch.zeros_like(v) for k, v in load_state_dict(start / "model.pt").items()}
    save_state_dict(start / "model.pt", zeros)
    resumed = train(tone_store, stopped, resume=True, changes={"epochs": 2})
    whole = train_losses(tmp_path / "whole")
    assert [r.train_loss for r in resumed.history] == whole and len(whole) == 2
    for name in ("model.pt", "checkpoint.pt"):  # the best epoch's weights, and the last
        a, b = (load_state_dict(d / name) for d in (tmp_path / "whole", stopped))
        a, b = (a, b) if name == "model.pt" else (a["model"], b["model"])
        assert all(torch.equal(a[k], b[k]) for k in a)


def train_losses(model_dir: Path) -> list[float]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines]
