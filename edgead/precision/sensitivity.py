"""Sensitivity-aware INT8 fallback: when INT8 loses more than ``max_drop`` image-AUROC points on a
held-out split, keep the most error-adding quantized nodes in FP16 until the drop is within budget.

Held-out split: the run's held-out normal images (never trained on, never calibrated on) and the
same images with drawn defects (``edgead.data.synth.paint_defects``), so no test image is used.
Ranking: each quantized Conv's *added* error, i.e. the SQNR of its input minus the SQNR of its
output (FP32 graph vs INT8 graph, on calibration images); nodes that lose the most go first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.data.synth import paint_defects
from edgead.metrics import auroc

# Faint drawn defects (grey-level shift 24, not the demo's 90), so that the FP32 AUROC on this split
# is not saturated at 1.0 and an INT8 loss can show.
SPLIT_SHIFT = 24


def holdout_split(meta: dict, pre: Preprocess, per_category: int = 32, seed: int = 0):
    """(images, labels, categories): held-out normals + the same normals with faint drawn defects."""
    images, labels, cats = [], [], []
    for cat in meta["categories"]:
        samples = mvtec.holdout_samples(meta["data"]["holdout_files"], cat)[:per_category]
        if not samples:
            continue
        good = mvtec.load_images(samples, pre)
        rgb = np.stack([pre.denormalize(x) for x in good])
        bad = np.stack([pre.normalize(x) for x in paint_defects(rgb, seed, SPLIT_SHIFT)[0]])
        images += [good, bad]
        labels += [np.zeros(len(good), int), np.ones(len(bad), int)]
        cats += [cat] * (2 * len(good))
    if not images:
        from edgead.errors import EdgeadError

        raise EdgeadError("no held-out normal images in the bundle's run; retrain with --holdout > 0")
    return np.concatenate(images), np.concatenate(labels), np.array(cats)


def mean_auroc(backend, images: np.ndarray, labels: np.ndarray, cats: np.ndarray, batch: int) -> float:
    scores = np.concatenate([backend.infer(images[i:i + batch])["score"] for i in range(0, len(images), batch)])
    return float(np.mean([auroc(scores[cats == c], labels[cats == c]) for c in np.unique(cats)]))


def _with_outputs(path: Path, tensors: list[str], dst: Path) -> None:
    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in have:
            model.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(dst))


def sqnr(x: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.linalg.norm(x - y))
    return 20 * math.log10(max(float(np.linalg.norm(x)), 1e-12) / max(noise, 1e-12))


def rank_nodes(fp32: Path, int8: Path, candidates: list[str], images: np.ndarray, input_name: str, batch: int,
               work: Path) -> list[tuple[str, float]]:
    """Quantized Conv nodes ordered by the SQNR they lose (input SQNR - output SQNR), worst first."""
    import onnxruntime as ort

    model = onnx.load(str(fp32))
    convs = [n for n in model.graph.node if n.name in candidates and n.op_type == "Conv"]
    tensors = sorted({t for n in convs for t in (n.input[0], n.output[0]) if t != input_name})
    outs = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        aug = work / f"{name}.aug.onnx"
        _with_outputs(path, tensors, aug)
        sess = ort.InferenceSession(str(aug), providers=["CPUExecutionProvider"])
        res = [sess.run(tensors, {input_name: images[i:i + batch]}) for i in range(0, len(images) - batch + 1, batch)]
        outs[name] = {t: np.concatenate([r[k] for r in res]) for k, t in enumerate(tensors)}
    cap = 60.0
    ranked = []
    for n in convs:
        s_in = cap if n.input[0] == input_name else min(cap, sqnr(outs["fp32"][n.input[0]], outs["int8"][n.input[0]]))
        s_out = min(cap, sqnr(outs["fp32"][n.output[0]], outs["int8"][n.output[0]]))
        ranked.append((n.name, s_in - s_out))
    return sorted(ranked, key=lambda t: -t[1])
