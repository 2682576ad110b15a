"""The phonelabel command line: parses options, calls the library, prints with rich.

Every command is a thin wrapper over a library function of the same name; a
PhonelabelError becomes one red line and exit code 2, anything else exit code 1. Each
command imports the library modules it needs when it runs (the only deferred imports in
the package besides pyplot's and librosa's): `phonelabel --help` and a typo'd option
answer at once instead of after importing torch (seconds on a cold disk).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from phonelabel import __version__
from phonelabel.config import RESUME_SAFE, TrainConfig
from phonelabel.errors import PhonelabelError
from phonelabel.fileio import check_output_file, output_directory

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Framewise TIMIT phone labelling with a unidirectional LSTM (truncated BPTT).",
)
console = Console(stderr=True)
TRAIN_DEFAULTS = TrainConfig()
TRAIN_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))
out = Console()


def _version(value: bool) -> None:
    if value:
        print(f"phonelabel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Framewise TIMIT phone labelling with a unidirectional LSTM (truncated BPTT)."""


def print_error(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    print_error(message)
    raise typer.Exit(2)


# OSErrors a user causes with a path they gave: exit 2, like any user error (DESIGN.md §3)
USER_PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (see main); ``kept`` says what the run leaves and how to go on."""

    def __init__(self, signum: int = signal.SIGINT, kept: str | None = None):
        super().__init__(signum)
        self.signum, self.kept = signum, kept


_INTERRUPTED: list[bool] = []  # set when a command ends by an interrupt (see main)


def _interrupt(signum: int, frame: Any) -> None:
    # a second signal while the first one unwinds: stop now (workers die with us)
    signal.signal(signal.SIGINT, lambda number, _: os._exit(128 + number))
    signal.signal(signal.SIGTERM, lambda number, _: os._exit(128 + number))
    raise Interrupted(signum)


@contextmanager
def _on_interrupt(kept: Callable[[], str]) -> Iterator[None]:
    """Name what an interrupted command keeps, for the one line the wrapper prints."""
    try:
        yield
    except KeyboardInterrupt as stop:
        raise Interrupted(getattr(stop, "signum", signal.SIGINT), kept()) from None


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register a command; a PhonelabelError in it becomes one red line and exit code 2,
    an interrupt one line saying what was kept and exit code 128 + the signal number."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PhonelabelError as error:
            fail(str(error))
        except KeyboardInterrupt as stop:  # every file is written whole or not at all
            kept = getattr(stop, "kept", None) or "no output half-written"
            console.print(f"[yellow]interrupted:[/yellow] {kept}", highlight=False, soft_wrap=True)
            _INTERRUPTED.append(True)
            raise typer.Exit(128 + getattr(stop, "signum", signal.SIGINT)) from None
        except BrokenPipeError:  # `phonelabel label x.wav | head`: the reader has all it wants
            try:  # no "Exception ignored" when Python flushes stdout at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise typer.Exit(141) from None  # as a process killed by SIGPIPE (128 + 13)
        except USER_PATH_ERRORS as error:  # a path the user gave that cannot be used
            where = f"{error.filename}: " if error.filename else ""
            fail(f"{where}{error.strerror or error}")
        except OSError as error:  # the system failed us (disk full, I/O error): exit 1
            where = f"{error.filename}: " if error.filename else ""
            print_error(f"{where}{error.strerror or error}")
            raise typer.Exit(1) from None

    return app.command()(wrapper)


# --- commands (each section: one command, a thin wrapper over the library) ---------------


def _count_progress():
    """A bar counting items (utterances) done of a total, with the time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,  # the summary table follows; an error leaves no stale bar
    )


