"""The build split: what ``edgead build`` judges an INT8 graph on, with verify's own gates.

Held-out normals of the run (never trained on, never calibrated on), the same normals under another
light (``data.lighting.relight``: gain, gradient, gamma) and the same normals with synthetic anomalies
from ``anomaly_synth.Synthesizer`` (Perlin-shaped texture blends, the masks known), so no test image
is ever used. The FP32 graph's outputs on the split are the reference;
a candidate graph passes when ``verify.run.evaluate_gates`` with the default gates of its precision
passes on the split, the same code and limits ``edgead verify`` applies to real test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.onnxruntime import OrtBackend
from edgead.bundle import Bundle
from edgead.errors import EdgeadError
from edgead.verify.reference import Reference, tensor_sha256

SPLIT_SEED = 1  # synthetic anomalies and lighting of the build split (QAD's anomalies use the recipe's seed)


def build_split(b: Bundle, per_category: int = 32, seed: int = SPLIT_SEED) -> Reference:
    """Held-out normals, the same relit, and synthetic anomalies on them; FP32-graph outputs as the reference."""
    from edgead.data.heldout import labelled_set

    pre = b.preprocess
    arr = labelled_set(b.holdout_files, b.categories, pre, seed, per_category, relit=True)
    if arr is None:
        raise EdgeadError(f"{b.path}: the run held out no normal images, so INT8 cannot be judged without test "
                          f"images; retrain with --holdout 0.1 (the default)")
    x = np.stack([pre.normalize(r) for r in arr["images"]])
    out = OrtBackend(b.onnx("fp32")).run_batched(x)
    return Reference(images=arr["images"], masks=arr["masks"], labels=arr["labels"], categories=arr["categories"],
                     defects=arr["defects"], files=arr["files"], file_sha256=np.array([""] * len(x)),
                     input_sha256=np.array([tensor_sha256(t) for t in x]), maps=out["anomaly_map"][:, 0],
                     scores=out["score"])


def judge(b: Bundle, split: Reference, graph: Path, key: str, gates_file: Path | None = None) -> dict:
    """The candidate graph on the build split under the default gates of its precision: verdict and numbers."""
    from edgead.verify.gates import load_gates
    from edgead.verify.run import evaluate_gates

    eng = OrtBackend(graph).run_batched(split.inputs(b))
    rows, _ = evaluate_gates(b, split, eng, load_gates(key, gates_file))
    gated = [r for r in rows if r.get("passed") is not None and r["level"] in ("L2", "L3", "L4")]

    def worst(gate: str) -> float | None:
        vals = [r["value"] for r in rows if r["gate"] == gate and r["value"] is not None]
        if not vals:
            return None
        return max(vals) if gate.endswith("_max") else min(vals)

    return {"passed": all(r["passed"] for r in gated), "failed": [f"{r['gate']} {r['category']}" for r in gated
                                                                   if not r["passed"]],
            "badness": badness(rows),
            "score_abs_max": worst("score_abs_max"), "spearman_min": worst("spearman_min"),
            "decision_agreement_min": worst("decision_agreement_min"), "mask_iou_min": worst("mask_iou_min"),
            "image_auroc_drop_max": worst("image_auroc_drop_max")}


def score_errors(b: Bundle, split: Reference, graph: Path) -> np.ndarray:
    """Each split image's score error of ``graph`` against the FP32 reference, in its category's threshold units
    (what the L2 gate takes the maximum of)."""
    eng = OrtBackend(graph).run_batched(split.inputs(b))["score"].astype(np.float64)
    err = np.zeros(len(split))
    for c in np.unique(split.categories):
        norm, m = b.category_norm(str(c)), split.categories == c
        err[m] = np.abs(norm.score(eng[m]) - norm.score(split.scores[m].astype(np.float64)))
    return err


def badness(rows: list[dict]) -> float:
    """One number to compare candidates that all fail: the worst L2/L3 gate relative to its own limit
    (``max`` gates: value / limit; ``min`` gates, limits below 1: shortfall from 1 / (1 - limit))."""
    worst = 0.0
    for r in rows:
        if r["level"] not in ("L2", "L3") or r.get("limit") is None or r["value"] is None:
            continue
        if r["op"] == "max":
            worst = max(worst, r["value"] / r["limit"] if r["limit"] > 0 else float(r["value"] > 0) * 1e9)
        else:
            worst = max(worst, (1 - r["value"]) / (1 - r["limit"]) if r["limit"] < 1 else float(r["value"] < 1) * 1e9)
    return worst
