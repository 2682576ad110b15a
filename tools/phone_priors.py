"""Add the training split's phone frequencies to a model dir that predates them.

`phonelabel train` stores ``phone_priors`` (61 frame frequencies of its training split) in
config.json; the aligner divides posteriors by them. For an older model, recreate the
corpus it was trained on (models/README.md gives the commands for models/default) and run

    python tools/phone_priors.py CORPUS MODEL_DIR

It counts the frame labels of the corpus's train split exactly as featurize makes them
(.PHN segments -> one label per 10 ms frame by its centre sample) and rewrites config.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile

from phonelabel.corpus.timit import assign_splits, find_utterances, read_phn
from phonelabel.features import frame_count, frame_labels
from phonelabel.fileio import write_json
from phonelabel.modeldir import CONFIG, load_model
from phonelabel.train import phone_frequencies


def corpus_phone_priors(corpus: Path, config) -> tuple[list[float], int]:
    labels = []
    for utterance in assign_splits(find_utterances(corpus))["train"]:
        if utterance.alignment is None:
            continue
        samples = soundfile.info(str(utterance.audio)).frames
        frames = frame_count(samples, config)
        labels.append(frame_labels(read_phn(utterance.alignment, samples), frames, config))
    joined = np.concatenate(labels)
    return phone_frequencies(joined), len(joined)


def main(corpus: str, model_dir: str) -> None:
    trained = load_model(model_dir)
    priors, frames = corpus_phone_priors(Path(corpus), trained.feature)
    path = Path(model_dir) / CONFIG
    config = json.loads(path.read_text())
    config["phone_priors"] = priors
    write_json(path, config)
    print(f"{path}: phone_priors from {frames:,} train frames of {corpus}")


if __name__ == "__main__":
    main(*sys.argv[1:])