@command
def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT", help="Corpus directory to make (or resume).")
    ],
    speakers: Annotated[int, typer.Option(help="Speakers in all (about 30 % go to TEST).")] = 40,
    utterances_per_speaker: Annotated[int, typer.Option(help="Prompts each speaker reads.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (same seed: byte-identical corpus).")] = 0,
    jobs: Annotated[
        Optional[int], typer.Option(help="Worker processes (default: all CPU cores).")
    ] = None,
    engines: Annotated[
        str,
        typer.Option(
            help="Comma-separated engines: festival, flite (permissive licences). espeak"
            " (espeak-ng, GPL-3.0, opt-in) is not available yet."
        ),
    ] = "festival,flite",
    noise_snr: Annotated[
        Optional[str],
        typer.Option(help="LO,HI: add white noise at an SNR (dB) drawn from this range."),
    ] = None,
    speed_perturb: Annotated[
        float, typer.Option(help="Speed each utterance up or down by up to this (0.1 = 10 %).")
    ] = 0.0,
    conditions: Annotated[
        str,
        typer.Option(
            help="Recording conditions: all, none, or a comma list of vtlp (vocal tract"
            " length per speaker), tone (room tone), room (reverberation), noise, babble,"
            " channel (microphone), phone (telephone + mu-law), gain."
        ),
    ] = "all",
) -> None:
    """Make a synthetic TIMIT-layout corpus (festival + flite) with exact phone alignments."""
    from rich.table import Table

    from phonelabel.corpus.synth import synthesize

    kept = _on_interrupt(
        lambda: (
            f"kept every utterance finished in {out_dir} (each whole);"
            " run the same command again to finish"
        )
    )
    with kept, _count_progress() as progress:
        task = progress.add_task("synthesising", total=None)
        report = synthesize(
            out_dir,
            speakers=speakers,
            utterances_per_speaker=utterances_per_speaker,
            seed=seed,
            jobs=jobs,
            engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
            noise_snr=_pair(noise_snr, "--noise-snr"),
            speed_perturb=speed_perturb,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            conditions=conditions,
        )
    table = Table(title=f"synthetic corpus {report.out}")
    for column in ("split", "speakers", "utterances", "minutes", "voices"):
        table.add_column(column, justify="left" if column in ("split", "voices") else "right")
    for name, counts in report.splits.items():
        table.add_row(
            name,
            str(counts.speakers),
            str(counts.utterances),
            f"{counts.seconds / 60:.1f}",
            ", ".join(counts.voices),
        )
    out.print(table)
    speed = report.synthesized_seconds / max(report.elapsed_seconds, 1e-9)
    console.print(
        f"made {report.synthesized} utterances ({report.synthesized_seconds:.0f} s of audio) in"
        f" {report.elapsed_seconds:.0f} s ({speed:.1f} s of audio per second);"
        f" {report.resumed} already there",
        highlight=False,
    )
    for skip in report.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {skip.speaker}/{skip.utterance} ({skip.voice}):"
            f" {skip.reason} — {skip.text!r}",
            highlight=False,
        )


# --- corpus options shared by featurize and evaluate (audio + TextGrid trees) -------------

AlignmentsOption = Annotated[
    Optional[Path],
    typer.Option(help="TextGrids in a tree mirroring the corpus (MFA's output folder)."),
]
TierOption = Annotated[
    Optional[str],
    typer.Option(help="Phone tier name [default: 'phones', else the one tier named *phone*]."),
]
LabelsOption = Annotated[
    str, typer.Option(help="TextGrid label set: auto, timit or arpabet (MFA / CMU).")
]
PhoneMapOption = Annotated[
    Optional[Path],
    typer.Option(help="Map of other labels: 'label TIMIT-61-phone' per line ('-': not scored)."),
]
ManifestOption = Annotated[
    Optional[Path],
    typer.Option(help="Splits from a TSV: utt_id speaker split audio alignment (header line)."),
]


def _corpus_options(
    alignments: Path | None,
    tier: str | None,
    labels: str,
    phone_map: Path | None,
    manifest: Path | None,
    include_sa: bool = False,
):
    from phonelabel.corpus.source import CorpusOptions

    return CorpusOptions(alignments, tier, labels, phone_map, manifest, include_sa)


