"""TBPTT mechanics: gradients against full BPTT and hand-built references, no state
leaking across utterances, clipping, the schedule covering every frame once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phonelabel.batches import SplitTensors, spec_augment
from phonelabel.config import TrainConfig as _TrainConfig
from phonelabel.model import ModelConfig, PhoneLSTM
from phonelabel.schedule import Schedule, build_schedule
from phonelabel.train import RunState, clip_gradients, make_optimizer, run_epoch

D = 5
# the mechanics are tested bare: no target delay, no SpecAugment masks (the defaults have
# both; a test that wants them says so)


def TrainConfig(delay: int = 0, **options) -> _TrainConfig:  # noqa: N802  (stands in for it)
    return _TrainConfig(model=ModelConfig(delay=delay), time_mask=0, freq_mask=0, **options)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster


def make_data(lengths, seed=0):
    """Random features/labels for utterances of the given lengths, end to end."""
    rng = np.random.default_rng(seed)
    total = int(sum(lengths))
    features = rng.standard_normal((total, D)).astype(np.float32)
    labels = rng.integers(0, 61, total).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return features, labels, offsets, np.array(lengths)


def small_model(delay=0, seed=1):
    torch.manual_seed(seed)
    model = PhoneLSTM(ModelConfig(input_dim=D, hidden=8, layers=2, dropout=0.0, delay=delay))
    return model.double().eval()


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


class RecordingSGD(torch.optim.SGD):
    """SGD with learning rate 0: the weights stay put, and every update's gradients are kept
    (the optimiser is the test's probe; the loop under test is the real ``run_epoch``)."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.recorded: list[list[torch.Tensor]] = []

    @torch.no_grad()
    def step(self, closure=None):
        self.recorded.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def exact(config: TrainConfig) -> TrainConfig:
    """No clipping, no input noise: gradients comparable with a hand-built reference."""
    return replace(config, clip=0.0, input_noise=0.0)


def real_epoch(model, data, schedule, config, optimizer=None):
    """One epoch of the real ``train.run_epoch``: (the gradients of every step, None for a
    step with nothing to score; the streams' final state; the run's totals)."""
    optimizer = optimizer or RecordingSGD(model.parameters())
    run = RunState(totals=dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0))
    state = model.zero_state(schedule.x_index.shape[1])  # (layers, B, H), the model's dtype
    final = run_epoch(model, optimizer, data, schedule, config, run, state, None, lambda _: None)
    if not isinstance(optimizer, RecordingSGD):
        return None, final, run.totals
    recorded = iter(optimizer.recorded)
    grads = [next(recorded) if schedule.frames[s] else None for s in range(len(schedule))]
    return grads, final, run.totals


def tbptt_step_grads(model, data, schedule, config):
    """Gradients of every step, from the trainer's own loop (weights left unchanged)."""
    return real_epoch(model, data, schedule, exact(config))[0]


def to_double(data: SplitTensors) -> SplitTensors:
    return SplitTensors(data.features.double(), data.labels)


