"""PhoneLSTM: input -> unidirectional LSTM -> Linear(61), framewise phone logits.

One ``forward(x, state) -> (logits, state)`` serves training chunks (state carried
between TBPTT steps), whole utterances (state None = zeros) and streaming.
``forward_with_resets`` is the same network unrolled frame by frame, for the rare
TBPTT(k1, k2 > k1) windows in which an utterance may start mid-window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from phonelabel.errors import PhonelabelError

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


@dataclass(frozen=True)
class ModelConfig:
    input_dim: int = 39
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2  # between LSTM layers and before the output layer
    num_classes: int = 61
    delay: int = 0  # target delay d: the output at frame t + d labels frame t


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


def resolve_device(name: str) -> torch.device:
    """``auto`` (a CUDA GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise PhonelabelError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise PhonelabelError(f"--device {name}: no such CUDA GPU is available to torch")
    return torch.device(name)
