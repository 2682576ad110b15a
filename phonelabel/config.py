"""Training options: a frozen dataclass that round-trips through a model's config.json
(``TrainConfig(**config["training"])``). Kept apart from ``train.py`` so the CLI can show
its defaults without importing torch. The defaults live here once; the CLI reads them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from phonelabel.errors import PhonelabelError

# options a resumed run may change: they alter when it stops, where it runs and how often it
# saves, never what an update computes
RESUME_SAFE = frozenset(
    {"epochs", "device", "data_on", "patience", "checkpoint_seconds", "tune_decoder"}
)
CPU_STREAMS = 32  # --batch-streams 0 on the CPU
GPU_STREAMS = 256  # ... and per GPU on CUDA: a cuDNN LSTM needs wide batches to be busy
DATA_ON = ("auto", "device", "host")


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    delay: int = 3  # target delay (frames): measured best for unseen voices (README)
    k1: int = 20  # frames per update; 0 = whole-utterance BPTT
    k2: int = 0  # frames of backpropagation; 0 = same as k1
    batch_streams: int = 0  # 0 = 32 on the CPU, 256 per process on CUDA
    epochs: int = 30
    optimizer: str = "adam"  # or "sgd" (momentum 0.9, as Graves & Schmidhuber 2005)
    lr: float = 0.0  # 0 = adam 1e-3, sgd 0.05, x sqrt(streams / 32) above 32 streams
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float = 1.0  # global-norm clipping threshold; 0 disables
    clip_output: bool = False  # include the output layer in the clipped norm
    clip_value: float = 0.0  # optional element-wise clipping before the norm; 0 disables
    input_noise: float = 0.1  # std of Gaussian noise on the (unit-variance) inputs
    time_mask: int = 5  # SpecAugment: each window of each stream loses up to this many frames
    freq_mask: int = 3  # ... and up to this many feature bands (static + deltas); 0 = off
    patience: int = 5  # epochs without dev improvement before stopping
    lr_patience: int = 1  # epochs without dev improvement before halving the lr
    min_lr: float = 1e-6
    seed: int = 0
    device: str = "auto"
    data_on: str = "auto"  # the training split on the device, or streamed from host memory
    precision: str = "fp32"  # fp32, tf32 (CUDA matmuls), bf16 (autocast)
    checkpoint_seconds: float = 300.0  # mid-epoch checkpoint interval for --resume
    tune_decoder: bool = True  # after training, tune Viterbi smoothing on dev (PER)
    init: str = ""  # model dir whose weights start the run ("default": the shipped one)

    @property
    def window(self) -> int:
        return max(self.k2, self.k1)

    @property
    def learning_rate(self) -> float:
        """--lr, or the optimiser's default at 32 streams scaled by the square root of the
        batch above that (the GPU default of 256 streams: x 2.83), as the gradient's noise
        shrinks with the batch."""
        base = 1e-3 if self.optimizer == "adam" else 0.05
        streams = self.batch_streams or CPU_STREAMS
        return self.lr or base * math.sqrt(max(streams, CPU_STREAMS) / CPU_STREAMS)

    def resolved(self, cuda: bool = False, processes: int = 1) -> TrainConfig:
        """The values a run uses in place of the 0 = default markers (batch_streams, lr,
        k2): what config.json records, and reads back as the same config."""
        streams = self.batch_streams or (GPU_STREAMS * processes if cuda else CPU_STREAMS)
        config = replace(self, batch_streams=streams)
        return replace(config, lr=config.learning_rate, k2=self.window)

    def resumed(self, changes: dict[str, Any]) -> TrainConfig:
        """This (saved) run's config with ``changes`` applied: options in RESUME_SAFE may
        change; any other that differs is refused, naming both values."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise PhonelabelError(f"unknown training options {', '.join(unknown)}")
        # lr = 0 or k2 = 0 ask for "the default", which this run resolved already
        changes = {
            k: v for k, v in changes.items() if not (k in ("lr", "k2", "batch_streams") and not v)
        }
        for name, value in changes.items():
            if name not in RESUME_SAFE and value != getattr(self, name):
                raise PhonelabelError(
                    f"a resumed run keeps its {name} ({getattr(self, name)!r}); {value!r} was "
                    f"given (only {', '.join(sorted(RESUME_SAFE))} may change): start a new "
                    "run for another value"
                )
        return replace(self, **changes)

    def check(self) -> None:
        if self.k1 < 0 or self.k2 < 0:
            raise PhonelabelError("k1 and k2 must be >= 0")
        if self.k1 > 0 and self.k2 and self.k2 < self.k1:
            raise PhonelabelError(f"k2 ({self.k2}) must be >= k1 ({self.k1})")
        if self.optimizer not in ("adam", "sgd"):
            raise PhonelabelError(f"unknown optimizer {self.optimizer!r} (use adam or sgd)")
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise PhonelabelError(f"unknown precision {self.precision!r} (fp32, tf32 or bf16)")
        for name in ("time_mask", "freq_mask"):
            if getattr(self, name) < 0:
                raise PhonelabelError(f"{name} must be >= 0")
        for name in ("hidden", "layers", "epochs", "patience", "lr_patience"):
            if getattr(self, name) < 1:
                raise PhonelabelError(f"{name} must be >= 1")
        if self.batch_streams < 0:
            raise PhonelabelError("batch_streams must be >= 1 (0: the device's default)")
        if self.data_on not in DATA_ON:
            raise PhonelabelError(f"unknown data_on {self.data_on!r} (auto, device or host)")
        for name in ("delay", "clip", "clip_value", "lr", "input_noise", "weight_decay"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise PhonelabelError(f"{name} must be a number >= 0")
        if not 0 <= self.dropout < 1:
            raise PhonelabelError("dropout must be in [0, 1)")
        if not 0 <= self.momentum < 1:
            raise PhonelabelError("momentum must be in [0, 1)")
        if not self.checkpoint_seconds >= 0:  # 0: after every step
            raise PhonelabelError("checkpoint_seconds must be >= 0")