def test_whole_window_tbptt_equals_full_bptt():
    features, labels, offsets, lengths = make_data([37])
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = TrainConfig(k1=40, k2=40, batch_streams=1)
    schedule = build_schedule(offsets, lengths, np.array([0]), config)
    assert len(schedule) == 1
    (tbptt,) = tbptt_step_grads(model, data, schedule, config)

    model.zero_grad()
    logits, _ = model(torch.from_numpy(features).double()[None])
    F.cross_entropy(logits[0], torch.from_numpy(labels.astype(np.int64))).backward()
    for got, want in zip(tbptt, grads(model), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def reference_window_grads(
    model, features, labels, utt_start, window_start, chunk_start, window_end
):
    """Hand-built TBPTT(k1, k2) reference for one stream's window [window_start, window_end)
    in corpus frame coordinates: the state at the window start comes from a no-grad run
    from the utterance's start (zero state); the loss is the mean over the newest frames,
    [chunk_start, window_end) (k1 of them, fewer at an utterance's end)."""
    x = torch.from_numpy(features).double()
    y = torch.from_numpy(labels.astype(np.int64))
    start = max(window_start, utt_start)
    state = None
    if start > utt_start:
        with torch.no_grad():
            _, state = model(x[None, utt_start:start])
    model.zero_grad()
    logits, _ = model(x[None, start:window_end], state)
    newest = slice(chunk_start - start, window_end - start)
    target = y[chunk_start:window_end]
    F.cross_entropy(logits[0, newest], target).backward()
    return grads(model)


@pytest.mark.parametrize("k1,k2", [(4, 10), (5, 5), (3, 7)])
def test_truncated_gradients_match_hand_built_reference(k1, k2):
    # Two utterances in one stream: windows of the second one reach back into the first's
    # padding, where the state must be reset at the second one's start.
    features, labels, offsets, lengths = make_data([23, 17])
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = TrainConfig(k1=k1, k2=k2, batch_streams=1)
    schedule = build_schedule(offsets, lengths, np.array([0, 1]), config)
    got = tbptt_step_grads(model, data, schedule, config)

    chunks0 = -(-23 // k1)  # the first utterance's chunks; the second starts after them
    checked = 0
    for step, step_grads in enumerate(got):
        if step_grads is None:
            continue
        if step < chunks0:
            utt_start, utt_end, position = 0, 23, 0
        else:
            utt_start, utt_end, position = 23, 40, (chunks0 * k1) - 23
        # window end in this utterance's frame coordinates (timeline minus padding shift)
        end = (step + 1) * k1 - position
        window_end = min(end, utt_end)
        want = reference_window_grads(
            model, features, labels, utt_start, end - k2, end - k1, window_end
        )
        for g, w in zip(step_grads, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked == len(got) and checked == chunks0 + -(-17 // k1)


@pytest.mark.parametrize("k1,k2", [(6, 6), (4, 9), (0, 0)])
def test_no_state_leaks_across_utterances(k1, k2):
    # The real loop's gradients for the last utterance (frames 50..63) are the same whatever
    # ran before it in the stream: its state starts from zero, not from the utterance before.
    features, labels, offsets, lengths = make_data([19, 31, 14])
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = TrainConfig(k1=k1, k2=k2, batch_streams=1)

    def grads_for_last(order):
        schedule = build_schedule(offsets, lengths, np.array(order), config)
        found = {}
        for step, step_grads in enumerate(tbptt_step_grads(model, data, schedule, config)):
            scored = tuple(f for f in schedule.step(step)[1][0].tolist() if f >= 0)
            if scored and min(scored) >= 50:
                found[scored] = step_grads
        return found

    alone = grads_for_last([2])
    assert sorted(f for frames in alone for f in frames) == list(range(50, 64))
    for before in ([0, 2], [1, 2]):
        after = grads_for_last(before)
        assert after.keys() == alone.keys()
        for frames, want in alone.items():
            for got, w in zip(after[frames], want, strict=True):
                torch.testing.assert_close(got, w, atol=1e-10, rtol=1e-9)
    if k1 == 0:  # and whole-utterance BPTT is plain BPTT over that utterance from zero
        model.zero_grad()
        logits, _ = model(torch.from_numpy(features[50:64]).double()[None])
        F.cross_entropy(logits[0], torch.from_numpy(labels[50:64].astype(np.int64))).backward()
        (only,) = alone.values()
        for got, want in zip(only, grads(model), strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


# --- several streams side by side ----------------------------------------------------------

STREAM_LENGTHS = [23, 9, 31, 17, 12, 40, 6, 27]  # 3 streams of different total lengths


def one_stream(schedule: Schedule, b: int) -> Schedule:
    """Stream ``b`` of a B-stream schedule on its own (the same windows, B = 1)."""
    y_index = schedule.y_index[:, b : b + 1]
    return Schedule(
        schedule.x_index[:, b : b + 1],
        y_index,
        schedule.reset[:, b : b + 1],
        (y_index >= 0).sum(dim=(1, 2)).numpy(),
        schedule.widths,
    )


@pytest.mark.parametrize("k1,k2", [(5, 5), (4, 9), (0, 0)])
def test_streams_side_by_side_train_as_one_stream_at_a_time(k1, k2):
    # The batched loss is the sum over streams / all scored frames, so each step's gradient
    # is the frame-weighted sum of the streams' own gradients, and each stream's final state
    # is its own: a reset (an utterance starting) in one stream touches no other stream.
    features, labels, offsets, lengths = make_data(STREAM_LENGTHS)
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = exact(TrainConfig(k1=k1, k2=k2, batch_streams=3))
    order = np.random.default_rng(2).permutation(len(lengths))
    schedule = build_schedule(offsets, lengths, order, config)
    scored = (schedule.y_index >= 0).any(dim=2)  # (S, B)
    last_step = [int(np.flatnonzero(scored[:, b].numpy()).max()) for b in range(3)]
    resets = schedule.reset.any(dim=2)  # (S, B): resets fall on different steps per stream
    if k1:
        assert len(set(last_step)) > 1, "the streams should end at different steps"
        assert (resets.sum(dim=1) < 3).any()
    batched, state, _ = real_epoch(model, data, schedule, config)

    weighted = [
        None if g is None else [f * t for t in g]
        for g, f in zip(batched, schedule.frames, strict=True)
    ]
    summed = [None] * len(schedule)
    for b in range(3):
        alone = one_stream(schedule, b)
        stream_grads, stream_state, _ = real_epoch(
            model, data, alone, replace(config, batch_streams=1)
        )
        for part, alone_state in zip(state, stream_state, strict=True):  # (layers, B, H)
            torch.testing.assert_close(part[:, b], alone_state[:, 0], atol=1e-6, rtol=1e-6)
        for step, step_grads in enumerate(stream_grads):
            if step_grads is None:
                continue
            contribution = [alone.frames[step] * g for g in step_grads]
            summed[step] = (
                contribution
                if summed[step] is None
                else [a + c for a, c in zip(summed[step], contribution, strict=True)]
            )
    assert [g is None for g in summed] == [g is None for g in weighted]
    for got, want in zip(weighted, summed, strict=True):
        for g, w in zip(got or [], want or [], strict=True):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("k1,k2", [(5, 5), (4, 9), (0, 0)])
def test_state_carried_across_steps_equals_one_long_forward(k1, k2):
    # After the last step, each stream's state is that of one forward pass over its timeline
    # from its last utterance's start (padding included): nothing lost between steps.
    features, labels, offsets, lengths = make_data(STREAM_LENGTHS, seed=3)
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = exact(TrainConfig(k1=k1, k2=k2, batch_streams=3))
    schedule = build_schedule(offsets, lengths, np.arange(len(lengths)), config)
    _, (h, c), _ = real_epoch(model, data, schedule, config)
    history = config.window - k1
    for b in range(3):
        if k1:  # the timeline: the first window's history, then each window's newest k1
            x_line = torch.cat(
                [schedule.x_index[0, b, :history], *schedule.x_index[:, b, history:]]
            )
            reset = torch.cat([schedule.reset[0, b, :history], *schedule.reset[:, b, history:]])
            end = len(schedule) * k1  # where the step after the last would start
        else:  # whole utterances: the last batch alone, padded to its longest
            x_line, reset = (
                schedule.step(len(schedule) - 1)[0][b],
                schedule.step(len(schedule) - 1)[2][b],
            )
            end = len(x_line)
        start = int(np.flatnonzero(reset[:end].numpy()).max())
        with torch.no_grad():
            _, (want_h, want_c) = model(data.features[x_line[start:end]][None])
        torch.testing.assert_close(h[:, b], want_h[:, 0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c[:, b], want_c[:, 0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("k1", [6, 0])
def test_frames_in_phn_gaps_are_run_but_not_trained_or_counted(k1):
    _, _, offsets, lengths = make_data([30, 17, 25])
    labelled = np.ones(int(lengths.sum()), dtype=bool)
    labelled[[3, 4, 40, 71]] = False  # gaps between .PHN segments
    config = TrainConfig(k1=k1, batch_streams=2, delay=1)
    schedule = build_schedule(offsets, lengths, np.arange(3), config, labelled)
    targets = schedule.y_index[schedule.y_index >= 0]
    assert sorted(targets.tolist()) == np.flatnonzero(labelled).tolist()
    assert int(schedule.frames.sum()) == int(labelled.sum())
    inputs = schedule.x_index[schedule.x_index >= 0]
    assert {3, 4, 40, 71} <= set(inputs.tolist())  # the network still reads them


@pytest.mark.parametrize("k1,k2,delay", [(20, 20, 0), (7, 12, 3), (0, 0, 2)])
def test_schedule_trains_every_labelled_frame_exactly_once(k1, k2, delay):
    features, labels, offsets, lengths = make_data([50, 13, 77, 8, 31, 64, 5])
    config = TrainConfig(k1=k1, k2=k2, batch_streams=3, delay=delay)
    order = np.random.default_rng(0).permutation(len(lengths))
    schedule = build_schedule(offsets, lengths, order, config)
    targets = schedule.y_index[schedule.y_index >= 0]
    assert sorted(targets.tolist()) == list(range(int(lengths.sum())))
    assert int(schedule.frames.sum()) == int(lengths.sum())
    for step in range(len(schedule)):  # each step's window holds all it scores, no more
        x_index, y_index, _ = schedule.step(step)
        assert int((y_index >= 0).sum()) == schedule.frames[step]
        if k1 == 0:  # whole utterances: cut to the batch's longest, not the split's
            assert (x_index[:, -1] >= 0).any()
    # the target delay: each scored output sees the input d frames after its label's frame
    x, y = schedule.x_index, schedule.y_index
    scored = y >= 0
    ends = np.concatenate([offsets + lengths - 1])
    for xi, yi in zip(x[scored].tolist(), y[scored].tolist(), strict=True):
        end = ends[np.searchsorted(ends, yi)]
        assert xi == min(yi + delay, end)


def test_k2_below_k1_is_refused():
    from phonelabel.errors import PhonelabelError

    with pytest.raises(PhonelabelError, match="k2"):
        TrainConfig(k1=20, k2=10).check()


def test_clipping_scales_to_threshold_and_excludes_output_layer_by_default():
    model = small_model().float()
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    output_before = model.output.weight.grad.clone()
    norm = clip_gradients(model, TrainConfig(clip=1.0))
    assert norm > 1.0
    clipped = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.lstm.parameters()])
    )
    assert abs(float(clipped) - 1.0) < 1e-4
    assert torch.equal(model.output.weight.grad, output_before)

    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    clip_gradients(model, TrainConfig(clip=1.0, clip_output=True))
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])
    )
    assert abs(float(total) - 1.0) < 1e-4


# --- a task that needs memory ----------------------------------------------------------------


def memory_task(utterances: int, frames: int, seed: int):
    """Cues (+1 or -1 on input 0) every 10-30 frames; each frame's label is the sign of the
    last cue (class 0 or 1). Between cues a frame alone says nothing about its label."""
    rng = np.random.default_rng(seed)
    features = 0.1 * rng.standard_normal((utterances * frames, D)).astype(np.float32)
    labels = np.zeros(utterances * frames, dtype=np.uint8)
    for u in range(utterances):
        t = 0
        while t < frames:
            sign = int(rng.integers(2))
            features[u * frames + t, 0] = 1.0 if sign == 0 else -1.0
            gap = int(rng.integers(10, 31))
            labels[u * frames + t : u * frames + min(t + gap, frames)] = sign
            t += gap
    offsets = np.arange(utterances) * frames
    return features, labels, offsets, np.full(utterances, frames)


def train_on_memory_task(
    reset_every_window: bool, epochs: int = 10, utterances: int = 8, lr: float = 0.05
) -> tuple[float, float]:
    """Train with the real loop (k1 = 5: windows far shorter than the 10-30 frame memory);
    returns (train accuracy of the last epoch, held-out accuracy) from the loop's own counts.
    ``reset_every_window`` zeroes every stream's state at every window's start."""
    features, labels, offsets, lengths = memory_task(utterances, 120, seed=0)
    config = TrainConfig(k1=5, batch_streams=4, lr=lr, input_noise=0.0, clip=1.0)
    torch.manual_seed(0)
    model = PhoneLSTM(ModelConfig(input_dim=D, hidden=16, layers=1, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    data = SplitTensors.from_arrays(features, labels, "cpu")

    def schedule_for(order, lengths=lengths, offsets=offsets):
        schedule = build_schedule(offsets, lengths, order, config)
        if reset_every_window:
            schedule.reset[:, :, 0] = True
        return schedule

    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(lengths))
        _, _, totals = real_epoch(model, data, schedule_for(order), config, optimizer)
    trained = totals["correct"] / totals["frames"]
    held_out = memory_task(8, 120, seed=1)
    held_data = SplitTensors.from_arrays(held_out[0], held_out[1], "cpu")
    schedule = schedule_for(np.arange(8), held_out[3], held_out[2])
    _, _, totals = real_epoch(model, held_data, schedule, config, RecordingSGD(model.parameters()))
    return trained, totals["correct"] / totals["frames"]


@pytest.mark.slow
def test_state_carried_between_windows_learns_what_a_reset_state_cannot():
    from conftest import constant_accuracy, per_frame_accuracy

    train_x, train_y, _, _ = memory_task(8, 120, seed=0)
    test_x, test_y, _, _ = memory_task(8, 120, seed=1)
    constant = constant_accuracy(train_y, test_y)
    memoryless = per_frame_accuracy(train_x, train_y, test_x, test_y)
    trivial = max(constant, memoryless)
    assert trivial < 0.65  # the task needs memory: a frame alone (or no frame) is no use
    _, carried = train_on_memory_task(reset_every_window=False)
    _, reset = train_on_memory_task(reset_every_window=True)
    assert carried > trivial + 0.3, (
        f"state carried: {carried:.3f}, not 0.3 above the best trivial predictor "
        f"({trivial:.3f}: constant {constant:.3f}, per-frame {memoryless:.3f})"
    )
    # reset each window, only a cue inside the 5-frame window helps: ~0.55 at best
    assert reset < 0.7, f"state reset each window still scored {reset:.3f}"
    assert carried > reset + 0.25, f"carried {carried:.3f} vs reset each window {reset:.3f}"


def test_spec_augment_masks_one_run_of_frames_and_one_band_across_delta_groups():
    torch.manual_seed(0)
    x = torch.randn(64, 20, 39) + 5  # no feature is 0 unless masked
    assert torch.equal(spec_augment(x, 0, 0, 3), x)
    y = spec_augment(x, 6, 4, 3)
    masked = y == 0
    assert torch.equal(y[~masked], x[~masked])  # what is kept is untouched
    frames = masked.all(dim=2)  # (B, W): whole frames zeroed
    bands = masked.all(dim=1)  # (B, D): whole features zeroed over the window
    for b in range(64):
        run = frames[b].nonzero().flatten()
        assert len(run) <= 6 and (len(run) == 0 or run[-1] - run[0] + 1 == len(run))
        band = bands[b].nonzero().flatten()
        static = band[band < 13]
        assert len(static) <= 4
        assert torch.equal(band, torch.cat([static, static + 13, static + 26]))
    assert 0 < frames.float().mean() < 0.25 and bands.any(dim=1).float().mean() > 0.5


@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4),
    reason="torch < 2.4 has no fused CPU kernels (make_optimizer falls back)",
)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_make_optimizer_is_fused_where_torch_has_the_kernel_and_steps_as_torch_does(optimizer):
    config = TrainConfig(optimizer=optimizer, weight_decay=1e-3)
    fused, reference, start = small_model(), small_model(), small_model()
    made = make_optimizer(fused, config)
    assert made.param_groups[0]["fused"] is True  # torch >= 2.4 has the CPU kernels
    options = dict(lr=config.learning_rate, weight_decay=1e-3)
    if optimizer == "sgd":
        plain = torch.optim.SGD(reference.parameters(), momentum=config.momentum, **options)
    else:
        plain = torch.optim.Adam(reference.parameters(), **options)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        step_grads = [
            torch.randn(p.shape, generator=generator).double() for p in start.parameters()
        ]
        for model, optimizer_ in ((fused, made), (reference, plain)):
            for p, grad in zip(model.parameters(), step_grads, strict=True):
                p.grad = grad.clone()
            optimizer_.step()
    moved = zip(fused.parameters(), start.parameters(), strict=True)
    assert all(not torch.equal(a, b) for a, b in moved)
    for a, b in zip(fused.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)  # float64: rounding apart
