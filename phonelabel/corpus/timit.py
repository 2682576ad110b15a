"""Read a TIMIT-layout tree: find utterances, parse .PHN/.WRD/.TXT, assign splits.

Layout: ``{TRAIN,TEST}/DR1..DR8/<speaker>/<utt>.{WAV,PHN,WRD,TXT}`` in any letter case.
Splits follow Kaldi's TIMIT recipe (DESIGN.md §5): a tree that holds any speaker of
Kaldi's dev or core-test lists is split exactly by those lists; any other tree (the
synthetic corpus, a user's own) keeps TRAIN as train and splits its TEST speakers
alternately into dev and test, by speaker, never by utterance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from phonelabel.audio import AUDIO_SUFFIXES, Audio
from phonelabel.core import SAMPLE_RATE, Segment, Utterance, Word
from phonelabel.errors import PhonelabelError
from phonelabel.phones import PHONE_INDEX, data_path

# full_test: every TEST-part speaker (TIMIT: 168 speakers, 1,344 utterances without SA), the
# set Graves & Schmidhuber (2005) and much of the older literature report on.
SPLITS = ("train", "dev", "test", "full_test")


@dataclass(frozen=True)
class TimitUtterance(Utterance):
    """An utterance of a TIMIT-layout tree: its alignment is a .PHN file."""

    def segments(self, audio: Audio) -> list[Segment]:
        """Phone segments of its .PHN over ``audio`` (read from ``self.audio``), checked
        against the audio's own rate and length; PhonelabelError when missing or bad."""
        if self.alignment is None:
            raise PhonelabelError(f"{self.audio}: no .PHN file beside it")
        # .PHN sample numbers count samples at the file's own rate
        segments = read_phn(self.alignment, num_samples=audio.source_frames, rate=audio.source_rate)
        if audio.source_rate != audio.sample_rate and segments:
            # a .PHN counting 16 kHz samples beside 44.1 kHz audio
            at_16k = segments[-1].end * audio.source_rate / audio.sample_rate
            if abs(at_16k - audio.seconds) < 0.02 < audio.seconds - segments[-1].end:
                raise PhonelabelError(
                    f"{self.alignment}: its sample numbers look like {audio.sample_rate} Hz "
                    f"ones, but the audio is {audio.source_rate} Hz (a .PHN counts its "
                    "recording's samples)"
                )
        return segments


@lru_cache(maxsize=2)
def kaldi_speakers(name: str) -> frozenset[str]:
    """Speakers of ``data/dev_spk.list`` or ``data/core_test_spk.list`` (lower case)."""
    return frozenset(data_path(name).read_text().split())


def _sibling(files: dict[str, Path], stem: str, suffix: str) -> Path | None:
    return files.get(stem + suffix)


def find_utterances(root: str | Path) -> list[Utterance]:
    """Every utterance under ``root`` (TIMIT layout, any letter case), sorted by id.

    Raises PhonelabelError when ``root`` is missing or holds no utterance.
    """
    root = Path(root)
    if not root.is_dir():
        raise PhonelabelError(f"{root}: no such corpus directory")
    parts = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    utterances: list[TimitUtterance] = []
    for part in ("train", "test"):
        if part not in parts:
            continue
        for dialect_dir in sorted(parts[part].iterdir()):
            if not dialect_dir.is_dir():
                continue
            for speaker_dir in sorted(dialect_dir.iterdir()):
                if speaker_dir.is_dir():
                    utterances.extend(_speaker_utterances(speaker_dir, part, dialect_dir.name))
    if not utterances:
        raise PhonelabelError(
            f"{root}: no utterances found (expected TRAIN/ or TEST/ with DR*/<speaker>/<utt>.WAV)"
        )
    utterances.sort(key=lambda u: (u.part, u.utt_id))
    return utterances


def _speaker_utterances(speaker_dir: Path, part: str, dialect: str) -> list[Utterance]:
    # lower-cased name -> path; "SI1027.WAV.wav" (some TIMIT copies add RIFF twins) is ignored
    # when "SI1027.WAV" is there, so each utterance is read once.
    files = {p.name.lower(): p for p in speaker_dir.iterdir() if p.is_file()}
    speaker = speaker_dir.name.lower()
    found = []
    seen: dict[str, Path] = {}
    for name in sorted(files):
        stem, _, suffix = name.partition(".")
        if "." + suffix not in AUDIO_SUFFIXES and suffix != "wav.wav":
            continue
        if suffix == "wav.wav" and stem + ".wav" in files:
            continue
        if stem in seen:
            raise PhonelabelError(
                f"{speaker_dir}: two audio files for utterance {stem!r} "
                f"({seen[stem].name}, {files[name].name}); keep one"
            )
        seen[stem] = files[name]
        found.append(
            TimitUtterance(
                utt_id=f"{speaker}_{stem}",
                speaker=speaker,
                part=part,
                dialect=dialect.lower(),
                audio=files[name],
                alignment=_sibling(files, stem, ".phn"),
                words=_sibling(files, stem, ".wrd"),
                transcript=_sibling(files, stem, ".txt"),
            )
        )
    return found


