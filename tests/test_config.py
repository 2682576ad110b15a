"""TrainConfig: resolution, round trip, what a resumed run may change, old configs."""

from __future__ import annotations

import json

import pytest

from phonelabel.config import RESUME_SAFE, RUN_MODEL, ModelConfig, TrainConfig
from phonelabel.errors import PhonelabelError
from phonelabel.modeldir import default_model_dir


def test_resolved_fills_what_none_left_to_the_run_and_round_trips():
    config = TrainConfig(k1=20, optimizer="sgd").resolved()
    assert (config.k2, config.lr, config.batch_streams) == (20, 0.05, 32)
    assert TrainConfig.from_dict(config.to_dict()) == config == config.resolved()


def test_the_network_options_live_in_its_model_config():
    config = TrainConfig()
    assert config.model == RUN_MODEL and config.delay == RUN_MODEL.delay == 3
    assert (RUN_MODEL.hidden, RUN_MODEL.layers, RUN_MODEL.dropout) == (
        ModelConfig().hidden,
        ModelConfig().layers,
        ModelConfig().dropout,
    )
    changed = config.replaced({"hidden": 64, "delay": 0, "k1": 10})
    assert (changed.model.hidden, changed.delay, changed.k1) == (64, 0, 10)
    with pytest.raises(PhonelabelError, match="unknown training options bogus"):
        config.replaced({"bogus": 1})


def test_resume_applies_safe_options_and_refuses_others_naming_both_values():
    saved = TrainConfig(model=ModelConfig(hidden=64), k1=20, k2=40, lr=0.01).resolved()
    assert saved.resumed({"epochs": 9, "patience": 2}).epochs == 9
    assert RESUME_SAFE >= {"epochs", "device"}
    with pytest.raises(PhonelabelError, match=r"keeps its hidden \(64\); 128 was given"):
        saved.resumed({"hidden": 128})
    assert saved.resumed({"hidden": 64}) == saved  # the same value is no change


def test_streams_default_to_32_on_the_cpu_and_256_per_gpu_with_the_lr_scaled():
    cpu = TrainConfig().resolved()
    assert (cpu.batch_streams, cpu.lr) == (32, 1e-3)  # the CPU defaults, as before
    gpu = TrainConfig().resolved(cuda=True)
    assert gpu.batch_streams == 256 and gpu.lr == pytest.approx(1e-3 * 8**0.5)
    assert TrainConfig().resolved(cuda=True, processes=4).batch_streams == 1024
    assert TrainConfig(batch_streams=8).resolved(cuda=True).lr == 1e-3  # never below 32's lr
    given = TrainConfig(batch_streams=256, lr=0.01).resolved(cuda=True)
    assert (given.batch_streams, given.lr) == (256, 0.01)  # what the user gave is kept


def test_zero_no_longer_means_the_default():
    for options, message in (
        ({"k2": 0}, "k2"),
        ({"lr": 0.0}, "lr"),
        ({"batch_streams": 0}, "batch_streams"),
    ):
        with pytest.raises(PhonelabelError, match=message):
            TrainConfig(**options).check()


def test_the_shipped_models_training_config_reads_back():
    """models/default's config.json (flat hidden .. delay, as every version writes it) reads
    into today's config, the same network as its "model", and writes back the same; it was
    adapted (``adapt``), so its run started from another model's weights."""
    shipped = json.loads((default_model_dir() / "config.json").read_text())
    config = TrainConfig.from_dict(shipped["training"])
    assert config.model == ModelConfig(**{**shipped["model"], "input_dim": 39})
    assert config.init and config.k2 == 20 and config.delay == 3
    assert shipped["run"]["adapted"]["recordings"] == 112
    written = config.to_dict()
    assert written == shipped["training"]
    assert list(written)[:5] == ["hidden", "layers", "dropout", "delay", "k1"]


def test_configs_of_0_1_to_0_3_with_zero_markers_read_as_none():
    old = {"hidden": 32, "layers": 1, "dropout": 0.0, "delay": 0, "k2": 0, "lr": 0.0,
           "batch_streams": 0, "init": ""}  # fmt: skip
    config = TrainConfig.from_dict(old)
    assert (config.k2, config.lr, config.batch_streams, config.init) == (None,) * 4
    assert config.model == ModelConfig(hidden=32, layers=1, dropout=0.0, delay=0)
