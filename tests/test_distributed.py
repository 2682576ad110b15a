"""Training in several processes (gloo on the CPU) and from host memory: the same update as
one process, exact resume after a rank is killed, one-line refusals; the host-streamed
training split gives the on-device path's weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import phonelabel
from phonelabel import distributed
from phonelabel.batches import placement
from phonelabel.cli import app
from phonelabel.distributed import GradientBuckets, Ranks, process_group
from phonelabel.errors import PhonelabelError
from phonelabel.model import ModelConfig, PhoneLSTM
from phonelabel.store import open_store
from phonelabel.train import (
    HostSplit,
    RunState,
    SplitTensors,
    TrainConfig,
    build_schedule,
    run_epoch,
    train,
)

runner = CliRunner()
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TINY = ["--hidden", "16", "--layers", "1", "--k1", "10", "--batch-streams", "4", "--lr", "0.01"]
TINY += ["--device", "cpu", "--no-tune-decoder"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_thread_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


# --- N ranks make the one-process update -----------------------------------------------------


def random_split(seed: int = 0):
    """Random (float64) features and labels of 10 utterances of 20-60 frames."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 60, 10)
    total = int(lengths.sum())
    features = rng.standard_normal((total, 5))
    labels = rng.integers(0, 61, total).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    data = SplitTensors.from_arrays(features, labels, "cpu")
    return SplitTensors(data.features.double(), data.labels), offsets, lengths


def train_streams(ranks: Ranks, config: TrainConfig, epochs: int) -> dict[str, torch.Tensor]:
    """The real ``run_epoch`` for ``epochs`` epochs, float64, this rank's share of the
    streams; returns the weights."""
    data, offsets, lengths = random_split()
    torch.manual_seed(1)
    model = PhoneLSTM(ModelConfig(input_dim=5, hidden=8, layers=2, dropout=0.0)).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    share = ranks.streams(config.batch_streams)
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(lengths))
        schedule = build_schedule(offsets, lengths, order, config).streams(share)
        totals = dict(loss=0.0, frames=0, correct=0, clipped=0, steps=0, seconds=0.0)
        run = RunState(epoch=epoch, totals=totals)
        state = model.zero_state(share.stop - share.start)
        state = (state[0].double(), state[1].double())
        run_epoch(model, optimizer, data, schedule, config, run, state, None, print, ranks)
    return {k: v.clone() for k, v in model.state_dict().items()}


# no noise or masks: the ranks' random draws differ from one process's; clipping on
EXACT = dict(
    batch_streams=4, input_noise=0.0, clip=0.5, checkpoint_seconds=1e9, time_mask=0, freq_mask=0
)
CONFIGS = [  # the fused window, and k2 > k1 (frame by frame)
    TrainConfig(k1=5, **EXACT),
    TrainConfig(k1=4, k2=9, **EXACT),
]
EPOCHS = 8


