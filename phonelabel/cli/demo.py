"""`demo`: the whole mission end to end."""

from __future__ import annotations

from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any

import typer

from phonelabel.cli.app import (
    command,
    console,
    out,
)


@command
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to put everything.")] = Path(
        "phonelabel-demo"
    ),
    speakers: Annotated[int, typer.Option(help="Synthetic speakers (about 30 % unseen).")] = 30,
    utterances_per_speaker: Annotated[int, typer.Option(help="Sentences per speaker.")] = 10,
    epochs: Annotated[int, typer.Option(help="Training epochs at most.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed for corpus and training.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """The whole mission end to end: synth, featurize, train, evaluate on unseen voices, label."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from phonelabel.demo import demo as run_demo

    bar = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )

    def stage(name: str):
        task = bar.add_task(name, total=1.0)

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, total=total)

        return progress

    with bar:
        report = run_demo(directory, speakers, utterances_per_speaker, epochs, seed, device, stage)
        for task in bar.tasks:
            bar.update(task.id, completed=task.total)
    _print_report(report)


def _print_report(report: Any) -> None:
    """The unseen voices' scores, where each artefact went, and the time each stage took
    (a demo.DemoReport)."""
    from rich.table import Table

    r = report.evaluation
    table = Table(
        title=f"test split: {r['utterances']} utterances of {r['speakers']} unseen voices"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("frames", f"{r['frames']:,}")
    table.add_row("frame accuracy, 61 phones", f"{100 * r['frame_accuracy_61']:.1f} %")
    table.add_row("frame accuracy, 39 classes", f"{100 * r['frame_accuracy_39']:.1f} %")
    table.add_row("phone error rate, 39 classes", f"{100 * r['phone_error_rate_39']:.1f} %")
    out.print(table)
    for what, where in (
        ("corpus", report.corpus),
        ("features", report.features),
        ("model (+ curves.png)", report.model),
        ("evaluation JSON", report.results),
        ("confusion / per-phone plots", report.plots),
        ("labelled test recording (TextGrid)", report.textgrid),
        ("spectrogram with phones", report.spectrogram),
    ):
        out.print(f"{what:<36} {where}", soft_wrap=True, highlight=False)
    total = sum(report.seconds.values())
    out.print(
        f"done in {total / 60:.1f} min  ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
        + ")"
    )
