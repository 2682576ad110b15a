"""The phonelabel command line: parses options, calls the library, prints with rich.

Every command is a thin wrapper over a library function of the same name; a
PhonelabelError becomes one red line and exit code 2, anything else exit code 1. An
option's default is read from the library (``library_default``), never repeated here.
Each command imports the torch-side library modules it needs when it runs (the only
deferred imports in the package besides pyplot's and librosa's): `phonelabel --help` and
a typo'd option answer at once instead of after importing torch (seconds on a cold disk).
The torch-free modules whose defaults the options show (config, corpus.synth, store) are
imported with the commands.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import inspect
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console

from phonelabel import __version__
from phonelabel.config import OPTION_NAMES, TrainConfig
from phonelabel.errors import PhonelabelError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
)  # its help: _root's docstring
console = Console(stderr=True)
TRAIN_DEFAULTS = TrainConfig()
TRAIN_OPTION_NAMES = OPTION_NAMES  # flat: --hidden is TrainConfig.model.hidden
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


class Stopped(SystemExit):
    """A command ended by an interrupt, its exit code 128 + the signal number: ``main``
    ends the process at once on it. Click lets a SystemExit through untouched (a typer.Exit
    it turns into a plain one), so main can tell this exit from every other."""


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


def paragraphs(text: str | None) -> str | None:
    """A docstring as --help shows it: each paragraph (blank-line separated) one line, so
    the terminal wraps it; paragraphs starting with click's \\b marker stay as written."""
    if text is None:
        return None
    blocks = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(b if b.startswith("\b") else " ".join(b.split("\n")) for b in blocks)


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register a command, its docstring re-flowed into ``paragraphs`` for --help; a
    PhonelabelError in it becomes one red line and exit code 2, an interrupt one line saying
    what was kept and exit code 128 + the signal number (``Stopped``)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PhonelabelError as error:
            fail(str(error))
        except KeyboardInterrupt as stop:  # every file is written whole or not at all
            kept = getattr(stop, "kept", None) or "no output half-written"
            console.print(f"[yellow]interrupted:[/yellow] {kept}", highlight=False, soft_wrap=True)
            raise Stopped(128 + getattr(stop, "signum", signal.SIGINT)) from None
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

    return app.command(help=paragraphs(function.__doc__))(wrapper)


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


@contextmanager
def counting(description: str, kept: str) -> Iterator[Callable[[int, int], None]]:
    """A bar for a library call's ``on_progress(done, total)``; an interrupt inside says
    ``kept`` (what the call leaves and how to go on)."""
    with _on_interrupt(lambda: kept), _count_progress() as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _as_flags(message: str, options: frozenset[str] = TRAIN_OPTION_NAMES) -> str:
    """The library names options, the user typed flags: 'k2 (10) must be >= k1 (20)' ->
    '--k2 (10) must be >= --k1 (20)'."""
    names = "|".join(sorted(options, key=len, reverse=True))
    return re.sub(
        rf"(?<![\w/.-])({names})(?![\w/.-])",
        lambda m: "--" + m.group(1).replace("_", "-"),
        message,
    )


# --- options shared by several commands ---


def library_default(owner: Any, name: str) -> Any:
    """The default of ``name`` in ``owner``, a dataclass (its field) or a library function
    (its signature): the one home of an option's default, which the CLI reads, not repeats."""
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return field.default
    return inspect.signature(owner).parameters[name].default


def _pair(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise PhonelabelError(f"{option} {text!r}: expected LO,HI (e.g. 10,30)") from None
    return low, high


AlignmentsOption = Annotated[
    Optional[Path],
    typer.Option(help="TextGrids in a tree mirroring the corpus (MFA's output folder)."),
]
TierOption = Annotated[
    Optional[str],
    typer.Option(help="Phone tier name (default: 'phones', else the one tier named *phone*)."),
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
    **more: Any,
):
    """CorpusOptions from the shared corpus options (``more``: a command's own, by name)."""
    from phonelabel.corpus.source import CorpusOptions

    return CorpusOptions(alignments, tier, labels, phone_map, manifest, **more)


def main() -> None:
    """Console-script entry point. SIGTERM (`kill`) stops a run as cleanly as Ctrl-C.

    After an interrupt the command has stopped its workers and said what it kept; the
    process then ends at once (``os._exit``), without Python's exit handlers: the one that
    joins a process pool's feeder threads could wait forever on a pipe to a worker it has
    already killed (seen as a run that printed "interrupted:" and never exited).

    A run that succeeded ends through ``_finish`` (torch makes the interpreter's own
    teardown take half a second after the work is done); a failed one as Python ends it."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except Stopped as stop:
        _flush()
        os._exit(stop.code if isinstance(stop.code, int) else 1)
    except SystemExit as done:
        if done.code in (None, 0):
            _finish()
        raise


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (exit 141 says so already)
            pass


def _finish() -> None:
    """End a successful run as Python would, less the interpreter's teardown (0.5 s with
    torch loaded: freeing every module's objects): the non-daemon threads are joined as
    Python joins them (``threading._shutdown`` first wakes the idle workers of thread pools)
    and the exit handlers run; then ``os._exit(0)``. Returns, for Python's own exit, where
    that is not possible; an output that cannot be flushed fails the run (exit 120, as
    Python's), a closed pipe exits 141."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # not CPython's threading
        return
    try:
        shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGINT)
    except BrokenPipeError:
        os._exit(141)
    except (OSError, ValueError) as error:
        print(f"error: cannot write the output ({error})", file=sys.__stderr__)
        os._exit(120)
    os._exit(0)
