"""The core types every stage shares: time-aligned segments and utterance records.

Corpus readers produce ``Utterance`` records and ``Segment`` lists; features, decoding,
formats and plots consume them. Nothing here reads a file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from phonelabel.errors import PhonelabelError

SAMPLE_RATE = 16000  # every model and feature config works at 16 kHz; other audio is resampled


@dataclass(frozen=True)
class Segment:
    """A time-aligned label. Times in seconds; ``confidence`` only for model output."""

    start: float
    end: float
    phone: str
    confidence: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Word:
    """A time-aligned word (a words tier, a TIMIT .WRD line). Times in seconds."""

    start: float
    end: float
    word: str  # "" for the silence between words in a forced alignment's words tier

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Reference:
    """What an utterance's alignment says, for scoring: its (T,) uint8 61-class frame labels
    (``features.NO_LABEL`` in gaps) and its phone tokens in order (the .PHN's labels)."""

    frames: Any  # np.ndarray (T,) uint8
    phones: tuple[str, ...]


@dataclass(frozen=True)
class Utterance:
    """One recording of a corpus and the files that annotate it. Each corpus reader makes a
    subclass whose ``segments(audio) -> list[Segment]`` reads its alignment (TIMIT's .PHN,
    a TextGrid's phone tier), so featurize and evaluate treat every kind alike."""

    utt_id: str  # Kaldi style: lower-case "<speaker>_<utterance>", e.g. "fcjf0_si1027"
    speaker: str  # lower case, e.g. "fcjf0"
    part: str  # where the corpus put it: TIMIT's "train"/"test" folder, or a split folder
    dialect: str  # TIMIT's "dr1" .. "dr8"; "" elsewhere
    audio: Path
    alignment: Path | None  # phone segments: TIMIT .PHN (or a TextGrid)
    words: Path | None = None  # word segments: TIMIT .WRD
    transcript: Path | None = None  # the words said: TIMIT .TXT

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The files it is read from (the featurize fingerprint hashes them)."""
        return (self.audio,) if self.alignment is None else (self.audio, self.alignment)

    @property
    def is_sa(self) -> bool:
        """TIMIT's SA1/SA2 are read by every speaker; excluded from the splits by default."""
        return re.fullmatch(r"sa\d+", self.audio.name.lower().partition(".")[0]) is not None

    def to_json(self) -> str:
        return json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        )


Config = TypeVar("Config")


def dataclass_from_dict(cls: type[Config], data: dict[str, Any], where: str) -> Config:
    """``cls(**data)`` for a config read back from JSON; a key ``cls`` does not know is an
    error naming it (a config must round-trip, not be silently trimmed)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise PhonelabelError(f"{where}: unknown keys {', '.join(unknown)}")
    try:
        return cls(**data)
    except PhonelabelError as error:  # a value its own checks refuse
        raise PhonelabelError(f"{where}: {error}") from None
    except TypeError as error:  # a key it needs is missing
        raise PhonelabelError(f"{where}: {error}") from None
