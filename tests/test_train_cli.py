"""`phonelabel train` end to end on a real (tone) feature store: learning, determinism,
refusals, bad input. Resume after kill -9, at moments spread over a run: test_resume.py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import store_baselines
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.config import ModelConfig, TrainConfig
from phonelabel.features import NO_LABEL
from phonelabel.modeldir import load_model, load_state_dict, save_state_dict
from phonelabel.store import open_store
from phonelabel.train import train

runner = CliRunner()
# --no-tune-decoder: tuning is tested once, on tone_model; the other runs do not need it
SMALL = ["--no-tune-decoder", "--hidden", "32", "--layers", "1", "--k1", "10"]
SMALL += ["--batch-streams", "4", "--lr", "0.01"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


def history(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_learns_and_writes_a_complete_model_dir(tone_model, tone_store):
    records = history(tone_model)
    for key in (
        "epoch",
        "train_loss",
        "train_frames",
        "train_seconds",
        "dev_frame_accuracy_61",
        "dev_frame_accuracy_39",
        "clip_fraction",
        "lr",
    ):
        assert key in records[0]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    best = max(r["dev_frame_accuracy_61"] for r in records)
    constant, per_frame = store_baselines(tone_store, "dev")
    assert best > constant + 0.3, f"dev {best:.3f}: not 0.3 above always-h# ({constant:.3f})"
    # The tones can be labelled frame by frame (memory is pinned by test_train.py's memory
    # task): the LSTM must at least match a per-frame predictor fitted on the same frames.
    assert best > per_frame - 0.02, f"dev {best:.3f} vs a per-frame predictor {per_frame:.3f}"
    trained = load_model(tone_model)
    assert trained.model.config.hidden == 48
    assert trained.feature.kind == "mfcc" and len(trained.stats["mean"]) == 39
    assert (tone_model / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the Viterbi smoothing was tuned on dev, and is no worse there than argmax
    tuning = trained.decoder_tuning
    assert tuning["tuned_on"] == "dev" and trained.decoder_params.min_duration >= 1
    assert tuning["dev_phone_error_rate_39"] <= tuning["dev_phone_error_rate_39_argmax"]


@pytest.mark.slow
def test_same_seed_gives_identical_weights(tone_store, tmp_path):
    # one epoch each: every window's shuffle, dropout and masking draws from the seed; that
    # later epochs repeat too is pinned by test_resume.py (a 2-epoch run, killed and resumed)
    args = ["train", str(tone_store), *SMALL, "--epochs", "1", "--seed", "3", "--device", "cpu"]
    for name in ("a", "b"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = runner.invoke(
        app, [*args[:-4], "--seed", "4", "--device", "cpu", "--out", str(tmp_path / "c")]
    )
    assert other.exit_code == 0
    assert not torch.equal(weights(tmp_path / "c")["output.weight"], a["output.weight"])


def test_existing_output_is_never_overwritten(tone_model, tone_store):
    before = (tone_model / "model.pt").read_bytes()
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(tone_model), *SMALL])
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert (tone_model / "model.pt").read_bytes() == before


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--k1", "20", "--k2", "10"], "--k2 (10) must be >= --k1 (20)"),
        (["--device", "cuda"], "CUDA"),
        (["--optimizer", "rmsprop"], "unknown --optimizer 'rmsprop'"),
        (["--device", "cpu", "--precision", "bf16"], "bf16 needs a CUDA GPU"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--lr", "-0.1"], "--lr must be a number > 0"),
        (["--lr", "inf"], "--lr must be a number > 0"),
        (["--k1", "20", "--k2", "0"], "--k2 (0) must be >= --k1 (20)"),
        (["--patience", "0"], "--patience must be >= 1"),
        (["--input-noise", "nan"], "--input-noise must be a number >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(tone_store, tmp_path, extra, message):
    if extra == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(tmp_path / "m"), *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists()  # a refused run leaves nothing behind


def test_an_out_that_cannot_be_made_is_refused_before_training(tone_store, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "exists and is not a directory" in result.output
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(tmp_path / "file" / "m")])
    assert result.exit_code == 2 and "cannot create the directory" in result.output
    assert "Traceback" not in result.output and "epoch" not in result.output


def test_resume_with_another_store_is_refused(tone_model, tone_global_store, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(tone_model, out)  # a finished run, trained on tone_store
    result = runner.invoke(
        app, ["train", str(tone_global_store), "--out", str(out), "--resume", "--epochs", "7"]
    )
    assert result.exit_code == 2 and "not the feature store this run started on" in result.output
    assert history(out) == history(tone_model)


def test_not_a_store_is_refused(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_divergence_stops_with_a_clear_message(tone_store, tmp_path):
    out = tmp_path / "m"
    args = [
        "train",
        str(tone_store),
        "--out",
        str(out),
        *SMALL[:-2],
        "--epochs",
        "2",
        "--clip",
        "0",
    ]
    result = runner.invoke(app, [*args, "--lr", "1e35", "--optimizer", "sgd"])
    assert result.exit_code == 2
    assert "diverged" in result.output and "Traceback" not in result.output


def test_divergence_after_a_good_epoch_keeps_that_epochs_model(tone_model, tone_store, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(tone_model, out)  # 6 good epochs
    best = (out / "model.pt").read_bytes()
    # epoch 7 at a learning rate that must diverge: set it in the checkpoint --resume reads
    checkpoint = load_state_dict(out / "checkpoint.pt")
    checkpoint["config"]["lr"] = checkpoint["run"]["lr"] = 1e35
    save_state_dict(out / "checkpoint.pt", checkpoint)
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(out), "--resume",
                                 "--epochs", "7", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "diverged" in result.output and "in epoch 7" in result.output
    assert (out / "model.pt").read_bytes() == best  # the good epochs' model, untouched
    assert all(torch.isfinite(t).all() for t in weights(out).values())
    assert history(out) == history(tone_model)


@pytest.mark.slow
def test_patience_stops_early_and_the_learning_rate_halves(tone_store, tmp_path, one_thread):
    # lr 1e-12 leaves float32 weights as they are: dev accuracy never improves after epoch 1.
    # lr_patience 2: halved after 2 and 4 bad epochs; patience 4: stop after 4 bad epochs.
    config = TrainConfig(model=ModelConfig(hidden=8, layers=1), k1=10, batch_streams=4,
                         epochs=10, lr=1e-12, min_lr=1e-20, patience=4, lr_patience=2, tune_decoder=False,
                         device="cpu")  # fmt: skip
    train(tone_store, tmp_path / "m", config)
    records = history(tmp_path / "m")
    assert len({r["dev_frame_accuracy_61"] for r in records}) == 1
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["lr"] / 1e-12 for r in records] == pytest.approx([1, 1, 1, 0.5, 0.5])
    assert [r["best"] for r in records] == [True, False, False, False, False]


@pytest.mark.slow
@pytest.mark.parametrize("k1,k2", [(0, 0), (5, 12)])
def test_whole_utterance_and_longer_backprop_train_through_train(
    tone_store, tmp_path, k1, k2, one_thread
):
    out = tmp_path / "m"
    config = TrainConfig(model=ModelConfig(hidden=16, layers=1), k1=k1, k2=k2, batch_streams=4,
                         epochs=2,
                         lr=0.02, tune_decoder=False, device="cpu")  # fmt: skip
    trained = train(tone_store, out, config).model
    assert (trained.training["k1"], trained.training["k2"]) == (k1, max(k1, k2))
    train_split = open_store(tone_store).split("train")
    labelled = int(np.sum(np.asarray(train_split.labels) != NO_LABEL))
    records = history(out)
    assert all(r["train_frames"] == labelled for r in records)  # every frame, once an epoch
    if k1 == 0:  # one update per batch of 4 whole utterances
        assert records[0]["steps"] == -(-len(train_split.utterances) // 4)
    assert records[-1]["train_loss"] < records[0]["train_loss"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_matches_cpu_scoring(tone_store, tmp_path, precision):
    out = tmp_path / "m"
    args = ["train", str(tone_store), "--out", str(out), *SMALL, "--epochs", "3"]
    result = runner.invoke(app, [*args, "--device", "cuda", "--precision", precision])
    assert result.exit_code == 0, result.output
    assert load_model(out).training["device_used"].startswith("cuda")
    best = max(r["dev_frame_accuracy_61"] for r in history(out))
    constant, _ = store_baselines(tone_store, "dev")
    assert best > constant + 0.2, f"dev {best:.3f}: not 0.2 above always-h# ({constant:.3f})"
    from phonelabel.evaluate import evaluate

    on_gpu, on_cpu = (
        evaluate(out, tone_store, "dev", "cuda"),
        evaluate(out, tone_store, "dev", "cpu"),
    )
    assert abs(on_gpu.frame_accuracy_61 - on_cpu.frame_accuracy_61) < 0.01


# --- config.json round-trips; --resume applies or refuses options ---------------------------


def test_config_json_reads_back_into_the_same_train_config(tone_model):
    from phonelabel.config import TrainConfig
    from phonelabel.modeldir import default_model_dir

    written = json.loads((tone_model / "config.json").read_text())
    config = TrainConfig.from_dict(written["training"])
    assert config.k1 == 10 and config.k2 == 10  # k2 = 0 ("as k1") resolved to the value used
    assert config.resolved() == config  # nothing left to resolve: it round-trips
    assert written["run"]["device_used"] == "cpu"
    shipped = json.loads((default_model_dir() / "config.json").read_text())
    assert TrainConfig.from_dict(shipped["training"]).delay == 3


def test_resume_refuses_a_changed_option_naming_both_values(tone_model, tone_store, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(tone_model, out)  # 6 epochs of hidden 48
    result = runner.invoke(
        app, ["train", str(tone_store), "--out", str(out), "--resume", "--hidden", "999"]
    )
    assert result.exit_code == 2
    assert "keeps its --hidden (48)" in result.output and "999" in result.output
    assert history(out) == history(tone_model)
    # the same value is no change; --epochs (safe) is applied
    result = runner.invoke(app, ["train", str(tone_store), "--out", str(out), "--resume",
                                 "--hidden", "48", "--epochs", "7", "--no-tune-decoder"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(history(out)) == 7


def test_a_config_that_does_not_fit_the_weights_is_refused_before_building(
    tone_model, tone_store, tmp_path
):
    import shutil

    out = tmp_path / "m"
    shutil.copytree(tone_model, out)
    config = json.loads((out / "config.json").read_text())
    config["model"]["hidden"] = 100000  # would allocate 160 GB if the model were built first
    (out / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    result = runner.invoke(app, ["evaluate", str(out), str(tone_store), "--split", "dev"])
    assert result.exit_code == 2 and "does not fit model.pt" in result.output
    assert "Traceback" not in result.output
    assert time.perf_counter() - started < 30


ADDED_SINCE_0_1 = ("time_mask", "freq_mask", "data_on", "init")


def test_a_model_written_by_0_1_0_still_loads(tone_model, tmp_path):
    """0.1.0 kept the decoder's tuning results in "decoder" and the run's store and device in
    "training"; they are read into their own sections, not refused or dropped."""
    import shutil

    from phonelabel.config import TrainConfig
    from phonelabel.modeldir import load_model

    out = tmp_path / "old"
    shutil.copytree(tone_model, out)
    config = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("run", "decoder_tuning")}
    old["decoder"] = {**config["decoder"], **config["decoder_tuning"]}
    run_0_1 = {k: config["run"][k] for k in ("features", "device_used")}  # 0.1.0 had these
    training_0_1 = {k: v for k, v in config["training"].items() if k not in ADDED_SINCE_0_1}
    old["training"] = {**training_0_1, **run_0_1}
    (out / "config.json").write_text(json.dumps(old))
    trained = load_model(out)
    assert trained.decoder == config["decoder"]
    assert trained.decoder_tuning == config["decoder_tuning"] and trained.run == run_0_1
    # options added later read back as the value those runs had, not today's default
    before_0_3 = {**training_0_1, "time_mask": 0, "freq_mask": 0}
    assert TrainConfig.from_dict(trained.training) == TrainConfig.from_dict(before_0_3)
    assert (TrainConfig().time_mask, TrainConfig().freq_mask) != (0, 0)
