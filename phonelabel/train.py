"""Multi-stream truncated BPTT(k1, k2) training of PhoneLSTM (DESIGN.md §6).

B streams run side by side. Utterances are laid end to end in each stream's
*timeline*, every utterance starting on a k1-frame boundary (an utterance's last chunk
is padded; ~k1/2 frames of padding per utterance). Step i updates on timeline frames
[i*k1, (i+1)*k1): it runs the network over the window of the last k2 frames
[(i+1)*k1 - k2, (i+1)*k1) from the state saved at the window's start (detached there),
takes the loss on the newest k1 outputs, backpropagates, clips, updates, and saves the
state k1 frames into the window: the next window's start. A stream's state is zeroed
where an utterance starts, so nothing leaks from one utterance into the next.

k2 == k1 (the default) is one fused nn.LSTM call per step; k2 > k1 unrolls the window
frame by frame (``PhoneLSTM.forward_with_resets``), since an utterance can start
inside it. k1 == 0 is whole-utterance BPTT: one update per batch of B utterances.

Under torchrun (``distributed.py``) every rank builds the same seeded schedule and runs its
own contiguous B/N of the streams; the loss is divided by the step's scored frames over all
B streams (every rank knows them from the schedule) and the gradients are summed over the
ranks before clipping, so N ranks make the update one process with B streams makes. The
training split sits on the device (``SplitTensors``), or, when it does not fit, stays in
host memory and each window is gathered there, the next one while this one trains
(``HostSplit``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from phonelabel.config import TrainConfig
from phonelabel.decode import phone_error_rate, tune_decoder
from phonelabel.distributed import (
    SINGLE,
    GradientBuckets,
    Ranks,
    ReportedByRankZero,
    agree,
    broadcast,
    gather_streams,
    process_group,
    ranks_from_env,
    step_seed,
    sum_array,
    sum_values,
    summed_gradients,
)
from phonelabel.errors import PhonelabelError
from phonelabel.features import NO_LABEL, FeatureConfig, config_differences
from phonelabel.fileio import LOCK_FILE, output_lock, remove_left_overs, write_text
from phonelabel.metrics import confusion_61, fold_confusion
from phonelabel.model import (
    ModelConfig,
    PhoneLSTM,
    State,
    batched_log_posteriors,
    resolve_device,
)
from phonelabel.modeldir import (
    TrainedModel,
    default_model_dir,
    load_model,
    load_state_dict,
    save_model,
    save_state_dict,
)
from phonelabel.phones import NUM_PHONES
from phonelabel.plots import plot_curves
from phonelabel.store import SplitData, open_store

CHECKPOINT = "checkpoint.pt"  # last state for --resume (model.pt is the best one)
METRICS = "metrics.jsonl"


# --- the schedule: which frames each stream sees at each step --------------------------


@dataclass
class Schedule:
    """Per step: frame indices of the window (-1 = padding) and where utterances start.

    x_index, y_index: (S, B, W) int64 into the split's frames (y -1 = no loss);
    reset: (S, B, W) bool, True at an utterance's first frame; frames: (S,) scored frames;
    widths: (S,) the window frames step s uses (k1 = 0: its longest utterance), or None (all W).
    """

    x_index: torch.Tensor
    y_index: torch.Tensor
    reset: torch.Tensor
    frames: np.ndarray
    widths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def step(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_index, y_index and reset of step ``i``, (B, width) each."""
        width = self.x_index.shape[2] if self.widths is None else int(self.widths[i])
        return self.x_index[i, :, :width], self.y_index[i, :, :width], self.reset[i, :, :width]

    def to(self, device: torch.device) -> Schedule:
        return replace(
            self,
            x_index=self.x_index.to(device),
            y_index=self.y_index.to(device),
            reset=self.reset.to(device),
        )

    def streams(self, share: slice) -> Schedule:
        """One rank's streams; ``frames`` still counts all B (the loss's divisor)."""
        return replace(
            self,
            x_index=self.x_index[:, share].contiguous(),
            y_index=self.y_index[:, share].contiguous(),
            reset=self.reset[:, share].contiguous(),
        )


