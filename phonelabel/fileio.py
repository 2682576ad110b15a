"""Atomic file writes: a temp file beside the target, then rename (nothing half-written);
and the lock that keeps a second run from writing the same output at once."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phonelabel.errors import PhonelabelError

LOCK_FILE = ".phonelabel.lock"  # inside an output while a run writes it; not part of the output
# Tests of exact resume only: "NAME:N" makes a process SIGKILL itself in its Nth atomic write
# of a file named NAME, once the data is written and before the rename (a crash's worst moment).
KILL_WRITING = "PHONELABEL_TEST_KILL_WRITING"
_writes: dict[str, int] = {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's directory; on success rename it over ``target``.

    The file gets the usual permissions (0666 less the umask; mkstemp's are 0600) and is
    flushed to disk before the rename, so a crash leaves the old file or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temp_path = Path(temp)
    try:
        yield temp_path
        _kill_point(target.name)
        with open(temp_path, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temp_path, 0o666 & ~_umask())
        os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def _kill_point(name: str) -> None:
    name_and_count = os.environ.get(KILL_WRITING, "")
    if name_and_count.rpartition(":")[0] == name:
        _writes[name] = _writes.get(name, 0) + 1
        if str(_writes[name]) == name_and_count.rpartition(":")[2]:
            os.kill(os.getpid(), signal.SIGKILL)


def remove_left_overs(directory: Path) -> None:
    """Remove the temp files and directories of atomic writes that a killed process left in
    ``directory`` (call it holding the directory's ``output_lock``: no writer is alive)."""
    for path in directory.glob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temp:
        temp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as temp:
        temp.write_bytes(data)


def write_json(target: str | Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2) + "\n")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``target``; on success it replaces ``target`` whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temp
        os.chmod(temp, 0o777 & ~_umask())  # mkdtemp's 0700 -> the usual
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- output paths: checked before the work, not after it -----------------------------------


def output_directory(path: str | Path, create: bool = True) -> Path:
    """An output directory: refuse a file in its place or one that cannot be written;
    ``create`` it (with its parents) now, else only check that it could be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PhonelabelError(f"{path}: exists and is not a directory")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PhonelabelError(
                f"{path}: cannot create the directory ({error.strerror})"
            ) from None
    _check_writable(path, path)
    return path


def check_output_file(path: str | Path) -> Path:
    """An output file: refuse a directory in its place or a folder that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise PhonelabelError(f"{path}: is a directory (give a file name)")
    _check_writable(path, path.parent)
    return path


def _check_writable(path: Path, folder: Path) -> None:
    """``folder`` (or its nearest existing ancestor, where it is yet to be made) is writable."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PhonelabelError(f"{path}: cannot write there ({folder} is not a writable directory)")


@contextmanager
def output_lock(directory: str | Path, what: str, share: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``directory`` (made if missing) while writing it.

    A second phonelabel run that asks for the same output is refused at once with a
    PhonelabelError naming it. With ``share`` (a shard's name, ``shard-2-of-8``) the lock
    is on that share of the output alone: the jobs of an array write one directory side by
    side, each refusing only a second run of its own share. The lock is flock(2)'s, held by an open file: the kernel
    drops it when the holder exits, even by SIGKILL, so a killed run never blocks the next
    one (its lock file is simply reused). The lock file is removed on release, and the
    directories made here are removed again if left empty (a refused run leaves none).
    """
    directory = Path(directory)
    made = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    output_directory(directory)
    path = directory / (LOCK_FILE if share is None else f".phonelabel.{share}.lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError as error:
            raise PhonelabelError(f"{directory}: cannot write there ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PhonelabelError(
                f"{directory}: another phonelabel run is writing {what} there;"
                " wait for it to end or choose another output"
            ) from None
        try:  # the run before us may have removed the file between our open and our lock
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield directory
    finally:
        path.unlink(missing_ok=True)  # still locked: a run that opened it now retries
        os.close(fd)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: the output (or something else) is in it
                break
