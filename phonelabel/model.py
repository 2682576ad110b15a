"""PhoneLSTM: input -> unidirectional LSTM -> Linear(61), framewise phone logits.

One ``forward(x, state) -> (logits, state)`` serves training chunks (state carried
between TBPTT steps), whole utterances (state None = zeros) and streaming.
``forward_with_resets`` is the same network unrolled frame by frame, for the rare
TBPTT(k1, k2 > k1) windows in which an utterance may start mid-window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from phonelabel.config import ModelConfig
from phonelabel.errors import PhonelabelError

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


class PhoneLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            config.input_dim,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden, config.num_classes)

    def zero_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        shape = (self.config.layers, batch, self.config.hidden)
        weight = self.output.weight
        return (
            torch.zeros(shape, device=device, dtype=weight.dtype),
            torch.zeros(shape, device=device, dtype=weight.dtype),
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        hidden, state = self.lstm(x, state)  # (B, T, D) -> (B, T, H)
        return self.output(self.dropout(hidden)), state  # (B, T, H) -> (B, T, 61)

    def forward_with_resets(
        self, x: torch.Tensor, state: State, reset: torch.Tensor, capture_at: int
    ) -> tuple[torch.Tensor, State]:
        """Unroll frame by frame, zeroing stream b's state before frame t where reset[b, t].

        Returns the logits (B, T, 61) and the state after the first ``capture_at`` frames
        (before any reset at frame ``capture_at``), which is where the next TBPTT window
        starts. Same weights and maths as ``forward`` (PyTorch's gate order i, f, g, o).
        """
        layers_h, layers_c = list(state[0].unbind(0)), list(state[1].unbind(0))
        keep = (~reset).to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        captured_h, captured_c = list(layers_h), list(layers_c)
        inputs = x
        for layer in range(self.config.layers):
            w_ih = getattr(self.lstm, f"weight_ih_l{layer}")
            w_hh = getattr(self.lstm, f"weight_hh_l{layer}")
            bias = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
            projected = inputs @ w_ih.T + bias  # (B, T, 4H), all frames at once
            h, c = layers_h[layer], layers_c[layer]
            outputs = []
            for t in range(x.shape[1]):
                if t == capture_at:
                    captured_h[layer], captured_c[layer] = h, c
                h, c = h * keep[:, t], c * keep[:, t]
                i, f, g, o = (projected[:, t] + h @ w_hh.T).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            if capture_at >= x.shape[1]:
                captured_h[layer], captured_c[layer] = h, c
            inputs = torch.stack(outputs, dim=1)  # (B, T, H)
            if layer < self.config.layers - 1 and self.training:
                inputs = nn.functional.dropout(inputs, self.lstm.dropout, training=True)
        logits = self.output(self.dropout(inputs))
        return logits, (torch.stack(captured_h), torch.stack(captured_c))

    @torch.no_grad()
    def posteriors(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Log-posteriors (B, T, 61) for inference (call under ``eval()``)."""
        logits, state = self.forward(x, state)
        return torch.log_softmax(logits.float(), dim=-1), state


def pad_for_delay(features: torch.Tensor, delay: int) -> torch.Tensor:
    """(T, D) -> (T + d, D): the last frame repeated d times, so that the output at frame
    T - 1 + d (which labels the last frame) exists. Training, evaluate and label all pad so."""
    if delay == 0:
        return features
    return torch.cat([features, features[-1:].expand(delay, -1)])


@torch.no_grad()
def utterance_log_posteriors(
    model: PhoneLSTM, utterances: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Each utterance from a zero state, in one padded batch, target delay honoured.

    (T_i, D) features -> (T_i, 61) log-posteriors, row t labelling frame t. Right padding
    is harmless: the LSTM is causal, so padded frames never reach earlier outputs.
    """
    delay = model.config.delay
    padded = [pad_for_delay(f, delay) for f in utterances]
    x = torch.nn.utils.rnn.pad_sequence(padded, batch_first=True)  # (B, T_max + d, D)
    log_posteriors, _ = model.posteriors(x)  # (B, T_max + d, 61)
    return [log_posteriors[i, delay : delay + len(f)] for i, f in enumerate(utterances)]


class PosteriorStream:
    """LSTM log-posteriors with the state carried across blocks; row t labels frame t.

    The output at input frame t + d labels frame t (target delay d): the first d outputs
    are dropped, and at the end the last frame is fed d more times, as
    ``model.utterance_log_posteriors`` pads a whole utterance.
    """

    def __init__(self, model: PhoneLSTM, device: torch.device | str = "cpu"):
        self.model = model
        self.device = device
        self.delay = model.config.delay
        self.to_skip = self.delay
        self.state = None
        self.last: np.ndarray | None = None

    def push(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros((0, self.model.config.num_classes), dtype=np.float32)
        x = torch.from_numpy(np.ascontiguousarray(features)).to(self.device)[None]  # (1, n, D)
        log_posteriors, self.state = self.model.posteriors(x, self.state)  # (1, n, 61)
        self.last = features[-1:]
        out = log_posteriors[0].cpu().numpy()
        skip = min(self.to_skip, len(out))
        self.to_skip -= skip
        return out[skip:]

    def finish(self) -> np.ndarray:
        if self.last is None or self.delay == 0:
            return np.zeros((0, self.model.config.num_classes), dtype=np.float32)
        return self.push(np.repeat(self.last, self.delay, axis=0))


@torch.no_grad()
def batched_log_posteriors(
    model: PhoneLSTM,
    features: Callable[[int], np.ndarray],
    lengths: Sequence[int],
    device: torch.device | str = "cpu",
    batch: int = 64,
) -> Iterator[tuple[int, np.ndarray]]:
    """(i, (T_i, 61) float32 log-posteriors) for utterances i = 0 .. len(lengths) - 1, whose
    normalised (T_i, D) features ``features(i)`` gives: the one posterior pass of evaluate and
    of training's dev scoring. Batched by similar length (less padding), so the order is by
    length, not by i."""
    model.eval()
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch):
        chosen = order[start : start + batch]
        inputs = [torch.from_numpy(np.array(features(i), np.float32)).to(device) for i in chosen]
        for i, log_posteriors in zip(chosen, utterance_log_posteriors(model, inputs), strict=True):
            yield i, log_posteriors.float().cpu().numpy()


def resolve_device(name: str) -> torch.device:
    """``auto`` (a CUDA GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise PhonelabelError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise PhonelabelError(f"device {name}: no such CUDA GPU is available to torch")
    return torch.device(name)
