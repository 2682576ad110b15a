"""`adapt`: a model adapted to a corpus's voices from recordings and their words."""

from __future__ import annotations

from pathlib import Path  # noqa: F401  (used by the command below)
from typing import Annotated, Any, Optional

import typer

from phonelabel.cli.app import _count_progress, command, console, out
from phonelabel.cli.label import JobsOption, ShardOption, _scale_options


def _reporter(progress: Any) -> Any:
    """The library's (stage, done, total, line) calls as one bar a stage and printed lines."""
    tasks: dict[str, Any] = {}

    def report(stage: str, done: int, total: int, line: str | None) -> None:
        if line is not None:
            console.print(f"[yellow]{line}[/yellow]", highlight=False, soft_wrap=True)
            return
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total or None)
        progress.update(tasks[stage], completed=done, total=total or None)

    return report


def _summary(report: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"adapted {report.start} -> {report.out} ({report.form})")
    for column in ("round", "recordings", "used", "minutes", "left out", "dev agreement"):
        table.add_column(column, justify="left" if column == "left out" else "right")
    for r in report.rounds:
        data = r.to_dict()
        left = ", ".join(f"{n} {why}" for why, n in sorted(data["left_out"].items())) or "none"
        agreement = f"{100 * r.dev_agreement:.1f} %" if r.dev_agreement is not None else "-"
        table.add_row(
            str(r.round), str(data["recordings"]), str(data["used"]),
            f"{data['used_minutes']:.1f}", left, agreement,
        )  # fmt: skip
    return table


@command
def adapt(
    corpus: Annotated[
        Path,
        typer.Argument(
            help="Recordings with their words: audio with <stem>.txt/.lab/TIMIT .TXT beside it "
            "in speaker folders, Common Voice (validated.tsv), LibriSpeech (*.trans.txt) or LJ "
            "Speech (metadata.csv).",
            show_default=False,
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="The adapted model's directory.")],
    model: Annotated[
        Optional[Path], typer.Option(help="Starting model (default: the shipped model).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Align-and-train rounds (see the README).")] = 1,
    epochs: Annotated[int, typer.Option(help="Training epochs a round.")] = 8,
    dictionary: Annotated[
        Optional[Path], typer.Option("--dict", help="Your own pronunciations (WORD PH1 PH2 ...).")
    ] = None,
    mix: Annotated[
        Optional[Path],
        typer.Option(
            help="A feature store (e.g. synthetic) whose training frames join the real ones."
        ),
    ] = None,
    mix_share: Annotated[
        float, typer.Option(help="Share of the training frames from --mix.")
    ] = 0.5,
    mismatch_mads: Annotated[
        float, typer.Option(help="Leave out alignments scoring below median - this x MAD.")
    ] = 3.0,
    festival: Annotated[
        bool, typer.Option("--festival/--no-festival", help="Guess words in no dictionary.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Speaker split and training seed.")] = 0,
    jobs: JobsOption = 1,
    shard: ShardOption = None,
) -> None:
    """Adapt a model to your recordings from their transcripts: align every recording with
    the model, leave out what does not align (or aligns far worse than the rest), featurize
    with the alignments and train from the model's weights; --rounds re-aligns and retrains.
    With --shard K/N only that share is aligned (a job array); a run without it then trains."""
    from phonelabel.adapt import AdaptConfig
    from phonelabel.adapt import adapt as run_adapt

    chosen = _scale_options(shard, jobs=jobs)
    config = AdaptConfig(
        rounds=rounds, epochs=epochs, mismatch_mads=mismatch_mads, mix_share=mix_share,
        seed=seed, device=device, jobs=jobs, guess=festival,
    )  # fmt: skip
    with _count_progress() as progress:
        report = run_adapt(
            corpus, out_dir, model, config, dictionary, mix, chosen, _reporter(progress)
        )
    console.print(f"corpus form: {report.form} ({report.corpus})", highlight=False)
    if report.aligned_only:
        counts = report.rounds[0].to_dict()
        console.print(
            f"aligned {counts['aligned']} of this shard's recordings; left out {counts['left_out']}"
        )
        return
    out.print(_summary(report))
    console.print(
        f"{report.audio_minutes:.1f} min of audio in {report.seconds:.0f} s "
        f"({report.seconds / max(report.audio_minutes, 1e-9):.0f} s per minute); "
        f"report {out_dir}/adapt.json, adapt.png",
        highlight=False,
    )
