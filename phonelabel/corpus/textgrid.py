"""Read trees of audio + Praat TextGrids (MFA output, hand labels) as a corpus (DESIGN.md §5b).

Each audio file (any format ``audio.py`` reads) has a TextGrid of the same stem beside it,
or at the mirrored path in a separate alignments tree (MFA writes its output that way).
TextGrids are parsed by praatio (long and short text formats; UTF-8 or UTF-16).

Labels become TIMIT-61 by one of three label sets, detected per corpus or chosen:
``timit`` (as written; an empty interval is unlabelled), ``arpabet`` (MFA / CMU: stress
digits stripped, ``""``/``sil``/``sp`` silence, noise labels not scored, stops and
affricates split into closure + release by ``phonemap``, as the synthetic corpus does),
or ``map`` (a user's two-column file: label, TIMIT-61 phone(s) or ``-`` for not scored).

Splits: top-level ``train/ dev/ test/`` folders; else a manifest TSV
(``utt_id speaker split audio alignment``); else speakers (the audio's parent folder)
assigned by a seeded rule. ``all`` is every utterance. The rule is returned as a dict
for store.json.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phonelabel.audio import AUDIO_SUFFIXES, Audio
from phonelabel.core import Segment, Utterance, Word
from phonelabel.corpus.phonemap import arpabet_table, map_segments
from phonelabel.errors import PhonelabelError
from phonelabel.phones import PHONE_INDEX

TEXTGRID_SUFFIX = ".textgrid"
LABEL_SETS = ("auto", "timit", "arpabet")
SPLITS = ("train", "dev", "test", "all")
FOLDER_SPLITS = ("train", "dev", "test")
MANIFEST_HEADER = ("utt_id", "speaker", "split", "audio", "alignment")
END_TOLERANCE = 0.010  # seconds a TextGrid may run past its audio (rounding of xmax)
ARPABET_SILENCES = frozenset({"", "sil", "sp", "pau", "h#"})
# MFA's spoken noise and other non-speech labels: not trained, not scored
NOISE = frozenset({"spn", "nsn", "lau", "laugh", "laughter", "noise", "cg", "ns", "br", "breath"})
SPLIT_SEED = 0
SPLIT_FRACTIONS = {"dev": 0.1, "test": 0.1}  # of speakers; the rest train


# --- label rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelRule:
    """How one corpus's phone tier becomes TIMIT-61 (picklable: it travels to workers)."""

    label_set: str  # "timit", "arpabet" or "map"
    tier: str | None = None  # None: "phones", else the only tier whose name holds "phone"
    phone_map: tuple[tuple[str, tuple[str, ...]], ...] = ()  # label_set "map"
    map_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label_set": self.label_set, "tier": self.tier, "phone_map": self.map_file}


def read_phone_map(path: str | Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A user's label map: ``label<TAB or spaces>timit_phone [timit_phone]`` or ``-``.

    ``#`` starts a comment line; ``""`` names the empty label. Two TIMIT phones split the
    interval at its sharpest energy rise (closure + release), as ARPAbet stops are.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{path}: cannot read the phone map ({error})") from None
    entries: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3):
            raise PhonelabelError(
                f"{path}:{number}: expected 'label timit_phone' (or '-'), got {line.strip()!r}"
            )
        label = "" if fields[0] == '""' else fields[0]
        targets = () if fields[1:] == ["-"] else tuple(f.lower() for f in fields[1:])
        for target in targets:
            if target not in PHONE_INDEX:
                raise PhonelabelError(f"{path}:{number}: {target!r} is not a TIMIT-61 phone")
        if label in entries:
            raise PhonelabelError(f"{path}:{number}: label {label!r} mapped twice")
        entries[label] = targets
    if not entries:
        raise PhonelabelError(f"{path}: the phone map is empty")
    return tuple(sorted(entries.items()))


def _arpabet_key(label: str) -> str:
    return re.sub(r"[0-2]$", "", label.strip().lower())


def _is_noise(key: str) -> bool:
    return key in NOISE or bool(re.fullmatch(r"<.*>|\[.*\]|\{.*\}", key))


def _known(label: str, label_set: str) -> bool:
    if label_set == "timit":
        return label.strip().lower() in PHONE_INDEX or not label.strip()
    key = _arpabet_key(label)
    return key in ARPABET_SILENCES or _is_noise(key) or key in arpabet_table()


