"""Training in several processes (``torchrun``): which one this is, the process group, and
the few collectives the TBPTT loop needs (DESIGN.md §6).

torchrun starts one process per GPU (or per CPU share) and tells each its RANK, WORLD_SIZE
and LOCAL_RANK, plus MASTER_ADDR/MASTER_PORT of the rendezvous. Without them a run is one
process and none of this does anything. Gradients are summed over the ranks while backward
still runs (``summed_gradients``): each parameter's gradient is ready once autograd has
accumulated it, the parameters go into buckets of a few MB in the reverse of their order
(backward makes the output layer's first, then the LSTM's top layer, ...), and a bucket's
all-reduce starts, asynchronously, as soon as all its gradients are in; the update waits for
the last one. The loss is already divided by the *global* count of scored frames, so the sum
over ranks is exactly the one-process gradient (torch's DistributedDataParallel wrapper
would average, and syncs only through ``forward``, not ``forward_with_resets``).

CPU ranks on one machine sum their gradients through shared memory instead
(``SharedMemorySum``): gloo's TCP all-reduce of the 2 x 256 model's 3.4 MB took 6 ms of
each rank's one core per step, a fifth of the step, and overlapping it with backward gains
nothing where every core already computes.
"""

from __future__ import annotations

import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from phonelabel.errors import PhonelabelError
from phonelabel.workers import available_cores, torchrun_place

T = TypeVar("T")
TIMEOUT_VARIABLE = "PHONELABEL_DIST_TIMEOUT"  # seconds to wait for the other processes


class ReportedByRankZero(PhonelabelError):
    """An error every rank stops on, which rank 0 prints (the others exit quietly)."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def streams(self, total: int) -> slice:
        """This rank's contiguous share of ``total`` streams (total % world == 0)."""
        share = total // self.world
        return slice(self.rank * share, (self.rank + 1) * share)

    def items(self, count: int) -> list[int]:
        """This rank's share of ``count`` items (dev utterances): every world-th one."""
        return list(range(self.rank, count, self.world))

    def check_streams(self, streams: int) -> None:
        if streams < self.world:
            raise PhonelabelError(
                f"{self.world} training processes but only {streams} batch_streams: each "
                "process needs at least one stream"
            )
        if streams % self.world:
            raise PhonelabelError(
                f"batch_streams ({streams}) is not a multiple of the {self.world} training "
                f"processes: each runs batch_streams / {self.world} of them"
            )


SINGLE = Ranks()


def ranks_from_env(env: dict[str, str] | None = None) -> Ranks:
    """This process's place among torchrun's (RANK, WORLD_SIZE, LOCAL_RANK); one process
    when WORLD_SIZE is absent."""
    place = torchrun_place(env)
    return SINGLE if place is None else Ranks(*place)


@contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """Join the other training processes (NCCL for CUDA tensors, gloo for CPU ones) for the
    duration; nothing to do for one process."""
    if not ranks.distributed:
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
    timeout = _timeout()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo",
            rank=ranks.rank,
            world_size=ranks.world,
            timeout=timeout,
        )
    except (RuntimeError, ValueError, dist.DistError) as error:
        reason = (str(error).strip().splitlines() or ["no reason given"])[0]
        raise PhonelabelError(
            f"rank {ranks.rank} of {ranks.world}: cannot reach the rendezvous at {where} "
            f"({reason}); check torchrun's --rdzv-endpoint (or MASTER_ADDR/MASTER_PORT) and "
            "that every node runs the same command"
        ) from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def _timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get(TIMEOUT_VARIABLE, "600")))
    except ValueError:
        raise PhonelabelError(f"{TIMEOUT_VARIABLE} must be a number of seconds") from None


