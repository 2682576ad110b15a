"""Turn a `phonelabel synth` corpus into an MFA-style tree: <speaker>/<utt>.wav + .TextGrid
with a words tier and an ARPAbet phones tier (closure + release merged back into one stop,
upper case, h# -> "", pau -> sp), so the TextGrid reader's ARPAbet path can be trained and
measured on speech whose alignments are exact.

    python bench/synth_to_textgrid.py SYNTH_CORPUS OUT

TRAIN speakers go to OUT/train/, TEST speakers to OUT/test/ (the folder split rule).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from praatio import textgrid
from praatio.data_classes.interval_tier import IntervalTier

from phonelabel.corpus.timit import find_utterances, read_phn, read_wrd

CLOSURES = {"bcl": "b", "dcl": "d", "gcl": "g", "kcl": "k", "pcl": "p", "tcl": "t"}
AFFRICATES = {("tcl", "ch"): "ch", ("dcl", "jh"): "jh"}


def arpabet(segments) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    previous = None
    for segment in segments:
        phone = segment.phone
        pair = (previous, phone)
        if previous in CLOSURES and (CLOSURES[previous] == phone or pair in AFFRICATES):
            out[-1] = (out[-1][0], segment.end, phone.upper())
        elif phone in CLOSURES:  # a closure without its release: the stop it belongs to
            out.append((segment.start, segment.end, CLOSURES[phone].upper()))
        else:
            label = {"h#": "", "pau": "sp"}.get(phone, phone.upper())
            out.append((segment.start, segment.end, label))
        previous = phone
    return out


def main(corpus: Path, out: Path) -> None:
    for utterance in find_utterances(corpus):
        directory = out / utterance.part / utterance.speaker
        directory.mkdir(parents=True, exist_ok=True)
        stem = utterance.audio.name.split(".")[0].lower()
        shutil.copyfile(utterance.audio, directory / f"{stem}.wav")
        phones = arpabet(read_phn(utterance.phn))
        end = phones[-1][1]
        words = read_wrd(utterance.wrd) if utterance.wrd else []
        grid = textgrid.Textgrid()
        grid.addTier(IntervalTier("words", [(w.start, w.end, w.word) for w in words], 0, end))
        grid.addTier(IntervalTier("phones", [p for p in phones if p[2]], 0, end))
        grid.save(
            str(directory / f"{stem}.TextGrid"),
            format="long_textgrid",
            includeBlankSpaces=True,
            minTimestamp=0,
            maxTimestamp=end,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
