"""The share of this machine's CPU time its host took (the "steal" column of /proc/stat):
on a VM whose vCPUs the host preempts for other guests, the same code runs 25 % slower or
more, and a timing taken meanwhile says little. The benches report it beside their figures.
"""

from __future__ import annotations

from pathlib import Path

STAT = Path("/proc/stat")


def _ticks() -> list[int] | None:
    try:
        fields = STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    return [int(v) for v in fields[1:]] if fields and fields[0] == "cpu" else None


class Steal:
    """``with Steal() as steal: ...`` then ``steal.share``: stolen / all CPU time meanwhile
    (None where there is no /proc/stat, or no steal column: not Linux, or not measured)."""

    def __enter__(self) -> Steal:
        self.before, self.share = _ticks(), None
        return self

    def __exit__(self, *exc) -> None:
        after = _ticks()
        if self.before is None or after is None or len(after) < 8 or len(after) != len(self.before):
            return
        delta = [b - a for a, b in zip(self.before, after, strict=True)]
        total = sum(delta[:8])  # user .. steal (guest time is inside user)
        self.share = round(delta[7] / total, 3) if total > 0 else None
