"""Atomic writes keep the usual file permissions and leave no temp files behind."""

from __future__ import annotations

import os
import stat

import pytest

from phonelabel.fileio import atomic_dir, atomic_path, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_and_dirs_get_umask_permissions(tmp_path, umask_022):
    write_text(tmp_path / "a.txt", "hello\n")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    with atomic_dir(tmp_path / "store") as temp:
        (temp / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "store"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    write_text(tmp_path / "a.txt", "old\n")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d"):
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as temp:
            temp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "a.txt").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


# --- output_lock: one writer per output -------------------------------------------------

HOLD_LOCK = """
import sys, time
from phonelabel.fileio import output_lock
with output_lock(sys.argv[1], "a test output"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_lock(directory):
    """Another process holding the lock on ``directory`` (started, lock taken)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_writer_of_an_output_is_refused_while_the_first_runs(tmp_path):
    from phonelabel.errors import PhonelabelError
    from phonelabel.fileio import output_lock

    holder = _hold_lock(tmp_path / "out")
    try:
        with pytest.raises(PhonelabelError, match="another phonelabel run is writing") as error:
            with output_lock(tmp_path / "out", "a feature store"):
                pass
        assert str(tmp_path / "out") in str(error.value)
    finally:
        holder.terminate()
        holder.wait()
    with output_lock(tmp_path / "out", "a feature store"):  # free again once it ended
        (tmp_path / "out" / "kept").write_text("x")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept"]  # lock file removed


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    import signal

    from phonelabel.fileio import LOCK_FILE, output_lock

    holder = _hold_lock(tmp_path / "out")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "out" / LOCK_FILE).exists()  # left behind, but nobody holds it
    with output_lock(tmp_path / "out", "a model"):
        pass
    assert not (tmp_path / "out" / LOCK_FILE).exists()


def test_a_refused_run_leaves_no_directory_it_made(tmp_path):
    from phonelabel.errors import PhonelabelError
    from phonelabel.fileio import output_lock

    with pytest.raises(PhonelabelError, match="bad option"):
        with output_lock(tmp_path / "a" / "b", "a model"):
            raise PhonelabelError("bad option")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(PhonelabelError, match="exists and is not a directory"):
        with output_lock(tmp_path / "file", "a model"):
            pass
