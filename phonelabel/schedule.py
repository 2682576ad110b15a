"""The TBPTT schedule (DESIGN.md §6): which frames each of B streams sees at each step.

B streams run side by side. Utterances are laid end to end in each stream's
*timeline*, every utterance starting on a k1-frame boundary (an utterance's last chunk
is padded; ~k1/2 frames of padding per utterance). Step i updates on timeline frames
[i*k1, (i+1)*k1): it runs the network over the window of the last k2 frames
[(i+1)*k1 - k2, (i+1)*k1) from the state saved at the window's start (detached there),
takes the loss on the newest k1 outputs, and saves the state k1 frames into the window:
the next window's start. ``reset`` marks where an utterance starts, so the trainer zeroes
a stream's state there and nothing leaks from one utterance into the next. k1 == 0 is
whole-utterance BPTT: one update per batch of B utterances.

Index arithmetic only (numpy; the indices are handed over as torch tensors): no model, no
device, no data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from phonelabel.config import TrainConfig


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
