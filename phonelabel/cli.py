"""The phonelabel command line: parses options, calls the library, prints with rich.

Every command is a thin wrapper over a library function of the same name; a
PhonelabelError becomes one red line and exit code 2, anything else exit code 1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path  # noqa: F401  (used by the commands below)
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from phonelabel import __version__
from phonelabel.errors import PhonelabelError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Framewise TIMIT phone labelling with a unidirectional LSTM (truncated BPTT).",
)
console = Console(stderr=True)
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


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register a command; a PhonelabelError in it becomes one red line and exit code 2."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PhonelabelError as error:
            console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return app.command()(wrapper)


# --- commands (each section: one command, a thin wrapper over the library) ---------------


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
