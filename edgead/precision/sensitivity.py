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


def layer_sqnr(fp32: Path, int8: Path, images: np.ndarray, input_name: str, batch: int, work: Path) -> list[dict]:
    """Per quantized activation, in graph order: its SQNR (dB) after Q/DQ against the FP32 tensor, the
    lowest SQNR of the quantized activations its producer reads, and the SQNR the step adds (in - out):
    the producer's weight quantization plus this activation's own Q/DQ (range, saturation).

    ``fp32`` must be the graph the INT8 one was quantized from (``int8.prepare`` output), so tensor
    names match. Compared after DequantizeLinear because the CPU recipe fuses Conv+Clip into the Q.
    """
    import onnxruntime as ort

    model, qmodel = onnx.load(str(fp32)), onnx.load(str(int8))
    fp_tensors = {t for n in model.graph.node for t in n.output} | {input_name}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    dq_of: dict[str, str] = {}  # activation tensor -> its DQ output in the INT8 graph
    for n in qmodel.graph.node:
        if n.op_type == "DequantizeLinear":
            q = producer.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in fp_tensors:
                dq_of[q.input[0]] = n.output[0]
    back = {v: k for k, v in dq_of.items()}
    acts = list(dq_of)
    fetch_fp = sorted(set(acts) - {input_name})
    fetch_q = sorted(dq_of[t] for t in acts)
    outs = {}
    for name, path, fetch in (("fp32", fp32, fetch_fp), ("int8", int8, fetch_q)):
        aug = work / f"{name}.aug.onnx"
        _with_outputs(path, fetch, aug)
        sess = ort.InferenceSession(str(aug), providers=["CPUExecutionProvider"])
        res = [sess.run(fetch, {input_name: images[i:i + batch]}) for i in range(0, len(images) - batch + 1, batch)]
        outs[name] = {t: np.concatenate([r[k] for r in res]) for k, t in enumerate(fetch)}
    n_img = len(images) // batch * batch
    outs["fp32"][input_name] = images[:n_img]
    cap = 60.0
    snr = {t: min(cap, sqnr(outs["fp32"][t], outs["int8"][dq_of[t]])) for t in acts}
    rows = []
    for t in acts:
        prod = producer.get(t)
        ins = [snr[back[i]] for i in (prod.input if prod is not None else []) if i in back]
        s_in = min(ins) if ins else cap
        rows.append({"tensor": t, "producer": prod.name if prod is not None else "(graph input)",
                     "op": prod.op_type if prod is not None else "", "sqnr_in_db": s_in, "sqnr_out_db": snr[t],
                     "added_db": s_in - snr[t]})
    return rows


def rank_nodes(fp32: Path, int8: Path, candidates: list[str], images: np.ndarray, input_name: str, batch: int,
               work: Path) -> list[tuple[str, float]]:
    """Quantized Conv nodes ordered by the SQNR their step loses (see ``layer_sqnr``), worst first."""
    rows = layer_sqnr(fp32, int8, images, input_name, batch, work)
    ranked = [(r["producer"], r["added_db"]) for r in rows if r["op"] == "Conv" and r["producer"] in set(candidates)]
    return sorted(ranked, key=lambda t: -t[1])