def detect_label_set(labels: Iterable[str]) -> str:
    """ "timit" or "arpabet" for a corpus's phone labels: the set that knows every label
    (both do: TIMIT when a TIMIT-only label such as a closure or h# is there); when
    neither does, the one that knows more (the unknown labels are then reported per file)."""
    labels = set(labels)
    timit = sum(_known(label, "timit") for label in labels)
    arpabet = sum(_known(label, "arpabet") for label in labels)
    timit_only = {label.strip().lower() for label in labels} & (
        set(PHONE_INDEX) - set(arpabet_table())
    )
    if timit == len(labels) and (timit_only or arpabet < len(labels)):
        return "timit"
    return "arpabet" if arpabet >= timit else "timit"


# --- one TextGrid -------------------------------------------------------------------------


@dataclass(frozen=True)
class TextGridTiers:
    """The tiers phonelabel uses from one TextGrid; times in seconds, labels as written."""

    path: Path
    tier: str
    phones: list[tuple[float, float, str]]  # every interval of the phone tier, "" included
    words: list[Word] | None  # the words tier's labelled intervals, None when absent
    end: float  # the phone tier's end


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot read ({error.strerror})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif raw[:2] in (b"\x00F", b"F\x00"):  # UTF-16 without a byte-order mark
        encoding = "utf-16-be" if raw[0] == 0 else "utf-16-le"
    else:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise PhonelabelError(f"{path}: not a TextGrid (neither UTF-8 nor UTF-16 text)") from None


def _choose_tier(path: Path, names: list[str], wanted: str | None) -> str:
    present = ", ".join(repr(n) for n in names) or "none"
    if wanted is not None:
        if wanted in names:
            return wanted
        raise PhonelabelError(f"{path}: no tier named {wanted!r} (tiers: {present})")
    if "phones" in names:
        return "phones"
    candidates = [n for n in names if "phone" in n.lower()]
    if len(candidates) == 1:
        return candidates[0]
    if len(names) == 1 and not candidates:  # a grid of one tier: that one
        return names[0]
    raise PhonelabelError(
        f"{path}: no phone tier (none named 'phones' and {len(candidates)} whose name holds"
        f" 'phone'; tiers: {present}); choose one with the tier option (--tier NAME)"
    )


def read_alignment(path: str | Path, tier: str | None = None) -> TextGridTiers:
    """Parse a TextGrid and check its phone tier: an interval tier, not empty, intervals in
    order without overlap (gaps allowed). Raises PhonelabelError naming the file. The one
    TextGrid reader: corpora and ``formats.read_segments`` read through here.

    The phone tier: ``tier`` when given; else the tier named "phones"; else the only tier
    whose name holds "phone"; else the grid's only tier."""
    path = Path(path)
    text = _decode(path)
    if not re.search(r'Object class\s*=\s*"TextGrid"', text[:500]):
        raise PhonelabelError(f"{path}: not a TextGrid (no 'Object class = \"TextGrid\"')")
    from praatio.utilities import textgrid_io  # 0.1 s to import: only when a TextGrid is read

    try:
        parsed = textgrid_io.parseTextgridStr(text, includeEmptyIntervals=True)
        tiers = {t["name"]: t for t in parsed["tiers"]}
    except Exception as error:  # praatio raises many kinds on malformed text
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PhonelabelError(f"{path}: not a TextGrid praatio can read ({reason})") from None
    name = _choose_tier(path, [t["name"] for t in parsed["tiers"]], tier)
    phone_tier = tiers[name]
    if phone_tier["class"] != "IntervalTier":
        raise PhonelabelError(
            f"{path}: tier {name!r} is a point tier; phone labels need an interval tier"
        )
    try:
        phones = [(float(e[0]), float(e[1]), str(e[2])) for e in phone_tier["entries"]]
    except (TypeError, ValueError, IndexError):
        raise PhonelabelError(f"{path}: tier {name!r} holds unreadable times") from None
    if not any(label.strip() for _, _, label in phones):
        raise PhonelabelError(f"{path}: tier {name!r} is empty (no labelled interval)")
    previous = float(phone_tier["xmin"])
    for number, (start, end, label) in enumerate(phones, 1):
        if end < start:
            raise PhonelabelError(
                f"{path}: tier {name!r}, interval {number} ({label!r}) ends at {end} s,"
                f" before it starts ({start} s)"
            )
        if start < previous - 1e-9:
            raise PhonelabelError(
                f"{path}: tier {name!r}, interval {number} ({label!r}, {start}-{end} s) overlaps"
                f" the one before it (which ends at {previous} s)"
            )
        previous = end
    return TextGridTiers(
        path, name, phones, _words(tiers), max(previous, float(phone_tier["xmax"]))
    )


