"""Parity gates: the stated defaults per precision, and a user's overrides from a YAML file.

Defaults follow ``deployment-anchors.md`` section 3b: Polygraphy-style tensor statistics where they
mean something (FP32, FP16), normalised scores (0 = typical normal, 1 = threshold), decisions at the
bundle's per-category threshold, and task metrics on real labels. ``None`` = reported, not gated
(INT8 tensors differ element-wise by design; the scores, decisions and task are what must hold).

Override file (``--gates FILE``), any subset::

    int8:
      L2: {score_abs_max: 0.08}
      L4: {image_auroc_drop_max: 1.0}
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from edgead.errors import EdgeadError
from edgead.precision.keys import PrecisionKey

# op: "max" = value must be <= limit; "min" = value must be >= limit.
GATES: dict[str, dict[str, tuple[str, str]]] = {
    "L1": {"map_out_of_tolerance_max": ("max", "share of map pixels with |err| > atol + rtol*|ref|"),
           "map_cosine_min": ("min", "lowest per-image cosine similarity of the anomaly maps"),
           "map_psnr_min_db": ("min", "lowest per-image PSNR of the maps (peak = reference range), dB"),
           "score_rel_max": ("max", "max relative error of the raw image score")},
    "L2": {"score_abs_max": ("max", "max |normalised score error| (1.0 = threshold - median normal)"),
           "spearman_min": ("min", "Spearman rank correlation of image scores with the reference")},
    "L3": {"decision_agreement_min": ("min", "share of images with the reference's good/defect decision"),
           "mask_iou_min": ("min", "pooled IoU of thresholded defect masks vs the reference's")},
    "L4": {"image_auroc_drop_max": ("max", "image AUROC points lost vs the reference (real labels)"),
           "pixel_auroc_drop_max": ("max", "pixel AUROC points lost"),
           "aupro_drop_max": ("max", "AUPRO (FPR <= 0.3) points lost")},
}

DEFAULTS: dict[str, dict] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-3,
             "L1": {"map_out_of_tolerance_max": 0.01, "map_cosine_min": 0.99999, "map_psnr_min_db": 60.0,
                    "score_rel_max": 1e-3},
             "L2": {"score_abs_max": 0.005, "spearman_min": 0.9999},
             "L3": {"decision_agreement_min": 1.0, "mask_iou_min": 0.98},
             "L4": {"image_auroc_drop_max": 0.1, "pixel_auroc_drop_max": 0.1, "aupro_drop_max": 0.1}},
    "fp16": {"atol": 1e-3, "rtol": 1e-2,
             "L1": {"map_out_of_tolerance_max": None, "map_cosine_min": 0.997, "map_psnr_min_db": 30.0,
                    "score_rel_max": None},
             "L2": {"score_abs_max": 0.02, "spearman_min": 0.999},
             "L3": {"decision_agreement_min": 0.995, "mask_iou_min": 0.9},
             "L4": {"image_auroc_drop_max": 0.5, "pixel_auroc_drop_max": 1.0, "aupro_drop_max": 1.0}},
    "int8": {"atol": 1e-2, "rtol": 1e-1,
             "L1": {"map_out_of_tolerance_max": None, "map_cosine_min": None, "map_psnr_min_db": None,
                    "score_rel_max": None},
             "L2": {"score_abs_max": 0.05, "spearman_min": 0.99},
             "L3": {"decision_agreement_min": 0.99, "mask_iou_min": 0.8},
             "L4": {"image_auroc_drop_max": 0.5, "pixel_auroc_drop_max": 1.0, "aupro_drop_max": 1.0}},
}


def base_precision(key: str) -> str:
    """'int8-cpu' -> 'int8'."""
    return PrecisionKey.parse(key).base


def load_gates(precision: str, path: Path | None = None) -> dict:
    """The gates for a precision key: defaults, then the override file's entries for that precision."""
    base = base_precision(precision)
    gates = copy.deepcopy(DEFAULTS[base])
    if path is None:
        return gates
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise EdgeadError(f"{path}: gates file not found; pass an existing YAML file to --gates") from None
    except yaml.YAMLError as e:
        raise EdgeadError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeadError(f"{path}: cannot read the gates file ({type(e).__name__}); pass a readable YAML file"
                          ) from None
    if not isinstance(raw, dict):
        raise EdgeadError(f"{path}: expected a mapping precision -> level -> gate: value")
    for prec, levels in raw.items():
        if prec not in DEFAULTS:
            raise EdgeadError(f"{path}: unknown precision {prec!r}; use fp32, fp16 or int8")
        if levels is None:
            continue
        if not isinstance(levels, dict):
            raise EdgeadError(f"{path}: {prec}: expected a mapping of levels (L1-L4, atol, rtol), got {levels!r}")
        for level, vals in levels.items():
            if level in ("atol", "rtol"):
                value = _limit(path, f"{prec}.{level}", vals, allow_none=False)
                if prec == base:
                    gates[level] = value
                continue
            if level not in GATES or not isinstance(vals, dict):
                raise EdgeadError(f"{path}: {prec}.{level}: expected one of {', '.join(GATES)} with gate: value")
            for k, v in vals.items():
                if k not in GATES[level]:
                    raise EdgeadError(f"{path}: {prec}.{level}.{k} is not a gate; {level} has "
                                      f"{', '.join(GATES[level])}")
                value = _limit(path, f"{prec}.{level}.{k}", v)  # every section is checked, not only this one's
                if prec == base:
                    gates[level][k] = value
    return gates


def _limit(path: Path, where: str, v, allow_none: bool = True) -> float | None:
    """A gate limit from the file: a finite number (or null = report only)."""
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        also = " or null (report only)" if allow_none else ""
        raise EdgeadError(f"{path}: {where} = {v!r} must be a number{also}")
    return float(v)


def check(value: float, limit: float | None, op: str) -> bool | None:
    """True/False against the limit; None when the gate is report-only."""
    if limit is None:
        return None
    return bool(value <= limit) if op == "max" else bool(value >= limit)