@command
def featurize(
    corpus: Annotated[
        Path,
        typer.Argument(help="TIMIT-layout corpus (TRAIN/, TEST/), or audio files + TextGrids."),
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Feature store to write.")],
    kind: Annotated[
        str, typer.Option(help="mfcc (13 + deltas = 39 dims) or fbank (40 + deltas = 120).")
    ] = "mfcc",
    normalization: Annotated[
        str,
        typer.Option(help="speaker (per-speaker mean/variance) or global (train split's)."),
    ] = "speaker",
    jobs: Annotated[
        Optional[int], typer.Option(help="Worker processes (default: all CPU cores).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite the store even if it is up to date.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad utterance instead of skipping.")
    ] = False,
    include_sa: Annotated[
        bool, typer.Option("--include-sa", help="Keep the SA1/SA2 sentences (TIMIT excludes them).")
    ] = False,
    alignments: AlignmentsOption = None,
    tier: TierOption = None,
    labels: LabelsOption = "auto",
    phone_map: PhoneMapOption = None,
    manifest: ManifestOption = None,
) -> None:
    """Turn a corpus into 10 ms feature frames and frame labels (a memory-mapped store)."""
    from rich.table import Table

    from phonelabel.features import FeatureConfig
    from phonelabel.store import featurize as featurize_corpus

    config = FeatureConfig(kind=kind, normalization=normalization)
    kept = _on_interrupt(
        lambda: (
            f"{out_dir} left as it was (a store is written whole or not at all);"
            " run the same command again"
        )
    )
    with kept, _count_progress() as progress:
        task = progress.add_task("featurizing", total=None)
        report = featurize_corpus(
            corpus,
            out_dir,
            config,
            jobs=jobs,
            force=force,
            strict=strict,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            options=_corpus_options(alignments, tier, labels, phone_map, manifest, include_sa),
        )
    table = Table(title=f"feature store {report.out}")
    columns = ("split", "speakers", "utterances", "frames", "unlabelled", "hours", "skipped")
    for column in columns:
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, split in report.splits.items():
        table.add_row(
            name,
            str(split.speakers),
            str(split.utterances),
            str(split.frames),
            str(split.unlabelled_frames),  # frames in .PHN gaps: neither trained nor scored
            f"{split.hours:.2f}",
            str(len(split.skipped)),
        )
    out.print(table)
    console.print(
        f"{config.kind}, {config.dim} dims, {config.normalization} normalisation;"
        f" resampled {report.resampled}, downmixed {report.downmixed},"
        f" not in any split (SA / off-list speakers) {report.excluded}",
        highlight=False,
    )
    if report.summary:
        console.print(report.summary, highlight=False)
    for file, reason in report.problems:
        console.print(f"[yellow]skipped[/yellow] {file}: {reason}", highlight=False)
    for utt_id, reason in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {utt_id}: {reason}", highlight=False)
    if report.noop:
        console.print("up to date (same corpus files and config): nothing done; --force rewrites")


def _train_option(name: str, text: str, flag: str | None = None) -> Any:
    """A train option whose default is TrainConfig's (shown in --help); None = not given."""
    default = getattr(TRAIN_DEFAULTS, name)
    if isinstance(default, bool):
        flags = [flag or f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
    else:
        flags = [flag or f"--{name.replace('_', '-')}"]
    return typer.Option(*flags, help=text, show_default=str(default))


def _as_flags(message: str, options: frozenset[str] = TRAIN_OPTION_NAMES) -> str:
    """The library names options, the user typed flags: 'k2 (10) must be >= k1 (20)' ->
    '--k2 (10) must be >= --k1 (20)'."""
    names = "|".join(sorted(options, key=len, reverse=True))
    return re.sub(
        rf"(?<![\w/.-])({names})(?![\w/.-])",
        lambda m: "--" + m.group(1).replace("_", "-"),
        message,
    )


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
    labels: LabelsOption = "auto",
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
    from rich.table import Table

    from phonelabel import evaluate as evaluation
    from phonelabel.fileio import write_json

    if json_file is not None:
        check_output_file(json_file)
    if plots is not None:
        output_directory(plots, create=False)
    options = _corpus_options(alignments, tier, labels, phone_map, manifest)
    if align:
        _evaluate_alignment(model, source, split, device, merge_closures, json_file, options)
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"scoring {split}", total=None)
        result = evaluation.evaluate(
            model,
            source,
            split=split,
            device=device,
            batch_utterances=batch_utterances,
            smooth=smooth,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            options=options,
        )
    report = result.to_json()

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

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
    if json_file is not None:
        write_json(json_file, report)
        console.print(f"report written to {json_file}")
    if plots is not None:
        from phonelabel.plots import write_plots

        written = write_plots(report, plots)
        console.print(f"plots written: {', '.join(str(p) for p in written)}")


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


def _evaluate_alignment(
    model: Path,
    source: Path,
    split: str,
    device: str,
    merge: bool,
    json_file: Path | None,
    options: Any,
) -> None:
    from rich.progress import Progress

    from phonelabel import evaluate as evaluation
    from phonelabel.fileio import write_json

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"aligning {split}", total=None)
        report = evaluation.evaluate_alignment(
            model,
            source,
            split,
            device,
            closures_merged=merge,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            options=options,
        )
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
    if json_file is not None:
        write_json(json_file, report)
        console.print(f"report written to {json_file}")


