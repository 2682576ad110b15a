"""Network and training options: frozen dataclasses that round-trip through a model's
config.json (``ModelConfig(**config["model"])``, ``TrainConfig.from_dict(config["training"])``).
Kept apart from ``model.py`` and ``train.py`` so the CLI can show their defaults without
importing torch. The defaults live here once; the CLI reads them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from phonelabel.errors import PhonelabelError

# options a resumed run may change: they alter when it stops, where it runs and how often it
# saves, never what an update computes
RESUME_SAFE = frozenset(
    {"epochs", "device", "data_on", "patience", "checkpoint_seconds", "tune_decoder"}
)
CPU_STREAMS = 32  # batch_streams None on the CPU
GPU_STREAMS = 256  # ... and per GPU on CUDA: a cuDNN LSTM needs wide batches to be busy
DATA_ON = ("auto", "device", "host")


@dataclass(frozen=True)
class ModelConfig:
    input_dim: int = 39
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2  # between LSTM layers and before the output layer
    num_classes: int = 61
    delay: int = 0  # target delay d: the output at frame t + d labels frame t

    def __post_init__(self) -> None:
        for name in ("input_dim", "hidden", "layers", "num_classes"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise PhonelabelError(f"model {name} {getattr(self, name)!r}: must be >= 1")
        if not (isinstance(self.delay, int) and self.delay >= 0):
            raise PhonelabelError(f"model delay {self.delay!r}: must be >= 0")
        if not 0 <= self.dropout < 1:
            raise PhonelabelError(f"model dropout {self.dropout!r}: must be in [0, 1)")


# the network options a run chooses (the store gives input_dim, the phone set num_classes)
MODEL_OPTIONS = ("hidden", "layers", "dropout", "delay")
# a run's network unless told otherwise: target delay 3, measured best for unseen voices
# (README); the other sizes are ModelConfig's
RUN_MODEL = ModelConfig(delay=3)


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = RUN_MODEL  # its input_dim is replaced by the store's
    k1: int = 20  # frames per update; 0 = whole-utterance BPTT
    k2: int | None = None  # frames of backpropagation; None = k1
    batch_streams: int | None = None  # None = 32 on the CPU, 256 per process on CUDA
    epochs: int = 30
    optimizer: str = "adam"  # or "sgd" (momentum 0.9, as Graves & Schmidhuber 2005)
    lr: float | None = None  # None = adam 1e-3, sgd 0.05, x sqrt(streams / 32) above 32
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
    init: str | None = None  # model dir whose weights start the run ("default": the shipped one)

    @property
    def delay(self) -> int:
        return self.model.delay

    def option(self, name: str) -> Any:
        """An option by its flat name (``hidden`` is the model's)."""
        return getattr(self.model if name in MODEL_OPTIONS else self, name)

    def to_dict(self) -> dict[str, Any]:
        """Flat, as config.json's "training" holds it: the network options first, then the
        rest (the layout 0.1.0 to 0.3.0 wrote; the "model" section has the whole network)."""
        values = asdict(self)
        model = values.pop("model")
        return {**{name: model[name] for name in MODEL_OPTIONS}, **values}

    @classmethod
    def of(cls, **options: Any) -> TrainConfig:
        """A config from flat option names: ``TrainConfig.of(hidden=64, delay=0, k1=10)``."""
        return cls().replaced(options)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "training") -> TrainConfig:
        """A config.json "training" section or a checkpoint's config, as ``to_dict`` writes
        it or as 0.1.0 to 0.3.0 did (0 and "" then stood for "the default": None now)."""
        values = dict(values)
        for name in ("k2", "batch_streams", "lr"):
            if values.get(name) == 0:
                values[name] = None
        if values.get("init") == "":
            values["init"] = None
        return TrainConfig().replaced(values, where)

    def replaced(self, changes: dict[str, Any], where: str = "training") -> TrainConfig:
        """This config with options changed by their flat names (``hidden=64``)."""
        unknown = sorted(set(changes) - OPTION_NAMES)
        if unknown:
            raise PhonelabelError(f"{where}: unknown training options {', '.join(unknown)}")
        model = {k: v for k, v in changes.items() if k in MODEL_OPTIONS}
        rest = {k: v for k, v in changes.items() if k not in MODEL_OPTIONS}
        return replace(self, model=replace(self.model, **model), **rest)

    @property
    def window(self) -> int:
        return self.k1 if self.k2 is None else max(self.k2, self.k1)

    @property
    def learning_rate(self) -> float:
        """--lr, or the optimiser's default at 32 streams scaled by the square root of the
        batch above that (the GPU default of 256 streams: x 2.83), as the gradient's noise
        shrinks with the batch."""
        base = 1e-3 if self.optimizer == "adam" else 0.05
        if self.lr is not None:
            return self.lr
        streams = self.batch_streams or CPU_STREAMS
        return base * math.sqrt(max(streams, CPU_STREAMS) / CPU_STREAMS)

    def resolved(self, cuda: bool = False, processes: int = 1) -> TrainConfig:
        """The values a run uses where None left them to it (batch_streams, lr, k2): what
        config.json records, and reads back as the same config."""
        streams = self.batch_streams or (GPU_STREAMS * processes if cuda else CPU_STREAMS)
        config = replace(self, batch_streams=streams)
        return replace(config, lr=config.learning_rate, k2=self.window)

    def resumed(self, changes: dict[str, Any]) -> TrainConfig:
        """This (saved) run's config with ``changes`` applied: options in RESUME_SAFE may
        change; any other that differs is refused, naming both values."""
        self.replaced(changes)  # refuses unknown names
        for name, value in changes.items():
            if name not in RESUME_SAFE and value != self.option(name):
                raise PhonelabelError(
                    f"a resumed run keeps its {name} ({self.option(name)!r}); {value!r} was "
                    f"given (only {', '.join(sorted(RESUME_SAFE))} may change): start a new "
                    "run for another value"
                )
        return self.replaced(changes)

    def check(self) -> None:
        if self.k1 < 0 or (self.k2 or 0) < 0:
            raise PhonelabelError("k1 and k2 must be >= 0")
        if self.k1 > 0 and self.k2 is not None and self.k2 < self.k1:
            raise PhonelabelError(f"k2 ({self.k2}) must be >= k1 ({self.k1})")
        if self.optimizer not in ("adam", "sgd"):
            raise PhonelabelError(f"unknown optimizer {self.optimizer!r} (use adam or sgd)")
        if self.precision not in ("fp32", "tf32", "bf16"):
            raise PhonelabelError(f"unknown precision {self.precision!r} (fp32, tf32 or bf16)")
        for name in ("time_mask", "freq_mask"):
            if getattr(self, name) < 0:
                raise PhonelabelError(f"{name} must be >= 0")
        for name in ("epochs", "patience", "lr_patience"):
            if getattr(self, name) < 1:
                raise PhonelabelError(f"{name} must be >= 1")
        if self.batch_streams is not None and self.batch_streams < 1:
            raise PhonelabelError("batch_streams must be >= 1")
        if self.data_on not in DATA_ON:
            raise PhonelabelError(f"unknown data_on {self.data_on!r} (auto, device or host)")
        for name in ("clip", "clip_value", "input_noise", "weight_decay"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise PhonelabelError(f"{name} must be a number >= 0")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise PhonelabelError("lr must be a number > 0")
        if not 0 <= self.momentum < 1:
            raise PhonelabelError("momentum must be in [0, 1)")
        if not self.checkpoint_seconds >= 0:  # 0: after every step
            raise PhonelabelError("checkpoint_seconds must be >= 0")


OPTION_NAMES = frozenset(MODEL_OPTIONS) | {f.name for f in fields(TrainConfig)} - {"model"}
