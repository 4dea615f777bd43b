"""Median and spread for benchmark samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    name: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.samples), max(self.samples)) if self.samples else (float("nan"),) * 2

    def line(self, unit: str = "s", target: float | None = None) -> str:
        lo, hi = self.spread
        text = (f"{self.name:34} median {self.median:7.3f} {unit}  "
                f"[{lo:.3f} .. {hi:.3f}]  n={len(self.samples)}")
        if target is not None:
            text += f"  target < {target:g} {unit}: {'met' if self.median < target else 'MISSED'}"
        return text


def summarize(name: str, samples: Sequence[float | None]) -> Summary:
    return Summary(name, tuple(s for s in samples if s is not None))
