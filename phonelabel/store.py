"""The on-disk feature store (DESIGN.md §3b): write it from a corpus, memory-map it back.

    OUT/store.json               config, normalisation stats, phones, corpus, counts, fingerprint
    OUT/<split>/features.npy     (N, D) float32 raw (unnormalised), utterances end to end
    OUT/<split>/labels.npy       (N,) uint8 61-class index (NO_LABEL between segments)
    OUT/<split>/utterances.tsv   utt_id speaker offset frames path phones (the .PHN's labels)
    OUT/<split>/speakers.json    per speaker: frames, signal frames, sum, sum of squares

Worker processes turn utterances into raw features and frame labels; the parent appends
them to a raw file per split, then writes each split (and its speakers' moments) into a
temp dir that is renamed into place, so an interrupted run leaves the previous store (or
nothing) behind. The global statistics come from the train split. Features are normalised
when they are read (``features.normalization_stats``, the rule label uses too), with the
store's statistics as the prior for training, or a model's own when it is evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel import __version__
from phonelabel.audio import read_audio
from phonelabel.core import Reference
from phonelabel.corpus import textgrid, timit
from phonelabel.corpus.source import CorpusOptions, open_corpus
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    NO_LABEL,
    FeatureConfig,
    Moments,
    compute_features,
    frame_count,
    frame_labels,
    global_stats,
    normalization_stats,
    normalize,
)
from phonelabel.fileio import LOCK_FILE, atomic_dir, output_lock, write_json, write_text
from phonelabel.phones import PHONES_61
from phonelabel.workers import stoppable, worker_pool

STORE_FILE = "store.json"
FORMAT = "phonelabel-feature-store"
STORE_VERSION = 2  # 2: raw features + per-speaker moments (1 stored them normalised)
TSV_HEADER = ("utt_id", "speaker", "offset", "frames", "path", "phones")
SPEAKERS_FILE = "speakers.json"


# --- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredUtterance:
    utt_id: str
    speaker: str
    offset: int  # first frame in the split's arrays
    frames: int
    path: str  # the audio file it came from
    phones: tuple[str, ...]  # the alignment's phone labels in order (PER's reference)


@dataclass
class SplitData:
    name: str
    raw: np.ndarray  # (N, D) float32 memmap, raw features
    labels: np.ndarray  # (N,) uint8 memmap
    utterances: list[StoredUtterance]
    speaker_stats: dict[str, tuple[np.ndarray, np.ndarray]]  # speaker -> (D,) mean, std

    @property
    def num_frames(self) -> int:
        return len(self.labels)

    def utterance_features(self, i: int) -> np.ndarray:
        """(frames, D) float32 normalised features of utterance i."""
        u = self.utterances[i]
        return normalize(self.raw[u.offset : u.offset + u.frames], *self.speaker_stats[u.speaker])

    def utterance_labels(self, i: int) -> np.ndarray:
        u = self.utterances[i]
        return self.labels[u.offset : u.offset + u.frames]  # (frames,)

    def reference(self, i: int) -> Reference:
        return Reference(np.asarray(self.utterance_labels(i)), self.utterances[i].phones)

    def normalized_features(self) -> np.ndarray:
        """(N, D) float32: every utterance normalised, in memory (the training split)."""
        out = np.empty(self.raw.shape, dtype=np.float32)
        for i, u in enumerate(self.utterances):
            out[u.offset : u.offset + u.frames] = self.utterance_features(i)
        return out


@dataclass
class FeatureStore:
    path: Path
    config: FeatureConfig
    stats: dict[str, Any]  # global "mean"/"std"/"frames" of the raw train features
    split_names: list[str]
    info: dict[str, Any]  # the whole store.json

    def speaker_moments(self, names: list[str]) -> dict[str, Moments]:
        """Each speaker's moments over the splits ``names`` together."""
        total: dict[str, Moments] = {}
        for name in names:
            for speaker, data in self._moments(name).items():
                total.setdefault(speaker, Moments()).merge(Moments.from_dict(data))
        return total

    def _moments(self, name: str) -> dict[str, Any]:
        path = self.path / name / SPEAKERS_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise PhonelabelError(f"{path}: unreadable ({error})") from None

    def split(
        self,
        name: str,
        prior: dict[str, Any] | None = None,
        moments: dict[str, Moments] | None = None,
    ) -> SplitData:
        """A split memory-mapped, normalised by ``config.normalization`` with ``prior`` (a
        model's statistics; default: the store's own) as the global statistics, and each
        speaker by its moments in this split (or in ``moments``: several splits read as
        one, where a speaker spans them)."""
        if name not in self.split_names:
            raise PhonelabelError(
                f"{self.path}: no split {name!r} (has {', '.join(self.split_names)})"
            )
        directory = self.path / name
        try:
            raw = np.load(directory / "features.npy", mmap_mode="r")
            labels = np.load(directory / "labels.npy", mmap_mode="r")
            utterances = _read_tsv(directory / "utterances.tsv")
        except (OSError, ValueError) as error:
            raise PhonelabelError(f"{directory}: unreadable split ({error})") from None
        frames = sum(u.frames for u in utterances)
        if raw.ndim != 2 or raw.shape != (frames, self.config.dim) or labels.shape != (frames,):
            raise PhonelabelError(
                f"{directory}: features {raw.shape}, labels {labels.shape} and "
                f"utterances.tsv ({frames} frames, dim {self.config.dim}) disagree;"
                " re-run featurize --force"
            )
        prior = self.stats if prior is None else prior
        if moments is None:
            moments = {k: Moments.from_dict(v) for k, v in self._moments(name).items()}
        speakers = {u.speaker for u in utterances}
        stats = {s: normalization_stats(self.config, prior, moments[s]) for s in speakers}
        return SplitData(name, raw, labels, utterances, stats)


