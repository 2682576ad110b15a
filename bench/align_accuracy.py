"""Forced-alignment boundary accuracy on a TIMIT-layout corpus and on MFA's real recordings.

    python bench/align_accuracy.py --corpus /tmp/c --split full_test      # synthetic, .PHN reference
    python bench/align_accuracy.py --mfa ../shared/realspeech/mfa          # MFA's TextGrids
    python bench/align_accuracy.py --corpus /tmp/c --grid                  # tune (synthetic only)

Posteriors are computed once per recording (the aligner's own streaming path), then every
parameter setting decodes them. MFA references: the words tier is the transcript, the phones
tier the reference (ARPAbet, stress dropped; "" is silence); stops there are single intervals,
so aligned closure + release pairs are merged before scoring (``metrics.merge_closures``).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from phonelabel.align import align_words, load_aligner, log_posterior_blocks
from phonelabel.corpus.textgrid import read_alignment
from phonelabel.corpus.timit import Segment, assign_splits, find_utterances, read_phn
from phonelabel.lexicon import normalize_text
from phonelabel.metrics import AlignmentErrors, boundary_pairs, merge_closures


def mfa_phone(label: str) -> str:
    base = label.rstrip("012").lower()
    return {"": "pau", "sil": "pau", "sp": "pau"}.get(base, base)


def load_items(args, aligner) -> list[dict]:
    items = []
    if args.corpus:
        for u in assign_splits(find_utterances(args.corpus))[args.split]:
            text = " ".join(u.txt.read_text().split()[2:])
            items.append(
                {"audio": u.audio, "text": text, "reference": read_phn(u.phn), "merge": args.merge}
            )
    if args.mfa:
        for grid in sorted(Path(args.mfa).glob("*.TextGrid")):
            tiers = read_alignment(grid)  # the package's one TextGrid reader
            text = " ".join(w.word for w in tiers.words or [])
            reference = [
                Segment(start, end, mfa_phone(label)) for start, end, label in tiers.phones
            ]
            items.append(
                {
                    "audio": grid.with_suffix(".wav"),
                    "text": text,
                    "reference": reference,
                    "merge": True,
                }
            )
    for item in items:
        audio, frames, blocks = log_posterior_blocks(item["audio"], aligner.labeller)
        item["posteriors"] = np.concatenate(list(blocks))
        item["duration"] = audio.source_frames / audio.source_rate
    return items


def score(items, aligner) -> AlignmentErrors:
    errors = AlignmentErrors()
    for item in items:
        result = align_words(
            normalize_text(item["text"]),
            aligner,
            [item["posteriors"]],
            len(item["posteriors"]),
            item["duration"],
            str(item["audio"]),
        )
        hypothesis, reference = result.phones, item["reference"]
        if item["merge"]:
            hypothesis, reference = merge_closures(hypothesis), merge_closures(reference)
        errors.add(boundary_pairs(reference, hypothesis))
    return errors


def line(errors: AlignmentErrors) -> str:
    r = errors.to_json()
    within = "  ".join(f"{ms}ms {100 * r[f'within_{ms}ms']:5.1f}%" for ms in (10, 20, 25, 50))
    return f"{r['boundaries']:5d} boundaries  {within}  mean {r['mean_absolute_error_ms']:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus")
    parser.add_argument("--split", default="full_test")
    parser.add_argument("--merge", action="store_true", help="merge closures in the corpus scoring")
    parser.add_argument("--mfa")
    parser.add_argument("--model")
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--beams", default="", help="comma-separated beams to compare")
    args = parser.parse_args()
    aligner = load_aligner(args.model, "cpu")
    items = load_items(args, aligner)
    print(f"{len(items)} recordings; priors: {'model' if aligner.priors is not None else 'none'}")
    base = aligner.params
    print(f"default {base}: {line(score(items, aligner))}")
    for beam in filter(None, args.beams.split(",")):
        aligner.params = replace(base, beam=float(beam))
        started = time.perf_counter()
        errors = score(items, aligner)
        print(f"beam {beam}: {line(errors)}  ({time.perf_counter() - started:.1f} s)", flush=True)
    aligner.params = base
    if args.grid:
        for min_frames, prior_scale, penalty in itertools.product(
            (2, 3, 4), (0.0, 0.3, 0.5, 0.7, 1.0), (0.0, 2.0)
        ):
            aligner.params = replace(
                base, min_frames=min_frames, prior_scale=prior_scale, transition_penalty=penalty
            )
            print(
                f"min {min_frames} prior {prior_scale} penalty {penalty}: {line(score(items, aligner))}",
                flush=True,
            )


if __name__ == "__main__":
    main()