def _rank_process(rank: int, world: int, port: int, out: str, shared: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ[distributed.SHARED_MEMORY_VARIABLE] = shared
    torch.set_num_threads(1)
    distributed.BUCKET_BYTES = 600  # the tiny model in 5 buckets, started during backward
    ranks = Ranks(rank, world)
    with process_group(ranks):
        weights = [train_streams(ranks, config, EPOCHS) for config in CONFIGS]
        model = PhoneLSTM(ModelConfig(input_dim=5, hidden=8, layers=2))
        path = (
            "shared memory" if GradientBuckets(model.parameters(), ranks=ranks).shared else "gloo"
        )
    if rank == 0:
        torch.save({"weights": weights, "path": path}, out)


@pytest.mark.parametrize("path", ["shared memory", "gloo"])
def test_two_ranks_make_the_one_process_update_in_float64(tmp_path, one_thread, path):
    """Ranks on one machine's CPU sum gradients through shared memory; with
    PHONELABEL_SHARED_MEMORY=0 (and across machines) through gloo's all-reduce in buckets
    started during backward. Either way, the one-process update."""
    out = tmp_path / "ddp.pt"
    one_process = [train_streams(Ranks(), config, EPOCHS) for config in CONFIGS]
    shared = "1" if path == "shared memory" else "0"
    # forked from this process, which has torch (and the optimiser's lazy imports) loaded
    torch.multiprocessing.start_processes(
        _rank_process, (2, free_port(), str(out), shared), nprocs=2, start_method="fork"
    )
    saved = torch.load(out, weights_only=True)
    assert saved["path"] == path
    distributed = saved["weights"]
    for config, ddp, alone in zip(CONFIGS, distributed, one_process, strict=True):
        steps = EPOCHS * len(build_schedule(*random_split()[1:], np.arange(10), config))
        assert steps > 150
        assert not torch.equal(alone["output.bias"], torch.zeros(61, dtype=torch.float64))
        for name, value in alone.items():
            torch.testing.assert_close(ddp[name], value, rtol=0, atol=1e-9, msg=name)


def _orphaned_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ranks = Ranks(rank, 2)
    with process_group(ranks):
        model = PhoneLSTM(ModelConfig(input_dim=5, hidden=8, layers=1))
        shared = GradientBuckets(model.parameters(), ranks=ranks).shared
        if rank == 1:
            os._exit(0)  # dies before its first sum
        started = time.monotonic()
        try:
            shared.sum_gradients(list(model.parameters()))
            message = "no error"
        except PhonelabelError as error:
            message = str(error)
        Path(out).write_text(json.dumps([message, time.monotonic() - started]))
        os._exit(0)  # (the group's teardown would wait for the dead rank)


def test_a_rank_whose_partner_died_stops_in_seconds_not_at_the_timeout(tmp_path):
    out = tmp_path / "orphan.json"
    torch.multiprocessing.start_processes(
        _orphaned_rank, (free_port(), str(out)), nprocs=2, start_method="fork"
    )
    message, seconds = json.loads(out.read_text())
    assert message == "rank 0: another training process died" and seconds < 5


def test_gradients_go_in_buckets_in_reverse_order_each_closed_at_its_size():
    model = PhoneLSTM(ModelConfig(input_dim=5, hidden=8, layers=2)).double()
    names = {id(p): name for name, p in model.named_parameters()}
    buckets = [[names[id(p)] for p in b] for b in GradientBuckets(model.parameters(), 600).buckets]
    assert sum(buckets, []) == [name for name, _ in model.named_parameters()][::-1]
    assert len(buckets) == 5 and buckets[0][:2] == ["output.bias", "output.weight"]
    default = GradientBuckets(PhoneLSTM(ModelConfig()).parameters()).buckets
    assert [len(b) for b in default] == [6, 4]  # output + top LSTM layer, then the layer below


def test_each_rank_runs_its_own_contiguous_streams_and_bad_counts_are_refused():
    assert [Ranks(r, 4).streams(8) for r in range(4)] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 6),
        slice(6, 8),
    ]
    with pytest.raises(PhonelabelError, match="only 2 batch_streams"):
        Ranks(0, 4).check_streams(2)
    with pytest.raises(PhonelabelError, match=r"\(6\) is not a multiple of the 4"):
        Ranks(1, 4).check_streams(6)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda:last",  # the last GPU: not the current one where there are several
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ),
    ],
)
def test_a_ranks_step_seed_gives_the_draws_of_torch_manual_seed(device):
    if device == "cuda:last":
        device = f"cuda:{torch.cuda.device_count() - 1}"
        torch.cuda.init()
    seed = distributed.step_seed(7, 1, 3, 1)
    assert seed != distributed.step_seed(7, 1, 3, 0)  # each rank its own noise

    def draws():
        ones = torch.ones(64, device=device)
        return torch.randn(4, 5, device=device), torch.nn.functional.dropout(ones, 0.5)

    torch.manual_seed(seed)
    expected = draws()
    torch.manual_seed(0)
    distributed.seed_generators(seed, torch.device(device))
    assert all(torch.equal(a, b) for a, b in zip(draws(), expected, strict=True))


