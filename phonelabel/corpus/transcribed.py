"""Corpora of recordings and the words said in them (no phone labels): what ``adapt`` reads.

Four forms, detected in this order at the corpus root:

- Common Voice: ``validated.tsv`` (columns ``path``, ``sentence``, ``client_id``: the
  speaker), clips in ``clips/``;
- LJ Speech: ``metadata.csv`` (``id|text|normalized``), audio in ``wavs/<id>.wav``; one speaker;
- LibriSpeech: ``*.trans.txt`` files (``ID TEXT`` lines) in speaker/chapter folders, the audio
  ``ID.flac`` beside them; the speaker is the first field of the ID;
- transcripts beside the audio (what ``align`` reads): ``<stem>.txt``, ``.lab`` or TIMIT
  ``.TXT`` next to each recording; the speaker is the recording's folder.

Each recording becomes a ``TranscribedRecording``: its audio, speaker, utterance id and the
words as written, or the problem that keeps it from being used (a missing transcript or audio).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from phonelabel.align import pair_inputs
from phonelabel.audio import AUDIO_SUFFIXES
from phonelabel.errors import PhonelabelError

FORMS = ("commonvoice", "ljspeech", "librispeech", "beside")
FORM_NAMES = {
    "commonvoice": "Common Voice (validated.tsv)",
    "ljspeech": "LJ Speech (metadata.csv)",
    "librispeech": "LibriSpeech (*.trans.txt)",
    "beside": "transcripts beside the audio (.txt, .lab, TIMIT .TXT)",
}


@dataclass(frozen=True)
class TranscribedRecording:
    utt_id: str  # lower-case <speaker>_<stem>, unique in the corpus
    speaker: str
    audio: Path
    text: str  # the words as written ("" when ``problem`` says why there are none)
    problem: str | None = None  # why it cannot be used (no transcript, no audio)


@dataclass
class TranscribedCorpus:
    root: Path
    form: str  # one of FORMS
    recordings: list[TranscribedRecording]

    @property
    def description(self) -> str:
        return FORM_NAMES[self.form]

    @property
    def speakers(self) -> int:
        return len({r.speaker for r in self.recordings})


def utterance_id(speaker: str, stem: str) -> str:
    """Kaldi style: ``<speaker>_<stem>`` lower-cased (the stem alone when it already starts
    with the speaker, as LibriSpeech's and many corpora's do)."""
    speaker, stem = speaker.lower(), stem.lower()
    name = stem if stem.startswith(speaker) else f"{speaker}_{stem}"
    return re.sub(r"[\s/]+", "-", name)


def _recording(speaker: str, audio: Path, text: str | None, missing: str) -> TranscribedRecording:
    utt = utterance_id(speaker, audio.stem)
    if not audio.is_file():
        return TranscribedRecording(utt, speaker, audio, "", f"{audio}: no such audio file")
    if text is None:
        return TranscribedRecording(utt, speaker, audio, "", missing)
    return TranscribedRecording(utt, speaker, audio, text)


def read_common_voice(root: Path) -> list[TranscribedRecording]:
    table = root / "validated.tsv"
    try:
        with open(table, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{table}: unreadable ({error})") from None
    if rows and not {"path", "sentence", "client_id"} <= set(rows[0]):
        raise PhonelabelError(f"{table}: needs the columns path, sentence and client_id")
    short = next((n for n, r in enumerate(rows, 2) if None in r.values()), None)
    if short is not None:  # DictReader fills a row's missing fields with None
        raise PhonelabelError(f"{table}: line {short} has fewer columns than the header")
    clips = root / "clips" if (root / "clips").is_dir() else root
    return [
        _recording(
            row["client_id"][:8] or "unknown",
            clips / row["path"],
            row["sentence"] or None,
            f"{clips / row['path']}: transcript is empty (its sentence in {table.name})",
        )
        for row in rows
    ]


def read_lj_speech(root: Path) -> list[TranscribedRecording]:
    table = root / "metadata.csv"
    try:
        lines = table.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{table}: unreadable ({error})") from None
    wavs = root / "wavs" if (root / "wavs").is_dir() else root
    recordings = []
    for line in filter(str.strip, lines):
        fields = line.split("|")
        text = (fields[2] if len(fields) > 2 and fields[2].strip() else fields[-1]).strip()
        audio = wavs / f"{fields[0]}.wav"
        missing = f"{audio}: transcript is empty (its text in {table.name})"
        recordings.append(_recording("lj", audio, text if len(fields) > 1 else None, missing))
    return recordings


def read_librispeech(root: Path) -> list[TranscribedRecording]:
    recordings = []
    for table in sorted(root.rglob("*.trans.txt")):
        try:
            lines = table.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise PhonelabelError(f"{table}: unreadable ({error})") from None
        for line in filter(str.strip, lines):
            utt, _, text = line.strip().partition(" ")
            audio = next(
                (
                    table.parent / f"{utt}{s}"
                    for s in AUDIO_SUFFIXES
                    if (table.parent / f"{utt}{s}").is_file()
                ),
                table.parent / f"{utt}.flac",
            )
            missing = f"{audio}: transcript is empty (its line in {table.name})"
            recordings.append(_recording(utt.split("-")[0], audio, text.strip() or None, missing))
    return recordings


def read_beside(root: Path) -> list[TranscribedRecording]:
    audio = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    recordings = []
    for path, text in pair_inputs(audio, None):
        speaker = path.parent.name if path.parent != root else root.resolve().name
        utt = utterance_id(speaker, path.stem)
        if isinstance(text, PhonelabelError):
            recordings.append(TranscribedRecording(utt, speaker.lower(), path, "", str(text)))
        else:
            recordings.append(TranscribedRecording(utt, speaker.lower(), path, text))
    return recordings


def detect_form(root: Path) -> str:
    if (root / "validated.tsv").is_file():
        return "commonvoice"
    if (root / "metadata.csv").is_file():
        return "ljspeech"
    if next(root.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    return "beside"


READERS = {
    "commonvoice": read_common_voice,
    "ljspeech": read_lj_speech,
    "librispeech": read_librispeech,
    "beside": read_beside,
}


def find_transcribed_corpus(root: str | Path) -> TranscribedCorpus:
    """The recordings of a corpus in any of the four forms (the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise PhonelabelError(f"{root}: no such corpus directory")
    form = detect_form(root)
    recordings = READERS[form](root)
    if not recordings:
        raise PhonelabelError(
            f"{root}: no recordings found ({FORM_NAMES[form]}; audio {', '.join(AUDIO_SUFFIXES)})"
        )
    seen: dict[str, Path] = {}
    for r in recordings:
        if r.utt_id in seen:
            raise PhonelabelError(
                f"{root}: utterance id {r.utt_id!r} twice ({seen[r.utt_id]}, {r.audio}); rename one"
            )
        seen[r.utt_id] = r.audio
    return TranscribedCorpus(root, form, recordings)
