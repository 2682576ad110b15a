"""How often a TIMIT-layout corpus uses TIMIT's 13 allophone labels (issue 15, item 1).

    python bench/label_coverage.py CORPUS [--json]

For dx nx ix ax-h axr el em en eng hv ux q epi and for all 61 labels together: present?,
share of labelled frames (25 ms / 10 ms frames by their centre sample, DESIGN.md §4) and
share of phone tokens (.PHN lines), beside real TIMIT's frame share where it is known.
Real-TIMIT frame shares: the four measured on held-out TIMIT speech and quoted in issue 15
(ix 3.4 %, ux 1.7 %, q 1.5 %, axr 1.2 %; the 13 labels together 11 %); the others are
not known here (no published per-phone frame table was found), shown as "?".
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import soundfile

from phonelabel.corpus.timit import find_utterances, read_phn
from phonelabel.features import FeatureConfig, frame_count, frame_labels
from phonelabel.phones import NUM_PHONES, PHONE_INDEX

ALLOPHONES = ("dx", "nx", "ix", "ax-h", "axr", "el", "em", "en", "eng", "hv", "ux", "q", "epi")
TIMIT_FRAME_PERCENT = {"ix": 3.4, "ux": 1.7, "q": 1.5, "axr": 1.2}  # issue 15
TIMIT_ALL_13_PERCENT = 11.0  # issue 15: "11 % of real frames carry the 13 labels"


def coverage(root: str) -> dict:
    """Per label: tokens, frames and their shares of the corpus (percent)."""
    config = FeatureConfig()
    frames = np.zeros(NUM_PHONES, dtype=np.int64)
    tokens = np.zeros(NUM_PHONES, dtype=np.int64)
    utterances = find_utterances(root)
    for utterance in utterances:
        length = soundfile.info(str(utterance.audio)).frames
        segments = read_phn(utterance.alignment, length)
        for segment in segments:
            tokens[PHONE_INDEX[segment.phone]] += 1
        labels = frame_labels(segments, frame_count(length, config), config)
        frames += np.bincount(labels[labels < NUM_PHONES], minlength=NUM_PHONES)
    rows = {}
    for label in ALLOPHONES:
        i = PHONE_INDEX[label]
        rows[label] = _row(int(tokens[i]), int(frames[i]), tokens, frames)
        rows[label]["timit_frame_percent"] = TIMIT_FRAME_PERCENT.get(label)
    indices = [PHONE_INDEX[p] for p in ALLOPHONES]
    rows["all 13"] = _row(int(tokens[indices].sum()), int(frames[indices].sum()), tokens, frames)
    rows["all 13"]["timit_frame_percent"] = TIMIT_ALL_13_PERCENT
    return {
        "corpus": str(root),
        "utterances": len(utterances),
        "tokens": int(tokens.sum()),
        "frames": int(frames.sum()),
        "labels": rows,
    }


def _row(n_tokens: int, n_frames: int, tokens: np.ndarray, frames: np.ndarray) -> dict:
    return {
        "present": n_tokens > 0,
        "tokens": n_tokens,
        "frames": n_frames,
        "frame_percent": round(100 * n_frames / max(int(frames.sum()), 1), 2),
        "token_percent": round(100 * n_tokens / max(int(tokens.sum()), 1), 2),
    }


def markdown(result: dict) -> str:
    lines = [
        f"{result['corpus']}: {result['utterances']} utterances, {result['tokens']} phone"
        f" tokens, {result['frames']} labelled frames",
        "",
        "| label | present | tokens | % tokens | frames | % frames | TIMIT % frames |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in result["labels"].items():
        timit = row["timit_frame_percent"]
        lines.append(
            f"| {label} | {'yes' if row['present'] else 'no'} | {row['tokens']} |"
            f" {row['token_percent']:.2f} | {row['frames']} | {row['frame_percent']:.2f} |"
            f" {'?' if timit is None else f'{timit:.1f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="a TIMIT-layout corpus (e.g. from phonelabel synth)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = coverage(args.corpus)
    if not result["utterances"]:
        print(f"{args.corpus}: no utterances found", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
