"""Real signals and real races: every command stops at once on Ctrl-C (SIGINT to its process
group, as a terminal sends it), SIGTERM or SIGKILL, leaves no process and nothing
half-written behind, and a second run writing the same output is refused.

Each command runs as `phonelabel ...` in its own session, so every process it starts
(spawned workers, multiprocessing's resource tracker, festival/flite) is found in /proc
by its session id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tone_utterance, write_utterance
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.errors import PhonelabelError
from phonelabel.fileio import LOCK_FILE
from phonelabel.store import open_store

PHONELABEL = [sys.executable, "-c", "from phonelabel.cli import main; main()"]
STOP_SECONDS = 5.0  # the runs stop in well under a second; slack for a loaded CI machine


def _session(sid: int) -> list[str]:
    """Live processes (pid and command) whose session is ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp sid
            if int(fields[3]) == sid and fields[0] not in "ZX":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {command[:100]}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def _start(*args: str) -> subprocess.Popen:
    """Run phonelabel in a session of its own. stderr goes to a temp file, not a pipe, so
    that a worker left behind holding it cannot stall the test."""
    log = tempfile.TemporaryFile("w+")
    run = subprocess.Popen(
        [*PHONELABEL, *args], start_new_session=True, stdout=subprocess.DEVNULL, stderr=log
    )
    run.log = log
    return run


def _stderr(run: subprocess.Popen) -> str:
    run.log.seek(0)
    return run.log.read()


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stop(run: subprocess.Popen, signum: int) -> tuple[float, str]:
    """Send ``signum`` as a user would (Ctrl-C: to the group); seconds to exit, stderr."""
    assert run.poll() is None, "the run ended before the signal: make its work longer"
    sent = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(run.pid, signum)
    else:
        os.kill(run.pid, signum)
    try:
        run.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    return time.monotonic() - sent, _stderr(run)


def _assert_nothing_left(run: subprocess.Popen) -> None:
    left = _session(run.pid)
    deadline = time.monotonic() + 3.0  # killed workers need a moment to be reaped
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _session(run.pid)
    for line in left:  # never leave them running for the next test
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def _assert_one_interrupted_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in stderr, stderr


