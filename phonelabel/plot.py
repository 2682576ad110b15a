"""Plots as PNG files (matplotlib, Agg backend: no display needed). A plain module of
functions; each takes data and a path and writes one PNG atomically.

- ``plot_segments``: log-mel spectrogram with one or more tiers of phone segments under it
  (the first tier's boundaries are also drawn over the spectrogram; a segment's box is
  coloured by its confidence when it has one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from phonelabel.corpus.timit import Segment
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig, compute_features
from phonelabel.fileio import atomic_path

PLOT_SECONDS = 20.0  # default span: labels stay legible, the PNG stays small
SPECTROGRAM = FeatureConfig(kind="fbank", n_mels=80, delta_order=0)  # (T, 80) natural-log mel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as temp:
            figure.savefig(temp, format="png", dpi=dpi, bbox_inches="tight")
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot write the plot ({error.strerror})") from None
    finally:
        _pyplot().close(figure)
    return path


def plot_segments(
    samples: np.ndarray,
    tiers: Mapping[str, Sequence[Segment]],
    path: str | Path,
    start: float = 0.0,
    title: str = "",
    sample_rate: int = 16000,
) -> Path:
    """Spectrogram of ``samples`` (16 kHz, beginning at ``start`` seconds) with phone tiers.

    Segments are in seconds of the whole recording; those outside the span are left out.
    """
    plt = _pyplot()
    end = start + len(samples) / sample_rate
    log_mel = compute_features(samples, SPECTROGRAM)  # (T, 80)
    decibels = 10.0 / np.log(10.0) * log_mel.T  # (80, T), natural log -> dB
    width = min(max(8.0, 4.0 * (end - start)), 60.0)
    heights = [3.0] + [0.45] * len(tiers)
    figure, axes = plt.subplots(
        1 + len(tiers),
        1,
        figsize=(width, sum(heights) + 0.6),
        sharex=True,
        gridspec_kw={"height_ratios": heights, "hspace": 0.05},
        squeeze=False,
    )
    axes = axes[:, 0]
    hop = SPECTROGRAM.hop_length / sample_rate
    first_centre = start + SPECTROGRAM.win_length / 2 / sample_rate
    if decibels.shape[1]:
        top = float(decibels.max())
        axes[0].imshow(
            decibels,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - 70.0,
            vmax=top,
            extent=(first_centre - hop / 2, first_centre + hop * (decibels.shape[1] - 0.5), 0, 80),
            interpolation="nearest",
        )
    axes[0].set_ylabel("mel band")
    axes[0].set_xlim(start, end)
    if title:
        axes[0].set_title(title, loc="left", fontsize=10)
    colours = plt.get_cmap("RdYlGn")
    for number, (name, segments) in enumerate(tiers.items()):
        axis = axes[1 + number]
        shown = [s for s in segments if s.end > start and s.start < end]
        for i, segment in enumerate(shown):
            if segment.confidence is None:
                colour = "0.85" if i % 2 else "0.7"
            else:
                colour = colours(0.15 + 0.7 * float(segment.confidence))
            axis.axvspan(segment.start, segment.end, color=colour, lw=0)
            axis.axvline(segment.start, color="black", lw=0.6)
            middle = (max(segment.start, start) + min(segment.end, end)) / 2
            axis.text(middle, 0.5, segment.phone, ha="center", va="center", fontsize=8)
            if number == 0 and segment.start > start:
                axes[0].axvline(segment.start, color="white", lw=0.5, alpha=0.6)
        axis.set_yticks([0.5])
        axis.set_yticklabels([name])
        axis.set_ylim(0, 1)
    axes[-1].set_xlabel("time (s)")
    return save_figure(figure, path)


def plot_audio_file(
    audio_path: str | Path,
    tiers: Mapping[str, Sequence[Segment]],
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
) -> Path:
    """``plot_segments`` for a span of an audio file (default: its first PLOT_SECONDS)."""
    from phonelabel.label import AudioFile

    audio = AudioFile(audio_path)
    if not 0 <= start < audio.seconds:
        raise PhonelabelError(
            f"--start {start}: must be from 0 to the recording's length ({audio.seconds:.2f} s)"
        )
    if end is not None and not start < end < math.inf:
        raise PhonelabelError(f"--end {end}: must be a time after --start ({start})")
    end = min(audio.seconds, end if end is not None else start + PLOT_SECONDS)
    pieces, position = [], 0
    first, last = round(start * 16000), round(end * 16000)
    for block in audio.blocks():  # read only as far as the span needs
        pieces.append(block[max(first - position, 0) : max(last - position, 0)])
        position += len(block)
        if position >= last:
            break
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return plot_segments(samples, tiers, path, start=start, title=Path(audio_path).name)
