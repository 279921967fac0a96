"""Metrics against independent references: scikit-learn, a slow PRO reference, closed forms."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from edgead import metrics as M
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess


def slow_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """The PRO definition, threshold by threshold (written independently of edgead.metrics)."""
    comps = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        comps += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks.astype(bool)
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([(pred[i] & c).sum() / c.sum() for i, c in comps])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    # Area to `limit`, with the segment that crosses the limit cut linearly.
    keep = fpr <= limit
    j = int(np.argmax(~keep))
    y_at = pro[j - 1] + (pro[j] - pro[j - 1]) * (limit - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    return float(np.trapezoid(np.r_[pro[keep], y_at], np.r_[fpr[keep], limit]) / limit)


@pytest.fixture(scope="module")
def real_masks(data_root):
    samples = [s for s in mvtec.discover(data_root, ["magnetic_tile"], "test")][::12]
    masks = mvtec.load_masks(samples, Preprocess(48, 48))
    assert masks.any()
    return masks.astype(bool)


def test_image_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.random(300) < 0.4
        s = np.round(rng.normal(size=300) + y * 0.7, 1)  # many ties
        assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_pixel_auroc_matches_sklearn_on_real_masks(real_masks):
    rng = np.random.default_rng(1)
    maps = ndimage.gaussian_filter(real_masks.astype(float), (0, 2, 2)) + rng.normal(0, 0.2, real_masks.shape)
    assert M.auroc(maps, real_masks) == pytest.approx(roc_auc_score(real_masks.ravel(), maps.ravel()), abs=1e-10)


def test_f1_max_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.random(200) < 0.3
    s = rng.normal(size=200) + y
    p, r, t = precision_recall_curve(y, s)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    best, thr = M.f1_max(s, y)
    assert best == pytest.approx(f1[:-1].max(), abs=1e-12)
    assert thr == pytest.approx(t[np.argmax(f1[:-1])])


def test_aupro_matches_slow_reference_on_real_masks(real_masks):
    rng = np.random.default_rng(3)
    maps = ndimage.gaussian_filter(real_masks.astype(float), (0, 1.5, 1.5)) + rng.normal(0, 0.15, real_masks.shape)
    maps = np.round(maps, 2)  # ties, as real quantised maps have
    assert M.aupro(maps, real_masks) == pytest.approx(slow_aupro(maps, real_masks), abs=1e-9)


def test_aupro_closed_forms(real_masks):
    assert M.aupro(real_masks.astype(float), real_masks) == pytest.approx(1.0)
    # A constant map: one threshold, the curve is the diagonal; area 0.3^2 / 2, normalised: 0.15.
    assert M.aupro(np.zeros(real_masks.shape), real_masks) == pytest.approx(0.15)
    assert np.isnan(M.aupro(np.zeros((2, 8, 8)), np.zeros((2, 8, 8), bool)))  # no defect region: undefined


def test_aupro_counts_each_component_equally():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 1:3, 1:3] = True  # small region, 4 px
    masks[0, 10:20, 10:20] = True  # large region, 100 px
    maps = np.zeros((1, 20, 20))
    maps[0, 1:3, 1:3] = 1.0  # only the small one found
    # PRO jumps to 0.5 at FPR 0 (one of two regions), then rises linearly to 1 at FPR 1.
    expected = (0.5 + (0.5 + 0.5 * 0.3)) / 2
    assert M.aupro(maps, masks) == pytest.approx(expected)


def test_category_and_mean():
    per = {"a": M.category_metrics(np.array([0.1, 0.9]), np.array([0, 1])),
           "b": M.category_metrics(np.array([0.9, 0.1]), np.array([0, 1]))}
    assert per["a"]["image_auroc"] == 1.0 and per["b"]["image_auroc"] == 0.0
    assert M.mean_metrics(per)["image_auroc"] == 0.5