def utterance_frames(offset: int, frames: int, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Input and target frame indices of one utterance with target delay d.

    Input: the T frames then the last one d more times; target: d blanks then the T labels
    (the output at t + d is trained on the label of frame t).
    """
    x = np.concatenate([np.arange(offset, offset + frames), np.full(delay, offset + frames - 1)])
    y = np.concatenate([np.full(delay, -1), np.arange(offset, offset + frames)])
    return x, y


def build_schedule(
    offsets: np.ndarray,
    lengths: np.ndarray,
    order: np.ndarray,
    config: TrainConfig,
    labelled: np.ndarray | None = None,
) -> Schedule:
    """Lay utterances (in ``order``) into B stream timelines and cut TBPTT windows
    (``--k1 0``: batches of whole utterances). Frames where ``labelled`` (a boolean per frame
    of the split) is False are run through but neither scored nor counted."""
    if config.k1 == 0:
        schedule = _whole_utterance_schedule(offsets, lengths, order, config)
    else:
        schedule = _tbptt_schedule(offsets, lengths, order, config)
    if labelled is not None and not labelled.all():
        y_index = schedule.y_index
        unlabelled = torch.from_numpy(~np.asarray(labelled, dtype=bool))
        y_index[(y_index >= 0) & unlabelled[y_index.clamp(min=0)]] = -1
        schedule.frames = (y_index >= 0).sum(dim=(1, 2)).numpy()
    return schedule


def _tbptt_schedule(
    offsets: np.ndarray, lengths: np.ndarray, order: np.ndarray, config: TrainConfig
) -> Schedule:
    k1, streams = config.k1, config.batch_streams
    # Each utterance goes to the stream whose timeline is shortest. The last 2B go longest
    # first, so the streams end nearly together: idle streams at the end are wasted compute.
    order = np.asarray(order)
    tail = order[-2 * streams :]
    order = np.concatenate([order[: -2 * streams], tail[np.argsort(-lengths[tail], kind="stable")]])
    pieces: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(streams)]
    used = np.zeros(streams, dtype=np.int64)
    for u in order:
        x, y = utterance_frames(int(offsets[u]), int(lengths[u]), config.delay)
        chunks = -(-len(x) // k1)
        pad = chunks * k1 - len(x)
        s = int(np.argmin(used))
        pieces[s].append(
            (np.pad(x, (0, pad), constant_values=-1), np.pad(y, (0, pad), constant_values=-1))
        )
        used[s] += chunks * k1
    history = config.window - k1  # frames before the newest k1 in each window
    total = history + int(used.max())
    x_line = np.full((streams, total), -1, dtype=np.int64)
    y_line = np.full((streams, total), -1, dtype=np.int64)
    start = np.zeros((streams, total), dtype=bool)
    for s, stream in enumerate(pieces):
        position = history
        for x, y in stream:
            x_line[s, position : position + len(x)] = x
            y_line[s, position : position + len(y)] = y
            start[s, position] = True
            position += len(x)
    steps = (total - history) // k1
    # Window i = timeline[i*k1 : i*k1 + k2] (with the history padding on the left).
    window = np.arange(config.window)[None, :] + k1 * np.arange(steps)[:, None]  # (S, W)
    x_index = x_line[:, window].transpose(1, 0, 2)  # (B, S, W) -> (S, B, W)
    y_index = y_line[:, window].transpose(1, 0, 2).copy()
    y_index[:, :, :history] = -1  # loss on the newest k1 outputs only
    reset = start[:, window].transpose(1, 0, 2)
    return Schedule(
        torch.from_numpy(np.ascontiguousarray(x_index)),
        torch.from_numpy(y_index),
        torch.from_numpy(np.ascontiguousarray(reset)),
        (y_index >= 0).sum(axis=(1, 2)),
    )


def _whole_utterance_schedule(
    offsets: np.ndarray, lengths: np.ndarray, order: np.ndarray, config: TrainConfig
) -> Schedule:
    """k1 = 0: batches of B whole utterances of similar length, padded to the longest."""
    streams = config.batch_streams
    # Sort within shuffled pools of 50 batches so padding stays small but batches vary; then
    # shuffle the batches (seeded by this epoch's order), or every epoch would run short to long.
    pool = streams * 50
    order = np.concatenate(
        [sorted(order[i : i + pool], key=lambda u: lengths[u]) for i in range(0, len(order), pool)]
    )
    longest = int(lengths.max()) + config.delay
    batches = [order[i : i + streams] for i in range(0, len(order), streams)]
    shuffle = np.random.default_rng(np.asarray(order, dtype=np.int64)).permutation(len(batches))
    batches = [batches[b] for b in shuffle]
    x_index = np.full((len(batches), streams, longest), -1, dtype=np.int64)
    y_index = np.full_like(x_index, -1)
    for b, batch in enumerate(batches):
        for s, u in enumerate(batch):
            x, y = utterance_frames(int(offsets[u]), int(lengths[u]), config.delay)
            x_index[b, s, : len(x)] = x
            y_index[b, s, : len(y)] = y
    reset = np.zeros(x_index.shape, dtype=bool)
    reset[:, :, 0] = True
    return Schedule(
        torch.from_numpy(x_index),
        torch.from_numpy(y_index),
        torch.from_numpy(reset),
        (y_index >= 0).sum(axis=(1, 2)),
        np.array([lengths[batch].max() + config.delay for batch in batches]),
    )


# --- where the frames come from ------------------------------------------------------------

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


def data_path(data_on: str, device: torch.device, needed: int) -> str:
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


# --- one step -----------------------------------------------------------------------------


def compute_loss(
    model: PhoneLSTM,
    window: Window,
    state: State,
    frames: int,
    capture_at: int,
    input_noise: float = 0.0,
    masks: tuple[int, int, int] = (0, 0, 1),
) -> tuple[torch.Tensor, State, torch.Tensor]:
    """Cross-entropy summed over the window's scored frames, divided by ``frames`` (the
    step's scored frames over all streams of all ranks); returns (loss, next state, correct).

    ``masks``: (time_mask, freq_mask, feature groups) for ``spec_augment``."""
    x, targets, real, reset = window  # (B, W, D), (B, W), (B, W), (B, W)
    if model.training:
        if input_noise > 0:
            x = x + input_noise * torch.randn_like(x) * real.unsqueeze(-1)
        x = spec_augment(x, *masks)
    if capture_at == x.shape[1]:  # k2 == k1: resets only at the window start
        keep = (~reset[:, 0]).to(x.dtype)[None, :, None]
        logits, state = model(x, (state[0] * keep, state[1] * keep))  # (B, W, 61)
    else:
        logits, state = model.forward_with_resets(x, state, reset, capture_at)
    loss = F.cross_entropy(
        logits.reshape(-1, NUM_PHONES).float(),
        targets.reshape(-1),
        ignore_index=-1,
        reduction="sum",
    ) / max(frames, 1)
    correct = (logits.argmax(-1) == targets).sum()
    return loss, (state[0].detach(), state[1].detach()), correct


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


def clip_gradients(model: PhoneLSTM, config: TrainConfig) -> torch.Tensor:
    """Clip just before the update; returns the global norm of the gradients as they came
    from backward, before any clipping (0 if norm clipping is off)."""
    params = list(model.lstm.parameters())
    if config.clip_output:
        params += list(model.output.parameters())
    if config.clip <= 0:
        if config.clip_value > 0:
            torch.nn.utils.clip_grad_value_(params, config.clip_value)
        return torch.zeros((), device=params[0].device)
    if config.clip_value <= 0:
        return torch.nn.utils.clip_grad_norm_(params, config.clip)
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    torch.nn.utils.clip_grad_value_(params, config.clip_value)
    torch.nn.utils.clip_grad_norm_(params, config.clip)
    return norm


# --- the loop -----------------------------------------------------------------------------


@dataclass
class Progress:
    """What ``on_progress`` receives, every few steps and at each epoch's end."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    frames_per_second: float
    clip_fraction: float
    lr: float
    epoch_done: dict[str, Any] | None = None  # the metrics.jsonl record at an epoch's end


@dataclass
class RunState:
    """Everything --resume needs beyond the weights and the optimiser."""

    epoch: int = 0
    step: int = 0  # next step of `epoch` (0 = epoch not started)
    lr: float = 0.0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)  # the running epoch's sums


