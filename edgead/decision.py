"""The one decision rule, used by eval, verify, its report, bench and live inspection alike.

A category's :class:`Normalization` maps the graph's raw outputs to normalised units: 0 is a typical
normal image, 1.0 is the threshold. A part is a defect when its normalised score is ``>= 1.0``; a
pixel is defective when its raw map value is ``>= pixel_threshold``. Thresholds are set from held-out
normal images when a run is trained (``edgead.train.normalization``) and travel in the run and bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLD = 1.0  # normalised units: the decision boundary of every category


@dataclass(frozen=True)
class Normalization:
    center: float  # median held-out normal score
    scale: float  # threshold - center (floored, > 0)
    threshold: float  # raw score at the decision boundary
    pixel_center: float
    pixel_scale: float
    pixel_threshold: float

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(**{k: float(d[k]) for k in cls.__dataclass_fields__})

    def score(self, raw):
        """Raw image score(s) -> normalised score(s) (0 = typical normal, 1 = threshold)."""
        return (raw - self.center) / self.scale

    def decide(self, raw):
        """Raw image score(s) -> defect (True) or good (False)."""
        return self.score(raw) >= THRESHOLD

    def pixel(self, amap: np.ndarray) -> np.ndarray:
        """Raw anomaly map -> normalised map (1.0 = pixel threshold), for overlays."""
        return (amap - self.pixel_center) / self.pixel_scale

    def mask(self, amap: np.ndarray) -> np.ndarray:
        """Raw anomaly map -> boolean defect mask at the pixel threshold."""
        return amap >= self.pixel_threshold
