"""Audio -> 10 ms feature frames and frame labels (DESIGN.md §4).

Frame i covers samples [hop * i, hop * i + win) with no centre padding, so an
utterance of N samples has ``frame_count(N)`` = 1 + (N - win) // hop frames; its label
is the segment holding the frame's centre sample. ``frame_count`` is the one place
where samples become frames (featurize, evaluate and label all use it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from phonelabel.errors import PhonelabelError


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mfcc"  # "mfcc": 13 MFCC (c0 as energy); "fbank": 40 log-mel; + deltas
    sample_rate: int = 16000
    win_length: int = 400  # 25 ms, Hamming
    hop_length: int = 160  # 10 ms
    preemphasis: float = 0.97
    n_mfcc: int = 13
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    delta_order: int = 2  # + delta + delta-delta
    delta_width: int = 5  # frames in the regression window (Kaldi's +-2)
    normalization: str = "speaker"  # "speaker" (per-speaker mean/variance), "global"

    def __post_init__(self) -> None:
        if self.kind not in ("mfcc", "fbank"):
            raise PhonelabelError(f"unknown feature kind {self.kind!r} (use mfcc or fbank)")
        if self.normalization not in ("speaker", "global"):
            raise PhonelabelError(
                f"unknown normalization {self.normalization!r} (use speaker or global)"
            )

    @property
    def base_dim(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def dim(self) -> int:
        return self.base_dim * (1 + self.delta_order)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def frame_count(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames in ``num_samples`` samples: 1 + (N - win) // hop, 0 when shorter than a window."""
    if num_samples < config.win_length:
        return 0
    return 1 + (num_samples - config.win_length) // config.hop_length
