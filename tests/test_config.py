"""TrainConfig: resolution, round trip, what a resumed run may change."""

from __future__ import annotations

import dataclasses

import pytest

from phonelabel.config import RESUME_SAFE, TrainConfig
from phonelabel.errors import PhonelabelError


def test_resolved_fills_the_default_markers_and_round_trips():
    config = TrainConfig(k1=20, k2=0, lr=0.0, optimizer="sgd").resolved()
    assert (config.k2, config.lr) == (20, 0.05)
    assert TrainConfig(**dataclasses.asdict(config)) == config == config.resolved()


def test_resume_applies_safe_options_and_refuses_others_naming_both_values():
    saved = TrainConfig(hidden=64, k1=20, k2=40, lr=0.01).resolved()
    assert saved.resumed({"epochs": 9, "patience": 2}).epochs == 9
    assert RESUME_SAFE >= {"epochs", "device"}
    with pytest.raises(PhonelabelError, match=r"keeps its hidden \(64\); 128 was given"):
        saved.resumed({"hidden": 128})
    assert saved.resumed({"hidden": 64}) == saved  # the same value is no change


def test_resume_with_lr_or_k2_zero_keeps_the_runs_resolved_values():
    """0 asks for the default, which the run resolved when it started: no change, and not
    a silent switch to another window or learning rate."""
    saved = TrainConfig(k1=20, k2=40, lr=0.01).resolved()
    resumed = saved.resumed({"k2": 0, "lr": 0.0}).resolved()
    assert (resumed.k2, resumed.lr) == (40, 0.01)


def test_streams_default_to_32_on_the_cpu_and_256_per_gpu_with_the_lr_scaled():
    cpu = TrainConfig().resolved()
    assert (cpu.batch_streams, cpu.lr) == (32, 1e-3)  # the CPU defaults, as before
    gpu = TrainConfig().resolved(cuda=True)
    assert gpu.batch_streams == 256 and gpu.lr == pytest.approx(1e-3 * 8**0.5)
    assert TrainConfig().resolved(cuda=True, processes=4).batch_streams == 1024
    assert TrainConfig(batch_streams=8).resolved(cuda=True).lr == 1e-3  # never below 32's lr
    given = TrainConfig(batch_streams=256, lr=0.01).resolved(cuda=True)
    assert (given.batch_streams, given.lr) == (256, 0.01)  # what the user gave is kept
    assert given.resumed({"batch_streams": 0}).batch_streams == 256