def _words(tiers: dict[str, dict]) -> list[Word] | None:
    names = [n for n in tiers if tiers[n]["class"] == "IntervalTier"]
    name = "words" if "words" in names else next((n for n in names if "word" in n.lower()), None)
    if name is None:
        return None
    return [
        Word(float(e[0]), float(e[1]), str(e[2]))
        for e in tiers[name]["entries"]
        if str(e[2]).strip()
    ]


def _unknown(alignment: TextGridTiers, number: int, label: str, rule: LabelRule) -> PhonelabelError:
    start, end, _ = alignment.phones[number - 1]
    how = (
        "add it to the phone map (--phone-map FILE)"
        if rule.label_set == "map"
        else "map it with a phone map (--phone-map FILE), or choose the label set (--labels)"
    )
    return PhonelabelError(
        f"{alignment.path}: tier {alignment.tier!r}, interval {number} ({start}-{end} s):"
        f" unknown {rule.label_set} label {label!r}; {how}"
    )


def timit_segments(alignment: TextGridTiers, rule: LabelRule, samples: np.ndarray, rate: int):
    """TIMIT-61 segments (seconds) of a checked alignment under ``rule``; ``samples`` (N,)
    at ``rate`` place the closure/release cut of split stops."""
    n = len(samples)
    if rule.label_set == "timit":
        segments = []
        for number, (start, end, label) in enumerate(alignment.phones, 1):
            phone = label.strip().lower()
            if not phone:
                continue  # an empty interval is unlabelled
            if phone not in PHONE_INDEX:
                raise _unknown(alignment, number, label, rule)
            segments.append(Segment(start, min(end, n / rate), phone))
        return [s for s in segments if s.end > s.start]
    if rule.label_set == "map":
        table = dict(rule.phone_map)
        keys = []
        for number, (_, _, label) in enumerate(alignment.phones, 1):
            key = label.strip()
            if key not in table:
                if not key:  # an empty interval the map does not name: unlabelled
                    keys.append(None)
                    continue
                raise _unknown(alignment, number, label, rule)
            keys.append(key)
        silences = {k for k, v in table.items() if v in (("pau",), ("h#",))}
    else:
        table = dict(arpabet_table())
        silences = set(ARPABET_SILENCES)
        keys = []
        for number, (_, _, label) in enumerate(alignment.phones, 1):
            key = _arpabet_key(label)
            if _is_noise(key):
                table[key] = ()
            elif key not in table and key not in silences:
                raise _unknown(alignment, number, label, rule)
            keys.append(key)
    spans = [
        (key, min(round(start * rate), n), min(round(end * rate), n))
        for key, (start, end, _) in zip(keys, alignment.phones, strict=True)
        if key is not None
    ]
    return [
        Segment(s / rate, e / rate, p) for s, e, p in map_segments(spans, table, samples, silences)
    ]


# --- utterances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextGridUtterance(Utterance):
    """One recording of an audio + TextGrid tree (``alignment`` None: no TextGrid found)."""

    rule: LabelRule | None = None  # how its labels become TIMIT-61 (always given)

    def segments(self, audio: Audio) -> list[Segment]:
        """TIMIT-61 phone segments over ``audio`` (read from ``self.audio``); PhonelabelError
        when the TextGrid is missing or bad, or runs past the audio by more than 10 ms."""
        if self.alignment is None:
            raise PhonelabelError(f"{self.audio}: no TextGrid for it")
        alignment = read_alignment(self.alignment, self.rule.tier)
        if alignment.end > audio.seconds + END_TOLERANCE:
            raise PhonelabelError(
                f"{self.alignment}: ends at {alignment.end:.3f} s, past the end of its audio"
                f" ({audio.seconds:.3f} s)"
            )
        return timit_segments(alignment, self.rule, audio.samples, audio.sample_rate)

    def word_segments(self) -> list[Word] | None:
        """The words tier's labelled intervals (None when the TextGrid has none)."""
        if self.alignment is None:
            return None
        return read_alignment(self.alignment, self.rule.tier).words