# --- the host-streamed training split --------------------------------------------------------


def test_host_windows_hold_the_on_device_numbers(tone_store):
    split = open_store(tone_store).split("train")
    device = SplitTensors.from_arrays(split.normalized_features(), split.labels, "cpu")
    host = HostSplit.from_split(split, torch.device("cpu"))
    config = TrainConfig.of(k1=7, k2=12, batch_streams=3, delay=2)
    offsets = np.array([u.offset for u in split.utterances])
    lengths = np.array([u.frames for u in split.utterances])
    schedule = build_schedule(offsets, lengths, np.arange(len(lengths))[::-1], config)
    pairs = zip(device.windows(schedule, 3), host.windows(schedule, 3), strict=True)
    steps = 0
    for on_device, streamed in pairs:
        steps += 1
        for a, b in zip(on_device, streamed, strict=True):
            assert torch.equal(a, b)
    assert steps == len(schedule) - 3


def test_data_on_auto_streams_from_the_host_when_the_split_does_not_fit():
    cpu = torch.device("cpu")
    assert placement("auto", cpu, 1 << 20) == "device"
    assert placement("auto", cpu, 1 << 62) == "host"  # more than any machine's free memory
    assert placement("device", cpu, 1 << 62) == "device"  # asked for: as asked
    assert placement("host", cpu, 1) == "host"


