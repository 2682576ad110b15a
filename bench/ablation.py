"""Ablate training options: train one model per variant, score each on unseen voices.

Each variant is ``NAME=STORE:OPTIONS`` (OPTIONS as `phonelabel train` takes them). Every
model is scored on its store's test split (held-out synthetic voices) and on real speech
(``--real``, a corpus `phonelabel evaluate` reads: by default the MFA-aligned recordings in
../shared/realspeech/mfa, which no variant ever trains on) and, with ``--clean-test``, on
another corpus's test split. Results go to OUT/results.json, one record per variant, and a
markdown table. A variant already trained is not re-trained and a report already written is
not re-made, so an interrupted ablation resumes.

    python bench/ablation.py --out /tmp/abl/runs --epochs 12 \\
        "base=A_feat:" "delay3=A_feat:--delay 3" "specaug=A_feat:--delay 3 --time-mask 5"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

METRICS = ("frame_accuracy_61", "frame_accuracy_39", "phone_error_rate_39")
REAL = Path(__file__).resolve().parents[2] / "shared" / "realspeech" / "mfa"


def run(argv: list[str]) -> None:
    print("+", shlex.join(argv), flush=True)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def evaluate(model: Path, corpus: str, split: str, report: Path) -> dict:
    if not report.is_file():
        run([sys.executable, "-m", "phonelabel.cli", "evaluate", str(model), corpus,
             "--split", split, "--json", str(report), "--device", "cpu"])  # fmt: skip
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME=STORE:OPTIONS")
    parser.add_argument("--out", type=Path, required=True, help="folder for models and results")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--real", default=str(REAL), help="real-speech corpus to score on")
    parser.add_argument(
        "--clean-test", help="also score on this corpus's test split (e.g. a clean synth corpus)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for variant in args.variants:
        name, _, rest = variant.partition("=")
        store, _, options = rest.partition(":")
        model = args.out / name
        if name not in results:
            started = time.perf_counter()
            if not (model / "model.pt").is_file() or (model / "checkpoint.pt").is_file():
                resume = ["--resume"] if (model / "checkpoint.pt").is_file() else []
                run([sys.executable, "-m", "phonelabel.cli", "train", store, "--out", str(model),
                     "--epochs", str(args.epochs), "--device", "cpu", *resume,
                     *shlex.split(options)])  # fmt: skip
            results[name] = {
                "store": store,
                "options": options,
                "epochs": len((model / "metrics.jsonl").read_text().splitlines()),
                "train_minutes": round((time.perf_counter() - started) / 60, 1),
            }
        corpus = json.loads((Path(store) / "store.json").read_text()).get("corpus", store)
        scored = [("test", corpus, "test"), ("real", args.real, "all")]
        if args.clean_test:
            scored.append(("clean", args.clean_test, "test"))
        for key, where, split in scored:
            report = evaluate(model, where, split, args.out / f"{name}.{key}.json")
            for metric in METRICS:
                results[name][f"{key}_{metric}"] = report[metric]
        if results_path.is_file():  # another ablation may share --out: keep its rows
            results = {**json.loads(results_path.read_text()), **results}
        results_path.write_text(json.dumps(results, indent=1))
    columns = [
        (f"{key} {label}", f"{key}_{metric}")
        for key in ("test", "real", "clean")
        for label, metric in zip(("61", "39", "PER"), METRICS, strict=True)
    ]
    columns = [c for c in columns if any(c[1] in r for r in results.values())]
    print("| variant | options | epochs | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- " * (3 + len(columns)) + "|")
    for name, r in results.items():
        shown = " | ".join(f"{100 * r[c[1]]:.1f}" if c[1] in r else "" for c in columns)
        print(f"| {name} | `{r['store']}: {r['options']}` | {r['epochs']} | {shown} |")


if __name__ == "__main__":
    main()