@dataclass
class TextGridCorpus:
    """What ``find_textgrid_corpus`` found: the splits, the rule that made them, problems."""

    splits: dict[str, list[TextGridUtterance]]  # train, dev, test, all
    split_rule: dict[str, Any]  # for store.json
    label_rule: LabelRule
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) unusable
    excluded: int = 0  # found but in no split (outside train/dev/test folders)

    @property
    def summary(self) -> str:
        rule = self.split_rule
        text = f"TextGrid corpus, {self.label_rule.label_set} labels"
        if self.label_rule.label_set != "timit":
            text += " (mapped to TIMIT-61)"
        text += f", tier {self.label_rule.tier or 'phones'}; splits by {rule['rule']}"
        if rule["rule"] == "seeded":
            text += f" (seed {rule['seed']}, {rule['unit']}s: {rule['proportions']})"
        return text


def is_textgrid_tree(root: Path) -> bool:
    """True when ``root`` holds TextGrids and no TIMIT .PHN file."""
    found_textgrid = False
    for _, _, files in os.walk(root):
        for name in files:
            lower = name.lower()
            if lower.endswith(".phn"):
                return False
            found_textgrid = found_textgrid or lower.endswith(TEXTGRID_SUFFIX)
    return found_textgrid


def _tree_files(root: Path, suffixes: tuple[str, ...]) -> dict[Path, Path]:
    """relative path without suffix -> file, for files under root with those suffixes."""
    found: dict[Path, Path] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if path.suffix.lower() in suffixes and not name.startswith("."):
                key = path.relative_to(root).with_suffix("")
                if key in found:
                    raise PhonelabelError(
                        f"{root}: two files for {key} ({found[key].name}, {name}); keep one"
                    )
                found[key] = path
    return found


def _utt_id(speaker: str, stem: str) -> str:
    return re.sub(r"\s+", "-", f"{speaker}_{stem}".lower())