def agree(ranks: Ranks, step: Callable[[], T]) -> T:
    """Run ``step`` on every rank; if any rank fails, all stop on the lowest rank's error
    (rank 0 prints it), so a refused run is refused once, before anything is written."""
    if not ranks.distributed:
        return step()
    result, error = None, None
    try:
        result = step()
    except PhonelabelError as failure:
        error = str(failure)
    errors: list[Any] = [None] * ranks.world
    dist.all_gather_object(errors, error)
    for rank, message in enumerate(errors):
        if message is not None:
            prefix = f"rank {rank}: " if rank else ""
            raise ReportedByRankZero(prefix + message)
    return result  # type: ignore[return-value]


def broadcast(ranks: Ranks, value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object, tensors included)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


BUCKET_BYTES = 2 << 20  # a bucket closes once it holds this much


class GradientBuckets:
    """Parameters grouped for all-reduce, in reverse order, each bucket closed once it holds
    ``bucket_bytes`` (as DDP's reducer does). The 2 x 256 model's 3.4 MB make two: the output
    layer with the top LSTM layer, all-reduced while backward runs through the layer below,
    then that layer. Every rank builds the same buckets. CPU ranks that share one machine
    sum through shared memory instead (``shared``: ``SharedMemorySum``), after backward."""

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        bucket_bytes: int = 0,
        ranks: Ranks = SINGLE,
    ):
        bucket_bytes = bucket_bytes or BUCKET_BYTES
        trainable = [p for p in parameters if p.requires_grad]
        self.shared = SharedMemorySum.between(ranks, trainable)
        self.buckets: list[list[torch.nn.Parameter]] = [[]]
        size = 0
        for p in reversed(trainable):
            if size >= bucket_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self.where = {id(p): b for b, bucket in enumerate(self.buckets) for p in bucket}


@contextmanager
def summed_gradients(buckets: GradientBuckets, ranks: Ranks) -> Iterator[None]:
    """Around ``loss.backward()``: on leaving, every parameter's gradient is its sum over
    the ranks. Buckets are all-reduced in order (collectives must match across ranks), each
    started from autograd's hooks as soon as it and the ones before it are complete, so the
    communication overlaps the rest of backward. Nothing to do for one process; ranks on
    one machine's CPU sum everything through ``buckets.shared`` once backward is done."""
    if not ranks.distributed:
        yield
        return
    if buckets.shared is not None:
        yield
        buckets.shared.sum_gradients([p for bucket in buckets.buckets for p in bucket])
        return
    missing = [len(bucket) for bucket in buckets.buckets]
    arrived: set[int] = set()
    started: list[tuple[torch.Tensor, Any]] = []

    def start_ready() -> None:
        while len(started) < len(missing) and missing[len(started)] == 0:
            bucket = buckets.buckets[len(started)]
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])  # type: ignore[union-attr]
            started.append((flat, dist.all_reduce(flat, async_op=True)))

    def ready(p: torch.Tensor) -> None:
        arrived.add(id(p))
        missing[buckets.where[id(p)]] -= 1
        start_ready()

    hooks = [p.register_post_accumulate_grad_hook(ready) for b in buckets.buckets for p in b]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
    for bucket in buckets.buckets:  # a parameter backward did not reach: a zero gradient
        for p in bucket:
            if id(p) not in arrived:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                ready(p)
    for (flat, work), bucket in zip(started, buckets.buckets, strict=True):
        work.wait()
        offset = 0
        for p in bucket:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))  # type: ignore[union-attr]
            offset += p.numel()


SHARED_MEMORY_VARIABLE = "PHONELABEL_SHARED_MEMORY"  # "0": CPU ranks sum with gloo, always


