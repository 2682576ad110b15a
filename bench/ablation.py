"""Ablate training options: train one model per variant, score each on unseen voices.

Each variant is ``NAME=STORE:OPTIONS`` (OPTIONS as `phonelabel train` takes them). Every
model is scored on its store's test split (held-out synthetic voices) and on real speech
(``--real``, a corpus `phonelabel evaluate` reads: by default the MFA-aligned recordings in
../shared/realspeech/mfa, which no variant ever trains on). Results go to a JSON file, one
record per variant, and a markdown table. A variant already in the JSON is not re-run, so an
interrupted ablation resumes.

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
            minutes = (time.perf_counter() - started) / 60
            corpus = json.loads((Path(store) / "store.json").read_text()).get("corpus", store)
            test = evaluate(model, corpus, "test", args.out / f"{name}.test.json")
            real = evaluate(model, args.real, "all", args.out / f"{name}.real.json")
            epochs = len((model / "metrics.jsonl").read_text().splitlines())
            results[name] = {
                "store": store,
                "options": options,
                "epochs": epochs,
                "train_minutes": round(minutes, 1),
                **{f"test_{k}": test[k] for k in ("frame_accuracy_61", "frame_accuracy_39")},
                "test_per": test["phone_error_rate_39"],
                **{f"real_{k}": real[k] for k in ("frame_accuracy_61", "frame_accuracy_39")},
                "real_per": real["phone_error_rate_39"],
            }
            if results_path.is_file():  # another ablation may share --out: keep its rows
                results = {**json.loads(results_path.read_text()), **results}
            results_path.write_text(json.dumps(results, indent=1))
    print(
        "| variant | options | epochs | test 61 | test 39 | test PER | real 61 | real 39 | real PER |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        cells = [r[k] for k in ("test_frame_accuracy_61", "test_frame_accuracy_39", "test_per",
                                "real_frame_accuracy_61", "real_frame_accuracy_39", "real_per")]  # fmt: skip
        shown = " | ".join(f"{100 * c:.1f}" for c in cells)
        print(f"| {name} | `{r['store']}: {r['options']}` | {r['epochs']} | {shown} |")


if __name__ == "__main__":
    main()
