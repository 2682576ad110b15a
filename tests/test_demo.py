"""`phonelabel demo`: the whole pipeline, end to end, on a tiny synthetic corpus."""

from __future__ import annotations

import json

import pytest
from conftest import store_baselines
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.formats import read_segments
from phonelabel.phones import PHONES_61

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_runs_every_stage_and_says_where_everything_went(tmp_path):
    directory = tmp_path / "demo"
    args = ["demo", str(directory), "--speakers", "8", "--utterances-per-speaker", "3"]
    result = CliRunner().invoke(app, [*args, "--epochs", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "frame accuracy, 61 phones" in result.output

    report = json.loads((directory / "results.json").read_text())
    assert report["split"] == "test" and report["frames"] > 0
    # 8 epochs on 12 sentences: not much, but learned. Measured (0.4.0, whose corpus pads
    # 30 % of the utterances with lead-in/out silence, so h# is the commonest phone): 61-phone
    # accuracy 0.344; the commonest phone 0.280; a per-frame predictor (logistic regression
    # on each frame alone, fitted on train) 0.343. With 4 epochs the model (0.324) had not
    # yet caught up with the per-frame predictor.
    accuracy = report["frame_accuracy_61"]
    constant, per_frame = store_baselines(directory / "features", "test")
    numbers = f"{accuracy:.3f}; the commonest phone {constant:.3f}, per-frame {per_frame:.3f}"
    assert accuracy > constant + 0.05, numbers
    # as good as the best memoryless predictor the test can fit (beating it by a margin
    # takes more training than this test can afford)
    assert accuracy > per_frame - 0.02, numbers
    assert report["phone_error_rate_39"] < 0.9  # saying nothing scores 1.0
    assert len(report["confusion_39"]) == 39
    for png in (
        directory / "model" / "curves.png",
        directory / "plots" / "confusion.png",
        directory / "plots" / "per_phone.png",
    ):
        assert png.read_bytes()[:8] == PNG
    (textgrid,) = directory.glob("*.TextGrid")
    segments = read_segments(textgrid)
    assert segments[0].start == 0.0 and all(s.phone in PHONES_61 for s in segments)
    assert all(
        a.end == pytest.approx(b.start) for a, b in zip(segments, segments[1:], strict=False)
    )
    assert (directory / f"{textgrid.stem}.png").read_bytes()[:8] == PNG
    for path in (textgrid.name, "results.json", "plots"):
        assert path in result.output

    again = CliRunner().invoke(app, [*args, "--epochs", "2"])
    assert again.exit_code == 2 and "earlier demo" in again.output
