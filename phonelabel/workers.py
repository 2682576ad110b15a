"""Worker processes that never outlive the run that started them; shards of a file list;
the one runner of many files (``run_files``: label, align and adapt).

featurize, synth, label and align fan work out to a pool of spawned processes (spawn, not fork: the
parent may hold torch/OpenMP threads that fork would copy mid-lock). Three ways a run
ends early, and what stops the workers in each:

- Ctrl-C reaches the whole foreground process group. Workers ignore SIGINT so that the
  parent alone decides; leaving ``worker_pool`` by an exception stops them at once
  rather than waiting for their tasks (a pool's own shutdown would wait, or hang on a
  worker that died mid-task): SIGTERM unwinds a task run through ``stoppable`` (its
  temp files removed, its engine subprocess killed) and ends the worker; SIGKILL
  follows for a worker still alive a second later.
- SIGTERM: the CLI turns it into the same exception as Ctrl-C.
- SIGKILL of the parent: the kernel sends each worker SIGKILL too (Linux's parent-death
  signal; elsewhere a thread in each worker polls its parent id). Engine subprocesses
  (festival, flite) get the same signal, so their worker's death ends them.

A ``Shard`` (``--shard K/N``, or torchrun's RANK and WORLD_SIZE) picks one share of a
file list, the same on every machine, so that a cluster's job array splits a list with
no coordination between its jobs.

``run_files`` runs a task over a file list with all of that: its output directory locked
and checked once, units of files shared by shard and by worker, results in the order
given, and an input's PhonelabelError turned into a ``Failure`` while the run goes on.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

from phonelabel.errors import PhonelabelError
from phonelabel.fileio import output_lock

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent exits; False where it cannot.

    Safe as a subprocess ``preexec_fn``: it only calls prctl(2), already looked up.
    """
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL) == 0


_PRCTL = _prctl()  # looked up once, not in a freshly forked child


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


class _Stop(BaseException):
    """SIGTERM in a worker's task (see ``stoppable``)."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def stoppable(function: Callable[[T], R], argument: T) -> R:
    """Run ``function(argument)`` in a worker so that SIGTERM unwinds it, then ends the worker.

    The pool's worker loop would catch the exception and go on to the next task; here the
    task's own clean-up (finally blocks, ``with`` exits) runs first, then the process exits.
    Between tasks (idle, or importing what the next task needs) SIGTERM simply ends the
    worker: an exception raised inside a C extension's import would print a traceback.
    """
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        return function(argument)
    except _Stop:
        os._exit(128 + signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_WORKER_STATE: dict[str, Any] = {}  # in a worker process: what its pool's ``setup`` made


def _init_worker(parent: int, setup: Callable[[], Any] | None) -> None:
    """Pool initializer: leave SIGINT to the parent; die with the parent; run ``setup``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since its start
    if not die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    if setup is not None:
        _WORKER_STATE["state"] = setup()


def worker_state() -> Any:
    """In a worker of ``worker_pool(jobs, setup)``: what ``setup()`` returned there."""
    return _WORKER_STATE["state"]


