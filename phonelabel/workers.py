"""Worker processes that never outlive the run that started them.

featurize and synth fan work out to a pool of spawned processes (spawn, not fork: the
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
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any, TypeVar

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
T = TypeVar("T")
R = TypeVar("R")


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


def _init_worker(parent: int) -> None:
    """Pool initializer: leave SIGINT to the parent; die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since its start
    if not die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


@contextmanager
def worker_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A spawn-context process pool whose workers die with this process (module docstring).

    Left normally, it waits for the workers; left by any exception (an error, Ctrl-C,
    SIGTERM, a generator closed early) it stops them at once (SIGTERM, then SIGKILL for
    any still alive a second later). Submit tasks as ``stoppable, function, argument``.
    """
    pool = ProcessPoolExecutor(
        jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
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