def _read_tsv(path: Path) -> list[StoredUtterance]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != TSV_HEADER:
        raise ValueError(f"{path.name} lacks the header {' '.join(TSV_HEADER)}")
    utterances = []
    for line in lines[1:]:
        utt_id, speaker, offset, frames, audio, phones = line.split("\t")
        utterances.append(
            StoredUtterance(utt_id, speaker, int(offset), int(frames), audio, tuple(phones.split()))
        )
    return utterances


def _read_store_json(path: Path) -> dict[str, Any] | None:
    """store.json's content, None when there is none; PhonelabelError when it is not ours."""
    file = path / STORE_FILE
    if not file.is_file():
        return None
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PhonelabelError(f"{file}: not a phonelabel feature store ({error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise PhonelabelError(f"{file}: not a phonelabel feature store")
    return info


def open_store(path: str | Path) -> FeatureStore:
    """Open a store written by ``featurize``; its splits are memory-mapped on ``split()``."""
    path = Path(path)
    info = _read_store_json(path)
    if info is None:
        raise PhonelabelError(f"{path}: not a feature store (no {STORE_FILE}); run featurize")
    if info.get("version") != STORE_VERSION:
        raise PhonelabelError(
            f"{path}: store version {info.get('version')}, this phonelabel reads {STORE_VERSION};"
            " re-run featurize --force"
        )
    if info.get("state") != "complete":
        raise PhonelabelError(f"{path}: incomplete store (interrupted featurize); run it again")
    return FeatureStore(
        path=path,
        config=FeatureConfig.from_dict(info["feature"]),
        stats=info["stats"],
        split_names=list(info["splits"]),
        info=info,
    )


# --- reports ----------------------------------------------------------------------------


@dataclass
class SplitReport:
    name: str
    speakers: int = 0
    utterances: int = 0
    frames: int = 0
    unlabelled_frames: int = 0  # centre between segments: NO_LABEL
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (utt_id, reason)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitReport:
        data = dict(data)
        data["skipped"] = [tuple(item) for item in data.get("skipped", [])]
        return cls(**data)


@dataclass
class FeaturizeReport:
    corpus: Path
    out: Path
    config: FeatureConfig
    splits: dict[str, SplitReport]
    resampled: int = 0  # utterances whose audio was not at 16 kHz
    downmixed: int = 0  # utterances whose audio had more than one channel
    excluded: int = 0  # found in the corpus but in no split (SA sentences, off-list speakers)
    noop: bool = False  # the store was already up to date
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not read
    summary: str = ""  # the corpus kind, label set and split rule, in words

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [item for split in self.splits.values() for item in split.skipped]


# --- one utterance (runs in worker processes) -------------------------------------------


@dataclass
class _Result:
    features: np.ndarray | None = None  # (T, D) float32 raw
    labels: np.ndarray | None = None  # (T,) uint8
    phones: tuple[str, ...] = ()  # the alignment's labels in order
    seconds: float = 0.0
    reason: str | None = None  # why it was skipped
    resampled: bool = False
    downmixed: bool = False


def featurize_utterance(utterance: Any, config: FeatureConfig) -> _Result:
    """Raw features and frame labels of one utterance record (``corpus.source``: it has
    ``audio`` and ``segments(audio)``), or the reason it cannot be used."""
    audio_path = utterance.audio
    try:
        audio = read_audio(audio_path, config.sample_rate)
        result = _Result(
            seconds=audio.seconds,
            resampled=audio.source_rate != config.sample_rate,
            downmixed=audio.source_channels != 1,
        )
        num_frames = frame_count(len(audio.samples), config)
        if num_frames == 0:
            raise PhonelabelError(
                f"{audio_path}: audio shorter than one window"
                f" ({len(audio.samples)} < {config.win_length} samples)"
            )
        segments = utterance.segments(audio)
        features = compute_features(audio.samples, config)
        if not np.all(np.isfinite(features)):
            raise PhonelabelError(
                f"{audio_path}: features hold NaN or infinite values (audio out of range?)"
            )
    except PhonelabelError as error:
        return _Result(reason=str(error))
    result.features = features
    result.labels = frame_labels(segments, num_frames, config)
    result.phones = tuple(segment.phone for segment in segments)
    return result


def _featurize_chunk(args: tuple[list[Any], dict[str, Any]]) -> list[_Result]:
    """Top-level (picklable) worker entry: a chunk of utterance records."""
    items, config_dict = args
    config = FeatureConfig.from_dict(config_dict)
    return [featurize_utterance(utterance, config) for utterance in items]


def _results(utterances: list[Any], config: FeatureConfig, jobs: int) -> Iterator[list[_Result]]:
    """Results chunk by chunk, in utterance order; spawn-safe worker pool when jobs > 1."""
    size = max(1, min(32, len(utterances) // (4 * jobs)))
    chunks = [(utterances[i : i + size], config.to_dict()) for i in range(0, len(utterances), size)]
    if jobs == 1 or len(chunks) <= 1:
        yield from map(_featurize_chunk, chunks)
        return
    # the workers import only numpy and soundfile (features.py needs no librosa), so they
    # start quickly. ProcessPoolExecutor, unlike Pool, fails (BrokenProcessPool) if a
    # worker dies; worker_pool kills them at once when this generator is closed early.
    with worker_pool(min(jobs, len(chunks))) as pool:
        yield from pool.map(partial(stoppable, _featurize_chunk), chunks)


# --- writing ----------------------------------------------------------------------------


class _SplitWriter:
    """Appends one split's raw features to a temp file; then writes it normalised."""

    def __init__(self, name: str, directory: Path, dim: int):
        self.report = SplitReport(name)
        self.directory = directory
        self.dim = dim
        self.raw_path = directory / "raw.f32"
        self.raw = open(self.raw_path, "wb")  # closed in finish(), or by featurize on an error
        self.labels: list[np.ndarray] = []
        self.rows: list[StoredUtterance] = []
        self.frames = 0

    def add(self, utt: Any, result: _Result) -> None:
        assert result.features is not None and result.labels is not None
        result.features.astype(np.float32, copy=False).tofile(self.raw)
        self.labels.append(result.labels)
        count = len(result.labels)
        self.rows.append(
            StoredUtterance(
                utt.utt_id, utt.speaker, self.frames, count, str(utt.audio), result.phones
            )
        )
        self.frames += count
        self.report.utterances += 1
        self.report.seconds += result.seconds
        self.report.unlabelled_frames += int(np.count_nonzero(result.labels == NO_LABEL))

    def raw_features(self) -> np.ndarray:
        self.raw.flush()
        if self.frames == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(self.raw_path, dtype=np.float32, mode="r", shape=(self.frames, self.dim))

    def finish(self, config: FeatureConfig) -> SplitReport:
        """Write features.npy (raw), labels.npy, utterances.tsv, speakers.json."""
        moments: dict[str, Moments] = {}
        raw = self.raw_features()
        for row in self.rows:
            span = raw[row.offset : row.offset + row.frames]
            moments.setdefault(row.speaker, Moments()).add(span, config)
        del raw
        self.raw.close()
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.frames, self.dim)}
        with open(self.directory / "features.npy", "wb") as out, open(self.raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)
        self.raw_path.unlink()
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, dtype=np.uint8)
        np.save(self.directory / "labels.npy", labels.astype(np.uint8))
        lines = ["\t".join(TSV_HEADER)] + [
            f"{r.utt_id}\t{r.speaker}\t{r.offset}\t{r.frames}\t{r.path}\t{' '.join(r.phones)}"
            for r in self.rows
        ]
        write_text(self.directory / "utterances.tsv", "\n".join(lines) + "\n")
        write_json(
            self.directory / SPEAKERS_FILE, {k: m.to_dict() for k, m in sorted(moments.items())}
        )
        self.report.frames = self.frames
        self.report.speakers = len(moments)
        return self.report


