"""The phonelabel command line: parses options, calls the library, prints with rich.

One module a command family: `data` (synth, featurize), `train`, `evaluate`, `label`
(label, align, plot) and `demo`. `app` holds the Typer app, the error and interrupt
handling every command shares, the options several commands share, and `main`. Importing
this package registers every command, in the order `--help` lists them.
"""

from phonelabel.cli import data, train, evaluate, label, demo  # noqa: F401, I001  (registers, in order)
from phonelabel.cli import adapt  # noqa: F401, E402  (registers adapt)
from phonelabel.cli.app import app, main

__all__ = ["app", "main"]