def assign_splits(
    utterances: list[Utterance], include_sa: bool = False
) -> dict[str, list[Utterance]]:
    """Split utterances into train/dev/test by DESIGN.md §5 (see the module docstring),
    plus full_test: every utterance of the TEST part."""
    kept = [u for u in utterances if include_sa or not u.is_sa]
    dev_list, core_list = kaldi_speakers("dev_spk.list"), kaldi_speakers("core_test_spk.list")
    speakers = {u.speaker for u in kept}
    splits: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    splits["train"] = [u for u in kept if u.part == "train"]
    test_part = [u for u in kept if u.part == "test"]
    if speakers & (dev_list | core_list):
        splits["dev"] = [u for u in test_part if u.speaker in dev_list]
        splits["test"] = [u for u in test_part if u.speaker in core_list]
    else:
        test_speakers = sorted({u.speaker for u in test_part})
        dev_speakers = set(test_speakers[0::2])
        splits["dev"] = [u for u in test_part if u.speaker in dev_speakers]
        splits["test"] = [u for u in test_part if u.speaker not in dev_speakers]
    splits["full_test"] = test_part
    return splits


def _numbered_lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot read ({error.strerror})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _timed_lines(path: Path, num_samples: int | None) -> list[tuple[int, int, int, str]]:
    """(line number, start, end, label) of a .PHN/.WRD file, checked for order and range."""
    rows = []
    previous_end = 0
    for number, fields in _numbered_lines(path):
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise PhonelabelError(f"{where}: expected 'start end label', got {' '.join(fields)!r}")
        try:
            start, end = int(fields[0]), int(fields[1])
        except ValueError:
            raise PhonelabelError(f"{where}: start and end must be sample numbers") from None
        if start < 0 or end <= start:
            raise PhonelabelError(f"{where}: segment {start}..{end} is empty or negative")
        if start < previous_end:
            raise PhonelabelError(
                f"{where}: segment starts at {start}, before the previous one ends ({previous_end})"
                " (overlapping or out of order)"
            )
        if num_samples is not None and end > num_samples:
            raise PhonelabelError(
                f"{where}: segment ends at sample {end}, past the end of the audio ({num_samples})"
            )
        rows.append((number, start, end, fields[2]))
        previous_end = end
    if not rows:
        raise PhonelabelError(f"{path}: empty (no segments)")
    return rows


def read_phn(
    path: str | Path, num_samples: int | None = None, rate: int = SAMPLE_RATE
) -> list[Segment]:
    """Phone segments of a TIMIT .PHN file (``start_sample end_sample label`` per line).

    Checks every label against the 61 phones, order, overlap and (given ``num_samples``)
    the audio's length; a problem raises PhonelabelError naming the file and line.
    Gaps between segments are allowed (their frames get no label).
    """
    path = Path(path)
    segments = []
    for number, start, end, label in _timed_lines(path, num_samples):
        phone = label.lower()
        if phone not in PHONE_INDEX:
            raise PhonelabelError(f"{path}:{number}: unknown phone label {label!r}")
        segments.append(Segment(start / rate, end / rate, phone))
    return segments


def read_wrd(
    path: str | Path, num_samples: int | None = None, rate: int = SAMPLE_RATE
) -> list[Word]:
    """The words of a TIMIT .WRD file (words may not overlap)."""
    path = Path(path)
    return [Word(s / rate, e / rate, w) for _, s, e, w in _timed_lines(path, num_samples)]


def read_labels(
    path: str | Path, num_samples: int | None = None, rate: int = SAMPLE_RATE
) -> list[Segment]:
    """Segments of a .PHN-like file with any labels (39 folded classes, another set),
    checked for order, overlap and range as ``read_phn`` checks them."""
    path = Path(path)
    return [Segment(s / rate, e / rate, w) for _, s, e, w in _timed_lines(path, num_samples)]


def read_transcript(path: str | Path) -> str:
    """The words of a transcript file: plain text (MFA's .lab/.txt), or TIMIT's .TXT whose
    line starts with the utterance's first and last sample numbers."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise PhonelabelError(f"{path}: cannot read the transcript ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise PhonelabelError(
            f"{path}: the transcript is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    fields = text.split()
    if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
        fields = fields[2:]
    return " ".join(fields)
