"""One entry to every corpus kind: a TIMIT-layout tree or an audio + TextGrid tree.

``open_corpus`` returns utterance records split by the corpus's own rule. Each record has
``utt_id``, ``speaker``, ``audio``, ``inputs`` (the files it is read from) and
``segments(audio) -> list[Segment]`` (its TIMIT-61 phone segments over the read audio),
so featurize and evaluate treat both kinds alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonelabel.corpus import textgrid, timit
from phonelabel.errors import PhonelabelError


@dataclass(frozen=True)
class CorpusOptions:
    """How to read a non-TIMIT corpus (DESIGN.md §5b); ignored for a TIMIT tree."""

    alignments: Path | None = None  # TextGrids in a tree mirroring the corpus (MFA output)
    tier: str | None = None  # the phone tier's name (None: "phones", or the one "phone" tier)
    label_set: str = "auto"  # "auto", "timit" or "arpabet"
    phone_map: Path | None = None  # a user's label -> TIMIT-61 map
    manifest: Path | None = None  # TSV utt_id speaker split audio alignment
    include_sa: bool = False  # TIMIT: keep SA1/SA2

    @property
    def textgrid_only(self) -> bool:
        return (
            any(v is not None for v in (self.alignments, self.tier, self.phone_map, self.manifest))
            or self.label_set != "auto"
        )


@dataclass
class CorpusSplits:
    kind: str  # "timit" or "textgrid"
    splits: dict[str, list[Any]]  # split -> utterance records (see the module docstring)
    store_splits: tuple[str, ...]  # the splits featurize writes
    excluded: int = 0  # found but in no split
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why unusable)
    info: dict[str, Any] = field(default_factory=dict)  # rules, for store.json
    summary: str = ""  # one line for the featurize report


def open_corpus(root: str | Path, options: CorpusOptions = CorpusOptions()) -> CorpusSplits:
    """The utterances of ``root`` split by its rule: TIMIT's protocol for a TIMIT-layout tree
    (.PHN files), §5b for a tree of audio + TextGrids."""
    root = Path(root)
    if not root.is_dir():
        raise PhonelabelError(f"{root}: no such corpus directory")
    if options.alignments is not None or textgrid.is_textgrid_tree(root):
        corpus = textgrid.find_textgrid_corpus(
            root,
            alignments=options.alignments,
            tier=options.tier,
            label_set=options.label_set,
            phone_map=options.phone_map,
            manifest=options.manifest,
        )
        return CorpusSplits(
            kind="textgrid",
            splits=corpus.splits,
            store_splits=textgrid.FOLDER_SPLITS,
            excluded=corpus.excluded,
            problems=corpus.problems,
            info={
                "corpus_kind": "textgrid",
                "alignments": str(options.alignments) if options.alignments else None,
                "labels": corpus.label_rule.to_dict(),
                "split_rule": corpus.split_rule,
            },
            summary=corpus.summary,
        )
    if options.textgrid_only:
        raise PhonelabelError(
            f"{root}: a TIMIT-layout tree (.PHN files); the alignments, tier, label set,"
            " phone map and manifest options are for TextGrid corpora"
        )
    found = timit.find_utterances(root)
    splits = timit.assign_splits(found, include_sa=options.include_sa)
    used = {u.utt_id for name in timit.SPLITS for u in splits[name]}
    splits["all"] = [u for u in found if u.utt_id in used]
    return CorpusSplits(
        kind="timit",
        splits=splits,
        store_splits=timit.SPLITS,
        excluded=len(found) - len(used),
        info={"corpus_kind": "timit", "split_rule": {"rule": "timit"}},
        summary="TIMIT-layout corpus, TIMIT-61 labels; splits by the TIMIT protocol",
    )
