"""TBPTT mechanics: gradients against full BPTT and hand-built references, no state
leaking across utterances, clipping, the schedule covering every frame once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phonelabel.model import ModelConfig, PhoneLSTM
from phonelabel.train import (
    SplitTensors,
    TrainConfig,
    build_schedule,
    clip_gradients,
    compute_loss,
)

D = 5


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


def tbptt_step_grads(model, data, schedule, config):
    """Gradients of every step, computed exactly as the trainer does (no update)."""
    state = model.zero_state(config.batch_streams)
    state = (state[0].double(), state[1].double())
    out = []
    for step in range(len(schedule)):
        model.zero_grad()
        x_index, y_index, reset = schedule.step(step)
        loss, state, _ = compute_loss(
            model,
            data,
            x_index,
            y_index,
            reset,
            state,
            int(schedule.frames[step]),
            config.k1 or x_index.shape[1],
        )
        if schedule.frames[step]:
            loss.backward()
            out.append(grads(model))
        else:
            out.append(None)
    return out


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
    features, labels, offsets, lengths = make_data([19, 31, 14])
    model = small_model()
    data = to_double(SplitTensors.from_arrays(features, labels, "cpu"))
    config = TrainConfig(k1=k1, k2=k2, batch_streams=1)

    def outputs_for_last(order):
        schedule = build_schedule(offsets, lengths, np.array(order), config)
        state = model.zero_state(1)
        state = (state[0].double(), state[1].double())
        collected = {}
        with torch.no_grad():
            for step in range(len(schedule)):
                x_index, y_index, reset = schedule.step(step)
                capture_at = config.k1 or x_index.shape[1]
                x = data.features[x_index]
                if capture_at == x_index.shape[1]:
                    keep = (~reset[:, 0]).double()[None, :, None]
                    logits, state = model(x, (state[0] * keep, state[1] * keep))
                else:
                    logits, state = model.forward_with_resets(x, state, reset, capture_at)
                for t, frame in enumerate(y_index[0].tolist()):
                    if frame >= 50:  # the last utterance: frames 50..63
                        collected[frame] = logits[0, t]
        return torch.stack([collected[f] for f in sorted(collected)])

    after_first = outputs_for_last([0, 2])
    after_second = outputs_for_last([1, 2])
    alone = outputs_for_last([2])
    assert after_first.shape == (14, 61)
    torch.testing.assert_close(after_first, alone)
    torch.testing.assert_close(after_second, alone)
    # and the utterance's outputs are those of the whole utterance from a zero state
    whole, _ = model(torch.from_numpy(features[50:64]).double()[None])
    torch.testing.assert_close(alone, whole[0])


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


def test_worked_example_hand_derived_bptt_matches_autograd():
    """One input, one sigmoid unit, linear output, predicting the next input:
    z_t = w y_{t-1} + v x_t, y_t = s(z_t), y_0 = s, p_t = u y_t, E = sum (x_{t+1} - p_t)^2."""
    x = torch.tensor([0.5, -1.0, 0.25, 0.8, -0.3, 0.9], dtype=torch.float64)
    u, v, w, s = (
        torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (0.7, -0.4, 1.3, 0.2)
    )
    T = len(x) - 1
    ys, zs, ps = [s], [], []
    for t in range(T):
        z = w * ys[-1] + v * x[t]
        zs.append(z)
        ys.append(torch.sigmoid(z))
        ps.append(u * ys[-1])
    E = sum((x[t + 1] - ps[t]) ** 2 for t in range(T))
    E.backward()

    # hand-derived BPTT, backwards in time
    y = [float(a.detach()) for a in ys]
    g = [-2 * (float(x[t + 1]) - u.item() * y[t + 1]) for t in range(T)]  # dE/dp_t
    delta = [0.0] * (T + 1)  # delta_{T+1} = 0
    for t in reversed(range(T)):
        sigma_prime = y[t + 1] * (1 - y[t + 1])
        delta[t] = sigma_prime * (u.item() * g[t] + w.item() * delta[t + 1])
    dE_du = sum(g[t] * y[t + 1] for t in range(T))
    dE_dv = sum(delta[t] * float(x[t]) for t in range(T))
    dE_dw = sum(delta[t] * y[t] for t in range(T))
    assert abs(u.grad.item() - dE_du) < 1e-12
    assert abs(v.grad.item() - dE_dv) < 1e-12
    assert abs(w.grad.item() - dE_dw) < 1e-12
