"""Training throughput: phonelabel's TBPTT step vs a bare nn.LSTM loop vs one utterance per
update; the training split on the device vs streamed from host memory; N processes vs one.

The first three train the same network size on the same frames in one process, so the ratio
is what DESIGN.md §8 targets (>= 0.85 of bare on CPU; >= 1 M frames/s on an H100). The host
path (``--data-on host``) gathers each window from a memory-mapped file (target: >= 0.9 of
the on-device path). ``--nproc N`` runs N processes (on the CPU summing gradients in shared
memory, or with gloo under PHONELABEL_SHARED_MEMORY=0; NCCL on CUDA: one GPU each) on the
same global streams, each with 1/N of the CPU threads, against one process with all of them
(target on CPU: >= 0.90, DESIGN.md §8).

    python bench/train_speed.py                    # CPU, default 2 x 256 model, 32 streams, k1 = 20
    python bench/train_speed.py --nproc 2          # 2 CPU processes vs 1
    python bench/train_speed.py --device cuda --streams 256 --frames 2000000
    python bench/train_speed.py --device cuda --streams 512 --nproc 2   # 2 GPUs, NCCL
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from host_steal import Steal

from phonelabel.distributed import SINGLE, Ranks, process_group
from phonelabel.model import ModelConfig, PhoneLSTM
from phonelabel.train import (
    HostSplit,
    RunState,
    SplitTensors,
    TrainConfig,
    build_schedule,
    make_optimizer,
    run_epoch,
)


def synthetic_split(frames: int, dim: int, seed: int = 0):
    """TIMIT-like utterance lengths (mean ~300 frames) filled with random frames/labels."""
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < frames:
        lengths.append(int(rng.integers(150, 450)))
    total = sum(lengths)
    features = rng.standard_normal((total, dim)).astype(np.float32)
    labels = rng.integers(0, 61, total).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return features, labels, offsets, np.array(lengths)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def host_split(features: np.ndarray, labels: np.ndarray, offsets, device, folder: str) -> HostSplit:
    """The split as the host path reads a store: features memory-mapped from a .npy file
    (one speaker, normalised by mean 0 / std 1: the same arithmetic as real statistics)."""
    np.save(Path(folder) / "features.npy", features)
    raw = np.load(Path(folder) / "features.npy", mmap_mode="r")
    ones = np.ones((1, features.shape[1]), np.float32)
    zeros = np.zeros(len(offsets), np.int64)
    return HostSplit(raw, labels, np.asarray(offsets), zeros, 0 * ones, ones, device)


def bench_phonelabel(args, device, data, offsets, lengths, ranks: Ranks = SINGLE) -> float:
    config = TrainConfig.of(
        hidden=args.hidden,
        layers=args.layers,
        k1=args.k1,
        k2=args.k2,
        batch_streams=args.streams,
        dropout=0.0,
        input_noise=0.0,
        checkpoint_seconds=1e9,
        precision=args.precision,
    )
    torch.manual_seed(0)
    model = PhoneLSTM(ModelConfig(args.dim, args.hidden, args.layers, 0.0)).to(device)
    optimizer = make_optimizer(model, config)  # as `phonelabel train` makes it (fused Adam)
    share = ranks.streams(args.streams)
    schedule = build_schedule(offsets, lengths, np.arange(len(lengths)), config).streams(share)
    if isinstance(data, SplitTensors):
        schedule = schedule.to(device)
    run = RunState(
        lr=1e-3, totals=dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0)
    )
    state = model.zero_state(share.stop - share.start, device)
    # warm-up on a short schedule, then the timed epoch
    warm = TrainConfig(**{**config.__dict__})
    head = _head(schedule, 10)
    run_epoch(model, optimizer, data, head, warm, run, state, None, lambda s: None, ranks)
    run.totals = dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0)
    sync(device)
    barrier(ranks)
    start = time.perf_counter()
    run_epoch(model, optimizer, data, schedule, config, run, state, None, lambda s: None, ranks)
    sync(device)
    barrier(ranks)
    return run.totals["frames"] / (time.perf_counter() - start)  # all ranks' frames


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        torch.distributed.barrier()


def _rank(rank: int, args, port: int, threads: int, result: str, independent: bool) -> None:
    """One of --nproc processes: its share of the streams, ``threads`` CPU threads; writes its
    best frames/s to ``result``.<rank>. ``independent``: no process group and nothing summed,
    each process its own 1/N of the streams (what the N would make if agreeing were free)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    ranks = SINGLE if independent else Ranks(rank, args.nproc, rank)
    if independent:
        args = argparse.Namespace(**{**vars(args), "streams": args.streams // args.nproc})
    with nullcontext() if independent else process_group(ranks):
        device = torch.device(f"cuda:{rank}" if args.device.startswith("cuda") else args.device)
        features, labels, offsets, lengths = synthetic_split(args.frames, args.dim)
        data = SplitTensors.from_arrays(features, labels, device)
        speeds = [bench_phonelabel(args, device, data, offsets, lengths, ranks) for _ in range(2)]
    Path(f"{result}.{rank}").write_text(json.dumps(max(speeds)))


def _spawn(args, threads: int, independent: bool) -> float:
    """frames/s of --nproc processes: the ranks' (each counts all frames), or the sum of the
    independent processes'."""
    with socket.socket() as s, tempfile.TemporaryDirectory() as folder:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        result = str(Path(folder) / "fps")
        spawn = torch.multiprocessing.spawn
        spawn(_rank, (args, port, threads, result, independent), nprocs=args.nproc)
        speeds = [json.loads(Path(f"{result}.{r}").read_text()) for r in range(args.nproc)]
    return sum(speeds) if independent else speeds[0]


QUIET_STEAL = 0.05  # a round whose host took more of the CPU than this is a noisy one


def bench_processes(args, device, data, offsets, lengths) -> dict:
    """One process with every thread vs --nproc processes splitting the threads (CPU), in
    --repeats rounds: each the best of two epochs of one process and the best of two of the
    N ranks (started anew), in turn first (ABBA), then N independent processes with the same
    streams and nothing summed. Rounds pair them in time, so drift in the machine's speed
    (this VM's step time wanders by 10-20 % over minutes) hits all sides of a ratio alike;
    the medians of the rounds' ratios are the figures: against one process (the target),
    and against the independent processes (what agreeing on the sum costs). Each round
    reports the share of CPU time the host stole meanwhile (a VM's noisy neighbours), and
    the median over the rounds where it stole at most QUIET_STEAL is given apart."""
    threads = torch.get_num_threads()
    per_rank = max(1, threads // args.nproc)

    def one_process() -> float:
        return max(bench_phonelabel(args, device, data, offsets, lengths) for _ in range(2))

    rounds = []
    for round_ in range(max(1, args.repeats)):
        with Steal() as steal:
            if round_ % 2 == 0:
                one = one_process()
            many = _spawn(args, per_rank, independent=False)
            if round_ % 2 == 1:
                one = one_process()
            alone = _spawn(args, per_rank, independent=True)
        rounds.append(
            {
                "one_process": round(one),
                f"{args.nproc}_processes": round(many),
                f"{args.nproc}_independent": round(alone),
                "ratio": round(many / one, 3),
                "ratio_to_independent": round(many / alone, 3),
                "host_steal": steal.share,
            }
        )
    quiet = [r for r in rounds if r["host_steal"] is not None and r["host_steal"] <= QUIET_STEAL]
    return {
        "rounds": rounds,
        "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
        "ratio_to_independent_median": round(
            statistics.median(r["ratio_to_independent"] for r in rounds), 3
        ),
        f"ratio_median_host_steal_at_most_{QUIET_STEAL}": round(
            statistics.median(r["ratio"] for r in quiet), 3
        )
        if quiet
        else None,
        "quiet_rounds": len(quiet),
        "threads": f"{threads} in one process; {per_rank} in each of {args.nproc}",
    }


def _head(schedule, steps):
    from dataclasses import replace

    return replace(
        schedule,
        x_index=schedule.x_index[:steps],
        y_index=schedule.y_index[:steps],
        reset=schedule.reset[:steps],
        frames=schedule.frames[:steps],
        widths=None if schedule.widths is None else schedule.widths[:steps],
    )


def bench_bare(args, device, data, steps: int) -> float:
    """nn.LSTM + Linear on pre-cut (B, k1, D) chunks: forward, CE, backward, clip, fused Adam."""
    torch.manual_seed(0)
    dim = data.features.shape[1]
    lstm = torch.nn.LSTM(dim, args.hidden, args.layers, batch_first=True).to(device)
    output = torch.nn.Linear(args.hidden, 61).to(device)
    # Adam at 1e-3, fused where torch has the kernel: phonelabel's own optimiser
    optimizer = make_optimizer(torch.nn.ModuleList([lstm, output]), TrainConfig(lr=1e-3))
    n = data.features.shape[0] - 1
    chunk = args.streams * args.k1
    xs = [
        data.features[(i * chunk) % (n - chunk) :][:chunk].view(args.streams, args.k1, dim)
        for i in range(64)
    ]
    ys = [
        data.labels[(i * chunk) % (n - chunk) :][:chunk].view(args.streams, args.k1)
        for i in range(64)
    ]
    state = None

    def step(i):
        nonlocal state
        hidden, state = lstm(xs[i % 64], state)
        state = (state[0].detach(), state[1].detach())
        loss = F.cross_entropy(output(hidden).reshape(-1, 61), ys[i % 64].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(lstm.parameters()), 1.0)
        optimizer.step()

    for i in range(10):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return steps * chunk / (time.perf_counter() - start)


def bench_naive(args, device, data, offsets, lengths, utterances: int) -> float:
    """One utterance per update, whole-utterance BPTT: the loop people write first (torch's
    default Adam, not fused)."""
    torch.manual_seed(0)
    model = PhoneLSTM(ModelConfig(data.features.shape[1], args.hidden, args.layers, 0.0)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = 0
    sync(device)
    start = time.perf_counter()
    for u in range(utterances):
        o, t = int(offsets[u]), int(lengths[u])
        logits, _ = model(data.features[o : o + t][None])
        loss = F.cross_entropy(logits[0], data.labels[o : o + t])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        frames += t
    sync(device)
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=200_000, help="frames in the timed epoch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=0)
    parser.add_argument("--dim", type=int, default=39)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternating runs, best of each (--nproc: paired rounds)",
    )
    parser.add_argument("--nproc", type=int, default=1, help="N processes vs one (DDP)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    features, labels, offsets, lengths = synthetic_split(args.frames, args.dim)
    data = SplitTensors.from_arrays(features, labels, device)
    header = {
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "model": f"{args.layers}x{args.hidden}, input {args.dim}",
        "streams": args.streams,
        "k1": args.k1,
        "k2": args.k2 or args.k1,
    }
    if args.nproc > 1:
        report = {
            **header,
            "frames_per_second": bench_processes(args, device, data, offsets, lengths),
        }
        print(json.dumps(report, indent=2))
        return
    chunk = args.streams * args.k1
    results = {"phonelabel": [], "host": [], "bare": []}
    with tempfile.TemporaryDirectory() as folder:
        host = host_split(features, labels, offsets, device, folder)
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            results["phonelabel"].append(bench_phonelabel(args, device, data, offsets, lengths))
            results["host"].append(bench_phonelabel(args, device, host, offsets, lengths))
            results["bare"].append(bench_bare(args, device, data, max(args.frames // chunk, 20)))
    naive = bench_naive(args, device, data, offsets, lengths, min(len(lengths), 200))
    phonelabel, bare, streamed = (
        max(results["phonelabel"]),
        max(results["bare"]),
        max(results["host"]),
    )
    report = {
        **header,
        "frames_per_second": {
            "phonelabel": round(phonelabel),
            "phonelabel_data_on_host": round(streamed),
            "bare_lstm": round(bare),
            "one_utterance_per_update": round(naive),
        },
        "ratio_to_bare": round(phonelabel / bare, 3),
        "ratio_host_to_device": round(streamed / phonelabel, 3),
        "speedup_over_naive": round(phonelabel / naive, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
