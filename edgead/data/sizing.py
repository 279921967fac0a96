"""``--image-size auto`` (the default): an input size that follows the parts, so long parts are not squashed square.

The training images' median aspect ratio (width / height, from their headers) sets the shape; the area
stays near the default 256 x 256 budget, so compute and memory stay where the defaults put them. Both
sides are multiples of 32 (the backbone's stride), and the ratio is capped at 4:1. Parts within 1.5:1 of
square train at 256 x 256: at the budget, a multiple of 32 is a 12 % step, so a near-square shape gains
little and would set apart every result measured square (magnetic_tile's tiles span 0.44-2.36 around a
median of 0.87; MVTec's and DeepPCB's are square).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgead.data.image import image_size

BUDGET = 256 * 256  # pixels of the default input
MULTIPLE = 32  # the backbone's total stride: every side a multiple of it
MAX_ASPECT = 4.0  # longer parts are tiled better than squeezed into one input; beyond this, capped
SQUARE_WITHIN = 1.5  # parts whose median aspect is within this of 1:1 train square


def auto_size(paths: Sequence[str | Path], budget: int = BUDGET, multiple: int = MULTIPLE,
              categories: Sequence[str] | None = None) -> tuple[tuple[int, int], dict]:
    """(H, W) for images ``paths``, and what decided it (as run.json records it). With each image's category,
    the record also holds each category's median aspect: one model has one input shape, and categories whose
    parts differ in shape (``shapes_differ``) get a compromise."""
    if not paths:
        raise ValueError("auto_size needs at least one image")
    aspects = np.array([w / h for w, h in (image_size(p) for p in paths)])
    median = float(np.median(aspects))
    per_category = {}
    if categories is not None:
        by_cat = np.asarray(categories)
        for c in sorted(set(categories)):
            per_category[c] = round(float(np.median(aspects[by_cat == c])), 4)
    ratio = float(np.clip(median, 1 / MAX_ASPECT, MAX_ASPECT))
    square = 1 / SQUARE_WITHIN <= ratio <= SQUARE_WITHIN
    if square:
        ratio = 1.0
    height = math.sqrt(budget / ratio)

    def side(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    size = (side(height), side(height * ratio))
    record = {"rule": "auto", "median_aspect_w_over_h": round(median, 4),
              "aspect_used": round(ratio, 4), "square_within": SQUARE_WITHIN, "n_images": len(aspects),
              "budget_px": budget, "multiple": multiple}
    if len(per_category) > 1:
        record["per_category"] = per_category
        # apart when the longest and the shortest category's parts are further than square's tolerance apart
        record["shapes_differ"] = max(per_category.values()) / min(per_category.values()) > SQUARE_WITHIN
    return size, record
