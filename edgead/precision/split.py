"""The build split: what ``edgead build`` judges an INT8 graph on, with verify's own gates.

Held-out normals of the run (never trained on, never calibrated on), the same normals under another
light (``data.lighting.relight``: gain, gradient, gamma), the same normals with synthetic anomalies
from ``anomaly_synth.Synthesizer`` (Perlin-shaped texture blends, the masks known) and the same anomalies
faded until the FP32 graph scores them near the threshold (``boundary``), so no test image is ever used.
Full-strength synthetic anomalies score several thresholds above the normals: no rank swaps, no decision
anywhere near the boundary, so the split's decision and AUROC gates saw nothing that real, subtle defects
do. The faded ones sit between the normals' tail and just past the threshold, where INT8 error flips a
decision or swaps a good/defect pair. The FP32 graph's outputs on the split are the reference;
a candidate graph passes when ``verify.run.evaluate_gates`` with the default gates of its precision
passes on the split, the same code and limits ``edgead verify`` applies to real test images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.onnxruntime import OrtBackend
from edgead.bundle import Bundle
from edgead.data.heldout import fade
from edgead.errors import EdgeadError
from edgead.verify.compare import error_groups
from edgead.verify.reference import Reference, tensor_sha256

SPLIT_SEED = 1  # synthetic anomalies and lighting of the build split (QAD's anomalies use the recipe's seed)
BOUNDARY = (0.0, 1.5)  # FP32 normalised scores the faded anomalies are placed at, evenly (1 = the threshold)
BISECT = 8  # halvings of the fade factor per image (2^-8 of the anomaly's contrast)


def build_split(b: Bundle, per_category: int = 32, seed: int = SPLIT_SEED) -> Reference:
    """Held-out normals, the same relit, synthetic anomalies on them and those anomalies faded to the boundary;
    FP32-graph outputs as the reference."""
    from edgead.data.heldout import labelled_set

    pre = b.preprocess
    arr = labelled_set(b.holdout_files, b.categories, pre, seed, per_category, relit=True)
    if arr is None:
        raise EdgeadError(f"{b.path}: the run held out no normal images, so INT8 cannot be judged without test "
                          f"images; retrain with --holdout 0.1 (the default)")
    fp32 = OrtBackend(b.onnx("fp32"))
    arr = with_boundary(b, arr, fp32, np.random.default_rng(seed))
    x = np.stack([pre.normalize(r) for r in arr["images"]])
    out = fp32.run_batched(x)
    return Reference(images=arr["images"], masks=arr["masks"], labels=arr["labels"], categories=arr["categories"],
                     defects=arr["defects"], files=arr["files"], file_sha256=np.array([""] * len(x)),
                     input_sha256=np.array([tensor_sha256(t) for t in x]), maps=out["anomaly_map"][:, 0],
                     scores=out["score"])


def fade_to(normal: np.ndarray, anomaly: np.ndarray, target: np.ndarray, norm, pre, fp32) -> tuple:
    """(fade factor per image at which the FP32 graph's normalised score first reaches ``target``, within
    2^-BISECT; whether the target lies between the normal's and the full anomaly's scores)."""
    def score(t: np.ndarray) -> np.ndarray:
        x = np.stack([pre.normalize(r) for r in fade(normal, anomaly, t)])
        return norm.score(fp32.run_batched(x)["score"].astype(np.float64))

    lo, hi = np.zeros(len(target)), np.ones(len(target))
    reachable = (score(lo) < target) & (score(hi) >= target)
    for _ in range(BISECT):
        mid = (lo + hi) / 2
        above = score(mid) >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return hi, reachable


def with_boundary(b: Bundle, arr: dict, fp32, rng: np.random.Generator) -> dict:
    """``arr`` plus, per category, each synthetic anomaly faded (bisection on the fade factor) until the FP32
    graph's normalised score reaches its target, targets spread evenly over ``BOUNDARY``. An anomaly already
    past its target at no fade, or short of it at full strength, is left out (it cannot sit there)."""
    pre = b.preprocess
    parts = {k: [v] for k, v in arr.items()}
    for cat in np.unique(arr["categories"]):
        good = np.flatnonzero((arr["categories"] == cat) & (arr["defects"] == "good"))
        syn = np.flatnonzero((arr["categories"] == cat) & (arr["defects"] == "synthetic"))
        if not len(good) or len(good) != len(syn):
            continue
        target = rng.permutation(np.linspace(*BOUNDARY, len(syn)))
        normal, anomaly = arr["images"][good], arr["images"][syn]
        t, reachable = fade_to(normal, anomaly, target, b.category_norm(str(cat)), pre, fp32)
        keep = np.flatnonzero(reachable)
        if not len(keep):
            continue
        parts["images"].append(fade(normal, anomaly, t)[keep])
        parts["masks"].append(arr["masks"][syn][keep])
        parts["labels"].append(np.ones(len(keep), np.int8))
        parts["categories"].append(arr["categories"][syn][keep])
        parts["defects"].append(np.array(["boundary"] * len(keep)))
        parts["files"].append(np.array([f.replace("/synthetic/", "/boundary/") for f in arr["files"][syn][keep]]))
        parts["strengths"].append(t[keep].astype(np.float32))
    return {k: np.concatenate(v) for k, v in parts.items()}


def judge(b: Bundle, split: Reference, graph: Path, key: str, gates_file: Path | None = None) -> dict:
    """The candidate graph on the build split under the default gates of its precision: verdict and numbers."""
    return judge_outputs(b, split, OrtBackend(graph).run_batched(split.inputs(b)), key, gates_file)


def judge_outputs(b: Bundle, split: Reference, eng: dict, key: str, gates_file: Path | None = None) -> dict:
    """``judge`` of a graph's outputs on the split (``anomaly_map``, ``score``) already run."""
    from edgead.verify.gates import load_gates
    from edgead.verify.run import evaluate_gates

    rows, _ = evaluate_gates(b, split, eng, load_gates(key, gates_file))
    signed = signed_errors(b, split, eng["score"])
    err = np.abs(signed)
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
            "image_auroc_drop_max": worst("image_auroc_drop_max"),
            "score_rms": float(np.sqrt(np.mean(err ** 2))) if len(err) else None,  # reported: the max is one image
            "by_kind": error_groups(signed, split.defects)}  # shift or noise, and on which images


def score_errors(b: Bundle, split: Reference, graph: Path) -> np.ndarray:
    """Each split image's score error of ``graph`` against the FP32 reference, in its category's threshold units
    (what the L2 gate takes the maximum of)."""
    return np.abs(signed_errors(b, split, OrtBackend(graph).run_batched(split.inputs(b))["score"]))


def signed_errors(b: Bundle, split: Reference, scores: np.ndarray) -> np.ndarray:
    """Signed normalised-score errors (engine - FP32, threshold units), per image."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    err = np.zeros(len(split))
    for c in np.unique(split.categories):
        norm, m = b.category_norm(str(c)), split.categories == c
        err[m] = norm.score(scores[m]) - norm.score(split.scores[m].astype(np.float64))
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