def test_training_from_host_memory_gives_the_on_device_weights(tone_store, tmp_path, one_thread):
    config = TrainConfig.of(hidden=16, layers=1, k1=10, batch_streams=4, epochs=1, lr=0.01,
                         device="cpu", tune_decoder=False)  # fmt: skip
    for where in ("device", "host"):
        train(tone_store, tmp_path / where, replace(config, data_on=where))
    a, b = (torch.load(tmp_path / w / "model.pt", weights_only=True) for w in ("device", "host"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = json.loads((tmp_path / "host" / "config.json").read_text())
    assert run["training"]["data_on"] == "host" and run["run"]["data_on_used"] == "host"


# --- torchrun: kill a rank, resume; bad world sizes ------------------------------------------


def torchrun(store: Path, out: Path, *extra: str) -> list[str]:
    return [*TORCHRUN, "--nproc-per-node", "2", "--master-port", str(free_port()),
            "-m", "phonelabel", "train", str(store), "--out", str(out), *extra]  # fmt: skip


def ranks_of(parent: int) -> dict[int, int]:
    """{rank: pid} of the training processes torchrun (``parent``) started."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                environ = (stat.parent / "environ").read_bytes().split(b"\0")
                rank = next(int(v[5:]) for v in environ if v.startswith(b"RANK="))
                found[rank] = int(stat.parent.name)
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return found


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


def dev_accuracies(model_dir: Path) -> list[float]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["dev_frame_accuracy_61"] for line in lines]


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tone_store, tmp_path):
    args = [*TINY, "--epochs", "2", "--seed", "2"]  # dropout and input noise on
    whole = subprocess.run(torchrun(tone_store, tmp_path / "whole", *args), env=one_thread_env(),
                           capture_output=True, text=True, timeout=240)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["run"]["world_size"] == 2

    killed = tmp_path / "killed"
    run = subprocess.Popen(torchrun(tone_store, killed, *args, "--checkpoint-seconds", "0"),
                           env=one_thread_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:  # a few steps into epoch 2
        try:
            saved = torch.load(killed / "checkpoint.pt", weights_only=True)["run"]
            if saved["epoch"] == 1 and saved["step"] >= 3:
                break
        except (OSError, RuntimeError, EOFError):
            pass
        time.sleep(0.02)
    os.kill(ranks_of(run.pid)[1], signal.SIGKILL)  # rank 1: torchrun tears down rank 0
    assert run.wait(300) != 0, "training finished before a rank could be killed"
    assert (killed / "metrics.jsonl").read_text().count("\n") == 1

    resumed = subprocess.run(torchrun(tone_store, killed, "--resume"),
                             env=one_thread_env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(tmp_path / "whole"), weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert dev_accuracies(killed) == dev_accuracies(tmp_path / "whole")

    # one process cannot continue what two began: refused, nothing changed
    before = (killed / "checkpoint.pt").read_bytes()
    alone = runner.invoke(app, ["train", str(tone_store), "--out", str(killed), "--resume"])
    assert alone.exit_code == 2
    assert "trained by 2 process(es) and resumes only with 2" in alone.output
    assert len(alone.output.strip().splitlines()) == 1
    assert (killed / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow
def test_torchrun_two_ranks_train_the_one_process_model(tone_store, tmp_path):
    """A whole ``train()``, dev scoring, decoder tuning and a checkpoint after every step
    included: 2 gloo ranks under torchrun vs one process. No noise, masks or dropout (the
    ranks draw their own). Training runs in float32 (the store's features are float32 and no
    option makes it float64): summing two ranks' halves rounds differently from one
    process's whole sum, ~1e-7 relative per step, which Adam carries over 2 epochs to a few
    1e-6; the float64 tests above show the updates themselves are the same to 1e-9."""
    args = [a for a in TINY if a != "--no-tune-decoder"] + ["--epochs", "2", "--seed", "3",
            "--dropout", "0", "--input-noise", "0", "--time-mask", "0", "--freq-mask", "0",
            "--checkpoint-seconds", "0"]  # fmt: skip
    two = subprocess.run(torchrun(tone_store, tmp_path / "two", *args), env=one_thread_env(),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "phonelabel", "train", str(tone_store), "--out",
                          str(tmp_path / "one"), *args], env=one_thread_env(),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    for name, value in b.items():
        torch.testing.assert_close(a[name], value, rtol=0, atol=1e-4, msg=name)
    saved = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("two", "one")]
    assert saved[0]["world_size"] == 2 and saved[1]["world_size"] == 1
    assert saved[0]["run"]["epoch"] == saved[1]["run"]["epoch"] == 2
    moments = [s["optimizer"]["state"][0]["exp_avg"] for s in saved]
    torch.testing.assert_close(moments[0], moments[1], rtol=0, atol=1e-5)
    records = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
               for d in ("two", "one")]  # fmt: skip
    for two_ranks, alone in zip(*records, strict=True):
        assert two_ranks["train_frames"] == alone["train_frames"] > 0
        assert two_ranks["steps"] == alone["steps"]
        assert two_ranks["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)
        assert two_ranks["dev_frame_accuracy_61"] == pytest.approx(
            alone["dev_frame_accuracy_61"], abs=2e-3
        )
        assert two_ranks["best"] == alone["best"]
    configs = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("two", "one")]
    assert configs[0]["run"]["world_size"] == 2
    assert configs[0]["decoder"] == configs[1]["decoder"] and configs[0]["decoder"]


@pytest.mark.slow
def test_streams_that_do_not_divide_among_the_ranks_are_one_line_and_nothing_written(
    tone_store, tmp_path
):
    out = tmp_path / "model"
    args = [a if a != "4" else "3" for a in TINY]  # --batch-streams 3 over 2 ranks
    result = subprocess.run(torchrun(tone_store, out, *args), env=one_thread_env(),
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "--batch-streams (3)" in line]
    assert len(lines) == 1 and "not a multiple of the 2 training processes" in lines[0]
    # torchrun prints its own report of the failed ranks; phonelabel's code is in no traceback
    assert f'File "{Path(phonelabel.__file__).parent}' not in result.stderr
    assert not out.exists()


def test_a_rank_that_cannot_reach_the_rendezvous_stops_with_one_line(tone_store, tmp_path):
    out = tmp_path / "model"
    env = one_thread_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                         MASTER_PORT=str(free_port()), PHONELABEL_DIST_TIMEOUT="2")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "phonelabel", "train", str(tone_store), "--out", str(out), *TINY],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "rank 0 of 2: cannot reach the rendezvous at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
