"""The one file runner (``workers.run_files``) on real files: failures, shards, jobs, outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from phonelabel.audio import read_audio
from phonelabel.errors import PhonelabelError
from phonelabel.fileio import write_text
from phonelabel.workers import Failure, Shard, beside_an_import, run_files


def _describe(directory: Path, unit: list[tuple[str, Path]]) -> list[object]:
    """A task as label's and align's are: read each recording, write one output for it,
    return a result or the PhonelabelError that stopped it."""
    results: list[object] = []
    for source, name in unit:
        try:
            audio = read_audio(source)
        except PhonelabelError as error:
            results.append(error)
            continue
        rms = float(np.sqrt(np.mean(audio.samples.astype(np.float64) ** 2)))
        write_text(directory / name, f"{len(audio.samples)} {rms:.6f}\n")
        results.append(directory / name)
    return results


def _recordings(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"r{i}.wav"
        samples = 0.1 * rng.standard_normal(1600 * (i + 1)).astype(np.float32)
        soundfile.write(path, samples, 16000, subtype="PCM_16")
        paths.append(str(path))
    return paths


def _run(sources: list[str], out: Path, **options) -> list[object]:
    names = [Path(Path(s).stem + ".txt") for s in sources]
    return list(run_files(_describe, out, sources, names, out, "tests", **options))


def _tree(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.txt"))}


def test_a_failing_file_is_reported_and_the_others_go_on(tmp_path):
    sources = _recordings(tmp_path / "in", 4)
    Path(sources[1]).write_bytes(b"RIFF not audio at all")
    results = _run(sources, tmp_path / "out")
    assert [isinstance(r, Failure) for r in results] == [False, True, False, False]  # in order
    assert results[1].source == sources[1] and "not readable audio" in results[1].error
    assert sorted(_tree(tmp_path / "out")) == ["r0.txt", "r2.txt", "r3.txt"]


def test_shards_partition_the_files_and_together_write_the_whole_run(tmp_path):
    sources = _recordings(tmp_path / "in", 7)
    _run(sources, tmp_path / "whole")
    whole = _tree(tmp_path / "whole")
    shuffled = [sources[i] for i in (3, 6, 0, 5, 1, 4, 2)]  # any order gives the same shards
    parts = []
    for k in (1, 2, 3):
        _run(shuffled, tmp_path / f"shard{k}", shard=Shard(k, 3))
        parts.append(_tree(tmp_path / f"shard{k}"))
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sum(len(p) for p in parts) == len({name for p in parts for name in p}) == 7
    assert {**parts[0], **parts[1], **parts[2]} == whole


@pytest.mark.slow  # two spawned worker processes
def test_two_jobs_write_the_bytes_of_one(tmp_path):
    sources = _recordings(tmp_path / "in", 4)
    one = _run(sources, tmp_path / "one")
    two = _run(sources, tmp_path / "two", jobs=2)
    assert [Path(p).name for p in one] == [Path(p).name for p in two]
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two") and len(_tree(tmp_path / "one")) == 4


def test_outputs_beside_their_recordings_or_colliding_are_refused_before_any_work(tmp_path):
    sources = _recordings(tmp_path / "in", 2)
    (tmp_path / "in" / "r1.txt").write_text("a reference\n")
    with pytest.raises(PhonelabelError, match="r1.txt: exists beside its recording"):
        _run(sources, tmp_path / "in")
    assert (tmp_path / "in" / "r1.txt").read_text() == "a reference\n"
    assert not (tmp_path / "in" / "r0.txt").exists()
    names = [Path("same.txt"), Path("same.txt")]
    with pytest.raises(PhonelabelError, match="several inputs would write same.txt"):
        list(run_files(_describe, tmp_path, sources, names, tmp_path / "out", "tests"))


def test_beside_an_import_limits_numpy_blas_and_the_gil_interval_then_restores_them():
    import sys

    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    interval = sys.getswitchinterval()
    with threadpool_limits(2, user_api="blas"):
        assert blas_threads() and set(blas_threads()) == {2}
        with beside_an_import(1e-3):
            assert sys.getswitchinterval() == pytest.approx(1e-3)
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {2}
    assert sys.getswitchinterval() == interval
