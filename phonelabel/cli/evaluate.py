"""`evaluate`: a model on a feature store or a corpus (frames, phones, alignment)."""

from __future__ import annotations

from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, Optional

import typer

from phonelabel.cli.app import (
    AlignmentsOption,
    LabelsOption,
    ManifestOption,
    PhoneMapOption,
    TierOption,
    _corpus_options,
    command,
    console,
    library_default,
    out,
)
from phonelabel.corpus.source import CorpusOptions
from phonelabel.fileio import check_output_file, output_directory


@command
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model directory written by `phonelabel train`.")],
    source: Annotated[
        Path,
        typer.Argument(
            help="Feature store, or a corpus to featurize: TIMIT layout (audio + .PHN) or"
            " audio + TextGrids."
        ),
    ],
    split: Annotated[
        str,
        typer.Option(
            help="Split to score: train, dev, test (TIMIT core test), full_test, or all"
            " (every utterance)."
        ),
    ] = "test",
    json_file: Annotated[
        Optional[Path], typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
    plots: Annotated[
        Optional[Path],
        typer.Option(help="Write confusion.png and per_phone.png into this directory."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    smooth: Annotated[
        bool, typer.Option(help="PER from the model's Viterbi decoder (else arg-max and merge).")
    ] = True,
    batch_utterances: Annotated[
        int, typer.Option(help="Utterances run through the model at once.")
    ] = 64,
    alignments: AlignmentsOption = None,
    tier: TierOption = None,
    labels: LabelsOption = library_default(CorpusOptions, "label_set"),
    phone_map: PhoneMapOption = None,
    manifest: ManifestOption = None,
    align: Annotated[
        bool,
        typer.Option(
            "--align",
            help="Forced alignment instead: align each utterance with its transcript (.TXT, or "
            "a TextGrid's words tier) and score the phone boundaries against its alignment.",
        ),
    ] = False,
    merge_closures: Annotated[
        bool,
        typer.Option(
            "--merge-closures", help="With --align: score closure + release as one phone."
        ),
    ] = False,
) -> None:
    """Score a model on a split: frame accuracy (61 and 39 classes), PER, confusions
    (or, with --align, forced-alignment boundary accuracy)."""
    from rich.progress import Progress

    from phonelabel import evaluate as evaluation
    from phonelabel.fileio import write_json

    if json_file is not None:
        check_output_file(json_file)
    if plots is not None:
        output_directory(plots, create=False)
    options = _corpus_options(alignments, tier, labels, phone_map, manifest)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{'aligning' if align else 'scoring'} {split}", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if align:
            result = evaluation.evaluate_alignment(
                model, source, split, device, merge_closures, on_progress=on_progress,
                options=options,
            )  # fmt: skip
        else:
            result = evaluation.evaluate(
                model, source, split, device, batch_utterances, smooth, on_progress, options
            )
    report = result.to_json()
    (_print_alignment if align else _print_scores)(report)
    if json_file is not None:
        write_json(json_file, report)
        console.print(f"report written to {json_file}")
    if plots is not None and not align:
        from phonelabel.plots import write_plots

        written = write_plots(report, plots)
        console.print(f"plots written: {', '.join(str(p) for p in written)}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _print_scores(report: dict[str, Any]) -> None:
    """Frame accuracies, PER and boundaries; the most confused classes; notes and skips."""
    from rich.table import Table

    percent = _percent
    table = _metric_table(report)
    table.add_row("frames scored (61 / 39)", f"{report['frames']:,} / {report['frames_39']:,}")
    table.add_row("frame accuracy, 61 phones", percent(report["frame_accuracy_61"]))
    table.add_row("frame accuracy, 39 classes", percent(report["frame_accuracy_39"]))
    table.add_row(
        f"PER, 39 classes ({report['per_decoder']})", percent(report["phone_error_rate_39"])
    )
    table.add_row(
        "  subs / dels / ins",
        f"{report['substitutions']} / {report['deletions']} / {report['insertions']}"
        f" of {report['reference_phones']}",
    )
    if report["per_decoder"] != "argmax":
        table.add_row("PER, 39 classes (argmax)", percent(report["phone_error_rate_39_argmax"]))
    table.add_row(
        f"boundary precision / recall @{report['boundary_tolerance_ms']:g} ms",
        f"{percent(report['boundary_precision'])} / {percent(report['boundary_recall'])}",
    )
    table.add_row("model seed", str(report["seed"]))
    out.print(table)
    confusions = Table(title="most confused (39 classes)", title_justify="left")
    for name in ("reference", "predicted", "frames", "share of reference"):
        confusions.add_column(name, justify="right" if name[0] in "fs" else "left")
    for pair in report["most_confused"][:8]:
        confusions.add_row(
            pair["reference"], pair["predicted"], str(pair["frames"]), percent(pair["fraction"])
        )
    out.print(confusions)
    out.print(f"scoring: {report['scoring']}", highlight=False)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if report["skipped"]:
        console.print(f"[yellow]skipped {len(report['skipped'])} unusable utterances:[/yellow]")
        for utt_id, reason in report["skipped"][:5]:
            console.print(f"  {utt_id}: {reason}", highlight=False, soft_wrap=True)
        if len(report["skipped"]) > 5:
            console.print("  ... (all of them in the --json report)", highlight=False)


def _metric_table(report: dict[str, Any], task: str = "") -> Any:
    """A two-column rich table titled with what an evaluate report scored."""
    from rich.table import Table

    table = Table(
        title=f"{task}{report['model']} on the {report['split']} split of {report['source']}: "
        f"{report['utterances']} utterances, {report['speakers']} speakers",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    return table


def _print_alignment(report: dict[str, Any]) -> None:
    """Boundary errors of a forced alignment, and its speed."""
    table = _metric_table(report, "forced alignment, ")
    table.add_row("reference boundaries", f"{report['boundaries']:,}")
    table.add_row("  unmatched (phone deleted)", f"{report['unmatched_boundaries']:,}")
    for ms in (10, 20, 25, 50):
        value = report[f"within_{ms}ms"]
        table.add_row(f"within {ms} ms", "n/a" if value is None else f"{100 * value:.1f} %")
    mean = report["mean_absolute_error_ms"]
    table.add_row("mean absolute error", "n/a" if mean is None else f"{mean:.1f} ms")
    table.add_row(
        "real-time factor", f"{report['seconds'] / max(report['audio_seconds'], 1e-9):.3f}"
    )
    out.print(table)
    out.print(f"scoring: {report['scoring']}", highlight=False)
    for utt_id, reason in report["skipped"][:5]:
        console.print(f"[yellow]skipped[/yellow] {utt_id}: {reason}", highlight=False)
