"""A model directory: everything needed to label new audio, nothing that can run code.

``model.pt`` holds tensors only (loaded with ``weights_only=True``); ``config.json``
holds the model, feature and training configs, the normalisation statistics, the phone
set, the decoder's parameters and the training split's phone frequencies (``phone_priors``), so ``PhoneLSTM(ModelConfig(**cfg["model"]))``
rebuilds the network.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonelabel import __version__
from phonelabel.config import ModelConfig
from phonelabel.core import SAMPLE_RATE, dataclass_from_dict
from phonelabel.decode import DecoderParams
from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig
from phonelabel.fileio import write_bytes, write_json
from phonelabel.phones import PHONES_61

if TYPE_CHECKING:  # torch is imported by what loads or saves weights: reading a model's
    import torch  # feature config (``read_header``) does without its second of start-up

    from phonelabel.model import PhoneLSTM

CONFIG = "config.json"
WEIGHTS = "model.pt"


@dataclass
class TrainedModel:
    model: PhoneLSTM  # in eval mode
    feature: FeatureConfig
    stats: dict[str, Any]  # normalisation statistics: at least global "mean" and "std" lists
    decoder: dict[str, Any] = field(default_factory=dict)  # DecoderParams fields; {}: untuned
    training: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, as used
    run: dict[str, Any] = field(default_factory=dict)  # where and how it ran (store, device)
    decoder_tuning: dict[str, Any] = field(default_factory=dict)  # how the decoder was tuned
    directory: Path | None = None
    # (61,) frame frequency of each phone in the training split: the hybrid-HMM priors the
    # aligner divides posteriors by. None for models written before they were stored.
    phone_priors: list[float] | None = None

    @property
    def delay(self) -> int:
        return self.model.config.delay

    @property
    def decoder_params(self) -> DecoderParams:
        return DecoderParams.from_dict(self.decoder, f"{self.directory}: decoder")


def default_model_dir() -> Path:
    """The model shipped in the package (``phonelabel/models/default``)."""
    directory = Path(str(resources.files("phonelabel.models") / "default"))
    if not (directory / CONFIG).is_file():
        raise PhonelabelError(
            f"{directory}: no default model is installed; give a model directory (a "
            "`phonelabel train` output)"
        )
    return directory


def save_state_dict(path: Path, state: dict[str, Any]) -> None:
    """torch.save to bytes, then an atomic write (a crash leaves the old file intact)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_state_dict(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load with ``weights_only=True``: a model file cannot run code."""
    import torch

    if not path.is_file():
        raise PhonelabelError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        text = str(error).strip()
        if "Weights only load failed" in text:  # torch's advice to unpickle it is not ours
            reason = (
                "it holds Python objects, not only tensors; refused unread, as they could run code"
            )
        else:
            reason = text.splitlines()[0][:200] if text else type(error).__name__
        raise PhonelabelError(f"{path}: not a phonelabel weights file ({reason})") from None


def config_dict(trained: TrainedModel) -> dict[str, Any]:
    return {
        "version": __version__,
        "model": asdict(trained.model.config),
        "feature": trained.feature.to_dict(),
        "normalization": trained.stats,
        "phones": list(PHONES_61),
        "decoder": trained.decoder,
        "decoder_tuning": trained.decoder_tuning,
        "training": trained.training,
        "run": trained.run,
        **({"phone_priors": trained.phone_priors} if trained.phone_priors is not None else {}),
    }


def save_model(directory: str | Path, trained: TrainedModel) -> None:
    """Write model.pt then config.json, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(directory / WEIGHTS, trained.model.state_dict())
    write_json(directory / CONFIG, config_dict(trained))


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise PhonelabelError(f"{directory}: no such model directory")
    path = directory / CONFIG
    if not path.is_file():
        raise PhonelabelError(f"{directory}: not a model directory (no {CONFIG})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{path}: not valid JSON ({error})") from None
    for key in ("model", "feature", "normalization", "phones"):
        if key not in config:
            raise PhonelabelError(f"{path}: missing {key!r}; not a phonelabel model config")
    if tuple(config["phones"]) != PHONES_61:
        raise PhonelabelError(f"{path}: phone set differs from the 61 TIMIT phones")
    return _upgraded(config)


# phonelabel 0.1.0 kept how the decoder was tuned inside "decoder", and where the run ran
# inside "training"; from 0.2.0 they have sections of their own, so every section reads
# back into its dataclass
_DECODER_TUNING_0_1 = ("tuned_on", "dev_phone_error_rate_39", "dev_phone_error_rate_39_argmax")
_RUN_0_1 = ("features", "device_used")


# options added since, with the value every earlier run had in effect (not today's default:
# a 0.2.0 run resumed must not start masking its inputs)
_TRAINING_BEFORE_0_3 = {"time_mask": 0, "freq_mask": 0}


def _upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """A 0.1.0 or 0.2.0 model's config.json in this version's layout (nothing else changes)."""
    if "training" in config:
        config = {**config, "training": {**_TRAINING_BEFORE_0_3, **config["training"]}}
    if "run" in config or "decoder_tuning" in config:
        return config
    decoder, training = dict(config.get("decoder", {})), dict(config.get("training", {}))
    tuning = {k: decoder.pop(k) for k in _DECODER_TUNING_0_1 if k in decoder}
    run = {k: training.pop(k) for k in _RUN_0_1 if k in training}
    return {
        **config,
        "decoder": decoder,
        "decoder_tuning": tuning,
        "training": training,
        "run": run,
    }


def _check_shapes(path: Path, model: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """config.json's sizes against the weights' tensor shapes, before a model is built (a
    config edited to hidden = 100000 would otherwise allocate 160 GB first)."""
    expected = {
        "lstm.weight_ih_l0": (4 * model.hidden, model.input_dim),
        "lstm.weight_hh_l0": (4 * model.hidden, model.hidden),
        "output.weight": (model.num_classes, model.hidden),
    }
    layers = sum(1 for key in state if key.startswith("lstm.weight_ih_l"))
    for key, shape in expected.items():
        found = tuple(state[key].shape) if key in state else None
        if found != shape:
            raise PhonelabelError(
                f"{path}: config.json does not fit model.pt ({key}: {found} in the weights, "
                f"{shape} from the config)"
            )
    if layers != model.layers:
        raise PhonelabelError(
            f"{path}: config.json says {model.layers} layers, model.pt holds {layers}"
        )


@dataclass
class ModelHeader:
    """What config.json says of a model, checked, without torch: enough to featurize audio
    for it (``label.run_label`` does so while the weights load)."""

    config: dict[str, Any]  # config.json, in this version's layout
    model: ModelConfig
    feature: FeatureConfig
    stats: dict[str, Any]  # normalisation statistics


def read_header(directory: str | Path) -> ModelHeader:
    """A model directory's config.json, read and checked against itself."""
    directory = Path(directory)
    config = read_config(directory)
    where = str(directory / CONFIG)
    model_config = dataclass_from_dict(ModelConfig, config["model"], f"{where}: model")
    feature = FeatureConfig.from_dict(config["feature"], f"{where}: feature")
    if feature.sample_rate != SAMPLE_RATE:
        raise PhonelabelError(f"{where}: models of {SAMPLE_RATE} Hz audio only")
    if model_config.input_dim != feature.dim:
        raise PhonelabelError(
            f"{where}: the model takes {model_config.input_dim} inputs, the features have "
            f"{feature.dim}"
        )
    stats = config["normalization"]
    for key in ("mean", "std"):
        values = stats.get(key) if isinstance(stats, dict) else None
        if not isinstance(values, list) or len(values) != feature.dim:
            raise PhonelabelError(f"{where}: normalization {key} must list {feature.dim} numbers")
    return ModelHeader(config, model_config, feature, stats)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a trained model from its directory (eval mode, on ``device``)."""
    import torch

    from phonelabel.model import PhoneLSTM

    directory = Path(directory)
    header = read_header(directory)
    config, model_config, feature = header.config, header.model, header.feature
    state = load_state_dict(directory / WEIGHTS, device)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PhonelabelError(f"{directory / WEIGHTS}: not a state dict of tensors")
    _check_shapes(directory, model_config, state)
    model = PhoneLSTM(model_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise PhonelabelError(
            f"{directory / WEIGHTS}: does not fit config.json ({first})"
        ) from None
    model.to(device).eval()
    trained = TrainedModel(
        model=model,
        feature=feature,
        stats=header.stats,
        decoder=config.get("decoder", {}),
        training=config.get("training", {}),
        run=config.get("run", {}),
        decoder_tuning=config.get("decoder_tuning", {}),
        directory=directory,
        phone_priors=config.get("phone_priors"),
    )
    trained.decoder_params  # noqa: B018  (refuses unknown decoder keys now, not mid-labelling)
    return trained