def find_textgrid_corpus(
    root: str | Path,
    alignments: str | Path | None = None,
    tier: str | None = None,
    label_set: str = "auto",
    phone_map: str | Path | None = None,
    manifest: str | Path | None = None,
    seed: int = SPLIT_SEED,
) -> TextGridCorpus:
    """Find the utterances of an audio + TextGrid tree and assign splits (module docstring).

    Audio without a TextGrid and TextGrids without audio are listed in ``problems``.
    """
    root = Path(root)
    if not root.is_dir():
        raise PhonelabelError(f"{root}: no such corpus directory")
    if label_set not in LABEL_SETS:
        raise PhonelabelError(f"unknown label set {label_set!r} (use {', '.join(LABEL_SETS)})")
    align_root = Path(alignments) if alignments is not None else root
    if not align_root.is_dir():
        raise PhonelabelError(f"{align_root}: no such alignments directory")
    problems: list[tuple[str, str]] = []
    if manifest is not None:
        rows = _read_manifest(Path(manifest), root, align_root)
        split_rule: dict[str, Any] = {"rule": "manifest", "manifest": str(manifest)}
    else:
        audio = _tree_files(root, AUDIO_SUFFIXES)
        grids = _tree_files(align_root, (TEXTGRID_SUFFIX,))
        for key in sorted(set(grids) - set(audio)):
            problems.append((str(grids[key]), "TextGrid with no audio file of the same stem"))
        rows = []
        for key, path in sorted(audio.items()):
            speaker = (path.parent.name if path.parent != root else root.resolve().name).lower()
            rows.append((_utt_id(speaker, key.name), speaker, None, path, grids.get(key)))
        split_rule = {"rule": "speakers"}
    if not rows:
        raise PhonelabelError(f"{root}: no audio files found ({', '.join(AUDIO_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for utt_id, _, _, path, _ in rows:
        if utt_id in seen:
            raise PhonelabelError(
                f"{root}: utterance id {utt_id!r} twice ({seen[utt_id]}, {path}); rename one"
            )
        seen[utt_id] = path

    if phone_map is not None:
        rule = LabelRule("map", tier, read_phone_map(phone_map), str(phone_map))
    elif label_set != "auto":
        rule = LabelRule(label_set, tier)
    else:
        rule = LabelRule(_detect(rows, tier), tier)
    utterances = [
        TextGridUtterance(
            utt_id=u, speaker=s, part=split or "", dialect="", audio=a, alignment=g, rule=rule
        )
        for u, s, split, a, g in rows
    ]

    splits: dict[str, list[TextGridUtterance]] = {name: [] for name in SPLITS}
    splits["all"] = list(utterances)
    excluded = 0
    folders = {p.name.lower() for p in root.iterdir() if p.is_dir()} & set(FOLDER_SPLITS)
    if manifest is not None:
        for utt, (_, _, split, _, _) in zip(utterances, rows, strict=True):
            splits[split].append(utt)
    elif folders:
        split_rule = {"rule": "folders", "folders": sorted(folders)}
        for utt in utterances:
            top = utt.audio.relative_to(root).parts[0].lower()
            if top in folders:
                splits[top].append(utt)
            else:
                excluded += 1
        splits["all"] = [
            u for u in utterances if u.audio.relative_to(root).parts[0].lower() in folders
        ]
    else:
        split_rule = assign_seeded(utterances, splits, seed)
    return TextGridCorpus(splits, split_rule, rule, problems, excluded)


def _detect(rows: list[tuple], tier: str | None, sample: int = 200) -> str:
    """The label set of the corpus, from the phone labels of up to ``sample`` TextGrids."""
    labels: set[str] = set()
    for _, _, _, _, grid in rows[:sample]:
        if grid is None:
            continue
        try:
            labels.update(label for _, _, label in read_alignment(grid, tier).phones)
        except PhonelabelError:
            continue  # reported when the utterance is read
    return detect_label_set(labels)


def assign_seeded(
    utterances: list[TextGridUtterance], splits: dict[str, list[TextGridUtterance]], seed: int
) -> dict[str, Any]:
    """Speakers to train/dev/test by a seeded shuffle (10 % dev, 10 % test, at least one
    each from 3 speakers on); a corpus of fewer than 3 speakers is split by utterance."""
    speakers = sorted({u.speaker for u in utterances})
    unit = "speaker" if len(speakers) >= 3 else "utterance"
    units = speakers if unit == "speaker" else [u.utt_id for u in utterances]
    order = list(np.random.default_rng(seed).permutation(len(units)))
    n = len(units)
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * n)) if n >= 2 else 0
    n_dev = max(1, round(SPLIT_FRACTIONS["dev"] * n)) if n >= 3 else 0
    which = {}
    for rank, index in enumerate(order):
        which[units[index]] = (
            "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
        )
    for utt in utterances:
        splits[which[utt.speaker if unit == "speaker" else utt.utt_id]].append(utt)
    counts = {name: sum(1 for v in which.values() if v == name) for name in FOLDER_SPLITS}
    return {
        "rule": "seeded",
        "seed": seed,
        "unit": unit,
        "fractions": SPLIT_FRACTIONS,
        "proportions": ", ".join(f"{name} {counts[name]}" for name in FOLDER_SPLITS),
    }


def _read_manifest(path: Path, root: Path, align_root: Path) -> list[tuple]:
    """Rows (utt_id, speaker, split, audio, alignment) of a manifest; relative paths are
    taken from the corpus root (audio) and the alignments root (alignment)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{path}: cannot read the manifest ({error})") from None
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_HEADER:
        raise PhonelabelError(f"{path}: the manifest lacks the header {' '.join(MANIFEST_HEADER)}")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise PhonelabelError(f"{path}:{number}: expected 5 tab-separated fields")
        utt_id, speaker, split, audio, alignment = fields
        if split not in FOLDER_SPLITS:
            raise PhonelabelError(f"{path}:{number}: split {split!r} (use train, dev or test)")
        grid = align_root / alignment if alignment else None
        rows.append(
            (utt_id, speaker, split, root / audio, grid if grid and grid.is_file() else None)
        )
    return rows
