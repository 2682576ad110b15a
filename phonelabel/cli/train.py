"""`train`: a feature store -> a model directory."""

from __future__ import annotations

from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, Optional

import typer

from phonelabel.cli.app import (
    TRAIN_DEFAULTS,
    TRAIN_OPTION_NAMES,
    _as_flags,
    command,
    console,
)
from phonelabel.config import RESUME_SAFE
from phonelabel.errors import PhonelabelError


def _train_option(name: str, text: str, flag: str | None = None, shown: str = "") -> Any:
    """A train option whose default is TrainConfig's (shown in --help, or ``shown`` where
    None leaves it to the run); None = not given."""
    default = TRAIN_DEFAULTS.option(name)
    if isinstance(default, bool):
        flags = [flag or f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
    else:
        flags = [flag or f"--{name.replace('_', '-')}"]
    return typer.Option(*flags, help=text, show_default=shown or str(default))


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
        _train_option("k2", "TBPTT: frames gradients flow back through (>= k1).", shown="k1"),
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
            "Utterance streams run side by side, over all processes.",
            shown="32 on the CPU, 256 per process on CUDA",
        ),
    ] = None,
    optimizer: Annotated[
        Optional[str], _train_option("optimizer", "adam or sgd (momentum 0.9).")
    ] = None,
    lr: Annotated[
        Optional[float],
        _train_option(
            "lr",
            "Learning rate.",
            shown="adam 1e-3, sgd 0.05, x sqrt(streams/32) above 32 streams",
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
            shown="none",
        ),
    ] = None,
) -> None:
    """Train the unidirectional LSTM with truncated BPTT(k1, k2) and gradient clipping."""
    from contextlib import nullcontext

    from phonelabel import train as training
    from phonelabel.distributed import ReportedByRankZero, ranks_from_env

    ranks = ranks_from_env()  # under torchrun, rank 0 alone prints progress and results
    changes = _given(
        hidden=hidden, layers=layers, dropout=dropout, k1=k1, k2=k2, delay=delay, clip=clip,
        clip_output=clip_output, clip_value=clip_value, epochs=epochs,
        batch_streams=batch_streams, optimizer=optimizer, lr=lr, input_noise=input_noise,
        time_mask=time_mask, freq_mask=freq_mask, patience=patience, seed=seed, device=device,
        data_on=data_on, precision=precision, checkpoint_seconds=checkpoint_seconds,
        tune_decoder=tune_decoder, init=init,
    )  # fmt: skip
    bar, on_progress = _progress_bar()
    with bar if ranks.main else nullcontext():
        try:
            result = training.train(
                features, out, resume=resume, on_progress=on_progress, changes=changes, ranks=ranks
            )
        except ReportedByRankZero as error:
            if not ranks.main:
                raise typer.Exit(2) from None
            raise PhonelabelError(_as_flags(str(error))) from None
        except PhonelabelError as error:  # the library names options; the user typed flags
            raise PhonelabelError(_as_flags(str(error))) from None
    if ranks.main:
        _print_result(out, result)


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (None: not given, TrainConfig's default or the resumed
    run's value stands)."""
    unknown = set(options) - TRAIN_OPTION_NAMES
    assert not unknown, unknown  # each name is a TrainConfig field
    return {name: value for name, value in options.items() if value is not None}


def _progress_bar() -> tuple[Any, Any]:
    """A rich progress bar (one task per epoch) and the ``on_progress`` that drives it,
    printing a line at each epoch's end."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

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

    def on_progress(p: Any) -> None:  # a train.TrainingProgress
        if p.epoch not in tasks:
            tasks[p.epoch] = bar.add_task("", total=p.steps, epoch=f"{p.epoch}/{p.epochs}", info="")
        info = f"loss {p.loss:.3f}  {p.frames_per_second:,.0f} frames/s  clipped {100 * p.clip_fraction:.0f}%"
        bar.update(tasks[p.epoch], completed=p.step, info=info)
        if p.epoch_done is not None:
            r = p.epoch_done
            dev = (
                f"dev acc {100 * r.dev_frame_accuracy_61:.1f}% (39: {100 * r.dev_frame_accuracy_39:.1f}%)"
                if r.dev_frame_accuracy_61 is not None
                else "no dev split"
            )
            mark = " [green]best[/green]" if r.best else ""
            bar.console.print(
                f"epoch {r.epoch:>3}  loss {r.train_loss:.3f}  {dev}  "
                f"{r.train_frames_per_second:,.0f} frames/s  clipped {100 * r.clip_fraction:.0f}%  "
                f"lr {r.lr:.2g}{mark}"
            )

    return bar, on_progress


def _print_result(out: Path, result: Any) -> None:
    """Where the model went, its best epoch and its tuned decoder (a train.TrainResult)."""
    console.print(f"[bold]model written to[/bold] {out}  (device {result.device})")
    best = result.best
    if best is not None and best.dev_frame_accuracy_61 is not None:
        console.print(
            f"best dev frame accuracy: {100 * best.dev_frame_accuracy_61:.2f}% (61 phones), "
            f"{100 * best.dev_frame_accuracy_39:.2f}% (39 classes) at epoch {best.epoch}"
        )
    decoder, tuning = result.decoder, result.decoder_tuning
    if tuning is not None:
        console.print(
            f"decoder tuned on dev: penalty {decoder.transition_penalty}, minimum duration "
            f"{decoder.min_duration} frames; dev PER {100 * tuning.dev_phone_error_rate_39:.1f}% "
            f"(argmax {100 * tuning.dev_phone_error_rate_39_argmax:.1f}%)"
        )
