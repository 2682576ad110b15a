"""Evaluation plots: the row-normalised 39x39 confusion and per-phone accuracy (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.fileio import atomic_path


def _pyplot():
    import matplotlib  # deferred: importing pyplot costs ~0.5 s

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110)


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
    _save(figure, Path(path))
    plt.close(figure)


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
    _save(figure, Path(path))
    plt.close(figure)


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
