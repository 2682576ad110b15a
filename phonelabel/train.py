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
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from phonelabel.config import TrainConfig
from phonelabel.decode import phone_error_rate, tune_decoder
from phonelabel.errors import PhonelabelError
from phonelabel.features import NO_LABEL, FeatureConfig, config_differences
from phonelabel.fileio import LOCK_FILE, output_lock, write_text
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
from phonelabel.store import open_store

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


# --- one step -----------------------------------------------------------------------------


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


def compute_loss(
    model: PhoneLSTM,
    data: SplitTensors,
    x_index: torch.Tensor,  # (B, W)
    y_index: torch.Tensor,  # (B, W)
    reset: torch.Tensor,  # (B, W)
    state: State,
    frames: int,
    capture_at: int,
    input_noise: float = 0.0,
    masks: tuple[int, int, int] = (0, 0, 1),
) -> tuple[torch.Tensor, State, torch.Tensor]:
    """Mean cross-entropy over the window's scored frames; returns (loss, next state, correct).

    ``masks``: (time_mask, freq_mask, feature groups) for ``spec_augment``."""
    x = data.features[x_index]  # (B, W, D); index -1 is the zero padding row
    if model.training:
        if input_noise > 0:
            x = x + input_noise * torch.randn_like(x) * (x_index >= 0).unsqueeze(-1)
        x = spec_augment(x, *masks)
    targets = data.labels[y_index]  # (B, W)
    if capture_at == x_index.shape[1]:  # k2 == k1: resets only at the window start
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


def split_posteriors(model: PhoneLSTM, split, device: torch.device, batch: int = 64):
    """(log-posteriors (T, 61) numpy, its Reference) of every utterance of a split, each
    from a zero state, target delay honoured (batched by similar length)."""
    lengths = [u.frames for u in split.utterances]
    for i, log_posteriors in batched_log_posteriors(
        model, split.utterance_features, lengths, device, batch
    ):
        yield log_posteriors, split.reference(i)


def frame_accuracies(model: PhoneLSTM, split, device: torch.device) -> dict:
    """Frame accuracy (61 and folded 39 classes), scored exactly as ``evaluate`` scores."""
    confusion = np.zeros((NUM_PHONES, NUM_PHONES), dtype=np.int64)
    for log_posteriors, reference in split_posteriors(model, split, device):
        confusion += confusion_61(reference.frames, log_posteriors.argmax(-1))
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
    if not resume and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise PhonelabelError(
            f"{out}: already exists and is not empty; resume it or choose another output"
        )


class EpochMeter:
    """Epoch sums kept on the device between syncs (a .item() per step would stall a GPU)."""

    def __init__(self, totals: dict[str, float], device: torch.device):
        self.totals = totals
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

    def flush(self, where: str) -> dict[str, float]:
        """Add the device sums into ``totals`` (one sync); refuse a diverged loss."""
        loss = float(self.loss)
        if not math.isfinite(loss):
            raise PhonelabelError(
                f"training diverged (loss is {loss}) {where}; a model.pt written before (the "
                "best epoch so far) is kept (try a lower --lr or --clip)"
            )
        totals = self.totals
        totals["loss"] += loss
        totals["correct"] += int(self.correct)
        totals["clipped"] += int(self.clipped)
        totals["frames"] += self.frames
        totals["steps"] += self.steps
        totals["seconds"] = self.seconds_before + time.perf_counter() - self.started
        self.loss.zero_(), self.correct.zero_(), self.clipped.zero_()
        self.frames = self.steps = 0
        return totals


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
    groups: int = 1,
) -> State:
    """The TBPTT loop: window -> loss on the newest k1 frames -> backward -> clip -> step.
    Returns the streams' state after the last step (what the next step would start from).
    ``groups``: the features' static + delta groups (SpecAugment's bands span them all)."""
    model.train()
    meter = EpochMeter(run.totals, state[0].device)
    autocast = torch.autocast(state[0].device.type, torch.bfloat16, config.precision == "bf16")
    last_checkpoint = time.perf_counter()
    for step in range(run.step, len(schedule)):
        frames = int(schedule.frames[step])
        x_index, y_index, reset = schedule.step(step)
        capture_at = config.k1 or x_index.shape[1]  # where the next window starts
        with autocast:
            loss, state, correct = compute_loss(
                model,
                data,
                x_index,
                y_index,
                reset,
                state,
                frames,
                capture_at,
                config.input_noise,
                (config.time_mask, config.freq_mask, groups),
            )
        if frames:  # a window of padding only (streams drained) carries state, no update
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = clip_gradients(model, config)
            optimizer.step()
            meter.add(loss, frames, correct, (norm > config.clip) if config.clip > 0 else 0)
        last = step == len(schedule) - 1
        if step % 25 == 0 or last:
            totals = meter.flush(f"in epoch {run.epoch + 1}, step {step + 1}")
            if on_progress is not None:
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
        if not last and time.perf_counter() - last_checkpoint > config.checkpoint_seconds:
            meter.flush(f"in epoch {run.epoch + 1}, step {step + 1}")
            run.step = step + 1
            save_checkpoint(state)
            last_checkpoint = time.perf_counter()
    return state


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
) -> TrainedModel:
    """Train on a feature store's train split, select on dev; returns the best model.

    ``resume``: continue the run in ``out`` with its own options; ``changes`` may alter the
    ones ``config.RESUME_SAFE`` lists (``config`` is not used). Without ``resume``,
    ``changes`` are applied to ``config``. A second run writing the same ``out`` is refused.
    """
    with output_lock(out, "a model"):
        return _train(features, Path(out), config, resume, on_progress, changes)