# --- featurize ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """60 utterances of 20 s (one recording hard-linked under 60 speakers): about two
    seconds of featurizing per worker, long enough to be interrupted mid-run."""
    root = tmp_path_factory.mktemp("long") / "corpus"
    rng = np.random.default_rng(0)
    pieces, segments, position = [], [], 0
    while position < 20 * 16000:
        samples, phones = tone_utterance(rng)
        pieces.append(samples)
        segments += [(start + position, end + position, p) for start, end, p in phones]
        position += len(samples)
    source = write_utterance(root.parent / "source", "SX1", np.concatenate(pieces), segments)
    for i in range(60):
        speaker = (
            root
            / ("TRAIN" if i % 2 else "TEST")
            / "DR1"
            / f"MLG{chr(65 + i // 26)}{chr(65 + i % 26)}0"
        )
        speaker.mkdir(parents=True)
        for suffix in (".WAV", ".PHN"):
            os.link(source.with_suffix(suffix), speaker / ("SX1" + suffix))
    return root


def _featurizing(out: Path, run: subprocess.Popen):
    """True once the split temp dirs exist and both workers are up."""

    def condition() -> bool:
        assert run.poll() is None, _stderr(run)
        workers = [p for p in _session(run.pid) if "multiprocessing.spawn" in p]
        return out.is_dir() and any(out.glob(".train.*.tmp")) and len(workers) == 2

    return condition


@pytest.mark.parametrize(
    "signum, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["ctrl-c", "sigterm", "sigkill"],
)
def test_an_interrupted_featurize_stops_at_once_and_the_next_run_finishes(
    long_corpus, tmp_path, signum, code
):
    out = tmp_path / "features"
    run = _start("featurize", str(long_corpus), str(out), "--jobs", "2")
    _wait_until(_featurizing(out, run), "featurize's workers")
    time.sleep(1.0)  # past the workers' imports, into the work
    seconds, stderr = _stop(run, signum)
    assert run.returncode == code, stderr
    assert seconds < STOP_SECONDS
    _assert_nothing_left(run)
    if signum != signal.SIGKILL:
        _assert_one_interrupted_line(stderr, str(out), "run the same command again")
        assert not out.exists()  # made by the run and left empty: removed
    else:  # a killed run leaves its temp dirs and its lock file, never a visible split
        assert (out / LOCK_FILE).exists()
        assert not any(p.name in ("train", "dev", "test", "store.json") for p in out.iterdir())
    with pytest.raises(PhonelabelError):
        open_store(out)
    if signum == signal.SIGTERM:
        return  # left exactly as Ctrl-C leaves it (asserted above); that re-run is below

    rerun = subprocess.run(
        [*PHONELABEL, "featurize", str(long_corpus), str(out), "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    store = open_store(out)
    assert len(store.split("train").utterances) == 30
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["store.json", "train", "dev", "test", "full_test"]
    )  # no lock file, no temp dir


def test_two_featurize_runs_into_one_store_are_not_mixed(long_corpus, tmp_path):
    out = tmp_path / "features"
    first = _start("featurize", str(long_corpus), str(out), "--jobs", "1")
    _wait_until(lambda: out.is_dir() and any(out.glob(".train.*.tmp")), "the first featurize")
    second = _start("featurize", str(long_corpus), str(out), "--jobs", "1")
    second.wait(timeout=120)
    assert first.poll() is None, "the first run ended too soon to test the race"
    first.wait(timeout=120)
    first_err, second_err = _stderr(first), _stderr(second)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second_err
    assert f"{out}: another phonelabel run is writing a feature store there" in second_err
    assert len(open_store(out).split("train").utterances) == 30


# --- synth and train (slow: real engines, a real model) --------------------------------------


def _assert_whole_utterances(corpus: Path) -> None:
    """Every utterance in ``corpus`` has all its files (a temp file of a worker stopped
    mid-write may stay hidden, never renamed: the next run removes it)."""
    for phn in corpus.rglob("*.PHN"):
        assert all(phn.with_suffix(s).is_file() for s in (".WAV", ".WRD", ".TXT")), phn
    for wav in corpus.rglob("*.WAV"):
        assert wav.with_suffix(".PHN").is_file(), wav


@pytest.mark.slow
def test_synth_stops_on_ctrl_c_and_on_sigkill_with_its_engines_and_then_resumes(tmp_path):
    from phonelabel.corpus.synth import _complete, plan_speakers, plan_utterances

    out = tmp_path / "corpus"
    args = ("synth", str(out), "--speakers", "4", "--utterances-per-speaker", "10", "--jobs", "2")

    def synthesising(run: subprocess.Popen):
        def condition() -> bool:
            assert run.poll() is None, _stderr(run)
            engines = [p for p in _session(run.pid) if "festival" in p or "flite" in p]
            return bool(engines) and any(out.rglob("*.PHN"))

        return condition

    run = _start(*args)
    _wait_until(synthesising(run), "an utterance and a running engine")
    seconds, stderr = _stop(run, signal.SIGINT)
    assert run.returncode == 130 and seconds < STOP_SECONDS, stderr
    _assert_nothing_left(run)
    _assert_one_interrupted_line(stderr, "kept every utterance finished", "run the same command")
    assert not (out / LOCK_FILE).exists()
    _assert_whole_utterances(out)

    run = _start(*args)  # SIGKILL: workers and their festival/flite die with it
    _wait_until(synthesising(run), "an engine in the resumed run")
    _stop(run, signal.SIGKILL)
    _assert_nothing_left(run)
    _assert_whole_utterances(out)

    done = subprocess.run([*PHONELABEL, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plans = plan_utterances(plan_speakers(4, ("festival", "flite"), 0), 10, 0)
    assert all(_complete(out, plan) for plan in plans)
    assert not list(out.rglob(".*.tmp")) and not (out / LOCK_FILE).exists()


TRAIN_ARGS = (
    "--hidden", "32", "--layers", "1", "--k1", "10", "--batch-streams", "4", "--lr", "0.01",
    "--device", "cpu", "--no-tune-decoder",
)  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_stops_train_at_once_and_resume_finishes_the_run(tone_store, tmp_path):
    model = tmp_path / "model"
    args = ("train", str(tone_store), "--out", str(model), *TRAIN_ARGS)
    run = _start(*args, "--epochs", "400", "--checkpoint-seconds", "0.5")
    _wait_until(lambda: (model / "checkpoint.pt").is_file() and run.poll() is None, "a checkpoint")
    seconds, stderr = _stop(run, signal.SIGINT)
    assert run.returncode == 130 and seconds < STOP_SECONDS, stderr
    _assert_nothing_left(run)
    _assert_one_interrupted_line(stderr, str(model), "--resume")
    assert not (model / LOCK_FILE).exists() and not list(model.glob(".*.tmp"))

    resumed = CliRunner().invoke(app, [*args, "--resume", "--epochs", "1"])
    assert resumed.exit_code == 0, resumed.output
    assert len((model / "metrics.jsonl").read_text().splitlines()) == 1
    assert (model / "model.pt").is_file() and not (model / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_second_training_into_a_model_directory_in_use_is_refused(tone_store, tmp_path):
    model = tmp_path / "model"
    args = ("train", str(tone_store), "--out", str(model), *TRAIN_ARGS)
    first = _start(*args, "--epochs", "400")
    _wait_until(lambda: (model / LOCK_FILE).exists() and first.poll() is None, "the first's lock")
    second = CliRunner().invoke(app, [*args, "--epochs", "1"])  # this test's own process
    assert second.exit_code == 2
    assert f"{model}: another phonelabel run is writing a model there" in second.output
    seconds, stderr = _stop(first, signal.SIGTERM)  # `kill`: as clean as Ctrl-C
    assert first.returncode == 143 and seconds < STOP_SECONDS, stderr
    _assert_nothing_left(first)
    _assert_one_interrupted_line(stderr, str(model))
    assert not (model / LOCK_FILE).exists()
    history = model / "metrics.jsonl"  # written only by the first run, if it got that far
    assert not history.exists() or history.read_text().startswith('{"epoch": 1,')


# --- label --out and synth take the same lock -----------------------------------------------


@pytest.fixture
def held_output(tmp_path):
    """``tmp_path/out``, locked by another (real) process for the duration of the test."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom phonelabel.fileio import output_lock\n"
            "with output_lock(sys.argv[1], 'x'):\n print('locked', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    yield out
    holder.kill()
    holder.wait()


