"""`label`, `align` and `plot`: recordings in, segments (and pictures) out."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, Optional

import typer

from phonelabel.cli.app import (
    _as_flags,
    _on_interrupt,
    command,
    console,
    out,
    print_error,
)
from phonelabel.errors import PhonelabelError
from phonelabel.fileio import check_output_file, output_directory

SCALE_OPTION_NAMES = frozenset({"jobs", "batch_files", "shard"})
LABEL_OPTION_NAMES = SCALE_OPTION_NAMES | {"out", "plot"}
JobsOption = Annotated[
    int,
    typer.Option(
        help="Worker processes sharing the files, each with its share of the CPU cores "
        "(cores / N torch threads) and its own copy of the model; outputs as with one.",
    ),
]
ShardOption = Annotated[
    Optional[str],
    typer.Option(
        help="K/N: only share K of N of the inputs (sorted, then every N-th from the K-th), "
        "for a cluster's job array; the shards' outputs together are the whole run's. "
        "Default under torchrun: RANK + 1 / WORLD_SIZE.",
        show_default=False,
    ),
]


def _scale_options(shard: str | None, **counts: int) -> Any:
    """The --shard (or torchrun's) share and the counts checked, in the flags' words."""
    from phonelabel.workers import check_counts, resolve_shard

    try:
        check_counts(**counts)
        return resolve_shard(shard)
    except PhonelabelError as error:
        raise PhonelabelError(_as_flags(str(error), SCALE_OPTION_NAMES)) from None


@command
def label(
    audio: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (WAV, SPHERE, FLAC, OGG; any rate, mono or stereo), or - for raw "
            "16 kHz 16-bit little-endian mono PCM on stdin.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Optional[Path], typer.Option(help="Model directory (default: the shipped model).")
    ] = None,
    output_format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            "-f",
            help="phn (TIMIT: sample numbers at the input's own rate), textgrid, json or csv "
            "(default phn; a table on a terminal).",
        ),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Directory for one <input stem>.<ext> per input (folders mirrored where stems repeat).",
        ),
    ] = None,
    smooth: Annotated[
        bool,
        typer.Option(
            "--smooth/--no-smooth",
            help="Viterbi smoothing (switch penalty, minimum duration) or plain per-frame argmax.",
        ),
    ] = True,
    fold39: Annotated[
        bool,
        typer.Option("--fold39", help="Output the 39 scoring classes (q joins its neighbour)."),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    plot: Annotated[
        bool,
        typer.Option(
            "--plot",
            help="Also write <stem>.png (spectrogram + phones, the first 20 s) under --out or "
            "here; `phonelabel plot --start/--end` draws any span.",
        ),
    ] = False,
    jobs: JobsOption = 1,
    batch_files: Annotated[
        Optional[int],
        typer.Option(
            help="Recordings (up to 60 s each) per LSTM pass, padded: keeps a GPU busy. "
            "Default: 32 on a GPU, 1 on a CPU (segments the same; confidences to ~1e-5).",
            show_default=False,
        ),
    ] = None,
    shard: ShardOption = None,
) -> None:
    """Label recordings with timed phone segments (start, end, phone, confidence).

    One output per input under --out; stdout for a single input.

    Long files run in 10 s blocks, LSTM state carried: bounded memory, same result as whole.

    With - (stdin) each segment is printed once it is final. Latency in 10 ms frames:
    the model's target delay + 2 (delta context) + the smoothing lookahead (until all
    surviving Viterbi paths agree: typically a few frames, at most 20 s; none with
    --no-smooth).

    A speaker-normalised model on stdin uses running statistics (output may differ slightly).
    Streamed json is JSON Lines (one segment object per line).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from phonelabel import label as labelling

    columns = TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn()
    progress = Progress(*columns, console=console, transient=True)

    def on_progress(source: str) -> Any:
        def advance(done: float, total: float) -> None:  # a bar only for long inputs
            if total >= 60:
                if source not in tasks:  # (setdefault would add a task on every call)
                    tasks[source] = progress.add_task(Path(source).name, total=total)
                progress.update(tasks[source], completed=done)

        return advance

    tasks: dict[str, Any] = {}
    try:
        run = labelling.run_label(
            audio, model, output_format or "phn", out_dir, smooth, fold39, device, plot, jobs,
            batch_files, shard, on_progress, sys.stdin.buffer,
        )  # fmt: skip
    except PhonelabelError as error:
        raise PhonelabelError(_as_flags(str(error), LABEL_OPTION_NAMES)) from None
    if run.lines is not None:
        for line in run.lines:
            print(line, flush=True)
        return
    if run.shard is not None:
        console.print(f"shard {run.shard}: {run.total} of {run.inputs} inputs", highlight=False)
    # closed on leaving, not whenever the garbage collector gets to it: on Ctrl-C its
    # workers stop now, not after the interpreter's exit has waited for them
    with _on_interrupt(run.kept), progress, closing(run):
        files = (
            progress.add_task(f"0 of {run.total} files", total=run.total) if run.total > 1 else None
        )
        for done, result in enumerate(run, start=1):
            if files is not None:
                progress.update(files, completed=done, description=f"{done} of {run.total} files")
            _print_labelled(result, output_format is None, run.fmt)
    if run.failed:
        console.print(f"[red]{run.failed} of {run.total} inputs failed[/red]", highlight=False)
        raise typer.Exit(2)


