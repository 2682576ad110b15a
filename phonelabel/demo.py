"""The whole mission in one call: synth -> featurize -> train -> evaluate -> label.

Each stage calls the same library function its command does, on a small synthetic
corpus, with the default features and model; the test recording it labels comes from
voices the model never heard.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonelabel.config import TrainConfig
from phonelabel.corpus.synth import synthesize
from phonelabel.corpus.timit import assign_splits, find_utterances
from phonelabel.errors import PhonelabelError
from phonelabel.evaluate import evaluate
from phonelabel.fileio import write_text
from phonelabel.label import label_file, load_labeller, plot_file
from phonelabel.plots import write_plots
from phonelabel.store import featurize
from phonelabel.train import train

Stage = Callable[[str], Callable[[float, float], None] | None]


@dataclass
class DemoReport:
    directory: Path
    corpus: Path
    features: Path
    model: Path
    results: Path
    plots: Path
    textgrid: Path
    spectrogram: Path
    evaluation: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def demo(
    directory: str | Path = "phonelabel-demo",
    speakers: int = 30,
    utterances_per_speaker: int = 10,
    epochs: int = 12,
    seed: int = 0,
    device: str = "auto",
    stage: Stage | None = None,
) -> DemoReport:
    """Run every stage into ``directory``; ``stage(name)`` may return a progress callback."""
    directory = Path(directory)
    if directory.exists() and (directory / "model").exists():
        raise PhonelabelError(f"{directory}: holds an earlier demo; remove it or pick another DIR")
    corpus, features, model = directory / "corpus", directory / "features", directory / "model"
    results, plots = directory / "results.json", directory / "plots"
    seconds: dict[str, float] = {}

    def run(name: str, work: Callable[[Callable[[float, float], None] | None], Any]) -> Any:
        started = time.perf_counter()
        value = work(stage(name) if stage is not None else None)
        seconds[name] = time.perf_counter() - started
        return value

    run(
        "synthesise a corpus",
        lambda p: synthesize(corpus, speakers, utterances_per_speaker, seed=seed, on_progress=p),
    )
    run("featurize", lambda p: featurize(corpus, features, on_progress=p))
    config = TrainConfig(epochs=epochs, seed=seed, device=device)

    def train_stage(progress):
        def on_progress(p) -> None:
            if progress is not None:
                progress((p.epoch - 1) + p.step / p.steps, p.epochs)

        return train(features, model, config, on_progress=on_progress)

    run("train", train_stage)
    result = run(
        "evaluate on unseen voices",
        lambda p: evaluate(model, features, split="test", device=device, on_progress=p),
    )
    report = result.to_json()
    write_text(results, json.dumps(report, indent=2) + "\n")
    write_plots(report, plots)

    test = assign_splits(find_utterances(corpus))["test"][0]
    labeller = load_labeller(model, device=device)
    textgrid = directory / f"{test.utt_id}.TextGrid"
    spectrogram = directory / f"{test.utt_id}.png"

    def label_stage(progress):
        labelled = label_file(test.audio, labeller)
        labelled.write("textgrid", textgrid)
        plot_file(test.audio, labeller, spectrogram, reference=test.alignment, labelled=labelled)

    run("label a test recording", label_stage)
    return DemoReport(
        directory, corpus, features, model, results, plots, textgrid, spectrogram, report, seconds
    )
