"""The command line's shared handling (cli/app.py): --help texts, option defaults."""

from __future__ import annotations

import inspect
import re

import pytest
import typer.main
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.cli.app import paragraphs
from phonelabel.corpus.source import CorpusOptions
from phonelabel.corpus.synth import synthesize
from phonelabel.features import FeatureConfig
from phonelabel.store import featurize

WIDTH = 80
COMMANDS = typer.main.get_command(app).commands


def help_text(name: str) -> str:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    """Rendered help as one line of words: no box drawing, no wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("name", ["train", "label", "align", "evaluate"])
def test_help_wraps_docstring_paragraphs_at_the_terminal_width(name):
    docstring = COMMANDS[name].callback.__doc__
    lines = help_text(name).splitlines()
    prose = [line.strip() for line in lines[: next(i for i, x in enumerate(lines) if "╭" in x)]]
    for line, following in zip(prose, prose[1:], strict=False):
        if line and following and not line.startswith("Usage:"):
            # a line ends early only where the next word would not fit: no hard break
            assert len(line) + 1 + len(following.split()[0]) > WIDTH - 4, (line, following)
    shown = flat("\n".join(prose))
    for paragraph in paragraphs(docstring).split("\n\n"):
        assert " ".join(paragraph.split()) in shown  # every word, in order, none lost


def test_paragraphs_joins_lines_and_keeps_breaks():
    text = """First line
    goes on.

    Second paragraph
    here.

    \b
    kept
    as is"""
    assert paragraphs(text) == "First line goes on.\n\nSecond paragraph here.\n\n\b\nkept\nas is"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_help_text_is_shown_whole(name):
    """Rich markup eats [bracketed] text: an option's help must reach the screen as written."""
    shown = flat(help_text(name))
    for param in COMMANDS[name].params:
        if getattr(param, "help", None):
            assert " ".join(param.help.split()) in shown, (name, param.name)


def library_defaults() -> dict[str, dict[str, object]]:
    synth = inspect.signature(synthesize).parameters
    store = inspect.signature(featurize).parameters
    features, corpus = FeatureConfig(), CorpusOptions()
    return {
        "synth": {
            "speakers": synth["speakers"].default,
            "utterances_per_speaker": synth["utterances_per_speaker"].default,
            "seed": synth["seed"].default,
            "jobs": synth["jobs"].default,
            "engines": ",".join(synth["engines"].default),
            "noise_snr": synth["noise_snr"].default,
            "speed_perturb": synth["speed_perturb"].default,
            "conditions": synth["conditions"].default,
        },
        "featurize": {
            "kind": features.kind,
            "normalization": features.normalization,
            "jobs": store["jobs"].default,
            "force": store["force"].default,
            "strict": store["strict"].default,
            "include_sa": corpus.include_sa,
            "alignments": corpus.alignments,
            "tier": corpus.tier,
            "labels": corpus.label_set,
            "phone_map": corpus.phone_map,
            "manifest": corpus.manifest,
        },
    }


@pytest.mark.parametrize("name", ["synth", "featurize"])
def test_option_defaults_are_the_library_defaults(name):
    options = {p.name: p.default for p in COMMANDS[name].params if p.param_type_name == "option"}
    assert options == library_defaults()[name]


def test_featurize_command_writes_the_library_store(tone_corpus, tmp_path):
    """The command's defaults are featurize()'s: the same store, byte for byte."""
    featurize(tone_corpus, tmp_path / "library", jobs=1)
    result = CliRunner().invoke(
        app, ["featurize", str(tone_corpus), str(tmp_path / "cli"), "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    library = sorted(p.relative_to(tmp_path / "library") for p in (tmp_path / "library").rglob("*"))
    cli = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*"))
    assert cli == library and len(cli) > 3
    for path in library:
        if (tmp_path / "library" / path).is_file():
            assert (tmp_path / "cli" / path).read_bytes() == (
                tmp_path / "library" / path
            ).read_bytes(), path