def _train(
    features: str | Path,
    out: Path,
    config: TrainConfig,
    resume: bool,
    on_progress: Callable[[Progress], None] | None,
    changes: dict[str, Any] | None,
) -> TrainedModel:
    checkpoint = None
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise PhonelabelError(f"{out}: nothing to resume (no {CHECKPOINT})")
        checkpoint = load_state_dict(out / CHECKPOINT)
        config = TrainConfig(**checkpoint["config"]).resumed(changes or {})
    elif changes:
        config = replace(config, **changes)
    config.check()
    config = config.resolved()
    device = resolve_device(config.device)
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
    train_split = store.split("train")
    dev_split = store.split("dev") if "dev" in store.split_names else None
    if dev_split is not None and not dev_split.utterances:
        dev_split = None
    _check_labels(np.asarray(train_split.labels), f"{features}/train/labels.npy")
    model_config = ModelConfig(
        input_dim=store.config.dim,
        hidden=config.hidden,
        layers=config.layers,
        dropout=config.dropout,
        delay=config.delay,
    )
    # a resumed run's weights come from its checkpoint; the --init model was its start only
    starting = config.init and checkpoint is None
    start = _initial_model(config.init, model_config, store.config) if starting else None
    _prepare_out(out, resume)  # after every check (output_lock removes the dir it made)
    if config.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(config.seed)
    model = PhoneLSTM(model_config).to(device)
    if start is not None and checkpoint is None:
        model.load_state_dict(start.model.state_dict())
    optimizer = make_optimizer(model, config)
    run = RunState(lr=config.learning_rate)
    stream_state = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        run = RunState(**checkpoint["run"])
        torch.set_rng_state(checkpoint["rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in checkpoint["cuda_rng"]])
        if "stream_state" in checkpoint:
            stream_state = tuple(t.to(device) for t in checkpoint["stream_state"])
    trained = TrainedModel(
        model=model,
        feature=store.config,
        stats=store.stats,
        training=asdict(config),
        run={
            "features": str(Path(features).resolve()),
            "device_used": str(device),
            **({"init_model": str(start.directory.resolve())} if start is not None else {}),
        },
        directory=out,
        phone_priors=phone_frequencies(np.asarray(train_split.labels)),
    )
    data = SplitTensors.from_arrays(train_split.normalized_features(), train_split.labels, device)
    offsets = np.array([u.offset for u in train_split.utterances])
    lengths = np.array([u.frames for u in train_split.utterances])
    labelled = np.asarray(train_split.labels) != NO_LABEL  # .PHN gaps: run, not trained

    def save_checkpoint(state: State | None) -> None:
        _save_checkpoint(out, model, optimizer, run, config, state, fingerprint)

    def finished() -> bool:  # also true when resuming a run that already stopped early
        return run.epoch >= config.epochs or (
            dev_split is not None and run.bad_epochs >= config.patience
        )

    while not finished():
        order = np.random.default_rng([config.seed, run.epoch]).permutation(len(lengths))
        schedule = build_schedule(offsets, lengths, order, config, labelled).to(device)
        if run.step == 0 or stream_state is None:
            stream_state = model.zero_state(config.batch_streams, device)
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
            groups=1 + store.config.delta_order,
        )
        stream_state = None
        record = _end_epoch(run, model, dev_split, device)
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
    model.load_state_dict(load_state_dict(out / "model.pt", device))
    model.eval()
    if dev_split is not None and config.tune_decoder:
        trained.decoder, trained.decoder_tuning = tune_decoder_on(model, dev_split, device)
        save_model(out, trained)
    return trained


def _end_epoch(run: RunState, model: PhoneLSTM, dev_split, device: torch.device) -> dict[str, Any]:
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
        dev = frame_accuracies(model, dev_split, device)
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
    out, model, optimizer, run: RunState, config: TrainConfig, stream_state, store: str | None
) -> None:
    state = {
        "store": store,  # the feature store's fingerprint: --resume checks it
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
