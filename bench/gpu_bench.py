"""The sections of bench/gpu.sh (read its header): each prints lines "<section>: ..." with
its figures. Needs torch and phonelabel only, except ``label`` (soundfile, soxr, praatio:
bench/gpu.sh installs carried wheels); the data is made here (random frames, a learnable
synthetic phone task, tone WAVs), so nothing else is needed on the machine.

    python bench/gpu_bench.py train --device cuda          # one section
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import bench_bare, bench_phonelabel, host_split, synthetic_split  # noqa: E402

from phonelabel.config import CPU_STREAMS, GPU_STREAMS, TrainConfig  # noqa: E402
from phonelabel.distributed import process_group, ranks_from_env  # noqa: E402
from phonelabel.model import ModelConfig, PhoneLSTM, batched_log_posteriors  # noqa: E402
from phonelabel.train import RunState, SplitTensors, build_schedule, run_epoch  # noqa: E402


def sizes(args) -> SimpleNamespace:
    """What each section runs on: the real sizes, or tiny ones (--small: CPU in a minute)."""
    if args.small:
        return SimpleNamespace(wide=16, narrow=4, hidden=32, layers=1, frames=6000,
                               accuracy_frames=40_000, short_files=12, short_seconds=1.0,
                               long_seconds=60.0, batch_files=4, repeats=1)  # fmt: skip
    return SimpleNamespace(wide=GPU_STREAMS, narrow=CPU_STREAMS, hidden=256, layers=2,
                           frames=2_000_000, accuracy_frames=4_000_000, short_files=600,
                           short_seconds=3.0, long_seconds=3600.0, batch_files=32,
                           repeats=2)  # fmt: skip


def speed_args(args, size: SimpleNamespace, streams: int, precision: str = "fp32"):
    """The argument namespace bench/train_speed.py's functions read."""
    frames = size.frames if streams >= size.wide else max(size.frames // 8, 20 * streams * 20)
    return SimpleNamespace(hidden=size.hidden, layers=size.layers, k1=20, k2=0, dim=39,
                           streams=streams, precision=precision, frames=frames)  # fmt: skip


def precisions(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["fp32"]
    return ["fp32", "tf32"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])


def set_precision(precision: str) -> None:
    """tf32 as training sets it (matmuls and cuDNN); fp32 and bf16 without it."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"


def section_train(args, size) -> None:
    """phonelabel's TBPTT step vs a bare (cuDNN on CUDA) LSTM loop, wide and narrow batches,
    each precision; best of two interleaved runs."""
    device = torch.device(args.device)
    for streams in (size.wide, size.narrow):
        for precision in precisions(device):
            set_precision(precision)
            a = speed_args(args, size, streams, precision)
            features, labels, offsets, lengths = synthetic_split(a.frames, a.dim)
            data = SplitTensors.from_arrays(features, labels, device)
            ours, bare = [], []
            for _ in range(size.repeats):
                ours.append(bench_phonelabel(a, device, data, offsets, lengths))
                with torch.autocast(device.type, torch.bfloat16, precision == "bf16"):
                    bare.append(bench_bare(a, device, data, max(a.frames // (streams * 20), 20)))
            print(f"train: streams={streams} {precision} phonelabel {max(ours):.0f} frames/s, "
                  f"bare LSTM loop {max(bare):.0f} frames/s, ratio {max(ours) / max(bare):.3f}",
                  flush=True)  # fmt: skip
    set_precision("fp32")


def section_data_on(args, size) -> None:
    """The training split on the device vs streamed from (memory-mapped) host memory."""
    device = torch.device(args.device)
    a = speed_args(args, size, size.wide)
    features, labels, offsets, lengths = synthetic_split(a.frames, a.dim)
    on_device = SplitTensors.from_arrays(features, labels, device)
    with tempfile.TemporaryDirectory() as folder:
        host = host_split(features, labels, offsets, device, folder)
        speeds: dict[str, list[float]] = {"device": [], "host": []}
        for _ in range(size.repeats):
            speeds["device"].append(bench_phonelabel(a, device, on_device, offsets, lengths))
            speeds["host"].append(bench_phonelabel(a, device, host, offsets, lengths))
    device_fps, host_fps = max(speeds["device"]), max(speeds["host"])
    print(f"data-on: streams={size.wide} device {device_fps:.0f} frames/s, host "
          f"{host_fps:.0f} frames/s, ratio host/device {host_fps / device_fps:.3f}")  # fmt: skip


def section_train_once(args, size) -> None:
    """One timed epoch as this process's place among torchrun's (or alone) sees it."""
    ranks = ranks_from_env()
    with process_group(ranks):
        device = torch.device(args.device)
        if device.type == "cuda":
            device = torch.device("cuda", ranks.local_rank)
        a = speed_args(args, size, size.wide)
        features, labels, offsets, lengths = synthetic_split(a.frames, a.dim)
        data = SplitTensors.from_arrays(features, labels, device)
        fps = max(
            bench_phonelabel(a, device, data, offsets, lengths, ranks) for _ in range(size.repeats)
        )
    if ranks.main:
        print(f"FPS {fps:.0f}")


def section_torchrun(args, size) -> None:
    """torchrun --nproc-per-node 1 vs a plain process: the cost of the process group."""
    here = [str(Path(__file__).resolve()), "train-once", "--device", args.device]
    here += ["--small"] if args.small else []
    plain = [sys.executable, *here]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
                "--master-port", str(29500 + os.getpid() % 1000), *here]  # fmt: skip
    fps = {}
    runs = [("plain", plain), ("torchrun", torchrun), ("plain", plain)][: 1 + size.repeats]
    for name, command in runs:  # (--small: once each; the figures only need to exist)
        out = subprocess.run(command, capture_output=True, text=True, timeout=600)
        lines = [line for line in out.stdout.splitlines() if line.startswith("FPS ")]
        if out.returncode or not lines:
            raise SystemExit(f"torchrun: {name} run failed: {out.stderr[-2000:]}")
        fps[name] = max(fps.get(name, 0.0), float(lines[-1].split()[1]))
    print(f"torchrun: streams={size.wide} plain {fps['plain']:.0f} frames/s, torchrun 1 rank "
          f"{fps['torchrun']:.0f} frames/s, ratio {fps['torchrun'] / fps['plain']:.3f}")  # fmt: skip


def write_tones(path: Path, seconds: float, rng: np.random.Generator) -> None:
    """A WAV of chords and noise bursts (what labelling costs does not depend on speech)."""
    import soundfile

    rate, pieces, total = 16000, [], int(seconds * 16000)
    while sum(len(p) for p in pieces) < total:
        length = int(rng.integers(800, 2400))
        t = np.arange(length) / rate
        f = float(rng.uniform(150, 3000))
        wave = 0.2 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(length)
        pieces.append(wave if rng.random() < 0.8 else 0.01 * rng.standard_normal(length))
    soundfile.write(path, np.concatenate(pieces)[:total].astype(np.float32), rate, "PCM_16")


def section_label(args, size) -> None:
    """``phonelabel label --batch-files N`` (the shipped model) on many short files and on
    one long one: wall time from start-up to the last output, and real-time factor."""
    try:
        import praatio  # noqa: F401
        import soundfile  # noqa: F401
        import soxr  # noqa: F401
    except ImportError as error:
        print(f"label: skipped ({error}; carry the wheels bench/gpu.sh names) 0")
        return
    model = Path(__file__).resolve().parent.parent / "models" / "default"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "short").mkdir()
        shorts = [folder / "short" / f"s{i:04d}.wav" for i in range(size.short_files)]
        for path in shorts:
            write_tones(path, size.short_seconds, rng)
        long = folder / "long.wav"
        write_tones(long, size.long_seconds, rng)
        for name, files, seconds in (
            (f"{len(shorts)} files of {size.short_seconds:g} s", shorts, len(shorts) * size.short_seconds),
            (f"1 file of {size.long_seconds:g} s", [long], size.long_seconds),
        ):  # fmt: skip
            command = [sys.executable, "-m", "phonelabel", "label", *map(str, files),
                       "--model", str(model), "--out", str(folder / "out" / str(len(files))),
                       "--device", args.device, "--batch-files", str(size.batch_files)]  # fmt: skip
            start = time.perf_counter()
            # cwd: not the repository root, whose phonelabel/ lacks data/ and models/
            out = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=folder)
            wall = time.perf_counter() - start
            if out.returncode:
                raise SystemExit(f"label failed: {out.stderr[-2000:]}")
            print(f"label: --batch-files {size.batch_files}, {name}: {wall:.1f} s wall, "
                  f"RTF {wall / seconds:.5f}", flush=True)  # fmt: skip


def phone_task(frames: int, seed: int, dim: int = 39):
    """A learnable synthetic phone task: utterances of phones (Markov chain over 61, 3-12
    frames each), each frame its phone's mean + noise, smeared by a 3-frame moving average
    (context helps, as it does in speech). (features, labels, offsets, lengths)."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).standard_normal((61, dim)).astype(np.float32)
    successor = np.random.default_rng(4321).integers(0, 61, (61, 4))
    labels, lengths = [], []
    while sum(lengths) < frames:
        phone, utterance = int(rng.integers(61)), []
        for _ in range(int(rng.integers(20, 40))):
            utterance += [phone] * int(rng.integers(3, 13))
            phone = int(successor[phone, rng.integers(4)])
        labels.append(np.array(utterance))
        lengths.append(len(utterance))
    labels_all = np.concatenate(labels)
    x = means[labels_all] * 0.6 + rng.standard_normal((len(labels_all), dim)).astype(np.float32)
    kernel = np.ones(3, np.float32) / 3
    x = np.stack([np.convolve(x[:, d], kernel, "same") for d in range(dim)], 1)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return x.astype(np.float32), labels_all.astype(np.uint8), offsets, np.array(lengths)


def section_accuracy(args, size) -> None:
    """Dev accuracy after the same number of training frames: the GPU default (wide batch,
    lr scaled by sqrt(B / 32)) vs the CPU default (32 streams, base lr)."""
    device = torch.device(args.device)
    features, labels, offsets, lengths = phone_task(size.accuracy_frames // 2, seed=0)
    dev_x, dev_y, dev_offsets, dev_lengths = phone_task(20_000 if args.small else 100_000, 1)
    data = SplitTensors.from_arrays(features, labels, device)
    for streams in (size.wide, size.narrow):
        config = TrainConfig.of(hidden=size.hidden, layers=size.layers, batch_streams=streams,
                                checkpoint_seconds=1e9, delay=3)  # fmt: skip
        config = config.resolved(device.type == "cuda")
        torch.manual_seed(0)
        shape = ModelConfig(input_dim=39, hidden=size.hidden, layers=size.layers,
                            dropout=config.model.dropout, delay=config.model.delay)  # fmt: skip
        model = PhoneLSTM(shape).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        trained, epoch, start = 0, 0, time.perf_counter()
        while trained < size.accuracy_frames:
            order = np.random.default_rng([0, epoch]).permutation(len(lengths))
            schedule = build_schedule(offsets, lengths, order, config).to(device)
            totals = dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0)
            run = RunState(epoch=epoch, lr=config.lr, totals=totals)
            state = model.zero_state(streams, device)
            run_epoch(model, optimizer, data, schedule, config, run, state, None, lambda s: None)
            trained += totals["frames"]
            epoch += 1
        model.eval()
        correct = total = 0
        features_of = lambda j: dev_x[dev_offsets[j] : dev_offsets[j] + dev_lengths[j]]  # noqa: E731
        for j, log_posteriors in batched_log_posteriors(
            model, features_of, list(dev_lengths), device, 64
        ):
            truth = dev_y[dev_offsets[j] : dev_offsets[j] + dev_lengths[j]]
            correct += int((log_posteriors.argmax(-1) == truth).sum())
            total += len(truth)
        seconds = time.perf_counter() - start
        print(f"accuracy: streams={streams} lr {config.lr:.5f}, {trained} frames in {epoch} "
              f"epochs ({seconds:.1f} s): dev frame accuracy {correct / total:.4f}",
              flush=True)  # fmt: skip


SECTIONS = {
    "train": section_train,
    "data-on": section_data_on,
    "torchrun": section_torchrun,
    "label": section_label,
    "accuracy": section_accuracy,
    "train-once": section_train_once,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny sizes (CPU, about a minute)")
    args = parser.parse_args()
    SECTIONS[args.section](args, sizes(args))


if __name__ == "__main__":
    main()