def make_optimizer(model: PhoneLSTM, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )


def split_posteriors(
    model: PhoneLSTM, split, device: torch.device, batch: int = 64, ranks: Ranks = SINGLE
):
    """(log-posteriors (T, 61) numpy, its Reference) of every utterance of a split (with
    several ranks: of this rank's share), each from a zero state, target delay honoured
    (batched by similar length)."""
    chosen = ranks.items(len(split.utterances))
    lengths = [split.utterances[i].frames for i in chosen]
    for j, log_posteriors in batched_log_posteriors(
        model, lambda j: split.utterance_features(chosen[j]), lengths, device, batch
    ):
        yield log_posteriors, split.reference(chosen[j])


def frame_accuracies(model: PhoneLSTM, split, device: torch.device, ranks: Ranks = SINGLE) -> dict:
    """Frame accuracy (61 and folded 39 classes), scored exactly as ``evaluate`` scores;
    with several ranks each scores its share and the confusions are summed."""
    confusion = np.zeros((NUM_PHONES, NUM_PHONES), dtype=np.int64)
    for log_posteriors, reference in split_posteriors(model, split, device, ranks=ranks):
        confusion += confusion_61(reference.frames, log_posteriors.argmax(-1))
    confusion = sum_array(ranks, confusion)
    scored = int(confusion.sum())
    return {
        "frame_accuracy_61": float(np.trace(confusion)) / max(scored, 1),
        "frame_accuracy_39": fold_confusion(confusion).accuracy or 0.0,
        "frames": scored,
    }


