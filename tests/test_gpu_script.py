"""bench/gpu.sh runs end to end (on the CPU, tiny sizes), so its first run on a GPU machine
does not fail on a typo: every section prints its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu.sh"
SECTIONS = ("train", "data-on", "torchrun", "label", "accuracy")


@pytest.mark.slow
def test_gpu_script_prints_a_figure_for_every_section_on_the_cpu():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(SCRIPT), "--device", "cpu", "--small"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert not [line for line in lines if "FAILED" in line or "skipped" in line], done.stdout
    for section in SECTIONS:
        figures = [line for line in lines if line.startswith(f"{section}: ")]
        assert figures, f"no {section} line in:\n{done.stdout}"
        for line in figures:
            numbers = [float(n) for n in re.findall(r"\d+\.?\d*", line.split(":", 1)[1])]
            assert numbers and max(numbers) > 0, line
    train = [line for line in lines if line.startswith("train: ")]
    assert len(train) == 2  # the wide and the narrow batch, fp32 (the CPU offers no other)
    accuracy = [float(re.search(r"accuracy (\d\.\d+)", line)[1])
                for line in lines if line.startswith("accuracy: ")]  # fmt: skip
    assert len(accuracy) == 2 and all(0.1 < a <= 1 for a in accuracy)  # above chance (1/61)
