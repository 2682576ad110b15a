"""`synth` and `featurize`: make a corpus, turn a corpus into a feature store."""

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
    _pair,
    command,
    console,
    counting,
    library_default,
    out,
)
from phonelabel.corpus.source import CorpusOptions
from phonelabel.corpus.synth import SynthReport, synthesize
from phonelabel.features import FeatureConfig
from phonelabel.store import FeaturizeReport
from phonelabel.store import featurize as featurize_corpus


def _synth_default(name: str) -> Any:
    return library_default(synthesize, name)


def _featurize_default(name: str) -> Any:
    return library_default(featurize_corpus, name)


@command
def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT", help="Corpus directory to make (or resume).")
    ],
    speakers: Annotated[
        int, typer.Option(help="Speakers in all (about 30 % go to TEST).")
    ] = _synth_default("speakers"),
    utterances_per_speaker: Annotated[
        int, typer.Option(help="Prompts each speaker reads.")
    ] = _synth_default("utterances_per_speaker"),
    seed: Annotated[
        int, typer.Option(help="Random seed (same seed: byte-identical corpus).")
    ] = _synth_default("seed"),
    jobs: Annotated[
        Optional[int], typer.Option(help="Worker processes (default: all CPU cores).")
    ] = _synth_default("jobs"),
    engines: Annotated[
        str,
        typer.Option(
            help="Comma-separated engines: festival, flite (permissive licences). espeak"
            " (espeak-ng, GPL-3.0, opt-in) is not available yet."
        ),
    ] = ",".join(_synth_default("engines")),
    noise_snr: Annotated[
        Optional[str],
        typer.Option(help="LO,HI: add white noise at an SNR (dB) drawn from this range."),
    ] = _synth_default("noise_snr"),
    speed_perturb: Annotated[
        float, typer.Option(help="Speed each utterance up or down by up to this (0.1 = 10 %).")
    ] = _synth_default("speed_perturb"),
    conditions: Annotated[
        str,
        typer.Option(
            help="Recording conditions: all, none, or a comma list of vtlp (vocal tract"
            " length per speaker), tone (room tone), room (reverberation), noise, babble,"
            " channel (microphone), phone (telephone + mu-law), gain, silence (0.2-2 s of room"
            " before and after each utterance)."
        ),
    ] = _synth_default("conditions"),
) -> None:
    """Make a synthetic TIMIT-layout corpus (festival + flite) with exact phone alignments."""
    kept = (
        f"kept every utterance finished in {out_dir} (each whole);"
        " run the same command again to finish"
    )
    with counting("synthesising", kept) as on_progress:
        report = synthesize(
            out_dir,
            speakers=speakers,
            utterances_per_speaker=utterances_per_speaker,
            seed=seed,
            jobs=jobs,
            engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
            noise_snr=_pair(noise_snr, "--noise-snr"),
            speed_perturb=speed_perturb,
            on_progress=on_progress,
            conditions=conditions,
        )
    _print_synth(report)


def _print_synth(report: SynthReport) -> None:
    from rich.table import Table

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


@command
def featurize(
    corpus: Annotated[
        Path,
        typer.Argument(help="TIMIT-layout corpus (TRAIN/, TEST/), or audio files + TextGrids."),
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Feature store to write.")],
    kind: Annotated[
        str, typer.Option(help="mfcc (13 + deltas = 39 dims) or fbank (40 + deltas = 120).")
    ] = library_default(FeatureConfig, "kind"),
    normalization: Annotated[
        str,
        typer.Option(help="speaker (per-speaker mean/variance) or global (train split's)."),
    ] = library_default(FeatureConfig, "normalization"),
    jobs: Annotated[
        Optional[int], typer.Option(help="Worker processes (default: all CPU cores).")
    ] = _featurize_default("jobs"),
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite the store even if it is up to date.")
    ] = _featurize_default("force"),
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad utterance instead of skipping.")
    ] = _featurize_default("strict"),
    include_sa: Annotated[
        bool, typer.Option("--include-sa", help="Keep the SA1/SA2 sentences (TIMIT excludes them).")
    ] = library_default(CorpusOptions, "include_sa"),
    alignments: AlignmentsOption = library_default(CorpusOptions, "alignments"),
    tier: TierOption = library_default(CorpusOptions, "tier"),
    labels: LabelsOption = library_default(CorpusOptions, "label_set"),
    phone_map: PhoneMapOption = library_default(CorpusOptions, "phone_map"),
    manifest: ManifestOption = library_default(CorpusOptions, "manifest"),
) -> None:
    """Turn a corpus into 10 ms feature frames and frame labels (a memory-mapped store)."""
    config = FeatureConfig(kind=kind, normalization=normalization)
    kept = (
        f"{out_dir} left as it was (a store is written whole or not at all);"
        " run the same command again"
    )
    with counting("featurizing", kept) as on_progress:
        report = featurize_corpus(
            corpus,
            out_dir,
            config,
            jobs=jobs,
            force=force,
            strict=strict,
            on_progress=on_progress,
            options=_corpus_options(
                alignments, tier, labels, phone_map, manifest, include_sa=include_sa
            ),
        )
    _print_featurize(report, config)


def _print_featurize(report: FeaturizeReport, config: FeatureConfig) -> None:
    from rich.table import Table

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