@contextmanager
def worker_pool(jobs: int, setup: Callable[[], Any] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A spawn-context process pool whose workers die with this process (module docstring).

    Left normally, it waits for the workers; left by any exception (an error, Ctrl-C,
    SIGTERM, a generator closed early) it stops them at once (SIGTERM, then SIGKILL for
    any still alive a second later). Submit tasks as ``stoppable, function, argument``.
    ``setup`` (picklable: a top-level function or a partial of one) runs once in each
    worker as it starts, for what its tasks share (a loaded model): ``worker_state()``.
    """
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), setup),
    )
    try:
        # start every worker now, with Ctrl-C blocked: a process inherits the mask, so a
        # Ctrl-C while a worker still imports cannot print its traceback
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(jobs):
                pool.submit(int)  # each submit starts one more worker, up to jobs
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        yield pool
    except BaseException:
        processes = list((pool._processes or {}).values())  # no public way to kill them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + 1.0
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        raise
    pool.shutdown(wait=True)


def check_counts(**counts: int) -> None:
    """Each count (``jobs=2``) a whole number of at least 1; else PhonelabelError naming it."""
    for name, value in counts.items():
        if not (isinstance(value, int) and value >= 1):
            raise PhonelabelError(f"{name} {value!r}: must be at least 1")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a cluster job's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def beside_an_import(interval: float = 5e-4) -> Iterator[None]:
    """For numpy work in this thread while another imports (torch: 1.3 s holding the GIL):
    numpy's BLAS on one thread (its pool's spinning threads would take the importer's core)
    and a GIL switch interval of ``interval`` seconds instead of 5 ms (each numpy call
    gives up the GIL and waits up to the interval to get it back). Together they end the
    first read of `label` with torch's import, not 0.3 s after it. Both are the process's:
    only the main thread sets them (a library's worker threads leave them alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from threadpoolctl import threadpool_limits

    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        sys.setswitchinterval(before)


def _start_torch_worker(state: Any, threads: int) -> Any:
    import torch  # here, not at the top: featurize's workers never import torch

    torch.set_num_threads(threads)
    return state


def _run_task(task: Callable[[Any, T], R], unit: T) -> R:
    return task(worker_state(), unit)


def map_in_workers(
    task: Callable[[S, T], R], state: S, units: Sequence[T], jobs: int
) -> Iterator[R]:
    """``task(state, unit)`` for each unit, results in order: in this process when ``jobs``
    is 1, else in ``jobs`` workers (at most one a unit). Each worker gets its own copy of
    ``state`` once, pickled (a ``label.Labeller`` pickles as its model dir and loads it
    again there), and an equal share of the cores for torch's threads: N workers on C cores
    run C // N threads each, so that they do not fight over the cores. ``task`` must be a
    top-level function.
    """
    if jobs == 1 or len(units) <= 1:
        yield from (task(state, unit) for unit in units)
        return
    jobs = min(jobs, len(units))
    setup = partial(_start_torch_worker, state, max(1, available_cores() // jobs))
    with worker_pool(jobs, setup) as pool:
        yield from pool.map(partial(stoppable, partial(_run_task, task)), units)


# --- shards: one share of a file list per job of a job array ---------------------------------

SHARD_ENVIRONMENT = ("RANK", "WORLD_SIZE")  # what torchrun (and torch.distributed) set


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1 .. ``count``) of a list (``work_units``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise PhonelabelError(f"shard {self.index}/{self.count}: N must be at least 1")
        if not 1 <= self.index <= self.count:
            raise PhonelabelError(f"shard {self.index}/{self.count}: K must be 1 to {self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """For file names: ``shard-2-of-8``."""
        return f"shard-{self.index}-of-{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``K/N`` as given on the command line, e.g. ``3/8``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise PhonelabelError(f"shard {text!r}: expected K/N, e.g. 1/4 (share K of N)")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Shard | None:
        """torchrun's RANK and WORLD_SIZE (rank 0 = shard 1), or None when they are not both
        set or the world is one process."""
        environ = os.environ if environ is None else environ
        if not all(name in environ for name in SHARD_ENVIRONMENT):
            return None
        rank, world, _ = torchrun_place(environ)
        return cls(rank + 1, world) if world > 1 else None


def torchrun_place(environ: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """This process's (RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them, or None when
    WORLD_SIZE is not set; PhonelabelError when they are not a valid place. Training's ranks
    (``distributed.ranks_from_env``) and labelling's shards both read them here."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    try:
        world = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise PhonelabelError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)"
        ) from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise PhonelabelError(f"RANK {rank} and WORLD_SIZE {world}: not a valid rank")
    return rank, world, local_rank


def resolve_shard(text: str | None) -> Shard | None:
    """``--shard K/N`` when given, else torchrun's RANK/WORLD_SIZE, else None (everything)."""
    return Shard.parse(text) if text is not None else Shard.from_environment()


def work_units(keys: Sequence[Any], group: int = 1, shard: Shard | None = None) -> list[list[int]]:
    """Positions in ``keys`` in units of ``group`` neighbours of their sorted order; with
    ``shard`` K/N, only every N-th unit from the K-th. Units come in the order of their first
    position (with ``group`` 1 and no shard: every position, as given).

    Sorting makes units and shards independent of the order the list was given in (a shell
    glob, ``find``), so every job of an array, given the same list, agrees on them; taking
    every N-th unit spreads a folder's files (often alike in length) over the shards.
    """
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    units = [order[start : start + group] for start in range(0, len(order), group)]
    if shard is not None:
        units = units[shard.index - 1 :: shard.count]
    return sorted(units, key=min)


# --- many files: the one runner of label, align and adapt ------------------------------------


@dataclass
class Failure:
    """An input that failed: its path and the one-line reason. The run goes on without it."""

    source: str
    error: str


def check_targets(sources: Sequence[str], names: Sequence[Path], directory: Path) -> None:
    """Refuse a run whose outputs collide, or would overwrite a file beside its recording
    (a reference alignment, most likely): PhonelabelError naming it."""
    if len(set(names)) < len(names):
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        raise PhonelabelError(f"{directory}: several inputs would write {', '.join(twice)}")
    for source, name in zip(sources, names, strict=True):
        target = directory / name
        if target.exists() and target.resolve().parent == Path(source).resolve().parent:
            raise PhonelabelError(
                f"{target}: exists beside its recording (a reference alignment?); "
                "give another --out"
            )


FileTask = Callable[[S, list[tuple[str, Path]]], list[Any]]


def _run_unit(run: tuple[FileTask, Any], unit: list[tuple[str, Path]]) -> list[Any]:
    task, state = run
    results = task(state, unit)
    return [
        Failure(source, str(result)) if isinstance(result, PhonelabelError) else result
        for (source, _), result in zip(unit, results, strict=True)
    ]


def run_files(
    task: FileTask,
    state: S,
    sources: Sequence[str],
    names: Sequence[Path],
    out: str | Path | None,
    what: str,
    jobs: int = 1,
    group: int = 1,
    shard: Shard | None = None,
) -> Iterator[Any]:
    """Run ``task(state, unit)`` over the ``sources`` and yield one result per source (in the
    order given, a unit's together), or a ``Failure`` where the task returned a
    PhonelabelError: one input's failure does not stop the others.

    A unit is a list of (source, output name) of ``group`` neighbours in sorted order
    (``work_units``); ``shard`` keeps only its share of the units; ``jobs`` worker processes
    share them (``map_in_workers``: ``task`` a top-level function, ``state`` picklable).
    ``names`` (one per source, relative to ``out``) come from the whole list, so that every
    shard names its outputs as the whole run does. With ``out`` the directory is locked for
    the run (``fileio.output_lock``: a second run writing ``what`` there, or the same shard
    of it, is refused) and checked (``check_targets``) before any work; the task writes its
    outputs under it, each atomically (``fileio``). Sources are strings, as given.
    """
    check_counts(jobs=jobs)
    directory = Path(out) if out is not None else None
    lock: Any = nullcontext()
    if directory is not None:  # a second run writing the same output (or shard) is refused
        held = what if shard is None else f"{what} (shard {shard})"
        lock = output_lock(directory, held, shard.name if shard is not None else None)
    with lock:
        if directory is not None:
            check_targets(sources, names, directory)
        units = [
            [(sources[i], names[i]) for i in unit] for unit in work_units(sources, group, shard)
        ]
        for results in map_in_workers(_run_unit, (task, state), units, jobs):
            yield from results
