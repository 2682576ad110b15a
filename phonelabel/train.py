"""The TBPTT trainer (DESIGN.md §6): one seeded run from a feature store to a model dir.

``train`` -> ``_train``: set up (``_setup``), then per epoch a seeded ``Schedule``
(``schedule.py``) of windows cut from the training split (``batches.py``), ``run_epoch``
over it (window -> ``compute_loss`` -> backward -> clip -> step), dev scoring, the best
model kept, a checkpoint; at the end the decoder is tuned on dev (``evaluate.py``).

k2 == k1 (the default) is one fused nn.LSTM call per step; k2 > k1 unrolls the window
frame by frame (``PhoneLSTM.forward_with_resets``), since an utterance can start inside
it. Under torchrun (``distributed.py``) each rank runs its B/N of the streams of the same
seeded schedule, the loss divided by the step's scored frames over all B streams, and the
gradients summed over the ranks before clipping: N ranks make one B-stream process's update.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from phonelabel.batches import (
    HostSplit,
    SplitTensors,
    Window,
    device_bytes,
    placement,
    spec_augment,
)
from phonelabel.config import TrainConfig
from phonelabel.decode import DecoderParams
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
    seed_generators,
    step_seed,
    sum_values,
    summed_gradients,
)
from phonelabel.errors import PhonelabelError
from phonelabel.evaluate import DecoderTuning, dev_score, phone_frequencies, tune_decoder_on
from phonelabel.features import NO_LABEL, FeatureConfig, config_differences
from phonelabel.fileio import LOCK_FILE, output_lock, remove_left_overs, write_text
from phonelabel.model import ModelConfig, PhoneLSTM, State, resolve_device
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
from phonelabel.schedule import Schedule, build_schedule
from phonelabel.store import open_store

__all__ = ["TrainConfig", "TrainResult", "EpochRecord", "TrainingProgress", "train"]

CHECKPOINT = "checkpoint.pt"  # last state for --resume (model.pt is the best one)
METRICS = "metrics.jsonl"


# --- what a run reports -------------------------------------------------------------------


@dataclass
class EpochRecord:
    """One epoch of a run: a line of metrics.jsonl (these keys, in this order)."""

    epoch: int
    train_loss: float
    train_frames: int
    train_seconds: float
    train_frames_per_second: float
    train_frame_accuracy_61: float
    steps: int
    clip_fraction: float
    lr: float
    dev_frame_accuracy_61: float | None = None  # None: no dev split
    dev_frame_accuracy_39: float | None = None
    best: bool = False  # the best epoch so far (its weights are model.pt)


@dataclass
class TrainResult:
    """What ``train`` returns: the best model as written, and how the run went."""

    model: TrainedModel  # the best epoch's weights (rank 0: as model.pt holds them)
    config: TrainConfig  # as the run resolved it (config.json's "training")
    device: str  # where it ran ("cpu", "cuda:0")
    history: list[EpochRecord]  # every epoch of the run, resumed ones included
    decoder: DecoderParams | None = None  # the tuned Viterbi smoothing; None: not tuned
    decoder_tuning: DecoderTuning | None = None  # how (no dev split, or switched off: None)

    @property
    def best(self) -> EpochRecord | None:
        """The epoch model.pt holds: the highest dev accuracy (the latest without dev)."""
        best = [r for r in self.history if r.best]
        return best[-1] if best else None


@dataclass
class TrainingProgress:
    """What ``on_progress`` receives, every few steps and at each epoch's end."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    frames_per_second: float
    clip_fraction: float
    lr: float
    epoch_done: EpochRecord | None = None  # the metrics.jsonl record at an epoch's end

    @classmethod
    def at_end(cls, record: EpochRecord, epochs: int, steps: int) -> TrainingProgress:
        """An epoch's end: every step done, its averages from ``record``."""
        return cls(record.epoch, epochs, steps, steps, record.train_loss,
                   record.train_frames_per_second, record.clip_fraction, record.lr, record)  # fmt: skip


@dataclass
class RunState:
    """Everything --resume needs beyond the weights and the optimiser."""

    epoch: int = 0
    step: int = 0  # next step of `epoch` (0 = epoch not started)
    lr: float = 0.0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # EpochRecord fields
    totals: dict[str, float] = field(default_factory=dict)  # the running epoch's sums


def kept_message(out: Path) -> str:
    """What an interrupted run leaves in ``out``, and how to go on."""
    if (out / CHECKPOINT).is_file():
        return (
            f"kept {out} as of its last checkpoint (each epoch's end, and every"
            " --checkpoint-seconds); run the same command with --resume to continue"
        )
    return f"nothing kept in {out} (no checkpoint yet); run the same command again"


# --- the run ------------------------------------------------------------------------------


