"""Comparators: engine outputs against the reference, one function per statistic (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def structure(out: dict[str, np.ndarray], n: int, h: int, w: int) -> list[str]:
    """L0 findings: output names, shapes, dtypes, NaN/Inf. Empty list = sane."""
    found = []
    want = {"anomaly_map": (n, 1, h, w), "score": (n,)}
    if set(out) != set(want):
        found.append(f"outputs {sorted(out)} != {sorted(want)}")
    for k, shape in want.items():
        if k not in out:
            continue
        a = out[k]
        if tuple(a.shape) != shape:
            found.append(f"{k} shape {tuple(a.shape)} != {shape}")
        if a.dtype != np.float32:
            found.append(f"{k} dtype {a.dtype} != float32")
        bad = int((~np.isfinite(a)).sum())
        if bad:
            found.append(f"{k} has {bad} NaN/Inf values")
    return found


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def psnr(out: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB with the reference map's own dynamic range as the peak (capped at 120 dB)."""
    rng = float(ref.max() - ref.min()) or 1.0
    mse = float(np.mean((out.astype(np.float64) - ref) ** 2))
    return 120.0 if mse == 0 else min(120.0, 10 * math.log10(rng * rng / mse))


def tensor_errors(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> dict:
    """Element-wise statistics (Polygraphy style): abs/rel errors and the share outside atol + rtol*|ref|."""
    d = np.abs(out.astype(np.float64) - ref)
    rel = d / np.maximum(np.abs(ref), 1e-12)
    return {"max_abs": float(d.max()), "median_abs": float(np.median(d)), "p99_abs": float(np.quantile(d, 0.99)),
            "max_rel": float(rel.max()), "out_of_tolerance": float((d > atol + rtol * np.abs(ref)).mean())}


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    vals = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and vals[j + 1] == vals[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = (i + j + 2) / 2
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return 1.0
    ra, rb = rankdata(np.asarray(a)), rankdata(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def pooled_iou(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """IoU of two stacks of binary masks, pooled over all pixels; plus each image's IoU (1.0 if both empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    per = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    total = float(inter.sum() / union.sum()) if union.sum() else 1.0
    return total, per


def error_groups(err: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """Signed errors (engine - reference) summarised per group (an image kind or label): n, mean (a shift that
    moves every part), SD (noise) and the largest |error|, so a report says which of the two a graph has."""
    out = {}
    for g in dict.fromkeys(groups.tolist()):
        e = err[groups == g]
        out[str(g)] = {"n": int(len(e)), "mean": float(e.mean()), "std": float(e.std()),
                       "max_abs": float(np.abs(e).max())}
    return out
