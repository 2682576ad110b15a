"""Forced-alignment speed: real-time factor on one CPU thread, and peak memory.

    python bench/align_speed.py [--minutes 10] [--source ../shared/realspeech/mfa] [--beam B]

Builds one long recording by concatenating the source recordings (16 kHz WAVs, each with a
TextGrid whose words tier is its transcript) until it lasts ``--minutes``, with the
concatenated words as its transcript, then aligns it with the shipped model on one thread.
Reports the whole run's real-time factor (seconds of computing per second of audio), the
share spent in the LSTM posterior pass vs. the Viterbi decoder, and the process's peak
resident memory (which should not grow with the recording's length: compare --minutes 5
and 60).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).parent))
from align_accuracy import read_short_textgrid  # noqa: E402

from phonelabel import align  # noqa: E402


def long_recording(source: Path, minutes: float, out: Path) -> str:
    """Write ``out`` (16-bit WAV) of the source recordings repeated; return the words."""
    pieces = []
    for grid in sorted(source.glob("*.TextGrid")):
        audio, rate = soundfile.read(str(grid.with_suffix(".wav")), dtype="int16")
        words = [s.phone for s in read_short_textgrid(grid)["words"] if s.phone]
        pieces.append((audio, " ".join(words)))
    assert rate == 16000
    samples, texts, total = [], [], 0
    while total < minutes * 60 * rate:
        for audio, text in pieces:
            samples.append(audio)
            texts.append(text)
            total += len(audio)
    with soundfile.SoundFile(str(out), "w", rate, 1, "PCM_16") as sink:
        for block in samples:
            sink.write(block)
    return " ".join(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--source", default=str(Path(__file__).parents[2] / "shared/realspeech/mfa")
    )
    parser.add_argument("--beam", type=float, default=None)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    aligner = align.load_aligner(args.model, "cpu")
    if args.beam is not None:
        aligner.params = replace(aligner.params, beam=args.beam)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        text = long_recording(Path(args.source), args.minutes, wav)
        seconds = soundfile.info(str(wav)).duration
        started = time.perf_counter()
        audio, frames, blocks = align.log_posterior_blocks(wav, aligner.labeller)
        posteriors = 0.0

        def timed(blocks):
            nonlocal posteriors
            while True:
                begin = time.perf_counter()
                block = next(blocks, None)
                posteriors += time.perf_counter() - begin
                if block is None:
                    return
                yield block

        words = align.normalize_text(text)
        result = align.align_words(words, aligner, timed(blocks), frames, seconds, str(wav))
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{seconds / 60:.1f} min of audio, {len(words):,} words, {len(result.phones):,} phones: "
        f"{elapsed:.1f} s on one thread, real-time factor {elapsed / seconds:.4f} "
        f"(posteriors {posteriors / seconds:.4f}, decoding and the rest "
        f"{(elapsed - posteriors) / seconds:.4f}); peak resident memory {peak:.0f} MB; "
        f"beam {aligner.params.beam}"
    )
    assert np.isfinite(elapsed)


if __name__ == "__main__":
    main()