def _pair(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise PhonelabelError(f"{option} {text!r}: expected LO,HI (e.g. 10,30)") from None
    return low, high


SCALE_OPTION_NAMES = frozenset({"jobs", "batch_files", "shard"})
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
    from rich.table import Table

    from phonelabel import formats
    from phonelabel import label as labelling
    from phonelabel.workers import work_units

    fmt = formats.check_format(output_format or "phn")
    if "-" in audio:
        if len(audio) > 1 or out_dir is not None or plot or jobs != 1 or shard is not None:
            raise PhonelabelError(
                "-: stdin must be the only input, without --out, --plot, --jobs or --shard"
            )
        formats.check_streamable(fmt)  # before loading the model
        labeller = labelling.load_labeller(model, device, smooth)
        segments = labelling.label_stream(sys.stdin.buffer, labeller)
        if fold39:
            segments = formats.fold_stream(segments)
        for line in formats.stream_lines(segments, fmt):
            print(line, flush=True)
        return
    if len(audio) > 1 and out_dir is None:
        raise PhonelabelError(f"{len(audio)} inputs: give --out DIR for their outputs")
    given = {"batch_files": batch_files} if batch_files is not None else {}
    share = _scale_options(shard, jobs=jobs, **given)
    labeller = labelling.load_labeller(model, device, smooth)
    if batch_files is None:
        batch_files = labelling.default_batch_files(labeller)
    total = sum(map(len, work_units(audio, batch_files, share)))
    if share is not None:
        console.print(f"shard {share}: {total} of {len(audio)} inputs", highlight=False)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

    def on_progress(source: str):
        task = None

        def advance(done: float, total: float) -> None:
            nonlocal task
            if total < 60:  # a bar only for long inputs
                return
            if task is None:
                task = progress.add_task(Path(source).name, total=total)
            progress.update(task, completed=done)

        return advance

    failed, written = 0, 0
    kept = _on_interrupt(
        lambda: (
            f"kept {written} whole outputs in {out_dir}; run the same command again"
            if out_dir is not None
            else "no output half-written"
        )
    )
    results = labelling.label_files(
        audio,
        labeller,
        fmt,
        out_dir,
        fold39,
        plot,
        on_progress=on_progress,
        jobs=jobs,
        batch_files=batch_files,
        shard=share,
    )
    # closed on leaving, not whenever the garbage collector gets to it: on Ctrl-C its
    # workers stop now, not after the interpreter's exit has waited for them
    with kept, progress, closing(results):
        files = progress.add_task(f"0 of {total} files", total=total) if total > 1 else None
        for done, result in enumerate(results, start=1):
            if files is not None:
                progress.update(files, completed=done, description=f"{done} of {total} files")
            if isinstance(result, labelling.Failure):
                failed += 1
                print_error(result.error)
            elif result.output is not None:
                written += 1
                console.print(
                    f"{result.output}: {len(result.segments)} segments, {result.duration:.2f} s",
                    highlight=False,
                )
            elif output_format is None and sys.stdout.isatty():
                table = Table(title=result.source, show_edge=False)
                for column in ("start", "end", "phone", "confidence"):
                    table.add_column(column, justify="left" if column == "phone" else "right")
                for s in result.segments:
                    confidence = "" if s.confidence is None else f"{s.confidence:.2f}"
                    table.add_row(f"{s.start:.3f}", f"{s.end:.3f}", s.phone, confidence)
                out.print(table)
            else:
                result.write(fmt, sys.stdout)
            if not isinstance(result, labelling.Failure) and result.plot is not None:
                console.print(f"{result.plot}: plot", highlight=False)
    if failed:
        console.print(f"[red]{failed} of {total} inputs failed[/red]", highlight=False)
        raise typer.Exit(2)


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
    from phonelabel.label import Failure
    from phonelabel.workers import work_units

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
            spoken = sum(1 for w in result.words if w.phone)
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
    from rich.table import Table

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


def main() -> None:
    """Console-script entry point. SIGTERM (`kill`) stops a run as cleanly as Ctrl-C.

    After an interrupt the command has stopped its workers and said what it kept; the
    process then ends at once (``os._exit``), without Python's exit handlers: the one that
    joins a process pool's feeder threads could wait forever on a pipe to a worker it has
    already killed (seen as a run that printed "interrupted:" and never exited)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except SystemExit as done:
        if _INTERRUPTED:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise


if __name__ == "__main__":
    main()
