"""Every picture phonelabel draws, as PNG files (matplotlib, Agg backend: no display
needed), from one set-up: ``_pyplot`` (imported on first use: pyplot costs ~0.5 s) and
``save_figure`` (atomic write). Each function takes data and a path and writes one PNG.

- ``plot_segments`` / ``plot_audio_file``: log-mel spectrogram with tiers of phone segments
  under it (the first tier's boundaries also drawn over it; a box coloured by confidence).
- ``plot_confusion``, ``plot_per_phone``, ``write_plots``: evaluation results.
- ``plot_curves``: training loss and frame accuracy per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.audio import AudioFile
from phonelabel.core import SAMPLE_RATE, Segment
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig, compute_features
from phonelabel.fileio import atomic_path

PLOT_SECONDS = 20.0  # default span: labels stay legible, the PNG stays small
SPECTROGRAM = FeatureConfig(kind="fbank", n_mels=80, delta_order=0)  # (T, 80) natural-log mel


def _pyplot():
    import matplotlib  # deferred: importing pyplot costs ~0.5 s, and most commands draw nothing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as temp:
            figure.savefig(temp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot write the plot ({error.strerror})") from None
    finally:
        _pyplot().close(figure)
    return path


# --- spectrograms with phone segments -------------------------------------------------------


def plot_segments(
    samples: np.ndarray,
    tiers: Mapping[str, Sequence[Segment]],
    path: str | Path,
    start: float = 0.0,
    title: str = "",
    sample_rate: int = SAMPLE_RATE,
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
    audio = AudioFile(audio_path)
    if not 0 <= start < audio.seconds:
        raise PhonelabelError(
            f"start {start} s: must be from 0 to the recording's length ({audio.seconds:.2f} s)"
        )
    if end is not None and not start < end < math.inf:
        raise PhonelabelError(f"end {end} s: must be after start ({start} s)")
    end = min(audio.seconds, end if end is not None else start + PLOT_SECONDS)
    pieces, position = [], 0
    first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
    for block in audio.blocks():  # read only as far as the span needs
        pieces.append(block[max(first - position, 0) : max(last - position, 0)])
        position += len(block)
        if position >= last:
            break
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return plot_segments(samples, tiers, path, start=start, title=Path(audio_path).name)


# --- evaluation ------------------------------------------------------------------------------


def plot_confusion(
    matrix: np.ndarray,
    phones: list[str],
    path: str | Path,
    title: str = "",
    support: np.ndarray | None = None,
) -> None:
    """(39, 39) counts, row = reference -> heat map of each cell's share of its row's
    ``support`` (default: the row sum), phone names on both axes; empty rows grey."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1) if support is None else np.asarray(support, dtype=np.float64)
    shares = np.full_like(counts, np.nan)
    shares[totals > 0] = counts[totals > 0] / totals[totals > 0, None]
    # reference phones with no frames have no row to normalise: grey
    colours = plt.get_cmap("viridis").with_extremes(bad="0.85")
    figure, axes = plt.subplots(figsize=(10, 9))
    image = axes.imshow(np.ma.masked_invalid(shares), cmap=colours, vmin=0.0, vmax=1.0)
    ticks = np.arange(len(phones))
    axes.set_xticks(ticks, phones, rotation=90, fontsize=8)
    axes.set_yticks(ticks, phones, fontsize=8)
    axes.set_xlabel("predicted phone")
    axes.set_ylabel("reference phone (grey: no frames)")
    axes.set_title(title or "Confusion (39 classes), each row normalised to 1")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of reference frames")
    figure.tight_layout()
    save_figure(figure, path, tight=False)


def plot_per_phone(per_phone: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Per TIMIT-61 phone with reference frames: accuracy (61-way bars, folded-39 dots)
    above, support below."""
    plt = _pyplot()
    phones = [p for p in per_phone if per_phone[p]["frames"] > 0]
    x = np.arange(len(phones))

    def values(key: str) -> np.ndarray:
        return np.array(
            [np.nan if per_phone[p][key] is None else per_phone[p][key] for p in phones]
        )

    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(max(6.0, 0.26 * len(phones) + 2), 7),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    top.bar(x, values("accuracy"), color="tab:blue", label="61 classes")
    top.plot(x, values("accuracy_39"), "o", color="tab:orange", markersize=4, label="folded (39)")
    top.set_ylim(0, 1.05)
    top.set_ylabel("frame accuracy")
    top.grid(axis="y", alpha=0.3)
    top.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    top.set_title(title or "Per-phone frame accuracy", loc="left")
    bottom.bar(x, [per_phone[p]["frames"] for p in phones], color="tab:gray")
    bottom.set_yscale("symlog")
    bottom.set_ylabel("frames")
    bottom.set_xticks(x, phones, rotation=90, fontsize=8)
    bottom.set_xlim(-0.6, len(phones) - 0.4)
    figure.tight_layout()
    save_figure(figure, path, tight=False)


def write_plots(report: dict[str, Any], directory: str | Path) -> list[Path]:
    """confusion.png and per_phone.png of an evaluation's JSON report into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    where = f"{report['split']} split of {Path(report['source']).name}"
    confusion = directory / "confusion.png"
    per_phone = directory / "per_phone.png"
    phones_39 = report["phones_39"]
    plot_confusion(
        np.array(report["confusion_39"]),
        phones_39,
        confusion,
        f"Confusion, 39 classes, row-normalised ({where})",
        support=np.array([report["per_phone_39"][p]["frames"] for p in phones_39]),
    )
    plot_per_phone(report["per_phone"], per_phone, f"Per-phone frame accuracy ({where})")
    return [confusion, per_phone]


# --- training --------------------------------------------------------------------------------


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and dev frame accuracy per epoch (PNG)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in history], "o-")
    left.set(xlabel="epoch", ylabel="train cross-entropy (nats/frame)", title="training loss")
    for key, name in (
        ("dev_frame_accuracy_61", "dev, 61 phones"),
        ("dev_frame_accuracy_39", "dev, 39 classes"),
    ):
        values = [r[key] for r in history]
        if any(v is not None for v in values):
            right.plot(
                epochs, [100 * v if v is not None else np.nan for v in values], "o-", label=name
            )
    right.plot(
        epochs,
        [100 * r["train_frame_accuracy_61"] for r in history],
        "o--",
        label="train, 61 phones",
    )
    right.set(xlabel="epoch", ylabel="frame accuracy (%)", title="frame accuracy")
    right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path, dpi=100, tight=False)
