"""`train`: a feature store -> a model directory."""

from __future__ import annotations

import json
from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, Optional

import typer

from phonelabel.cli.app import (
    TRAIN_DEFAULTS,
    TRAIN_OPTION_NAMES,
    _as_flags,
    _on_interrupt,
    command,
    console,
)
from phonelabel.config import RESUME_SAFE
from phonelabel.errors import PhonelabelError


def _train_option(name: str, text: str, flag: str | None = None) -> Any:
    """A train option whose default is TrainConfig's (shown in --help); None = not given."""
    default = getattr(TRAIN_DEFAULTS, name)
    if isinstance(default, bool):
        flags = [flag or f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
    else:
        flags = [flag or f"--{name.replace('_', '-')}"]
    return typer.Option(*flags, help=text, show_default=str(default))


@command
def train(
    features: Annotated[
        Path, typer.Argument(help="Feature store written by `phonelabel featurize`.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    hidden: Annotated[Optional[int], _train_option("hidden", "LSTM cells per layer.")] = None,
    layers: Annotated[Optional[int], _train_option("layers", "LSTM layers.")] = None,
    dropout: Annotated[
        Optional[float], _train_option("dropout", "Dropout between layers and before the output.")
    ] = None,
    k1: Annotated[
        Optional[int], _train_option("k1", "TBPTT: frames between updates (0 = whole utterances).")
    ] = None,
    k2: Annotated[
        Optional[int],
        _train_option("k2", "TBPTT: frames gradients flow back through (>= k1; 0 = k1)."),
    ] = None,
    delay: Annotated[
        Optional[int], _train_option("delay", "Target delay: output at t+d labels frame t.")
    ] = None,
    clip: Annotated[
        Optional[float], _train_option("clip", "Clip the global gradient norm to this (0 = off).")
    ] = None,
    clip_output: Annotated[
        Optional[bool],
        _train_option("clip_output", "Include the output layer in the clipped norm."),
    ] = None,
    clip_value: Annotated[
        Optional[float], _train_option("clip_value", "Also clip each gradient element (0 = off).")
    ] = None,
    epochs: Annotated[
        Optional[int], _train_option("epochs", "Maximum epochs (with --resume: as before).")
    ] = None,
    batch_streams: Annotated[
        Optional[int],
        _train_option(
            "batch_streams",
            "Utterance streams run side by side, over all processes (0 = 32 on the CPU, "
            "256 per process on CUDA).",
        ),
    ] = None,
    optimizer: Annotated[
        Optional[str], _train_option("optimizer", "adam or sgd (momentum 0.9).")
    ] = None,
    lr: Annotated[
        Optional[float],
        _train_option(
            "lr", "Learning rate (0 = adam 1e-3, sgd 0.05, x sqrt(streams/32) above 32 streams)."
        ),
    ] = None,
    input_noise: Annotated[
        Optional[float], _train_option("input_noise", "Std of Gaussian noise added to inputs.")
    ] = None,
    time_mask: Annotated[
        Optional[int],
        _train_option(
            "time_mask", "SpecAugment: mask up to this many frames per window (0 = off)."
        ),
    ] = None,
    freq_mask: Annotated[
        Optional[int],
        _train_option("freq_mask", "SpecAugment: mask up to this many feature bands (0 = off)."),
    ] = None,
    patience: Annotated[
        Optional[int], _train_option("patience", "Stop after this many epochs without dev gain.")
    ] = None,
    seed: Annotated[
        Optional[int],
        _train_option("seed", "Random seed (same seed, same data, CPU: same weights)."),
    ] = None,
    device: Annotated[Optional[str], _train_option("device", "auto, cpu or cuda.")] = None,
    data_on: Annotated[
        Optional[str],
        _train_option(
            "data_on",
            "Where the training split lives: device, host (memory-mapped, each window "
            "streamed to the device) or auto (device if it fits in half its free memory).",
        ),
    ] = None,
    precision: Annotated[
        Optional[str], _train_option("precision", "fp32, tf32 or bf16 (CUDA).")
    ] = None,
    checkpoint_seconds: Annotated[
        Optional[float],
        _train_option("checkpoint_seconds", "Seconds between mid-epoch checkpoints for --resume."),
    ] = None,
    tune_decoder: Annotated[
        Optional[bool],
        _train_option(
            "tune_decoder", "After training, tune Viterbi smoothing on dev (lowest PER)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run in --out with its options; only "
            + ", ".join(sorted(RESUME_SAFE))
            + " may be changed (others must match or are refused).",
        ),
    ] = False,
    init: Annotated[
        Optional[str],
        _train_option(
            "init",
            "Start from this trained model's weights ('default': the shipped model); its "
            "features and size must match the run's.",
        ),
    ] = None,
) -> None:
    """Train the unidirectional LSTM with truncated BPTT(k1, k2) and gradient clipping."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from phonelabel import train as training
    from phonelabel.distributed import ReportedByRankZero, ranks_from_env

    ranks = ranks_from_env()  # under torchrun, rank 0 alone prints progress and results
    given = {
        name: value
        for name, value in locals().items()
        if name in TRAIN_OPTION_NAMES and value is not None
    }
    bar = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[int, Any] = {}

    def on_progress(p: training.Progress) -> None:
        if p.epoch not in tasks:
            tasks[p.epoch] = bar.add_task("", total=p.steps, epoch=f"{p.epoch}/{p.epochs}", info="")
        info = f"loss {p.loss:.3f}  {p.frames_per_second:,.0f} frames/s  clipped {100 * p.clip_fraction:.0f}%"
        bar.update(tasks[p.epoch], completed=p.step, info=info)
        if p.epoch_done is not None:
            r = p.epoch_done
            dev = (
                f"dev acc {100 * r['dev_frame_accuracy_61']:.1f}% (39: {100 * r['dev_frame_accuracy_39']:.1f}%)"
                if r["dev_frame_accuracy_61"] is not None
                else "no dev split"
            )
            mark = " [green]best[/green]" if r["best"] else ""
            bar.console.print(
                f"epoch {r['epoch']:>3}  loss {r['train_loss']:.3f}  {dev}  "
                f"{r['train_frames_per_second']:,.0f} frames/s  clipped {100 * r['clip_fraction']:.0f}%  "
                f"lr {r['lr']:.2g}{mark}"
            )

    def kept() -> str:
        if (out / training.CHECKPOINT).is_file():
            return (
                f"kept {out} as of its last checkpoint (each epoch's end, and every"
                " --checkpoint-seconds); run the same command with --resume to continue"
            )
        return f"nothing kept in {out} (no checkpoint yet); run the same command again"

    with _on_interrupt(kept), bar if ranks.main else nullcontext():
        try:
            trained = training.train(
                features, out, resume=resume, on_progress=on_progress, changes=given, ranks=ranks
            )
        except ReportedByRankZero as error:
            if not ranks.main:
                raise typer.Exit(2) from None
            raise PhonelabelError(_as_flags(str(error))) from None
        except PhonelabelError as error:  # the library names options; the user typed flags
            raise PhonelabelError(_as_flags(str(error))) from None
    if not ranks.main:
        return
    best = max(
        (r for r in _read_history(out)),
        key=lambda r: r["dev_frame_accuracy_61"] or -1,
        default=None,
    )
    console.print(f"[bold]model written to[/bold] {out}  (device {trained.run['device_used']})")
    if best and best["dev_frame_accuracy_61"] is not None:
        console.print(
            f"best dev frame accuracy: {100 * best['dev_frame_accuracy_61']:.2f}% (61 phones), "
            f"{100 * best['dev_frame_accuracy_39']:.2f}% (39 classes) at epoch {best['epoch']}"
        )
    decoder, tuning = trained.decoder, trained.decoder_tuning
    if tuning.get("tuned_on"):
        console.print(
            f"decoder tuned on dev: penalty {decoder['transition_penalty']}, minimum duration "
            f"{decoder['min_duration']} frames; dev PER {100 * tuning['dev_phone_error_rate_39']:.1f}% "
            f"(argmax {100 * tuning['dev_phone_error_rate_39_argmax']:.1f}%)"
        )


def _read_history(model_dir: Path) -> list[dict]:
    path = model_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
