"""Phone segments to and from files: TIMIT .PHN, Praat TextGrid, JSON, CSV.

- ``phn``: ``start_sample end_sample phone`` per line, sample numbers at the recording's
  own rate (as TIMIT's count its 16 kHz samples).
- ``textgrid``: Praat's long text format, one IntervalTier "phones" whose intervals tile
  0..duration (gaps between segments become intervals with empty text); given ``words``
  (forced alignment), a "words" tier comes first, as MFA writes them.
- ``json``: ``{"duration", "phone_set", "segments": [{"start", "end", "phone",
  "confidence"}], ...metadata}`` (plus ``"word_segments"`` given ``words``); streamed as JSON Lines, one segment object a line.
- ``csv``: header ``start,end,phone,confidence``; times in seconds.

``fold_segments`` maps labels to the 39 scoring classes; ``q`` (not a scoring class) hands
its time to the segment before it (the one after, when it comes first), and neighbours
that fold to the same class (``bcl`` + ``pau`` -> ``sil``) merge into one segment.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from phonelabel.core import SAMPLE_RATE, Segment, Word
from phonelabel.corpus.textgrid import read_alignment
from phonelabel.corpus.timit import read_labels
from phonelabel.errors import PhonelabelError
from phonelabel.fileio import write_text
from phonelabel.phones import fold_to_39

FORMATS = ("phn", "textgrid", "json", "csv")
EXTENSIONS = {"phn": ".phn", "textgrid": ".TextGrid", "json": ".json", "csv": ".csv"}
STREAMABLE = ("phn", "json", "csv")  # line-based: a segment can be written once it is final
TIER = "phones"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise PhonelabelError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    return fmt


def output_names(sources: Sequence[str], fmt: str) -> list[Path]:
    """``<stem><ext>`` per input; where stems collide (TIMIT's SX sentences are read by many
    speakers), the inputs' folders below their common parent, mirrored."""
    names = [Path(Path(p).stem + EXTENSIONS[fmt]) for p in sources]
    if len(set(names)) < len(names):
        folders = [Path(p).resolve().parent for p in sources]
        base = Path(os.path.commonpath(folders))
        names = [f.relative_to(base) / n for f, n in zip(folders, names, strict=True)]
    return names


def _seconds(value: float) -> str:
    """Shortest exact-enough text for a time: 7 decimals hold every 16 kHz sample time."""
    return f"{value:.7f}".rstrip("0").rstrip(".") or "0"