def tune_decoder_on(
    model: PhoneLSTM, split, device: torch.device
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Viterbi smoothing parameters with the lowest 39-class PER on ``split`` (dev), and how
    they were found."""
    posteriors, references = zip(*split_posteriors(model, split, device), strict=True)
    params = tune_decoder(posteriors, references)
    return params.to_dict(), {
        "tuned_on": "dev",
        "dev_phone_error_rate_39": phone_error_rate(posteriors, references, params),
        "dev_phone_error_rate_39_argmax": phone_error_rate(posteriors, references, smooth=False),
    }


def phone_frequencies(labels: np.ndarray) -> list[float]:
    """(61,) share of the labelled frames held by each phone (the aligner's priors)."""
    labels = labels[labels != NO_LABEL].astype(np.int64)
    counts = np.bincount(labels, minlength=NUM_PHONES)[:NUM_PHONES]
    return [float(c) / max(1, len(labels)) for c in counts]


def _check_labels(labels: np.ndarray, where: str) -> None:
    bad = (labels >= NUM_PHONES) & (labels != NO_LABEL)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise PhonelabelError(
            f"{where}: label {int(labels[first])} at frame {first} is out of range (0..60)"
        )


def _prepare_out(out: Path, resume: bool) -> None:
    """Refuse to start a fresh run in a model directory that holds anything (output_lock made it)."""
    remove_left_overs(out)  # a killed run's half-written files: neither output nor checkpoint
    if not resume and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise PhonelabelError(
            f"{out}: already exists and is not empty; resume it or choose another output"
        )


class EpochMeter:
    """Epoch sums kept on the device between syncs (a .item() per step would stall a GPU)."""

    def __init__(self, totals: dict[str, float], device: torch.device, ranks: Ranks = SINGLE):
        self.totals = totals
        self.ranks = ranks
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.clipped = torch.zeros((), device=device, dtype=torch.long)
        self.frames = self.steps = 0
        self.started = time.perf_counter()
        self.seconds_before = totals["seconds"]

    def add(self, loss: torch.Tensor, frames: int, correct: torch.Tensor, clipped) -> None:
        self.loss += loss.detach() * frames
        self.correct += correct
        self.clipped += clipped
        self.frames += frames
        self.steps += 1

    def flush(self, where: str, due: bool = False) -> tuple[dict[str, float], bool]:
        """Add the device sums into ``totals`` (one sync; with several ranks, summed over
        them) and refuse a diverged loss. Returns the totals and ``due`` as rank 0 has it
        (whether to checkpoint now: the ranks must agree, and only rank 0's clock counts)."""
        if self.ranks.distributed:  # the frames and the clipping are the same on every rank
            flag = float(due and self.ranks.main)
            sums = torch.stack([self.loss.double(), self.correct.double()])
            sums = sum_values(torch.cat([sums, sums.new_tensor([flag])])).tolist()
            loss, correct, due = sums[0], int(sums[1]), sums[2] > 0
        else:
            loss, correct = float(self.loss), int(self.correct)
        if not math.isfinite(loss):  # every rank sees the same sum: rank 0 reports it
            raise (ReportedByRankZero if self.ranks.distributed else PhonelabelError)(
                f"training diverged (loss is {loss}) {where}; a model.pt written before (the "
                "best epoch so far) is kept (try a lower --lr or --clip)"
            )
        totals = self.totals
        totals["loss"] += loss
        totals["correct"] += correct
        totals["clipped"] += int(self.clipped)
        totals["frames"] += self.frames
        totals["steps"] += self.steps
        totals["seconds"] = self.seconds_before + time.perf_counter() - self.started
        self.loss.zero_(), self.correct.zero_(), self.clipped.zero_()
        self.frames = self.steps = 0
        return totals, due


def run_epoch(
    model: PhoneLSTM,
    optimizer: torch.optim.Optimizer,
    data: SplitTensors,
    schedule: Schedule,
    config: TrainConfig,
    run: RunState,
    state: State,
    on_progress: Callable[[Progress], None] | None,
    save_checkpoint: Callable[[State], None],
    ranks: Ranks = SINGLE,
    groups: int = 1,
) -> State:
    """The TBPTT loop: window -> loss on the newest k1 frames -> backward -> (sum over the
    ranks) -> clip -> step. ``data`` is SplitTensors or HostSplit; ``schedule`` holds this
    rank's streams. Returns the streams' state after the last step (where the next would
    start). ``groups``: the features' static + delta groups (SpecAugment's bands span them
    all)."""
    model.train()
    meter = EpochMeter(run.totals, state[0].device, ranks)
    autocast = torch.autocast(state[0].device.type, torch.bfloat16, config.precision == "bf16")
    last_checkpoint = time.perf_counter()
    windows = data.windows(schedule, run.step)
    buckets = GradientBuckets(model.parameters())
    for step in range(run.step, len(schedule)):
        frames = int(schedule.frames[step])  # all ranks' streams: the loss's divisor
        window = next(windows)
        capture_at = config.k1 or window[0].shape[1]  # where the next window starts
        if ranks.distributed:  # each rank its own dropout and noise, reproducible on resume
            torch.manual_seed(step_seed(config.seed, run.epoch, step, ranks.rank))
        with autocast:
            loss, state, correct = compute_loss(
                model,
                window,
                state,
                frames,
                capture_at,
                config.input_noise,
                (config.time_mask, config.freq_mask, groups),
            )
        if frames:  # a window of padding only (streams drained) carries state, no update
            optimizer.zero_grad(set_to_none=True)
            with summed_gradients(buckets, ranks):  # all-reduced in buckets during backward
                loss.backward()
            norm = clip_gradients(model, config)
            optimizer.step()
            meter.add(loss, frames, correct, (norm > config.clip) if config.clip > 0 else 0)
        last = step == len(schedule) - 1
        report = step % 25 == 0 or last
        due = not last and time.perf_counter() - last_checkpoint > config.checkpoint_seconds
        if ranks.distributed:  # all ranks must save together: rank 0's clock, where they meet
            due = not last and (config.checkpoint_seconds == 0 or (due and report))
        if report or due:
            totals, due = meter.flush(f"in epoch {run.epoch + 1}, step {step + 1}", due)
            if report and on_progress is not None:
                on_progress(
                    Progress(
                        run.epoch + 1,
                        config.epochs,
                        step + 1,
                        len(schedule),
                        totals["loss"] / max(totals["frames"], 1),
                        totals["frames"] / max(totals["seconds"], 1e-9),
                        totals["clipped"] / max(totals["steps"], 1),
                        run.lr,
                    )
                )
        if due:
            run.step = step + 1
            save_checkpoint(state)
            last_checkpoint = time.perf_counter()
    return state


def _model_config(config: TrainConfig, input_dim: int) -> ModelConfig:
    """The network a run trains: its size and delay from ``config``, inputs from the store."""
    return ModelConfig(
        input_dim=input_dim,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        delay=config.delay,
    )


def _initial_model(init: str, model_config: ModelConfig, feature: FeatureConfig) -> TrainedModel:
    """The trained model ``init`` names (a model dir, or "default": the shipped one), refused
    when its feature config or size differs from this run's (its phones are TIMIT-61:
    ``read_config`` refuses any other set)."""
    directory = default_model_dir() if init == "default" else Path(init)
    start = load_model(directory, "cpu")
    differences = config_differences(start.feature, feature, "this run's features")
    have = start.model.config
    for name in ("input_dim", "hidden", "layers", "num_classes", "delay"):
        if getattr(have, name) != getattr(model_config, name):
            differences.append(
                f"{name}: {getattr(have, name)!r} (model) vs {getattr(model_config, name)!r} (this run)"
            )
    if differences:
        raise PhonelabelError(
            f"{directory}: cannot start from this model, it differs from the run: "
            + "; ".join(differences)
        )
    return start


def train(
    features: str | Path,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    changes: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
) -> TrainedModel:
    """Train on a feature store's train split, select on dev; returns the best model.

    ``resume``: continue the run in ``out`` with its own options; ``changes`` may alter the
    ones ``config.RESUME_SAFE`` lists (``config`` is not used). Without ``resume``,
    ``changes`` are applied to ``config``. A second run writing the same ``out`` is refused.
    ``ranks``: this process's place among torchrun's (default: from the environment); rank
    0 alone writes ``out`` and reports progress.
    """
    ranks = ranks_from_env() if ranks is None else ranks
    with process_group(ranks):
        if not ranks.main:
            return _train(features, Path(out), config, resume, None, changes, ranks)
        with output_lock(out, "a model"):
            return _train(features, Path(out), config, resume, on_progress, changes, ranks)


def _read_checkpoint(out: Path) -> dict[str, Any]:
    if not (out / CHECKPOINT).is_file():
        raise PhonelabelError(f"{out}: nothing to resume (no {CHECKPOINT})")
    return load_state_dict(out / CHECKPOINT)


def _train(
    features: str | Path,
    out: Path,
    config: TrainConfig,
    resume: bool,
    on_progress: Callable[[Progress], None] | None,
    changes: dict[str, Any] | None,
    ranks: Ranks,
) -> TrainedModel:
    # rank 0 reads the checkpoint (--out need not be shared between nodes) and sends it over
    checkpoint = agree(ranks, lambda: _read_checkpoint(out) if resume and ranks.main else None)
    checkpoint = broadcast(ranks, checkpoint)
    setup = agree(ranks, lambda: _setup(features, out, config, checkpoint, changes, ranks))
    config, device, store, start = setup
    if config.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fingerprint = store.info.get("fingerprint")
    train_split = store.split("train")
    dev_split = store.split("dev") if "dev" in store.split_names else None
    if dev_split is not None and not dev_split.utterances:
        dev_split = None
    model_config = _model_config(config, store.config.dim)

    torch.manual_seed(config.seed)
    model = PhoneLSTM(model_config).to(device)
    if start is not None and checkpoint is None:
        model.load_state_dict(start.model.state_dict())
    optimizer = make_optimizer(model, config)
    run = RunState(lr=config.learning_rate)
    share = ranks.streams(config.batch_streams)
    stream_state = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        run = RunState(**checkpoint["run"])
        torch.set_rng_state(checkpoint["rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in checkpoint["cuda_rng"]])
        if "stream_state" in checkpoint:  # all B streams: this rank takes its share
            stream_state = tuple(t[:, share].to(device) for t in checkpoint["stream_state"])
    on_device = data_path(config.data_on, device, device_bytes(train_split, config)) == "device"
    trained = TrainedModel(
        model=model,
        feature=store.config,
        stats=store.stats,
        training=asdict(config),
        run={
            "features": str(Path(features).resolve()),
            "device_used": str(device),
            "world_size": ranks.world,
            "data_on_used": "device" if on_device else "host",
            **({"init_model": str(start.directory.resolve())} if start is not None else {}),
        },
        directory=out,
        phone_priors=phone_frequencies(np.asarray(train_split.labels)),
    )
    if on_device:
        data = SplitTensors.from_arrays(
            train_split.normalized_features(), train_split.labels, device
        )
    else:
        data = HostSplit.from_split(train_split, device)
    offsets = np.array([u.offset for u in train_split.utterances])
    lengths = np.array([u.frames for u in train_split.utterances])
    labelled = np.asarray(train_split.labels) != NO_LABEL  # .PHN gaps: run, not trained

    def save_checkpoint(state: State | None) -> None:
        whole = None if state is None else tuple(gather_streams(ranks, t) for t in state)
        if ranks.main:
            _save_checkpoint(out, model, optimizer, run, config, whole, fingerprint, ranks.world)

    def finished() -> bool:  # also true when resuming a run that already stopped early
        return run.epoch >= config.epochs or (
            dev_split is not None and run.bad_epochs >= config.patience
        )

    while not finished():
        order = np.random.default_rng([config.seed, run.epoch]).permutation(len(lengths))
        schedule = build_schedule(offsets, lengths, order, config, labelled).streams(share)
        if on_device:
            schedule = schedule.to(device)
        if run.step == 0 or stream_state is None:
            stream_state = model.zero_state(share.stop - share.start, device)
            run.step = 0
            run.totals = dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0)
        for group in optimizer.param_groups:
            group["lr"] = run.lr
        run_epoch(
            model,
            optimizer,
            data,
            schedule,
            config,
            run,
            stream_state,
            on_progress,
            save_checkpoint,
            ranks,
            groups=1 + store.config.delta_order,
        )
        stream_state = None
        record = _end_epoch(run, model, dev_split, device, ranks)
        if ranks.main:
            if record["best"]:
                save_model(out, trained)
            _write_metrics(out, run.history)
        _adjust_schedule(run, config, optimizer)
        run.epoch += 1
        run.step = 0
        save_checkpoint(None)
        if on_progress is not None:
            on_progress(
                Progress(
                    run.epoch,
                    config.epochs,
                    len(schedule),
                    len(schedule),
                    record["train_loss"],
                    record["train_frames_per_second"],
                    record["clip_fraction"],
                    record["lr"],
                    record,
                )
            )
    if not ranks.main:  # rank 0 alone tunes the decoder and writes the final model
        return trained
    model.load_state_dict(load_state_dict(out / "model.pt", device))
    model.eval()
    if dev_split is not None and config.tune_decoder:
        trained.decoder, trained.decoder_tuning = tune_decoder_on(model, dev_split, device)
        save_model(out, trained)
    return trained


def _setup(
    features: str | Path,
    out: Path,
    config: TrainConfig,
    checkpoint: dict[str, Any] | None,
    changes: dict[str, Any] | None,
    ranks: Ranks,
) -> tuple[TrainConfig, torch.device, Any, TrainedModel | None]:
    """Every check before training: (the run's resolved config, device, opened store, the
    --init model or None). Rank 0 also makes sure ``out`` may be written."""
    if checkpoint is not None:
        config = TrainConfig(**checkpoint["config"]).resumed(changes or {})
        trained_by = checkpoint.get("world_size", 1)
        if trained_by != ranks.world:
            raise PhonelabelError(
                f"{out}: this run was trained by {trained_by} process(es) and resumes only "
                f"with {trained_by} (torchrun --nnodes x --nproc-per-node), not {ranks.world}"
            )
    elif changes:
        config = replace(config, **changes)
    config.check()
    device = resolve_device(config.device)
    config = config.resolved(device.type == "cuda", ranks.world)
    ranks.check_streams(config.batch_streams)
    if config.precision == "bf16" and device.type != "cuda":
        raise PhonelabelError("precision bf16 needs a CUDA GPU (use fp32 on the CPU)")
    store = open_store(features)
    if "train" not in store.split_names or not store.split("train").utterances:
        raise PhonelabelError(f"{features}: the train split is empty")
    fingerprint = store.info.get("fingerprint")
    if checkpoint is not None and checkpoint.get("store") not in (None, fingerprint):
        raise PhonelabelError(
            f"{features}: not the feature store this run started on; resume it with that one"
        )
    _check_labels(np.asarray(store.split("train").labels), f"{features}/train/labels.npy")
    model_config = _model_config(config, store.config.dim)
    # a resumed run's weights come from its checkpoint; the --init model was its start only
    starting = config.init and checkpoint is None
    start = _initial_model(config.init, model_config, store.config) if starting else None
    if ranks.main:
        _prepare_out(out, checkpoint is not None)  # after every check (output_lock cleans up)
    return config, device, store, start


def _end_epoch(
    run: RunState, model: PhoneLSTM, dev_split, device: torch.device, ranks: Ranks = SINGLE
) -> dict[str, Any]:
    totals = run.totals
    record: dict[str, Any] = {
        "epoch": run.epoch + 1,
        "train_loss": totals["loss"] / max(totals["frames"], 1),
        "train_frames": int(totals["frames"]),
        "train_seconds": totals["seconds"],
        "train_frames_per_second": totals["frames"] / max(totals["seconds"], 1e-9),
        "train_frame_accuracy_61": totals["correct"] / max(totals["frames"], 1),
        "steps": int(totals["steps"]),
        "clip_fraction": totals["clipped"] / max(totals["steps"], 1),
        "lr": run.lr,
        "dev_frame_accuracy_61": None,
        "dev_frame_accuracy_39": None,
    }
    if dev_split is not None:
        dev = frame_accuracies(model, dev_split, device, ranks)
        record["dev_frame_accuracy_61"] = dev["frame_accuracy_61"]
        record["dev_frame_accuracy_39"] = dev["frame_accuracy_39"]
        accuracy = dev["frame_accuracy_61"]
    else:  # no dev split: the latest epoch is the one kept
        accuracy = float(run.epoch)
    record["best"] = accuracy > run.best_accuracy
    if record["best"]:
        run.best_accuracy, run.best_epoch, run.bad_epochs = accuracy, run.epoch + 1, 0
    else:
        run.bad_epochs += 1
    run.history.append(record)
    return record


def _adjust_schedule(run: RunState, config: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
    """Halve the learning rate after every ``lr_patience`` epochs without dev improvement."""
    if run.bad_epochs and run.bad_epochs % config.lr_patience == 0:
        run.lr = max(run.lr / 2, config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = run.lr


def _save_checkpoint(
    out,
    model,
    optimizer,
    run: RunState,
    config: TrainConfig,
    stream_state,
    store: str | None,
    world_size: int = 1,
) -> None:
    state = {
        "store": store,  # the feature store's fingerprint: --resume checks it
        "world_size": world_size,  # torchrun's processes: --resume needs as many
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run": asdict(run),
        "config": asdict(config),
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # dropout and input noise on a GPU draw from its generator
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    if stream_state is not None:
        state["stream_state"] = [t.detach().cpu() for t in stream_state]
    save_state_dict(Path(out) / CHECKPOINT, state)


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    write_text(out / METRICS, "".join(json.dumps(record) + "\n" for record in history))
    plot_curves(history, out / "curves.png")
