"""Labelled images made from a run's held-out normals, never from test images: the normals, the same
normals with synthetic anomalies drawn by ``anomaly_synth.Synthesizer`` (masks known), at full strength
or (``graded``) faded to strengths spread evenly over (0, 1], and, on request, the same normals under
another light (``lighting.relight``). Training validates on it (``validation``, graded) and the INT8 build
judges on it (``precision.split``, full strength, then faded to the threshold by the FP32 graph)."""

from __future__ import annotations

import numpy as np

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess

STRENGTHS = ("full", "graded")  # how strong the synthetic anomalies are: all at full strength, or spread evenly


def fade(normal: np.ndarray, anomaly: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``normal + t (anomaly - normal)`` per image, as uint8 (t = 0: the normal, 1: the full anomaly)."""
    a, n = anomaly.astype(np.float32), normal.astype(np.float32)
    return np.clip(n + t.reshape(-1, 1, 1, 1) * (a - n) + 0.5, 0, 255).astype(np.uint8)


def graded(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` strengths spread evenly over (0, 1] (1/n, 2/n, ..., 1), in a random order."""
    return ((rng.permutation(n) + 1) / n).astype(np.float32)


def labelled_set(holdout_files: list[str], categories: list[str], pre: Preprocess, seed: int, per_category: int,
                 relit: bool = False, strengths: str = "full", twins: int = 1) -> dict[str, np.ndarray] | None:
    """Arrays ``images`` (N, H, W, 3) uint8 at model size, ``masks`` (N, H, W) uint8, ``labels`` (0 good, 1
    anomalous), ``categories``, ``defects`` ('good', 'relit', 'synthetic'), ``files`` and ``strengths`` (each
    anomaly's blend with its normal, 1 = full; 0 for normals); None without held-out normals. Per category:
    its first ``per_category`` held-out normals, then (relit) the same relit, then the same with a synthetic
    anomaly each, at full strength or (``graded``) faded to strengths spread evenly over (0, 1]; one generator
    seeded with ``seed`` draws the anomalies and the light, another (from the same seed) the strengths, so a
    graded set holds the full set's anomalies, faded. ``twins`` > 1 adds ``twins - 1`` more synthetic anomalies per
    normal from generators of their own, so each category's part of the ``twins=1`` set is unchanged within it."""
    from edgead.data.anomaly_synth import Synthesizer
    from edgead.data.lighting import relight

    if strengths not in STRENGTHS:
        raise ValueError(f"strengths {strengths!r}: one of {STRENGTHS}")
    rng, strength_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    extra_rng, extra_strength_rng = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3])  # twins
    synth = Synthesizer()
    parts: dict[str, list] = {k: [] for k in ("images", "masks", "labels", "categories", "defects", "files",
                                              "strengths")}
    for cat in categories:
        samples = mvtec.holdout_samples(holdout_files, cat)[:per_category]
        if not samples:
            continue
        rgb = np.stack([pre.denormalize(x) for x in mvtec.load_images(samples, pre)])
        made = [synth(x, rng) for x in rgb]  # anomalies first: the split's draws stay as they were
        zeros, none = np.zeros(rgb.shape[:3], np.uint8), np.zeros(len(rgb), np.float32)
        groups = [("good", rgb, zeros, 0, "holdout", none)]
        if relit:
            groups.append(("relit", np.stack([relight(x, rng) for x in rgb]), zeros, 0, "relit", none))
        draws = [(made, "synthetic", strength_rng)]
        draws += [([synth(x, extra_rng) for x in rgb], f"synthetic{j}", extra_strength_rng)
                  for j in range(2, twins + 1)]
        for made_j, kind, t_rng in draws:
            t = graded(len(rgb), t_rng) if strengths == "graded" else np.ones(len(rgb), np.float32)
            anomalies = np.stack([m[0] for m in made_j])
            groups.append(("synthetic", anomalies if strengths == "full" else fade(rgb, anomalies, t),
                           (np.stack([m[1] for m in made_j]) > 0.5).astype(np.uint8), 1, kind, t))
        names = [s.path.name for s in samples]
        for defect, images, masks, label, kind, strength in groups:
            parts["strengths"].append(strength)
            parts["images"].append(images)
            parts["masks"].append(masks)
            parts["labels"].append(np.full(len(images), label, np.int8))
            parts["categories"].append(np.array([cat] * len(images)))
            parts["defects"].append(np.array([defect] * len(images)))
            parts["files"].append(np.array([f"{cat}/{kind}/{n}" for n in names]))
    if not parts["images"]:
        return None
    return {k: np.concatenate(v) for k, v in parts.items()}