def test_label_into_an_output_another_run_is_writing_is_refused(
    tone_model, tone_corpus, held_output
):
    wav = next(tone_corpus.rglob("*.WAV"))
    result = CliRunner().invoke(
        app, ["label", str(wav), "--model", str(tone_model), "--out", str(held_output)]
    )
    assert result.exit_code == 2
    assert f"{held_output}: another phonelabel run is writing labels there" in result.output
    assert [p.name for p in held_output.iterdir()] == [LOCK_FILE]  # nothing written


def test_synth_into_a_corpus_another_run_is_writing_is_refused(held_output):
    from phonelabel.corpus.synth import synthesize

    with pytest.raises(PhonelabelError, match="another phonelabel run is writing a corpus"):
        synthesize(held_output, speakers=4, utterances_per_speaker=1)
    assert [p.name for p in held_output.iterdir()] == [LOCK_FILE]


# --- label --jobs: workers stop with the run, outputs whole or absent -------------------------


@pytest.fixture
def linked_recordings(tmp_path) -> list[str]:
    """80 recordings of 3 s (one, hard-linked): many files for --jobs to share."""
    rng = np.random.default_rng(0)
    samples = np.concatenate([tone_utterance(rng)[0] for _ in range(5)])[: 3 * 16000]
    source = write_utterance(tmp_path / "source", "SX1", samples, [], sphere=False, upper=False)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(80):
        os.link(source, inputs / f"r{i:02d}.wav")
    return sorted(map(str, inputs.iterdir()))


