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