class SharedMemorySum:
    """Sums gradients over the ranks of one machine through a shared file (in /dev/shm
    where there is one): each rank copies its gradients into its slot and says so (a
    sequence number in the file); once every rank has, each adds up all the slots, in rank
    order, straight into its gradients. One hand-over per step, no sockets: about a
    millisecond for the default model's 3.4 MB, where gloo's TCP all-reduce took 6. Every
    rank gets the same bits. The slots come in two sets, used in turn: a rank writes a set
    again only after every rank has said it reached the step after the one that read it.
    Only on x86, whose cores see each other's stores in the order they were made (what the
    counters rely on); elsewhere gloo sums.

    The file is removed as soon as every rank has it mapped, so nothing stays behind, even
    after a crash. A rank waiting for a partner that died stops within a second or two (it
    checks the partner's process); one whose partners stop answering, after the process
    group's timeout."""

    HEADER = 64  # bytes: rank 0's nonce, proof that every rank mapped the same file
    SPIN_SECONDS = 0.5e-3  # a wait checks without pause this long (most waits end in it)
    YIELD_SECONDS = 20e-3  # then yields the core until the wait is this old, then sleeps

    def __init__(self, ranks: Ranks, mapped: np.memmap, numel: int, dtype: torch.dtype):
        self.ranks, self.mapped = ranks, mapped
        self.sequence = 0
        self.timeout = _timeout().total_seconds()
        flags = mapped[self.HEADER : self.HEADER + 64 * ranks.world].view(np.int64)
        self.flags = flags.reshape(ranks.world, 8)[:, 0]  # a cache line per rank's counter
        data = mapped[self.HEADER + 64 * ranks.world :].view(_numpy_dtype(dtype))
        self.slots = torch.from_numpy(data).view(2, ranks.world, numel)  # [set, rank]
        self.partners: list[int] = []  # process ids to watch while waiting
        fits = ranks.world <= available_cores()  # else a waiting rank gives its core up
        self.yield_seconds = self.YIELD_SECONDS if fits else 0.0

    @staticmethod
    def nbytes(ranks: Ranks, numel: int, dtype: torch.dtype) -> int:
        item = torch.empty(0, dtype=dtype).element_size()
        return SharedMemorySum.HEADER + 64 * ranks.world + item * numel * 2 * ranks.world

    @classmethod
    def between(cls, ranks: Ranks, parameters: list[torch.nn.Parameter]) -> SharedMemorySum | None:
        """One for these parameters' gradients when the ranks are CPU processes on one x86
        machine and every one of them maps the same file, else None (gloo or NCCL sums).
        Every rank takes part in the same collectives whatever fails where, so all agree."""
        if not ranks.distributed:
            return None
        dtype = parameters[0].dtype
        local = (
            os.environ.get(SHARED_MEMORY_VARIABLE, "1") != "0"
            and platform.machine().lower() in ("x86_64", "amd64")
            and all(p.device.type == "cpu" and p.dtype == dtype for p in parameters)
            and dtype in (torch.float16, torch.float32, torch.float64)
        )
        places: list[Any] = [None] * ranks.world
        dist.all_gather_object(places, _machine() if local else None)
        if None in places or len(set(places)) != 1:
            return None
        numel = sum(p.numel() for p in parameters)
        nbytes = cls.nbytes(ranks, numel, dtype)
        nonce = int.from_bytes(os.urandom(8), "little") >> 1
        path = _shared_file(nbytes, nonce) if ranks.main else None
        path, nonce = broadcast(ranks, (path, nonce))
        mapped = None
        if path is not None:
            try:
                mapped = np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,))
                if int(mapped[:8].view(np.int64)[0]) != nonce:  # not the file rank 0 made
                    mapped = None
            except (OSError, ValueError):
                mapped = None
        found: list[Any] = [None] * ranks.world
        dist.all_gather_object(found, os.getpid() if mapped is not None else None)
        if ranks.main and path is not None:
            os.unlink(path)  # every rank has it mapped (or gave up): nothing stays behind
        if mapped is None or None in found:
            return None
        shared = cls(ranks, mapped, numel, dtype)
        shared.partners = [pid for rank, pid in enumerate(found) if rank != ranks.rank]
        if not all(map(_alive, shared.partners)):  # other process namespaces: do not watch
            shared.partners = []
        return shared

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Every parameter's gradient (None: zeros) replaced by its sum over the ranks."""
        self.sequence += 1
        slots = self.slots[self.sequence % 2]  # (world, numel)
        mine, offset = slots[self.ranks.rank], 0
        for p in parameters:
            n = p.numel()
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            mine[offset : offset + n].copy_(p.grad.reshape(-1))
            offset += n
        self._publish(self.sequence)
        self._wait(self.sequence)
        offset = 0
        for p in parameters:
            n = p.numel()
            parts = slots[:, offset : offset + n]
            grad = p.grad.view(-1)  # type: ignore[union-attr]
            torch.add(parts[0], parts[1], out=grad)
            for rank in range(2, self.ranks.world):
                grad += parts[rank]
            offset += n

    def _publish(self, value: int) -> None:
        self.flags[self.ranks.rank] = value  # after the slot's stores (x86 keeps their order)

    def _wait(self, value: int) -> None:
        """Until every rank has reached ``value``: spin for the usual wait (a fraction of a
        millisecond), then yield the core (``sched_yield``: runnable work runs, else this
        rank goes on checking) until the wait is ``YIELD_SECONDS`` old, then sleep. Sleeping at once
        idled the core for each of the many few-millisecond waits of a VM whose vCPUs are
        preempted by the host; yielding trained 1-13 % faster (5 alternated pairs). With
        more ranks than cores to run on, a rank sleeps after the spin, so that the partner
        it waits for can have its core."""
        start, checked = time.monotonic(), 0.0
        while self.flags.min() < value:
            waited = time.monotonic() - start
            if waited < self.SPIN_SECONDS:
                continue
            if waited < self.yield_seconds:
                os.sched_yield()
                continue
            time.sleep(50e-6 if waited < 1.0 else 1e-3)
            if waited - checked > 1.0:
                checked = waited
                if not all(map(_alive, self.partners)):
                    raise PhonelabelError(f"rank {self.ranks.rank}: another training process died")
            if waited > self.timeout:
                raise PhonelabelError(
                    f"rank {self.ranks.rank}: the other training processes stopped "
                    f"answering for {self.timeout:.0f} s"
                )


