"""Labelled images made from a run's held-out normals, never from test images: the normals, the same
normals with synthetic anomalies drawn by ``anomaly_synth.Synthesizer`` (masks known) and, on request,
the same normals under another light (``lighting.relight``). Training validates on it (``validation``)
and the INT8 build judges on it (``precision.split``)."""

from __future__ import annotations

import numpy as np

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess


def labelled_set(holdout_files: list[str], categories: list[str], pre: Preprocess, seed: int, per_category: int,
                 relit: bool = False) -> dict[str, np.ndarray] | None:
    """Arrays ``images`` (N, H, W, 3) uint8 at model size, ``masks`` (N, H, W) uint8, ``labels`` (0 good, 1
    anomalous), ``categories``, ``defects`` ('good', 'relit', 'synthetic') and ``files``; None without
    held-out normals. Per category: its first ``per_category`` held-out normals, then (relit) the same
    relit, then the same with a synthetic anomaly each; one generator seeded with ``seed`` draws all."""
    from edgead.data.anomaly_synth import Synthesizer
    from edgead.data.lighting import relight

    rng = np.random.default_rng(seed)
    synth = Synthesizer()
    parts: dict[str, list] = {k: [] for k in ("images", "masks", "labels", "categories", "defects", "files")}
    for cat in categories:
        samples = mvtec.holdout_samples(holdout_files, cat)[:per_category]
        if not samples:
            continue
        rgb = np.stack([pre.denormalize(x) for x in mvtec.load_images(samples, pre)])
        made = [synth(x, rng) for x in rgb]  # anomalies first: the split's draws stay as they were
        groups = [("good", rgb, np.zeros(rgb.shape[:3], np.uint8), 0, "holdout")]
        if relit:
            groups.append(("relit", np.stack([relight(x, rng) for x in rgb]), np.zeros(rgb.shape[:3], np.uint8), 0,
                           "relit"))
        groups.append(("synthetic", np.stack([m[0] for m in made]),
                       (np.stack([m[1] for m in made]) > 0.5).astype(np.uint8), 1, "synthetic"))
        names = [s.path.name for s in samples]
        for defect, images, masks, label, kind in groups:
            parts["images"].append(images)
            parts["masks"].append(masks)
            parts["labels"].append(np.full(len(images), label, np.int8))
            parts["categories"].append(np.array([cat] * len(images)))
            parts["defects"].append(np.array([defect] * len(images)))
            parts["files"].append(np.array([f"{cat}/{kind}/{n}" for n in names]))
    if not parts["images"]:
        return None
    return {k: np.concatenate(v) for k, v in parts.items()}
