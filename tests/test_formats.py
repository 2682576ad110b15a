"""formats.py: each output format written and read back; 39-class folding; streaming lines."""

from __future__ import annotations

import io
import json

import pytest

from phonelabel.core import Segment
from phonelabel.errors import PhonelabelError
from phonelabel.formats import (
    EXTENSIONS,
    FORMATS,
    fold_segments,
    fold_stream,
    read_segments,
    stream_lines,
    write_segments,
)

SEGMENTS = [
    Segment(0.0, 0.0275, "h#", 0.91),
    Segment(0.0275, 0.1175, "sh", 0.5),
    Segment(0.1175, 0.3475, "iy", 0.8754),
    Segment(0.3475, 0.4575, "tcl", 0.3333),
    Segment(0.4575, 0.6203125, "h#", 1.0),
]
DURATION = 0.6203125


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips(tmp_path, fmt):
    path = tmp_path / ("utt" + EXTENSIONS[fmt])
    write_segments(SEGMENTS, fmt, path, DURATION, metadata={"source": "utt.wav"})
    back = read_segments(path)  # format from the extension
    assert [(s.start, s.end, s.phone) for s in back] == [
        (s.start, s.end, s.phone) for s in SEGMENTS
    ]
    if fmt in ("json", "csv"):  # the formats that carry confidence
        assert [s.confidence for s in back] == pytest.approx([s.confidence for s in SEGMENTS])


def test_phn_is_in_16_khz_samples(tmp_path):
    path = tmp_path / "utt.phn"
    write_segments(SEGMENTS, "phn", path, DURATION)
    assert path.read_text().splitlines()[:2] == ["0 440 h#", "440 1880 sh"]


def test_textgrid_intervals_tile_the_recording_and_gaps_get_empty_text(tmp_path):
    path = tmp_path / "gappy.TextGrid"
    segments = [Segment(0.1, 0.2, "aa"), Segment(0.3, 0.4, 'o"k')]
    write_segments(segments, "textgrid", path, 0.5)
    text = path.read_text()
    assert text.startswith('File type = "ooTextFile"\nObject class = "TextGrid"\n')
    assert 'name = "phones"' in text and "intervals: size = 5" in text
    assert 'text = "o""k"' in text  # Praat doubles quotes
    # the grid, the tier and the last (empty) interval; praatio ends lines with a space, as Praat
    assert text.count("xmax = 0.5 \n") == 3
    assert read_segments(path, "textgrid") == segments


def test_json_holds_metadata_and_the_duration(tmp_path):
    path = tmp_path / "utt.json"
    write_segments(SEGMENTS, "json", path, DURATION, metadata={"model": "m", "phone_set": "x"})
    document = json.loads(path.read_text())
    assert document["duration"] == DURATION and document["model"] == "m"
    assert document["segments"][1] == {
        "start": 0.0275,
        "end": 0.1175,
        "phone": "sh",
        "confidence": 0.5,
    }


def test_writing_to_a_stream_and_csv_header():
    stream = io.StringIO()
    write_segments(SEGMENTS[:1], "csv", stream, DURATION)
    assert stream.getvalue() == "start,end,phone,confidence\n0,0.0275,h#,0.9100\n"


def test_unknown_format_and_unreadable_file_are_user_errors(tmp_path):
    with pytest.raises(PhonelabelError, match="unknown format"):
        write_segments(SEGMENTS, "xml", tmp_path / "x.xml", DURATION)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"start": 0}]')
    with pytest.raises(PhonelabelError, match="not a json segment file"):
        read_segments(bad)


def test_stream_lines_are_line_based_and_refuse_textgrid():
    lines = list(stream_lines(iter(SEGMENTS[:2]), "json"))
    assert [json.loads(line)["phone"] for line in lines] == ["h#", "sh"]
    assert list(stream_lines(SEGMENTS[:1], "phn")) == ["0 440 h#"]
    with pytest.raises(PhonelabelError, match="needs the whole recording"):
        list(stream_lines(SEGMENTS, "textgrid"))


def test_fold39_merges_neighbours_of_one_class_and_gives_q_to_the_previous_segment():
    segments = [
        Segment(0.0, 0.1, "q", 0.2),  # first: joins the segment after it
        Segment(0.1, 0.2, "ix", 0.6),
        Segment(0.2, 0.3, "bcl", 0.4),
        Segment(0.3, 0.4, "pau", 0.8),  # bcl + pau -> one sil
        Segment(0.4, 0.5, "b", 1.0),
        Segment(0.5, 0.7, "q", 0.1),  # joins b
        Segment(0.7, 0.8, "h#", 0.9),
    ]
    folded = fold_segments(segments)
    assert [(s.start, s.end, s.phone) for s in folded] == [
        (0.0, 0.2, "ih"),
        (0.2, 0.4, "sil"),
        (0.4, 0.7, "b"),
        (0.7, 0.8, "sil"),
    ]
    assert folded[1].confidence == pytest.approx(0.6)  # duration-weighted mean
    assert folded[2].confidence == pytest.approx((1.0 * 0.1 + 0.1 * 0.2) / 0.3)
    assert list(fold_stream(iter(segments))) == folded
