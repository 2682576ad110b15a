"""Batch sources for the trainer: a split's frames gathered into each step's window.

``SplitTensors`` puts the whole training split on the training device once and cuts every
window there; ``HostSplit`` leaves it in host memory (the store's memory map) and gathers
and normalises each window there, the next one while the device trains on this one.
``placement`` chooses between them (``--data-on auto``). ``spec_augment`` masks a window
as the trainer draws it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phonelabel.config import TrainConfig
from phonelabel.features import NO_LABEL
from phonelabel.schedule import Schedule
from phonelabel.store import SplitData

# One step's inputs on the device: x (B, W, D), targets (B, W) (-1: no loss), real (B, W)
# (False on padding) and reset (B, W) (True at an utterance's first frame).
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class SplitTensors:
    """A split's frames on the training device, with a padding row at index -1."""

    features: torch.Tensor  # (N + 1, D) float32; the last row is zeros
    labels: torch.Tensor  # (N + 1,) int64; -1 for unlabelled frames and the padding row

    @classmethod
    def from_arrays(cls, features: np.ndarray, labels: np.ndarray, device) -> SplitTensors:
        targets = labels.astype(np.int64)
        targets[labels == NO_LABEL] = -1
        features = np.asarray(features, np.float32)
        if not features.flags.writeable:  # a memmap: torch.from_numpy wants a writable array
            features = np.array(features)
        return cls(
            torch.cat([torch.from_numpy(features), torch.zeros(1, features.shape[1])]).to(device),
            torch.cat([torch.from_numpy(targets), torch.tensor([-1])]).to(device),
        )

    def windows(self, schedule: Schedule, start: int) -> Iterator[Window]:
        """Steps ``start``.. of a schedule already on the device, gathered there."""
        for step in range(start, len(schedule)):
            x_index, y_index, reset = schedule.step(step)
            yield self.features[x_index], self.labels[y_index], x_index >= 0, reset


@dataclass
class HostSplit:
    """A split left in host memory (the store's memory map): each window's frames are
    gathered and normalised there when needed, the next window in a thread while the
    device trains on this one, and sent over through pinned memory. The same numbers as
    ``SplitTensors.from_arrays(split.normalized_features(), ...)`` holds, window by window."""

    raw: np.ndarray  # (N, D) float32 memmap, raw features
    labels: np.ndarray  # (N,) uint8 memmap
    starts: np.ndarray  # (U,) first frame of each utterance, ascending
    speaker: np.ndarray  # (U,) index of each utterance's speaker in mean/std
    mean: np.ndarray  # (speakers, D) float32
    std: np.ndarray  # (speakers, D) float32
    device: torch.device

    @classmethod
    def from_split(cls, split: SplitData, device: torch.device) -> HostSplit:
        utterances = sorted(split.utterances, key=lambda u: u.offset)
        speakers = sorted({u.speaker for u in utterances})
        return cls(
            split.raw,
            split.labels,
            np.array([u.offset for u in utterances], dtype=np.int64),
            np.array([speakers.index(u.speaker) for u in utterances], dtype=np.int64),
            np.stack([np.asarray(split.speaker_stats[s][0], np.float32) for s in speakers]),
            np.stack([np.asarray(split.speaker_stats[s][1], np.float32) for s in speakers]),
            device,
        )

    def gather(self, x_index: np.ndarray, y_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, W) frame indices (-1: padding) -> normalised features (B, W, D) float32 and
        targets (B, W) int64, as ``features.normalize`` computes them."""
        rows = np.where(x_index >= 0, x_index, 0)
        speaker = self.speaker[np.searchsorted(self.starts, rows, side="right") - 1]
        x = (np.asarray(self.raw[rows], np.float32) - self.mean[speaker]) / self.std[speaker]
        x[x_index < 0] = 0.0
        targets = np.asarray(self.labels[np.where(y_index >= 0, y_index, 0)]).astype(np.int64)
        targets[(y_index < 0) | (targets == NO_LABEL)] = -1
        return x, targets

    def windows(self, schedule: Schedule, start: int) -> Iterator[Window]:
        """Steps ``start``.. of a schedule kept on the host; step i + 1 is gathered while
        step i trains."""

        def prepare(step: int) -> Window:
            x_index, y_index, reset = schedule.step(step)
            x, targets = self.gather(x_index.numpy(), y_index.numpy())
            tensors = (torch.from_numpy(x), torch.from_numpy(targets), x_index >= 0, reset)
            if self.device.type == "cuda":
                tensors = tuple(t.pin_memory() for t in tensors)
            return tensors  # type: ignore[return-value]

        with ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(prepare, start) if start < len(schedule) else None
            for step in range(start, len(schedule)):
                window = pending.result()  # type: ignore[union-attr]
                if step + 1 < len(schedule):
                    pending = prefetch.submit(prepare, step + 1)
                yield tuple(t.to(self.device, non_blocking=True) for t in window)  # type: ignore[misc]


def placement(data_on: str, device: torch.device, needed: int) -> str:
    """``--data-on auto``: the device when the split (``needed`` bytes there) takes at most
    half its free memory (the rest is for the model, activations and the allocator), else
    the host. On the CPU the "device" is RAM: a copy of the split next to the memory map."""
    if data_on != "auto":
        return data_on
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = _available_ram()
    return "device" if needed <= free // 2 else "host"


def _available_ram() -> int:
    """Bytes of RAM available without swapping (MemAvailable: free + reclaimable cache)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_bytes(split: SplitData, config: TrainConfig) -> int:
    """What the device path puts on the device: features, targets and the schedule's
    x/y indices and resets (x window / k1 for overlapping windows)."""
    frames, dim = split.raw.shape
    overlap = config.window / max(config.k1, 1) if config.k1 else 1.5
    return int(frames * (4 * dim + 8 + 17 * overlap))


def spec_augment(x: torch.Tensor, time_mask: int, freq_mask: int, groups: int) -> torch.Tensor:
    """SpecAugment for streamed windows (Park et al. 2019): each stream's window (B, W, D)
    gets one run of up to ``time_mask`` frames and one band of up to ``freq_mask`` of its
    D / groups static features set to 0 (the normalised mean); a band covers the same
    coefficients in every delta group. Widths and places come from torch's RNG (seeded,
    saved in checkpoints). Labels are untouched: the model learns to bridge the gap."""
    if time_mask <= 0 and freq_mask <= 0:
        return x
    streams, width, dim = x.shape
    keep = torch.ones(streams, width, dim, dtype=torch.bool, device=x.device)
    if time_mask > 0:
        span = torch.randint(0, min(time_mask, width) + 1, (streams, 1), device=x.device)
        start = (torch.rand(streams, 1, device=x.device) * (width - span + 1)).long()
        t = torch.arange(width, device=x.device)[None, :]
        keep &= ~((t >= start) & (t < start + span))[:, :, None]
    if freq_mask > 0:
        base = dim // groups
        span = torch.randint(0, min(freq_mask, base) + 1, (streams, 1), device=x.device)
        start = (torch.rand(streams, 1, device=x.device) * (base - span + 1)).long()
        f = torch.arange(dim, device=x.device)[None, :] % base
        keep &= ~((f >= start) & (f < start + span))[:, None, :]
    return x * keep
