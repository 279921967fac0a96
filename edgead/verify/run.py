"""``edgead verify``: layered parity of a bundle's graph (any backend) against the PyTorch reference.

L0 structure and inputs, L1 tensors, L2 normalised scores, L3 decisions and masks, L4 task metrics,
each per category with the gates of ``edgead.verify.gates``. The result names every failed gate,
its category, the worst image and the margin; INT8 failures add the likely culprit layers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.backends import EngineOptions, open_engine
from edgead.bundle import Bundle
from edgead.decision import Normalization
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_json
from edgead.metrics import category_metrics
from edgead.progress import progress
from edgead.verify import compare
from edgead.verify.gates import GATES, base_precision, check, load_gates
from edgead.verify.reference import REFERENCE, Reference, check_inputs, load_reference, make_reference
from edgead.verify.status import report_path


@dataclass
class VerifyRequest:
    bundle: Path
    precision: str = "fp32"  # fp32 | fp16 | int8 | int8-cpu | int8-tensorrt
    backend: str = "onnxruntime"
    data: Path | None = None
    gates_file: Path | None = None
    html_out: Path | None = None
    per_category: int = 48
    seed: int = 0
    threads: int | None = None
    remake_reference: bool = False
    culprits: bool = True
    live: str | None = None  # a source URI: also check that edgead inspect scores its parts as offline
    manifest: Path | None = None  # frame -> source file, for a file:// live source
    category: str | None = None  # the product a live source shows (multi-class bundles)
    source_sizes: tuple[tuple[int, int], ...] = ()  # camera frame sizes: the reference parts through inspect
    scale: str = "bundle"  # how inspect scales frames for --live and --source-size (see live.pipelines)
    quiet: bool = False


def _row(level: str, gate: str, category: str, value: float, limit, worst: dict | None = None) -> dict:
    op = GATES[level][gate][0] if gate in GATES.get(level, {}) else "max"
    ok = check(value, limit, op)
    row = {"level": level, "gate": gate, "category": category, "value": value, "limit": limit, "op": op,
           "passed": ok}
    if limit is not None:
        row["margin"] = (limit - value) if op == "max" else (value - limit)
    if worst:
        row["worst"] = worst
    return row


def _gates_for_category(c: str, idx: np.ndarray, ref: Reference, eng: dict, norm: Normalization, g: dict
                        ) -> tuple[list, dict]:
    files = ref.files[idx]
    rm, em = ref.maps[idx], eng["anomaly_map"][idx][:, 0]
    rs, es = ref.scores[idx].astype(np.float64), eng["score"][idx].astype(np.float64)
    rows = []
    # L1: tensors
    te = compare.tensor_errors(em, rm, g["atol"], g["rtol"])
    cos = np.array([compare.cosine(a, b) for a, b in zip(em, rm, strict=True)])
    ps = np.array([compare.psnr(a, b) for a, b in zip(em, rm, strict=True)])
    srel = np.abs(es - rs) / np.maximum(np.abs(rs), 1e-12)
    rows += [_row("L1", "map_out_of_tolerance_max", c, te["out_of_tolerance"], g["L1"]["map_out_of_tolerance_max"]),
             _row("L1", "map_cosine_min", c, float(cos.min()), g["L1"]["map_cosine_min"],
                  {"file": str(files[cos.argmin()]), "value": float(cos.min())}),
             _row("L1", "map_psnr_min_db", c, float(ps.min()), g["L1"]["map_psnr_min_db"],
                  {"file": str(files[ps.argmin()]), "value": float(ps.min())}),
             _row("L1", "score_rel_max", c, float(srel.max()), g["L1"]["score_rel_max"],
                  {"file": str(files[srel.argmax()]), "value": float(srel.max())})]
    # L2: normalised scores
    rn, en = norm.score(rs), norm.score(es)
    nerr = np.abs(en - rn)
    rows += [_row("L2", "score_abs_max", c, float(nerr.max()), g["L2"]["score_abs_max"],
                  {"file": str(files[nerr.argmax()]), "reference": float(rn[nerr.argmax()]),
                   "engine": float(en[nerr.argmax()])}),
             _row("L2", "spearman_min", c, compare.spearman(es, rs), g["L2"]["spearman_min"])]
    # L3: decisions and masks at the bundle's thresholds
    rd, ed = norm.decide(rs), norm.decide(es)
    flips = np.flatnonzero(rd != ed)
    worst = {"flipped": [{"file": str(files[i]), "reference": float(rn[i]), "engine": float(en[i])}
                         for i in flips[:20]]} if len(flips) else None
    rows.append(_row("L3", "decision_agreement_min", c, float((rd == ed).mean()),
                     g["L3"]["decision_agreement_min"], worst))
    rmask, emask = norm.mask(rm), norm.mask(em)
    iou, per = compare.pooled_iou(rmask, emask)
    w = int(per.argmin())
    rows.append(_row("L3", "mask_iou_min", c, iou, g["L3"]["mask_iou_min"],
                     {"file": str(files[w]), "value": float(per[w])}))
    # L4: task metrics on the real labels
    labels, masks = ref.labels[idx], ref.masks[idx]
    mr, me = category_metrics(rs, labels, rm, masks), category_metrics(es, labels, em, masks)
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        drop = 100 * (mr[k] - me[k])
        if np.isfinite(drop):
            rows.append(_row("L4", f"{k}_drop_max", c, float(drop), g["L4"][f"{k}_drop_max"],
                             {"reference": mr[k], "engine": me[k]}))
        else:  # one class only in this category's verification set
            rows.append({"level": "L4", "gate": f"{k}_drop_max", "category": c, "value": None, "limit": None,
                         "passed": None, "note": "needs good and defective images"})
    named = np.where(labels == 1, "defective", "good")
    metrics = {"score_error": compare.error_groups(en - rn, named),
               "reference": mr, "engine": me, "n_good": int((labels == 0).sum()), "n_defect": int(labels.sum()),
               "tensor": te, "decision_flips": len(flips), "threshold": norm.threshold,
               "reference_flagged": int(rd.sum()), "engine_flagged": int(ed.sum())}
    return rows, metrics


def evaluate_gates(b: Bundle, ref: Reference, eng: dict, gates: dict, inputs: dict | None = None
                   ) -> tuple[list[dict], dict]:
    """All gate rows (L0 for all images, L1-L4 per category) and per-category metrics."""
    n, h, w = len(ref), b.input_shape[2], b.input_shape[3]
    found = compare.structure(eng, n, h, w)
    rows = [{"level": "L0", "gate": "structure", "category": "all", "value": len(found), "limit": 0, "op": "max",
             "passed": not found, "findings": found}]
    if inputs is not None:
        bad = (n - inputs["stored_inputs_match"]) + len(inputs["preprocessing_mismatch"])
        rows.append({"level": "L0", "gate": "inputs", "category": "all", "value": bad, "limit": 0, "op": "max",
                     "passed": bad == 0, "findings": inputs})
    per_cat = {}
    if not found:  # later levels need sane outputs
        for c in b.categories:
            idx = np.flatnonzero(ref.categories == c)
            if len(idx):
                r, m = _gates_for_category(c, idx, ref, eng, b.category_norm(c), gates)
                rows += r
                per_cat[c] = m
    return rows, per_cat


def verify(req: VerifyRequest) -> dict:
    b = Bundle.load(req.bundle)
    key = b.resolve(req.precision, req.backend)
    gates = load_gates(key, req.gates_file)
    if req.data is not None and not Path(req.data).is_dir():  # else the input check would check nothing, silently
        raise EdgeadError(f"{req.data}: data folder not found; pass --data ROOT with <category>/test inside, or leave "
                          f"--data out to use the bundle's stored reference images")
    if req.remake_reference or not (b.meta.get("reference") and (b.path / REFERENCE).is_file()):
        make_reference(b, req.data, req.per_category, req.seed, req.quiet)
    ref = load_reference(b)
    x = ref.inputs(b)
    backend = open_engine(b.path, key, req.backend, EngineOptions(threads=req.threads))
    t0 = time.perf_counter()
    with progress(disable=req.quiet) as prog:
        task = prog.add_task(f"verify {key} ({req.backend})", total=len(x), info="")
        eng = backend.run_batched(x, lambda k: prog.advance(task, k))
    seconds = time.perf_counter() - t0
    rows, per_cat = evaluate_gates(b, ref, eng, gates, check_inputs(b, ref, req.data, x))
    live, cameras = None, []
    if req.live:
        from edgead.verify.live import live_parity

        live = live_parity(b, key, req.backend, req.live, req.category, req.manifest, req.threads, req.scale)
        rows += _live_rows(live, gates)
    for size in req.source_sizes:
        from edgead.verify.live import camera_parity

        for cam in camera_parity(b, key, req.backend, ref, size, req.data, req.category, req.threads, req.scale):
            cameras.append(cam)
            rows += _live_rows(cam, gates, f"@{size[0]}x{size[1]}")
    failed = [r for r in rows if r["passed"] is False]
    levels = {lv: ("fail" if any(r["level"] == lv and r["passed"] is False for r in rows) else "pass")
              for lv in ("L0", "L1", "L2", "L3", "L4", *(["LIVE"] if live or cameras else []))}
    result = {"bundle": str(b.path), "model": b.model, "precision": key,
              "graph_sha256": (b.files.get(key) or {}).get("sha256"), "backend": backend.describe(),
              "passed": not failed, "levels": levels, "failed": failed, "gates": rows, "gate_settings": gates,
              "gates_file": str(req.gates_file) if req.gates_file else None, "per_category": per_cat,
              "reference": b.meta["reference"], "n_images": len(ref), "n_good": int((ref.labels == 0).sum()),
              "n_defect": int(ref.labels.sum()), "engine_seconds": seconds, "live": live,
              "cameras": cameras}
    if failed and base_precision(key) == "int8" and req.culprits:
        err = np.array([1 - compare.cosine(a[0], r) for a, r in zip(eng["anomaly_map"], ref.maps, strict=True)])
        pick = list(np.argsort(-err)[:4])
        result["culprits"] = _culprits(b, key, x[pick], [str(ref.files[i]) for i in pick])
    out = report_path(b.path, key, req.backend)
    atomic_write_json(out, result)
    result["report_json"] = str(out)
    if req.html_out:
        from edgead.verify.report import write_html

        write_html(req.html_out, result, ref, eng, b)
    return result


def _live_rows(live: dict, g: dict, where: str = "") -> list[dict]:
    """The live path against the offline one, with this precision's L2 score and L3 decision limits."""
    c, w = live["category"] + (f" {where}" if where else ""), live["worst"]
    rows = [_row("L2", "score_abs_max", c, live["score_abs_max"], g["L2"]["score_abs_max"], w),
            _row("L3", "decision_agreement_min", c, live["decision_agreement"], g["L3"]["decision_agreement_min"],
                 {"flipped": live["flips"]} if live["flips"] else None)]
    missing = live["n_parts"] - live["n_compared"]
    rows.append({"level": "LIVE", "gate": "parts_not_inspected", "category": c, "value": missing, "limit": 0,
                 "op": "max", "passed": missing == 0, "margin": -missing, "worst": {"missing": live["missing"]}})
    for r in rows[:2]:
        r["level"], r["gate"] = "LIVE", "live_" + r["gate"]
    return rows


def _culprits(b: Bundle, key: str, images: np.ndarray, files: list[str]) -> dict:
    from edgead.verify.culprits import find_culprits

    try:
        return find_culprits(b, key, images, files)
    except EdgeadError as e:  # the verdict stands without the diagnosis
        return {"error": str(e)}