def _is_leftover(name: str) -> bool:
    """Temp files/dirs of an interrupted featurize (fileio's ``.<name>.*.tmp``, ``.<name>.old``)."""
    targets = (*timit.SPLITS, *textgrid.FOLDER_SPLITS, STORE_FILE)
    return any(name.startswith(f".{t}.") and name.endswith((".tmp", ".old")) for t in targets)


def _check_out(out: Path) -> dict[str, Any] | None:
    """Refuse an OUT (locked, so a directory) that holds something but no store; tidy
    leftovers of an interrupted run."""
    info = _read_store_json(out)
    entries = [p for p in out.iterdir() if not _is_leftover(p.name) and p.name != LOCK_FILE]
    if info is None and entries:
        raise PhonelabelError(
            f"{out}: exists, is not empty and is not a feature store (no {STORE_FILE});"
            " refusing to write into it"
        )
    for leftover in out.iterdir():
        if _is_leftover(leftover.name):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return info


def _fingerprint(
    corpus: Path, utterances: list[Any], config: FeatureConfig, rules: dict[str, Any]
) -> str:
    """Hash of every input file's path, size and mtime, the config and the corpus's rules
    (splits, labels): equal = no-op."""
    files = []
    for u in utterances:
        for path in u.inputs:
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps(
        {
            "version": STORE_VERSION,
            "corpus": str(corpus),
            "config": config.to_dict(),
            "rules": rules,
            "files": files,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _noop_report(
    info: dict[str, Any], corpus: Path, out: Path, config: FeatureConfig
) -> FeaturizeReport:
    return FeaturizeReport(
        corpus=corpus,
        out=out,
        config=config,
        splits={name: SplitReport.from_dict(data) for name, data in info["splits"].items()},
        resampled=info.get("resampled", 0),
        downmixed=info.get("downmixed", 0),
        excluded=info.get("excluded", 0),
        noop=True,
        problems=[tuple(p) for p in info.get("problems", [])],
        summary=info.get("summary", ""),
    )


def featurize(
    corpus: str | Path,
    out: str | Path,
    config: FeatureConfig = FeatureConfig(),
    jobs: int | None = None,
    force: bool = False,
    strict: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    options: CorpusOptions | None = None,
) -> FeaturizeReport:
    """Featurize a corpus (TIMIT layout, or audio + TextGrids: ``options``) into a feature
    store at ``out`` (DESIGN.md §3b).

    A bad utterance (unreadable/short audio, missing or bad alignment, non-finite features)
    is skipped and reported with its reason; ``strict`` makes the first one fatal. A re-run
    on an unchanged corpus with the same config returns at once (``noop``) unless ``force``.
    TIMIT's SA1/SA2 sentences are kept with ``options.include_sa``.
    """
    if jobs is not None and jobs < 1:
        raise PhonelabelError(f"jobs {jobs}: must be at least 1")
    with output_lock(out, "a feature store"):  # before _check_out tidies temp files
        return _featurize(corpus, out, config, jobs, force, strict, on_progress, options)


def _featurize(
    corpus: str | Path,
    out: str | Path,
    config: FeatureConfig,
    jobs: int | None,
    force: bool,
    strict: bool,
    on_progress: Callable[[int, int], None] | None,
    options: CorpusOptions | None,
) -> FeaturizeReport:
    corpus, out = Path(corpus).resolve(), Path(out)
    previous = _check_out(out)
    options = options or CorpusOptions()
    include_sa = options.include_sa  # TIMIT's SA1/SA2 sentences: one home, CorpusOptions
    found = open_corpus(corpus, options)
    if strict and found.problems:
        raise PhonelabelError(f"{found.problems[0][0]}: {found.problems[0][1]}")
    names = found.store_splits
    work = [(name, u) for name in names for u in found.splits[name]]
    # full_test shares its utterances with dev and test: featurize each utterance once.
    by_id: dict[str, Any] = {}
    for _, utterance in work:
        seen = by_id.setdefault(utterance.utt_id, utterance)
        if seen.audio != utterance.audio:  # e.g. one speaker folder name in TRAIN and TEST
            raise PhonelabelError(
                f"{utterance.audio}: its utterance id {utterance.utt_id!r} is also {seen.audio}'s"
                " (two speakers with one name?); rename one speaker folder"
            )
    utterances = list(by_id.values())
    in_full_test = {u.utt_id for u in found.splits.get("full_test", [])}
    rules = {**found.info, "include_sa": include_sa}
    fingerprint = _fingerprint(corpus, utterances, config, rules)
    if (
        not force
        and previous is not None
        and previous.get("state") == "complete"
        and previous.get("fingerprint") == fingerprint
        and all((out / name / "features.npy").is_file() for name in previous["splits"])
    ):
        return _noop_report(previous, corpus, out, config)
    if not work:
        raise PhonelabelError(f"{corpus}: no utterance falls in any split (train/dev/test)")
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)

    report = FeaturizeReport(
        corpus,
        out,
        config,
        {},
        excluded=found.excluded,
        problems=found.problems,
        summary=found.summary,
    )
    with ExitStack() as stack:
        writers = {
            name: _SplitWriter(name, stack.enter_context(atomic_dir(out / name)), config.dim)
            for name in names
        }
        for writer in writers.values():
            stack.callback(writer.raw.close)
        chunks = _results(utterances, config, jobs)
        stack.callback(chunks.close)  # stops the worker pool at once on an error
        done = 0
        fresh = (result for chunk in chunks for result in chunk)
        cache: dict[str, _Result] = {}
        for name, utt in work:
            repeated = utt.utt_id in cache
            result = cache.pop(utt.utt_id) if repeated else next(fresh)
            if not repeated and name != "full_test" and utt.utt_id in in_full_test:
                cache[utt.utt_id] = result
            done += 1
            if result.reason is not None:
                if strict:
                    raise PhonelabelError(f"{utt.utt_id}: {result.reason}")
                writers[name].report.skipped.append((utt.utt_id, result.reason))
            else:
                writers[name].add(utt, result)
                report.resampled += 0 if repeated else result.resampled
                report.downmixed += 0 if repeated else result.downmixed
            if on_progress is not None:
                on_progress(done, len(work))
        # statistics from the training split; a corpus without one falls back to all frames
        stats_split = "train" if writers["train"].frames else "all"
        if writers["train"].frames:
            stats = global_stats(writers["train"].raw_features())
        else:
            raws = [w.raw_features() for n, w in writers.items() if w.frames and n != "full_test"]
            if not raws:
                raise PhonelabelError(f"{corpus}: no utterance could be featurized")
            stats = global_stats(np.concatenate(raws))
        report.splits = {name: w.finish(config) for name, w in writers.items()}
        info = {
            "format": FORMAT,
            "version": STORE_VERSION,
            "phonelabel": __version__,
            "state": "writing",
            "corpus": str(corpus),
            "include_sa": include_sa,
            **found.info,
            "fingerprint": fingerprint,
            "feature": config.to_dict(),
            "dim": config.dim,
            "stats": stats,
            "stats_split": stats_split,
            "phones": list(PHONES_61),
            "no_label": NO_LABEL,
            "splits": {name: asdict(r) for name, r in report.splits.items()},
            "resampled": report.resampled,
            "downmixed": report.downmixed,
            "excluded": report.excluded,
            "problems": report.problems,
            "summary": report.summary,
        }
        # mark the store as being rewritten while the split dirs are renamed into place
        write_json(out / STORE_FILE, info)
    write_json(out / STORE_FILE, {**info, "state": "complete"})
    return report
