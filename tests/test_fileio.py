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