def train(
    features: str | Path,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    on_progress: Callable[[TrainingProgress], None] | None = None,
    changes: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
) -> TrainResult:
    """Train on a feature store's train split, select on dev: the best model and the history.

    ``resume``: continue the run in ``out`` with its own options; ``changes`` (flat option
    names) may alter those ``config.RESUME_SAFE`` lists. Without ``resume``, ``changes``
    apply to ``config``; ``config.init`` names a model dir whose weights start the run. A
    second run writing the same ``out`` is refused. ``ranks``: this process's place among
    torchrun's (default: from the environment); rank 0 alone writes and reports. A
    KeyboardInterrupt leaves carrying ``kept``: what ``out`` holds and how to go on."""
    ranks = ranks_from_env() if ranks is None else ranks
    out = Path(out)
    try:
        with process_group(ranks):
            if not ranks.main:
                return _train(features, out, config, resume, None, changes, ranks)
            with output_lock(out, "a model"):
                return _train(features, out, config, resume, on_progress, changes, ranks)
    except KeyboardInterrupt as stop:
        stop.kept = kept_message(out)  # type: ignore[attr-defined]
        raise


def _train(
    features: str | Path,
    out: Path,
    config: TrainConfig,
    resume: bool,
    on_progress: Callable[[TrainingProgress], None] | None,
    changes: dict[str, Any] | None,
    ranks: Ranks,
) -> TrainResult:
    # rank 0 reads the checkpoint (--out need not be shared between nodes) and sends it over
    checkpoint = agree(ranks, lambda: _read_checkpoint(out) if resume and ranks.main else None)
    checkpoint = broadcast(ranks, checkpoint)
    setup = agree(ranks, lambda: _setup(features, out, config, checkpoint, changes, ranks))
    config, device, store, start = setup
    with _tf32(config.precision == "tf32"):
        return _run(features, out, config, device, store, start, checkpoint, on_progress, ranks)


