"""PhoneLSTM and its model directory: streaming equals whole-sequence, the target delay's
padding, config.json round trip, weights loaded without unpickling objects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from phonelabel.errors import PhonelabelError
from phonelabel.features import FeatureConfig
from phonelabel.model import (
    ModelConfig,
    PhoneLSTM,
    PosteriorStream,
    batched_log_posteriors,
    pad_for_delay,
    utterance_log_posteriors,
)
from phonelabel.modeldir import TrainedModel, load_model, load_state_dict, save_model


def network(delay: int = 0, layers: int = 2, seed: int = 0) -> PhoneLSTM:
    torch.manual_seed(seed)
    return PhoneLSTM(ModelConfig(hidden=16, layers=layers, dropout=0.3, delay=delay)).eval()


def frames(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(length, 39, generator=torch.Generator().manual_seed(seed))


def test_forward_in_chunks_with_carried_state_equals_one_forward():
    model = network()
    x = frames(95)[None]  # (1, T, 39)
    with torch.no_grad():
        whole, (h, c) = model(x)
        state, parts = None, []
        for start in range(0, 95, 13):  # TBPTT-sized chunks, the last one short
            logits, state = model(x[:, start : start + 13], state)
            parts.append(logits)
    chunked = torch.cat(parts, dim=1)
    assert whole.shape == (1, 95, 61)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(state[0], h, rtol=0, atol=1e-5)
    torch.testing.assert_close(state[1], c, rtol=0, atol=1e-5)
    # a zero state is the same as no state; a carried one is not
    zero = model.zero_state(1)
    assert zero[0].shape == (2, 1, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, 40:], zero)[0], model(x[:, 40:])[0])
        assert not torch.allclose(model(x[:, 40:], (h, c))[0], model(x[:, 40:])[0], atol=1e-3)


def test_frame_by_frame_unroll_equals_forward_and_a_reset_starts_afresh():
    """forward_with_resets (TBPTT with k2 > k1) is the same network as nn.LSTM's forward."""
    model = network(layers=2)
    x = torch.stack([frames(30, seed=1), frames(30, seed=2)])  # (2, 30, 39)
    state = (torch.randn(2, 2, 16) * 0.5, torch.randn(2, 2, 16) * 0.5)
    reset = torch.zeros(2, 30, dtype=torch.bool)
    with torch.no_grad():
        expected, after_20 = model(x[:, :20], state)
        logits, captured = model.forward_with_resets(x, state, reset, capture_at=20)
        torch.testing.assert_close(logits[:, :20], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(logits, model(x, state)[0], rtol=0, atol=1e-5)
        for got, want in zip(captured, after_20, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        # stream 1 starts a new utterance at frame 12: from there it is a fresh zero-state run
        reset[1, 12] = True
        logits, _ = model.forward_with_resets(x, state, reset, capture_at=30)
        fresh, _ = model(x[1:, 12:])
        torch.testing.assert_close(logits[1:, 12:], fresh, rtol=0, atol=1e-5)
        first = (state[0][:, :1], state[1][:, :1])
        torch.testing.assert_close(logits[0], model(x[:1], first)[0][0], rtol=0, atol=1e-5)
        assert not torch.allclose(logits[1, :12], fresh[0, :12], atol=1e-3)


def test_delay_pads_with_the_last_frame_and_row_t_labels_frame_t():
    features = frames(7)
    assert pad_for_delay(features, 0) is features
    padded = pad_for_delay(features, 3)
    assert padded.shape == (10, 39)
    torch.testing.assert_close(padded[:7], features)
    assert all(torch.equal(padded[t], features[-1]) for t in (7, 8, 9))

    delay = 4
    model = network(delay=delay)
    utterances = [frames(25, seed=3), frames(9, seed=4), frames(40, seed=5)]
    rows = utterance_log_posteriors(model, utterances)
    for features, out in zip(utterances, rows, strict=True):
        assert out.shape == (len(features), 61)
        # the network's outputs d frames later, run alone on the padded utterance
        alone, _ = model.posteriors(pad_for_delay(features, delay)[None])
        torch.testing.assert_close(out, alone[0, delay:], rtol=0, atol=1e-5)
        assert torch.allclose(out.exp().sum(-1), torch.ones(len(features)), atol=1e-5)
    # the batched pass (evaluate, dev scoring) gives the same rows, in order of length
    got = list(batched_log_posteriors(model, lambda i: utterances[i].numpy(), [25, 9, 40], batch=2))
    assert [i for i, _ in got] == [1, 0, 2]
    for i, out in got:
        np.testing.assert_allclose(out, rows[i].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("delay", [0, 3])
def test_posterior_stream_in_blocks_equals_the_whole_utterance(delay):
    model = network(delay=delay)
    features = frames(61, seed=6).numpy()
    stream = PosteriorStream(model)
    parts = [stream.push(features[i : i + 2]) for i in range(0, 61, 2)]  # blocks < delay
    parts += [stream.push(features[:0]), stream.finish()]
    streamed = np.concatenate(parts)
    whole = utterance_log_posteriors(model, [torch.from_numpy(features)])[0].numpy()
    assert streamed.shape == whole.shape == (61, 61)
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_model_config_refuses_impossible_sizes():
    for bad, match in [
        ({"hidden": 0}, "hidden 0"),
        ({"layers": 1.5}, "layers 1.5"),
        ({"delay": -1}, "delay -1"),
        ({"dropout": 1.0}, "dropout 1.0"),
    ]:
        with pytest.raises(PhonelabelError, match=match):
            ModelConfig(**bad)


def trained(model: PhoneLSTM) -> TrainedModel:
    feature = FeatureConfig()
    stats = {"mean": [0.5] * feature.dim, "std": [2.0] * feature.dim}
    return TrainedModel(model=model, feature=feature, stats=stats, phone_priors=[1 / 61] * 61)


def test_model_dir_round_trip_rebuilds_the_same_network(tmp_path):
    model = network(delay=2, layers=2, seed=7)
    save_model(tmp_path / "m", trained(model))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"] == dataclasses.asdict(model.config)
    loaded = load_model(tmp_path / "m")
    assert loaded.model.config == model.config and loaded.delay == 2
    assert not loaded.model.training  # ready for inference
    assert loaded.feature == FeatureConfig() and loaded.stats["std"][0] == 2.0
    assert loaded.phone_priors == [1 / 61] * 61
    a, b = model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = frames(20)[None]
    torch.testing.assert_close(loaded.model.posteriors(x)[0], model.posteriors(x)[0])


def test_config_that_does_not_fit_the_weights_is_refused_before_building(tmp_path):
    save_model(tmp_path / "m", trained(network()))
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["model"]["hidden"] = 100_000  # would allocate ~160 GB if built first
    path.write_text(json.dumps(config))
    with pytest.raises(PhonelabelError, match=r"does not fit model.pt \(lstm.weight_ih_l0"):
        load_model(tmp_path / "m")
    config["model"] = {**config["model"], "hidden": 16, "layers": 3}
    path.write_text(json.dumps(config))
    with pytest.raises(PhonelabelError, match="says 3 layers, model.pt holds 2"):
        load_model(tmp_path / "m")


class Exploit:
    """Unpickling this runs Path.touch(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_object_in_a_weights_file_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"lstm.weight_ih_l0": torch.zeros(1), "extra": Exploit(marker)}, evil)
    with pytest.raises(PhonelabelError, match="holds Python objects.*refused unread") as error:
        load_state_dict(evil)
    assert "weights_only" not in str(error.value) and not marker.exists()
    # the same through a model directory
    save_model(tmp_path / "m", trained(network()))
    (tmp_path / "m" / "model.pt").write_bytes(evil.read_bytes())
    with pytest.raises(PhonelabelError, match="refused unread"):
        load_model(tmp_path / "m")
    assert not marker.exists()
    # and a file that is not torch's at all is one clear error, not a traceback
    (tmp_path / "junk.pt").write_bytes(b"not a zip file")
    with pytest.raises(PhonelabelError, match="not a phonelabel weights file"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(PhonelabelError, match="no such file"):
        load_state_dict(tmp_path / "missing.pt")