def _shared_file(nbytes: int, nonce: int) -> str | None:
    """A new file of ``nbytes`` starting with ``nonce``, its space reserved (a tmpfs over
    its size would kill the process with SIGBUS on first touch, not fail here); None when
    it cannot be made."""
    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    try:
        descriptor, path = tempfile.mkstemp(prefix="phonelabel-gradients-", dir=folder)
    except OSError:
        return None
    try:
        os.posix_fallocate(descriptor, 0, nbytes)
        os.pwrite(descriptor, nonce.to_bytes(8, "little"), 0)
    except (OSError, AttributeError):  # no room; no posix_fallocate (macOS)
        os.unlink(path)
        return None
    finally:
        os.close(descriptor)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def _machine() -> str:
    """This machine (and boot): ranks that agree on it can share memory."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return torch.empty(0, dtype=dtype).numpy().dtype


def sum_values(values: torch.Tensor) -> torch.Tensor:
    """In place: the sum over ranks of a tensor of counters."""
    dist.all_reduce(values)
    return values


def sum_array(ranks: Ranks, array: np.ndarray) -> np.ndarray:
    """The sum over ranks of an integer numpy array (a confusion matrix)."""
    if not ranks.distributed:
        return array
    return sum_values(torch.from_numpy(np.ascontiguousarray(array))).numpy()


def gather_streams(ranks: Ranks, state: torch.Tensor) -> torch.Tensor:
    """(layers, B/N, H) per rank -> (layers, B, H), the ranks' shares in order (all ranks)."""
    if not ranks.distributed:
        return state
    parts = [torch.empty_like(state) for _ in range(ranks.world)]
    dist.all_gather(parts, state.contiguous())
    return torch.cat(parts, dim=1)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of one rank's dropout and input noise at one step: distinct per rank, and a
    resumed run draws exactly what the uninterrupted one drew, with no generator state saved."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def seed_generators(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` for the generators a rank draws from: the CPU's, and the
    GPUs' when it trains on one (all of them, as torch.manual_seed: ``--device cuda:N`` need
    not be the current device). The same streams, without torch.manual_seed's queueing of a
    seed for every device type not yet initialised, each with a formatted stack: 0.1 ms a
    call, every step."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)  # CUDA is initialised by now: seeded at once