def _print_labelled(result: Any, default_format: bool, fmt: str) -> None:
    """One file's result: its error, where it was written, or its segments on stdout (a table
    on a terminal unless a format was asked for)."""
    from rich.table import Table

    from phonelabel.label import Failure

    if isinstance(result, Failure):
        print_error(result.error)
        return
    if result.output is not None:
        console.print(
            f"{result.output}: {len(result.segments)} segments, {result.duration:.2f} s",
            highlight=False,
        )
    elif default_format and sys.stdout.isatty():
        table = Table(title=result.source, show_edge=False)
        for column in ("start", "end", "phone", "confidence"):
            table.add_column(column, justify="left" if column == "phone" else "right")
        for s in result.segments:
            confidence = "" if s.confidence is None else f"{s.confidence:.2f}"
            table.add_row(f"{s.start:.3f}", f"{s.end:.3f}", s.phone, confidence)
        out.print(table)
    else:
        result.write(fmt, sys.stdout)
    if result.plot is not None:
        console.print(f"{result.plot}: plot", highlight=False)


@command
def align(
    audio: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (WAV, SPHERE, FLAC, OGG), or their transcripts (<stem>.txt, .lab, "
            "TIMIT .TXT) with the audio beside them.",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for one <input stem>.<ext> per input.")
    ],
    text: Annotated[
        Optional[str],
        typer.Option(help="The words said (every input); default: the transcript beside each."),
    ] = None,
    dictionary: Annotated[
        Optional[Path],
        typer.Option(
            "--dict",
            help="Pronunciations of your own words, CMU/MFA format (WORD PH1 PH2 ...); they "
            "take precedence over the CMU dictionary.",
        ),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="textgrid (words + phones tiers), phn (+ .wrd), json or csv (+ .words.csv).",
        ),
    ] = "textgrid",
    model: Annotated[
        Optional[Path], typer.Option(help="Model directory (default: the shipped model).")
    ] = None,
    fold39: Annotated[
        bool,
        typer.Option("--fold39", help="Output the 39 scoring classes (q joins its neighbour)."),
    ] = False,
    festival: Annotated[
        bool,
        typer.Option(
            "--festival/--no-festival",
            help="Guess words in no dictionary with festival's letter-to-sound rules.",
        ),
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    jobs: JobsOption = 1,
    shard: ShardOption = None,
) -> None:
    """Forced alignment: timed words and TIMIT phones from recordings and their transcripts.

    Pronunciations from --dict, the CMU dictionary, then festival. Each dictionary phone may
    be realised as TIMIT does (closure + release or release alone, flaps, reduced vowels,
    syllabic consonants), with optional pauses between words; a beam-pruned Viterbi over the
    model's prior-scaled posteriors picks the path. Long recordings use bounded memory.
    """
    from phonelabel import align as aligning
    from phonelabel import formats
    from phonelabel.workers import Failure, work_units

    fmt = formats.check_format(output_format)
    output_directory(out_dir, create=False)
    share = _scale_options(shard, jobs=jobs)
    aligner = aligning.load_aligner(model, device, dictionary, festival)
    total = sum(map(len, work_units(audio, 1, share)))
    if share is not None:
        console.print(f"shard {share}: {total} of {len(audio)} inputs", highlight=False)
    failed = 0
    results = aligning.align_files(audio, aligner, out_dir, fmt, text, fold39, jobs, share)
    with closing(results):  # workers stop at once on Ctrl-C (see label)
        for result in results:
            if isinstance(result, Failure):
                failed += 1
                print_error(result.error)
                continue
            spoken = sum(1 for w in result.words if w.word)
            guessed = result.metadata.get("guessed_pronunciations") or []
            note = f" (festival guessed: {', '.join(guessed)})" if guessed else ""
            console.print(
                f"{result.output}: {spoken} words, {len(result.phones)} phones, "
                f"{result.duration:.2f} s{note}",
                highlight=False,
            )
    if failed:
        console.print(f"[red]{failed} of {total} inputs failed[/red]", highlight=False)
        raise typer.Exit(2)


@command
def plot(
    audio: Annotated[Path, typer.Argument(help="Audio file to label and draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")],
    model: Annotated[
        Optional[Path], typer.Option(help="Model directory (default: the shipped model).")
    ] = None,
    reference: Annotated[
        Optional[Path], typer.Option(help="A TIMIT .PHN file to draw as a second tier.")
    ] = None,
    start: Annotated[float, typer.Option(help="First second to draw.")] = 0.0,
    end: Annotated[
        Optional[float], typer.Option(help="Last second to draw (default: start + 20 s).")
    ] = None,
    smooth: Annotated[
        bool, typer.Option("--smooth/--no-smooth", help="Viterbi smoothing or plain argmax.")
    ] = True,
    fold39: Annotated[bool, typer.Option("--fold39", help="Draw the 39 scoring classes.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Draw a recording's log-mel spectrogram with its labelled phone segments under it."""
    from phonelabel import label as labelling

    check_output_file(output)
    labeller = labelling.load_labeller(model, device, smooth)
    try:
        path = labelling.plot_file(audio, labeller, output, reference, fold39, start, end)
    except PhonelabelError as error:
        raise PhonelabelError(_as_flags(str(error), frozenset({"start", "end"}))) from None
    console.print(f"wrote {path}", highlight=False)
