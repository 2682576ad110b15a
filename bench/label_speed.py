"""Labelling speed: real-time factor of `phonelabel label` on one CPU core (DESIGN.md §8).

Writes a 10-minute 16 kHz WAV of chord-and-noise "phones", loads the shipped default model
(2 x 256 LSTM, 39-dim MFCC input; or with --random-model a random one of any size, its
output layer sharpened so the posteriors are peaky like a trained model's) and times ``label_file`` end to end (wall clock, and CPU time for a busy machine): block
reading, features (one featurization pass for the statistics; its features kept for the
second read, on disk past 2 min), LSTM with state carried across blocks, incremental
Viterbi, segments. Then each stage alone, and then
``phonelabel label`` itself as a user runs it (a subprocess: start-up, imports and model
load included, torch on every core). RTF = processing seconds / audio seconds; the target
is <= 0.007 for the command, start-up included (best and median of --runs runs).

    python bench/label_speed.py                     # 600 s of audio, 1 thread
    python bench/label_speed.py --seconds 60 --threads 2 --no-smooth

Many short files (DESIGN.md §8: ``label --jobs 2`` >= 1.7 x one job): with ``--files M``,
M recordings of ``--file-seconds`` each go through ``label_files`` as ``phonelabel label
--out`` runs it: once in one process (torch on every core, as ``label`` runs; and on one
thread), then with ``--jobs N`` worker processes (their start-up, a torch import and a
model load each, included), then with ``--batch-files K`` when given. Reports files/s, x
real time, the speed-ups, and checks that every run wrote the same bytes. The load average
is printed before and after: on a shared machine the figures are only as good as it is
quiet.

    python bench/label_speed.py --files 200 --jobs 2
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from host_steal import Steal

from phonelabel.decode import ViterbiDecoder
from phonelabel.features import FeatureConfig, compute_features, global_stats, normalize
from phonelabel.label import label_file, label_files, load_labeller
from phonelabel.model import ModelConfig, PhoneLSTM, PosteriorStream
from phonelabel.modeldir import TrainedModel, save_model

RATE = 16000


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Random 40-150 ms 'phones': chords of three partials or low noise."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < seconds * RATE:
        length = int(rng.integers(640, 2400))
        t = np.arange(length) / RATE
        if rng.random() < 0.2:
            wave = 0.001 * rng.standard_normal(length)
        else:
            base = rng.uniform(150, 3000)
            wave = 0.3 * sum(np.sin(2 * np.pi * base * (h + 1) * t) / (h + 1) for h in range(3))
            wave += 0.01 * rng.standard_normal(length)
        pieces.append(wave)
        total += length
    return np.concatenate(pieces)[: int(seconds * RATE)].astype(np.float32)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def write_bytecode() -> str:
    """phonelabel's .pyc files, as a user's install has them: pip writes them when it installs
    a package, Python on the first run of an editable one. Without them, every run compiles
    the package's 9,000 lines again (0.3 s): what a shell with PYTHONDONTWRITEBYTECODE=1
    (these machines' default) sees after an editable install."""
    import phonelabel

    written = compileall.compile_dir(Path(phonelabel.__file__).parent, quiet=1)
    return "written (compileall)" if written else "compileall failed: as found"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="audio length")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core)")
    parser.add_argument(
        "--random-model",
        action="store_true",
        help="time a random model of --hidden x --layers instead of the shipped default",
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--no-smooth", action="store_true", help="argmax instead of Viterbi")
    parser.add_argument("--files", type=int, help="many short files instead of one long one")
    parser.add_argument("--file-seconds", type=float, default=3.0, help="length of each file")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (with --files)")
    parser.add_argument("--batch-files", type=int, help="also time recordings per LSTM pass")
    parser.add_argument(
        "--runs", type=int, default=5, help="`phonelabel label` runs (best and median)"
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="leave phonelabel's .pyc files as they are (by default they are written first)",
    )
    args = parser.parse_args()
    if args.files:
        many_files(args)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    samples = synthetic_speech(args.seconds)
    config = FeatureConfig()  # 13 MFCC + deltas = 39 dims, per-speaker normalisation
    with tempfile.TemporaryDirectory() as temp:
        wav = Path(temp) / "long.wav"
        soundfile.write(wav, samples, RATE, subtype="PCM_16")
        stats = global_stats(compute_features(samples[: 60 * RATE], config))
        if args.random_model:
            model = PhoneLSTM(
                ModelConfig(input_dim=config.dim, hidden=args.hidden, layers=args.layers)
            )
            with torch.no_grad():  # peaky posteriors, as a trained model's: Viterbi paths merge
                model.output.weight.mul_(30)
            save_model(Path(temp) / "model", TrainedModel(model.eval(), config, stats))
            labeller = load_labeller(Path(temp) / "model", "cpu", smooth=not args.no_smooth)
        else:  # the shipped model and its tuned decoder
            labeller = load_labeller(None, "cpu", smooth=not args.no_smooth)
            config = labeller.trained.feature

        label_file(wav, labeller, block_seconds=5.0)  # warm-up (allocations, caches)
        cpu_start = time.process_time()
        labelled, total = timed(label_file, wav, labeller)
        cpu_total = time.process_time() - cpu_start  # excludes time other processes took

        features, feature_seconds = timed(compute_features, samples, config)
        normalised = normalize(features, stats["mean"], stats["std"])
        stream = PosteriorStream(labeller.trained.model)

        def posteriors() -> np.ndarray:
            blocks = [
                stream.push(normalised[i : i + 1000]) for i in range(0, len(normalised), 1000)
            ]
            return np.concatenate(blocks + [stream.finish()])

        log_posteriors, lstm_seconds = timed(posteriors)
        decoder = ViterbiDecoder(labeller.params, check_every=100)  # as label_file

        def viterbi() -> np.ndarray:
            blocks = [
                decoder.push(log_posteriors[i : i + 1000])
                for i in range(0, len(log_posteriors), 1000)
            ]
            return np.concatenate(blocks + [decoder.finish()])

        _, viterbi_seconds = timed(viterbi)

        bytecode = "as found" if args.no_bytecode else write_bytecode()
        command = [sys.executable, "-c", "from phonelabel.cli import main; main()", "label"]
        if args.random_model:
            command += ["--model", str(Path(temp) / "model")]
        if args.no_smooth:
            command += ["--no-smooth"]
        command += [str(wav), "--out", str(Path(temp) / "out")]
        with Steal() as steal:  # a shared VM's wall clock varies by a second from run to run
            cli_runs = sorted(
                timed(subprocess.run, command, check=True, capture_output=True)[1]
                for _ in range(max(1, args.runs))
            )
        cli_seconds, cli_median = cli_runs[0], cli_runs[len(cli_runs) // 2]

    audio = len(samples) / RATE
    report = {
        "audio_seconds": audio,
        "threads": torch.get_num_threads(),
        "model": str(labeller.trained.directory) if not args.random_model else "random",
        "shape": f"{labeller.trained.model.config.layers}x{labeller.trained.model.config.hidden}",
        "decoder": "argmax" if args.no_smooth else "viterbi",
        "segments": len(labelled.segments),
        "label_file_seconds": round(total, 3),
        "rtf": round(total / audio, 5),
        "rtf_cpu_time": round(cpu_total / audio, 5),
        "phonelabel_label_seconds": [round(t, 3) for t in cli_runs],
        "bytecode": bytecode,
        "rtf_phonelabel_label_best": round(cli_seconds / audio, 5),
        "rtf_phonelabel_label_median": round(cli_median / audio, 5),
        "stage_rtf": {
            "features (one pass)": round(feature_seconds / audio, 5),
            "lstm": round(lstm_seconds / audio, 5),
            "viterbi": round(viterbi_seconds / audio, 5),
        },
        "target_rtf_phonelabel_label": 0.007,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "host_steal_during_runs": steal.share,  # CPU time the VM's host took meanwhile
    }
    print(json.dumps(report, indent=2))


def many_files(args: argparse.Namespace) -> None:
    """``label_files`` over many short files: one job vs --jobs N (vs --batch-files K)."""
    load_before = os.getloadavg()
    labeller = load_labeller(None, "cpu", smooth=not args.no_smooth)
    cores = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as temp:
        paths = []
        for i in range(args.files):
            paths.append(Path(temp) / "in" / f"f{i:05d}.wav")
            paths[-1].parent.mkdir(exist_ok=True)
            soundfile.write(paths[-1], synthetic_speech(args.file_seconds, seed=i), RATE)
        list(label_files(paths[:3], labeller, "phn", Path(temp) / "warm"))  # warm-up

        def run(name: str, threads: int, **options) -> dict:
            torch.set_num_threads(threads)
            out = Path(temp) / name
            results, seconds = timed(
                lambda: list(label_files(paths, labeller, "phn", out, **options))
            )
            assert all(r.output is not None for r in results), "a file failed"
            audio = args.files * args.file_seconds
            outputs = {p.name: p.read_bytes() for p in out.iterdir()}
            return {
                "seconds": round(seconds, 2),
                "files_per_second": round(args.files / seconds, 2),
                "x_real_time": round(audio / seconds, 1),
                "outputs": outputs,
            }

        runs = {
            f"one job, {cores} torch threads": run("one", cores),
            "one job, 1 torch thread": run("one_thread", 1),
            f"--jobs {args.jobs}": run("jobs", cores, jobs=args.jobs),
        }
        if args.batch_files:
            runs[f"--batch-files {args.batch_files}"] = run(
                "batch", cores, batch_files=args.batch_files
            )
    reference = runs[f"one job, {cores} torch threads"]["outputs"]
    same = {name: r.pop("outputs") == reference for name, r in list(runs.items())}
    report = {
        "files": args.files,
        "file_seconds": args.file_seconds,
        "cores": cores,
        "model": str(labeller.trained.directory),
        "runs": runs,
        "same_bytes_as_one_job": same,
        f"jobs_{args.jobs}_speedup": {
            name: round(r["seconds"] / runs[f"--jobs {args.jobs}"]["seconds"], 2)
            for name, r in runs.items()
            if name.startswith("one job")
        },
        "target_speedup": 1.7,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
