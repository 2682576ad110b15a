"""Featurize speed in x real time per CPU core (DESIGN.md §8 target: >= 300x).

    python bench/featurize.py [CORPUS] [--repeats 3]

Without CORPUS it makes a small synthetic corpus (``phonelabel synth``: festival/flite),
or, if that is not available, the tone corpus of the tests. One process, BLAS/OpenMP
pinned to one thread, timed in CPU seconds of this process (``time.process_time``), so
other jobs on a shared machine do not inflate the figures. Reports: the librosa reference and the numpy fast path on audio
already in memory (features only), their largest difference, and end-to-end
``featurize --jobs 1`` (read audio and .PHN, features, labels, normalise, write the store).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from phonelabel.audio import read_audio  # noqa: E402
from phonelabel.corpus.timit import find_utterances  # noqa: E402
from phonelabel.features import (  # noqa: E402
    FeatureConfig,
    compute_features,
    compute_features_reference,
)
from phonelabel.store import featurize  # noqa: E402


def make_corpus(root: Path) -> Path:
    try:
        from phonelabel.corpus.synth import synthesize

        synthesize(root / "synth", speakers=6, utterances_per_speaker=5, seed=0)
        return root / "synth"
    except Exception as error:  # no synth module or no engines: fall back to tones
        print(f"synth unavailable ({error}); using the tone corpus", file=sys.stderr)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import make_tone_corpus

        return make_tone_corpus(root / "tone", speakers_per_part=4, utterances=10)


def best_time(function, signals: list[np.ndarray], config: FeatureConfig, repeats: int) -> float:
    function(signals[0], config)  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for samples in signals:
            function(samples, config)
        times.append(time.process_time() - start)
    return min(times)  # the least disturbed run: the machine may be shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, help="TIMIT-layout corpus")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        corpus = args.corpus or make_corpus(Path(temp))
        signals = [read_audio(u.audio).samples for u in find_utterances(corpus)]
        seconds = sum(len(s) for s in signals) / 16000
        print(f"corpus {corpus}: {len(signals)} utterances, {seconds:.1f} s of audio, 1 core")
        for kind in ("mfcc", "fbank"):
            config = FeatureConfig(kind=kind)
            reference = best_time(compute_features_reference, signals, config, args.repeats)
            fast = best_time(compute_features, signals, config, args.repeats)
            difference = max(
                float(
                    np.abs(
                        compute_features(s, config) - compute_features_reference(s, config)
                    ).max()
                )
                for s in signals
            )
            print(
                f"{kind}: librosa reference {seconds / reference:7.0f}x real time,"
                f" numpy fast path {seconds / fast:7.0f}x real time,"
                f" max |fast - reference| {difference:.1e}"
            )
        out = Path(temp) / "store"
        start, wall = time.process_time(), time.perf_counter()
        featurize(corpus, out, FeatureConfig(), jobs=1, force=True)
        elapsed, wall = time.process_time() - start, time.perf_counter() - wall
        featurized = sum(len(read_audio(u.path).samples) for u in _stored(out)) / 16000
        print(
            f"end to end featurize --jobs 1 (mfcc): {featurized / elapsed:.0f}x real time"
            f" ({featurized:.1f} s of audio in {elapsed:.2f} CPU s, {wall:.2f} s wall)"
        )


def _stored(out: Path):
    from phonelabel.store import open_store

    store = open_store(out)
    return [u for name in store.split_names for u in store.split(name).utterances]


if __name__ == "__main__":
    main()
