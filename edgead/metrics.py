"""Anomaly-detection metrics: image/pixel AUROC, AUPRO (FPR <= 0.3, normalised), F1-max.

Validated in tests against scikit-learn (AUROC, F1) and a slow per-threshold reference of the
PRO definition on real masks. Conventions:

* ROC points are taken at every distinct score (ties share a threshold), plus (0, 0).
* AUPRO: connected components of each ground-truth mask (8-connectivity); PRO(t) is the mean over
  all components of all images of |pred_t ∩ component| / |component|; FPR(t) over all normal
  pixels. The curve is integrated (trapezoid) up to FPR 0.3, interpolating at 0.3, then divided by
  0.3. A perfect map gives 1.0; a constant map gives 0.15 (the diagonal's area 0.045 / 0.3).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

STRUCTURE_8 = np.ones((3, 3), dtype=int)


class Ranked:
    """Scores sorted once (descending, ties grouped), for curves under many weightings (a bootstrap)."""

    def __init__(self, scores: np.ndarray):
        self.order = np.argsort(scores)[::-1]  # tie order is irrelevant: ties are grouped below
        s = scores[self.order]
        self.last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]

    def cum_curve(self, pos_w: np.ndarray, neg_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative weighted negatives and positives at each distinct threshold, from (0, 0)."""
        tp = np.cumsum(pos_w[self.order], dtype=np.float64)
        fp = np.cumsum(neg_w[self.order], dtype=np.float64)
        return np.r_[0.0, fp[self.last]], np.r_[0.0, tp[self.last]]


def _cum_curve(scores: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative weighted positives/negatives at each distinct threshold (descending), from (0, 0)."""
    return Ranked(scores).cum_curve(pos_w, neg_w)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    fp, tp = _cum_curve(scores, labels.astype(np.float64), (~labels).astype(np.float64))
    return fp / max(fp[-1], 1e-12), tp / max(tp[-1], 1e-12)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    fpr, tpr = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best F1 over thresholds ``score >= t``; returns (f1, t)."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if not labels.any():
        return float("nan"), float("nan")
    order = np.argsort(scores)[::-1]
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp, fp, thr = tp[last], fp[last], s[last]
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def _integrate_to(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(fpr) for fpr in [0, limit], interpolating at ``limit``."""
    keep = fpr <= limit
    x, v = fpr[keep], y[keep]
    if x[-1] < limit and keep.size > keep.sum():
        j = int(np.argmax(~keep))  # first point beyond the limit
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], y[j - 1], y[j]
        yl = y0 + (y1 - y0) * (limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, v = np.r_[x, limit], np.r_[v, yl]
    return float(np.trapezoid(v, x))


def pro_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel PRO weight 1 / (n_components * |component|), 0 on normal pixels."""
    masks = np.asarray(masks).astype(bool)
    labels = np.zeros(masks.shape, np.int64)
    sizes: list[int] = []
    offset = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=STRUCTURE_8)
        if n:
            labels[i] = np.where(lab > 0, lab + offset, 0)
            sizes += np.bincount(lab.ravel(), minlength=n + 1)[1:].tolist()
            offset += n
    if offset == 0:
        return np.zeros(masks.shape, np.float64), 0
    per_comp = np.r_[0.0, 1.0 / (offset * np.asarray(sizes, np.float64))]
    return per_comp[labels], offset


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    maps = np.asarray(maps)
    masks = np.asarray(masks).astype(bool)
    w_pro, n_comp = pro_weights(masks)
    n_normal = int((~masks).sum())
    if n_comp == 0 or n_normal == 0:
        return float("nan")
    w_fp = (~masks).astype(np.float64) / n_normal
    fpr, pro = _cum_curve(maps.ravel(), w_pro.ravel(), w_fp.ravel())
    return _integrate_to(fpr, pro, fpr_limit) / fpr_limit


def category_metrics(scores: np.ndarray, labels: np.ndarray, maps: np.ndarray | None = None,
                     masks: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of one category: image AUROC, F1-max and threshold; pixel AUROC and AUPRO."""
    f1, thr = f1_max(scores, labels)
    out = {"image_auroc": auroc(scores, labels), "f1_max": f1, "threshold": thr}
    if maps is not None and masks is not None:
        out["pixel_auroc"] = auroc(maps, masks)
        out["aupro"] = aupro(maps, masks)
    return out


def mean_metrics(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = ["image_auroc", "pixel_auroc", "aupro", "f1_max"]
    out = {}
    for k in keys:
        vals = [m[k] for m in per_category.values() if k in m and np.isfinite(m[k])]
        if vals:
            out[k] = float(np.mean(vals))
    return out