def _run(
    features: str | Path,
    out: Path,
    config: TrainConfig,
    device: torch.device,
    store: Any,
    start: TrainedModel | None,
    checkpoint: dict[str, Any] | None,
    on_progress: Callable[[TrainingProgress], None] | None,
    ranks: Ranks,
) -> TrainResult:
    fingerprint = store.info.get("fingerprint")
    train_split = store.split("train")
    dev_split = store.split("dev") if "dev" in store.split_names else None
    if dev_split is not None and not dev_split.utterances:
        dev_split = None
    model_config = replace(config.model, input_dim=store.config.dim)  # the store's inputs

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
        fused = optimizer.param_groups[0].get("fused")
        optimizer.load_state_dict(checkpoint["optimizer"])  # its fused or not, where possible
        for group in optimizer.param_groups:  # (a fused run resumed where torch has no kernel)
            group["fused"] = group.get("fused") and fused
        run = RunState(**checkpoint["run"])
        torch.set_rng_state(checkpoint["rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in checkpoint["cuda_rng"]])
        if "stream_state" in checkpoint:  # all B streams: this rank takes its share
            stream_state = tuple(t[:, share].to(device) for t in checkpoint["stream_state"])
    on_device = placement(config.data_on, device, device_bytes(train_split, config)) == "device"
    trained = TrainedModel(
        model=model,
        feature=store.config,
        stats=store.stats,
        training=config.to_dict(),
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
        run_epoch(model, optimizer, data, schedule, config, run, stream_state, on_progress,
                  save_checkpoint, ranks, groups=1 + store.config.delta_order)  # fmt: skip
        stream_state = None
        record = _end_epoch(run, model, dev_split, device, ranks)
        if ranks.main:
            if record.best:
                save_model(out, trained)
            _write_metrics(out, run.history)
        _adjust_schedule(run, config, optimizer)
        run.epoch += 1
        run.step = 0
        save_checkpoint(None)
        if on_progress is not None:
            on_progress(TrainingProgress.at_end(record, config.epochs, len(schedule)))
    result = TrainResult(trained, config, str(device), [EpochRecord(**r) for r in run.history])
    if not ranks.main:  # rank 0 alone tunes the decoder and writes the final model
        return result
    model.load_state_dict(load_state_dict(out / "model.pt", device))
    model.eval()
    if dev_split is not None and config.tune_decoder:
        result.decoder, result.decoder_tuning = tune_decoder_on(model, dev_split, device)
        trained.decoder = result.decoder.to_dict()
        trained.decoder_tuning = result.decoder_tuning.to_dict()
        save_model(out, trained)
    return result


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN for this run only (--precision tf32); restored after."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


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
        config = TrainConfig.from_dict(checkpoint["config"], f"{out / CHECKPOINT}")
        config = config.resumed(changes or {})
        trained_by = checkpoint.get("world_size", 1)
        if trained_by != ranks.world:
            raise PhonelabelError(
                f"{out}: this run was trained by {trained_by} process(es) and resumes only "
                f"with {trained_by} (torchrun --nnodes x --nproc-per-node), not {ranks.world}"
            )
    elif changes:
        config = config.replaced(changes)
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
    model_config = replace(config.model, input_dim=store.config.dim)
    # a resumed run's weights come from its checkpoint; the --init model was its start only
    starting = config.init and checkpoint is None
    start = _initial_model(config.init, model_config, store.config) if starting else None
    if ranks.main:
        _prepare_out(out, checkpoint is not None)  # after every check (output_lock cleans up)
    return config, device, store, start


def _read_checkpoint(out: Path) -> dict[str, Any]:
    if (out / CHECKPOINT).is_file():
        return load_state_dict(out / CHECKPOINT)
    raise PhonelabelError(f"{out}: nothing to resume (no {CHECKPOINT})")


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


def _check_labels(labels: np.ndarray, where: str) -> None:
    bad = np.flatnonzero((labels >= NUM_PHONES) & (labels != NO_LABEL))
    if len(bad):
        label = f"label {int(labels[bad[0]])} at frame {bad[0]}"
        raise PhonelabelError(f"{where}: {label} is out of range (0..60)")


def _prepare_out(out: Path, resume: bool) -> None:
    """Refuse to start a fresh run in a model directory that holds anything (output_lock made it)."""
    remove_left_overs(out)  # a killed run's half-written files: neither output nor checkpoint
    if not resume and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise PhonelabelError(
            f"{out}: already exists and is not empty; resume it or choose another output"
        )


def _end_epoch(
    run: RunState, model: PhoneLSTM, dev_split: Any, device: torch.device, ranks: Ranks = SINGLE
) -> EpochRecord:
    totals = run.totals
    record = EpochRecord(
        epoch=run.epoch + 1,
        train_loss=totals["loss"] / max(totals["frames"], 1),
        train_frames=int(totals["frames"]),
        train_seconds=totals["seconds"],
        train_frames_per_second=totals["frames"] / max(totals["seconds"], 1e-9),
        train_frame_accuracy_61=totals["correct"] / max(totals["frames"], 1),
        steps=int(totals["steps"]),
        clip_fraction=totals["clipped"] / max(totals["steps"], 1),
        lr=run.lr,
    )
    if dev_split is not None:
        dev = dev_score(model, dev_split, device, ranks)
        record.dev_frame_accuracy_61 = dev.frame_accuracy_61
        record.dev_frame_accuracy_39 = dev.frame_accuracy_39
        accuracy = dev.frame_accuracy_61
    else:  # no dev split: the latest epoch is the one kept
        accuracy = float(run.epoch)
    record.best = accuracy > run.best_accuracy
    if record.best:
        run.best_accuracy, run.best_epoch, run.bad_epochs = accuracy, run.epoch + 1, 0
    else:
        run.bad_epochs += 1
    run.history.append(asdict(record))
    return record


def _adjust_schedule(run: RunState, config: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
    """Halve the learning rate after every ``lr_patience`` epochs without dev improvement."""
    if run.bad_epochs and run.bad_epochs % config.lr_patience == 0:
        run.lr = max(run.lr / 2, config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = run.lr


# --- one epoch ----------------------------------------------------------------------------


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
    data: SplitTensors | HostSplit,
    schedule: Schedule,
    config: TrainConfig,
    run: RunState,
    state: State,
    on_progress: Callable[[TrainingProgress], None] | None,
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
    buckets = GradientBuckets(model.parameters(), ranks=ranks)
    for step in range(run.step, len(schedule)):
        frames = int(schedule.frames[step])  # all ranks' streams: the loss's divisor
        window = next(windows)
        capture_at = config.k1 or window[0].shape[1]  # where the next window starts
        if ranks.distributed:  # each rank its own dropout and noise, reproducible on resume
            seed_generators(step_seed(config.seed, run.epoch, step, ranks.rank), state[0].device)
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
                    TrainingProgress(
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


def make_optimizer(model: PhoneLSTM, config: TrainConfig) -> torch.optim.Optimizer:
    """Fused where torch has the kernel (CPU: torch >= 2.4): Adam's step 0.5 ms, not 3.3. A
    resumed run keeps the choice its checkpoint was made with (``_train``)."""
    options = dict(lr=config.learning_rate, weight_decay=config.weight_decay)
    kind = torch.optim.Adam
    if config.optimizer == "sgd":
        kind, options = torch.optim.SGD, dict(options, momentum=config.momentum)
    try:
        return kind(model.parameters(), **options, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel (or option) in this torch
        return kind(model.parameters(), **options)


# --- what a run writes --------------------------------------------------------------------


def _save_checkpoint(  # fmt: skip
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
        "config": config.to_dict(),
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