def test_ctrl_c_stops_label_jobs_at_once_leaving_only_whole_outputs(tmp_path, linked_recordings):
    """80 recordings of 3 s (one, hard-linked) through the shipped model on 2 workers."""
    from phonelabel.formats import read_segments

    out = tmp_path / "out"
    run = _start("label", *linked_recordings, "--out", str(out), "--jobs", "2")

    def working() -> bool:
        assert run.poll() is None, _stderr(run)
        workers = [p for p in _session(run.pid) if "multiprocessing.spawn" in p]
        return len(workers) == 2 and out.is_dir() and len(list(out.glob("*.phn"))) >= 2

    _wait_until(working, "label's workers and their first outputs", timeout=240)  # torch import
    seconds, stderr = _stop(run, signal.SIGINT)
    assert run.returncode == 130, stderr
    assert seconds < STOP_SECONDS
    _assert_nothing_left(run)
    _assert_one_interrupted_line(stderr, "whole outputs", str(out), "run the same command again")
    written = sorted(out.iterdir())
    assert 2 <= len(written) < 80 and all(p.suffix == ".phn" for p in written)  # no temp files
    for path in written:  # each one whole: it tiles the recording
        segments = read_segments(path)
        assert segments[0].start == 0 and segments[-1].end == pytest.approx(3.0)


# --- align --jobs: the same, and a second Ctrl-C while the first one unwinds ------------------


def _aligning(run: subprocess.Popen, out: Path):
    def condition() -> bool:
        assert run.poll() is None, _stderr(run)
        workers = [p for p in _session(run.pid) if "multiprocessing.spawn" in p]
        return len(workers) == 2 and out.is_dir() and len(list(out.glob("*.TextGrid"))) >= 2

    return condition


def _assert_whole_alignments(out: Path) -> None:
    from phonelabel.formats import read_segments

    written = sorted(p for p in out.iterdir() if p.name != LOCK_FILE)
    assert 2 <= len(written) < 80 and all(p.suffix == ".TextGrid" for p in written), written
    for path in written:  # each one whole: it tiles the recording (no temp file left)
        segments = read_segments(path)
        assert segments[0].start == 0 and segments[-1].end == pytest.approx(3.0)


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_stops_align_jobs_at_once_leaving_only_whole_outputs(
    tmp_path, linked_recordings, presses
):
    """A second Ctrl-C while the first unwinds ends the run at once (its workers die with
    it): still exit 130, nothing left running, every output whole or absent."""
    out = tmp_path / "out"
    text = "she had your dark suit"
    run = _start("align", *linked_recordings, "--text", text, "--out", str(out), "--jobs", "2")
    _wait_until(_aligning(run, out), "align's workers and their first outputs", timeout=240)
    if presses == 2:
        os.killpg(run.pid, signal.SIGINT)
        time.sleep(0.02)  # the first one is unwinding: stopping the workers
    seconds, stderr = _stop(run, signal.SIGINT) if run.poll() is None else (0.0, _stderr(run))
    assert run.returncode == 130, stderr
    assert seconds < STOP_SECONDS
    _assert_nothing_left(run)
    assert "Traceback" not in stderr, stderr
    if presses == 1:  # align's line says only "no output half-written" (label's: what it kept)
        _assert_one_interrupted_line(stderr)
    else:  # the first may have printed its line before the second arrived, never two
        assert sum(line.startswith("interrupted:") for line in stderr.splitlines()) <= 1
    _assert_whole_alignments(out)
    if presses == 1:  # the second ends the process at once, as SIGKILL: its lock may stay
        assert not (out / LOCK_FILE).exists()  # (a dead run's lock: the next run takes it over)