def _confidence(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _sample(seconds: float, rate: int) -> int:
    return round(seconds * rate)


# --- one segment a line (phn, csv, json lines): also what streaming prints --------------


def header_line(fmt: str) -> str | None:
    return "start,end,phone,confidence" if fmt == "csv" else None


def check_streamable(fmt: str) -> None:
    if fmt not in STREAMABLE:
        raise PhonelabelError(
            f"format {fmt!r} needs the whole recording; stream as {', '.join(STREAMABLE)}"
        )


def stream_lines(segments: Iterable[Segment], fmt: str) -> Iterator[str]:
    """Lines of a line-based format (JSON as JSON Lines), one as each segment arrives."""
    check_streamable(fmt)
    return _lines(segments, fmt)


def _lines(segments: Iterable[Segment], fmt: str) -> Iterator[str]:
    header = header_line(fmt)
    if header:
        yield header
    for segment in segments:
        yield segment_line(segment, fmt)


def segment_line(segment: Segment, fmt: str, rate: int = SAMPLE_RATE) -> str:
    """One segment as a line of a line-based format (no newline); ``rate``: the sample
    rate of .PHN sample numbers (the recording's own, as TIMIT's are)."""
    if fmt == "phn":
        return f"{_sample(segment.start, rate)} {_sample(segment.end, rate)} {segment.phone}"
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(
            [_seconds(segment.start), _seconds(segment.end), segment.phone]
            + [_confidence(segment.confidence)]
        )
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps(_segment_dict(segment))
    raise PhonelabelError(f"format {fmt!r} cannot be written a segment at a time")


def _segment_dict(segment: Segment) -> dict[str, Any]:
    confidence = None if segment.confidence is None else round(segment.confidence, 4)
    return {
        "start": round(segment.start, 7),
        "end": round(segment.end, 7),
        "phone": segment.phone,
        "confidence": confidence,
    }


# --- whole files ---------------------------------------------------------------------------


def format_segments(
    segments: Sequence[Segment],
    fmt: str,
    duration: float,
    metadata: dict[str, Any] | None = None,
    rate: int = SAMPLE_RATE,
    words: Sequence[Word] | None = None,
) -> str:
    """The text of a whole output file; ``duration`` (seconds) bounds the TextGrid, ``rate``
    is the sample rate of .PHN sample numbers; ``words`` (TextGrid and JSON only): a word
    tier to write beside the phones."""
    check_format(fmt)
    if fmt == "textgrid":
        tiers = {"words": [(w.start, w.end, w.word) for w in words]} if words is not None else {}
        return _textgrid({**tiers, TIER: [(s.start, s.end, s.phone) for s in segments]}, duration)
    if fmt == "json":
        document = {"duration": round(duration, 7), **(metadata or {})}
        if words is not None:
            document["word_segments"] = [
                {"start": round(w.start, 7), "end": round(w.end, 7), "word": w.word} for w in words
            ]
        document["segments"] = [_segment_dict(s) for s in segments]
        return json.dumps(document, indent=1) + "\n"
    header = header_line(fmt)
    lines = ([header] if header else []) + [segment_line(s, fmt, rate) for s in segments]
    return "".join(line + "\n" for line in lines)


def write_segments(
    segments: Sequence[Segment],
    fmt: str,
    path_or_stream: str | Path | IO[str],
    duration: float,
    metadata: dict[str, Any] | None = None,
    rate: int = SAMPLE_RATE,
    words: Sequence[Word] | None = None,
) -> None:
    """Write a whole file (atomically), or to an open text stream such as ``sys.stdout``."""
    text = format_segments(segments, fmt, duration, metadata, rate, words)
    if isinstance(path_or_stream, (str, Path)):
        try:
            write_text(path_or_stream, text)
        except OSError as error:
            raise PhonelabelError(f"{path_or_stream}: cannot write ({error.strerror})") from None
    else:
        path_or_stream.write(text)
        path_or_stream.flush()


def write_words(
    words: Sequence[Word],
    fmt: str,
    path: str | Path,
    duration: float,
    metadata: dict[str, Any] | None = None,
    rate: int = SAMPLE_RATE,
) -> None:
    """A words file of a line format, beside its phones file: phn writes a TIMIT .WRD
    (``start_sample end_sample word``), csv the segment table with the word in its label
    column. (TextGrid and JSON hold the words in the phones file: ``write_segments``.)"""
    labelled = [Segment(w.start, w.end, w.word) for w in words]
    write_segments(labelled, fmt, path, duration, metadata, rate)


def _textgrid(tiers: dict[str, list[tuple[float, float, str]]], duration: float) -> str:
    """Praat long text format, written by praatio: each tier's (start, end, label)
    intervals tile [0, duration]; gaps get empty text."""
    end = max([duration] + [e for intervals in tiers.values() for _, e, _ in intervals])
    grid = {
        "xmin": 0.0,
        "xmax": end,
        "tiers": [
            {
                "class": "IntervalTier",
                "name": name,
                "xmin": 0.0,
                "xmax": end,
                "entries": intervals,
            }
            for name, intervals in tiers.items()
        ],
    }
    from praatio.utilities import textgrid_io  # 0.1 s to import: only for TextGrid output

    return textgrid_io.getTextgridAsStr(
        grid, "long_textgrid", includeBlankSpaces=True, minTimestamp=0.0, maxTimestamp=end
    )


# --- readers -------------------------------------------------------------------------------


def read_segments(
    path: str | Path, fmt: str | None = None, rate: int = SAMPLE_RATE
) -> list[Segment]:
    """Segments of a file written by ``write_segments`` (``fmt`` from the extension if None).

    TextGrid: the intervals of its phone tier (``corpus.textgrid.read_alignment``: "phones",
    else the only tier named for phones, else the only tier), empty ones skipped (no
    confidence kept).
    PHN: any labels (61 or folded 39), sample numbers at ``rate`` (no confidence kept).
    """
    path = Path(path)
    fmt = check_format(fmt or _format_of(path))
    if fmt == "textgrid":  # the corpus reader's: its tier rule, its checks, UTF-16 too
        phones = read_alignment(path, None).phones
        return [Segment(start, end, label) for start, end, label in phones if label]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PhonelabelError(f"{path}: cannot read ({error})") from None
    try:
        if fmt == "phn":
            return read_labels(path, rate=rate)
        if fmt == "json":
            document = json.loads(text)
            rows = document["segments"] if isinstance(document, dict) else document
            return [_from_row(row) for row in rows]
        rows = csv.DictReader(io.StringIO(text))
        return [_from_row(row) for row in rows]
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise PhonelabelError(f"{path}: not a {fmt} segment file ({error})") from None


def _from_row(row: dict[str, Any]) -> Segment:
    confidence = row.get("confidence")
    return Segment(
        float(row["start"]),
        float(row["end"]),
        str(row["phone"]),
        None if confidence in (None, "") else float(confidence),
    )


def _format_of(path: Path) -> str:
    for fmt, extension in EXTENSIONS.items():
        if path.name.lower().endswith(extension.lower()):
            return fmt
    raise PhonelabelError(f"{path}: cannot tell the format from the name; give it")


# --- 39-class output -----------------------------------------------------------------------


def fold_segments(segments: Iterable[Segment]) -> list[Segment]:
    """61-class segments -> 39-class segments (see the module docstring for q and merging).

    A merged segment's confidence is the duration-weighted mean of its parts.
    """
    return list(fold_stream(segments))


def fold_stream(segments: Iterable[Segment]) -> Iterator[Segment]:
    """``fold_segments`` one segment at a time: a folded segment is yielded once the next
    one has a different label (so it can no longer grow)."""
    held: Segment | None = None  # the last folded segment, still open to merging
    for segment in segments:
        phone = fold_to_39(segment.phone)
        if phone is None:  # q: its time goes to the segment before (or after, if first)
            held = segment if held is None else _merge(held, segment, held.phone)
            continue
        current = Segment(segment.start, segment.end, phone, segment.confidence)
        if held is not None and (held.phone == phone or held.phone == "q"):
            held = _merge(held, current, phone)
            continue
        if held is not None:
            yield held
        held = current
    if held is not None:  # a recording of nothing but q keeps it
        yield held


def _merge(first: Segment, second: Segment, phone: str) -> Segment:
    confidence = None
    if first.confidence is not None and second.confidence is not None:
        weight = first.duration + second.duration
        confidence = (
            (first.confidence * first.duration + second.confidence * second.duration) / weight
            if weight > 0
            else first.confidence
        )
    return Segment(first.start, second.end, phone, confidence)
