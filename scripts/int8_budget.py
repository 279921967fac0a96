"""Where a bundle's INT8 error sits: plain PTQ with one part of the INT8 scopes at a time left in float.

Rows: every INT8 scope quantized; the model's sensitive trunk in float; each top-level INT8 scope in float
(the others quantized). Each row: the build split's numbers under the default INT8 gates (what `edgead build`
judges on: held-out normals, relit, synthetic anomalies; no test image), the share of conv/matmul MACs left
in INT8, and the anomaly maps' relative RMS error on the split's normals. Nothing is chosen here.
``--beside-trunk``: each scope row keeps the trunk in float too (what is left after the build's first fallback
step); ``--alone``: each scope row quantizes that scope only (everything else in float; with ``--beside-trunk`` the
trunk stays in float there too), so the rows show what each part adds on its own; ``--bias-correction``: every row
bias-corrected with its float nodes kept, as the build's candidates are; ``--rounding``: each row's graph also run by
the torch student (``precision.onnx_torch``) with only its weights rounded and with only its activations rounded, the
score error's RMS of each and its correlation with ONNX Runtime's own error (which rounding to work on; a rounding
whose error ONNX Runtime shares is the same in every runtime, one it does not share is each runtime's own).

    .venv/bin/python scripts/int8_budget.py runs/crad_mt/bundle --recipe cpu --json budget.json
    .venv/bin/python scripts/int8_budget.py runs/crr_pcb/bundle --recipe cpu --beside-trunk --bias-correction
    .venv/bin/python scripts/int8_budget.py runs/crr_pcb/bundle --recipe cpu --beside-trunk --alone --bias-correction
    .venv/bin/python scripts/int8_budget.py runs/crr_pcb/bundle --recipe cpu --bias-correction --rounding
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from edgead.backends.onnxruntime import OrtBackend
from edgead.bundle import Bundle
from edgead.fileio import atomic_write_json
from edgead.precision.macs import int8_share
from edgead.precision.quantizer import Quantizer
from edgead.precision.rules import in_scopes, split_nodes
from edgead.precision.search import load_student, run_bias_correction, sensitive_nodes
from edgead.precision.split import Reference, build_split, judge_outputs, signed_errors

ROUNDINGS = {"student": True, "weights only": "weights", "activations only": "activations"}


def parts(b: Bundle, model: onnx.ModelProto, beside_trunk: bool = False, alone: bool = False
          ) -> dict[str, list[str]]:
    """Row name -> the INT8-scope nodes that row leaves in float (``beside_trunk``: each scope with the trunk;
    ``alone``: every other scope instead, so that scope is the only INT8 part)."""
    scopes = b.precision_scopes["int8"]
    inside, _ = split_nodes(model, scopes)
    rows = {"all INT8": []}
    trunk = sensitive_nodes(b, inside)
    if trunk and len(trunk) < len(inside):
        rows["trunk in float"] = trunk
    base = set(trunk if beside_trunk else [])
    prefix = ("trunk in float, " if alone else "trunk + ") if base else ""
    for s in scopes:
        if s.startswith("-"):
            continue
        mine = {n for n in inside if in_scopes(n, [s])}
        kept = sorted((base | (set(inside) - mine)) if alone else (base | mine))
        if 0 < len(kept) < len(inside) and (not alone or mine - base):
            rows[prefix + (f"only {s} in INT8" if alone else f"{s} in float")] = kept
    return rows


def rounding_sources(b: Bundle, split: Reference, graph: Path, float_work: Path, ort_scores: np.ndarray) -> dict:
    """``graph`` on the split run by the torch student with both roundings, only the weights' and only the
    activations': per rounding, the score error's RMS (threshold units) and its correlation with ONNX Runtime's
    (``ort_scores``: ``graph``'s split scores from ONNX Runtime)."""
    import torch

    x = split.inputs(b)
    ort_err = signed_errors(b, split, ort_scores)
    student, _ = load_student(graph, float_work)
    out = {"onnxruntime": {"rms": float(np.sqrt(np.mean(ort_err ** 2))), "corr": 1.0}}
    for name, mode in ROUNDINGS.items():
        with torch.no_grad():
            scores = np.concatenate([student({b.input_name: torch.from_numpy(x[i:i + 4])}, quantize=mode)["score"]
                                     .numpy() for i in range(0, len(x), 4)])
        err = signed_errors(b, split, scores)
        out[name] = {"rms": float(np.sqrt(np.mean(err ** 2))), "corr": float(np.corrcoef(err, ort_err)[0, 1])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--recipe", default="cpu", choices=("cpu", "tensorrt"))
    ap.add_argument("--beside-trunk", action="store_true", help="each scope row keeps the trunk in float too")
    ap.add_argument("--alone", action="store_true", help="each scope row quantizes only that scope")
    ap.add_argument("--bias-correction", action="store_true", help="bias-correct every row, as the build does")
    ap.add_argument("--rounding", action="store_true", help="each row's error from weight / activation rounding")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    b = Bundle.load(args.bundle)
    quantize = Quantizer.default(b, args.recipe)
    settings = quantize.settings
    split = build_split(b)
    normals = split.labels == 0
    key = f"int8-{args.recipe}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = work / "all.onnx"
        quantize(first, work / "work")
        float_graph = onnx.load(str(work / "work" / "preprocessed.onnx"))
        for i, (name, kept) in enumerate(parts(b, float_graph, args.beside_trunk, args.alone).items()):
            graph = first if not kept else work / f"part{i}.onnx"
            float_work = work / "work"  # the float graph (and weights) this row's Q/DQ graph was made from
            if kept:
                quantize(graph, work / "work", kept)
            if args.bias_correction:
                corrected, float_work = work / f"part{i}-bc.onnx", work / f"bc{i}"
                run_bias_correction(quantize, graph, work / "work", float_work, corrected, keep_float=kept)
                graph = corrected
            eng = OrtBackend(graph).run_batched(split.inputs(b))
            v = judge_outputs(b, split, eng, key)
            maps = eng["anomaly_map"][:, 0][normals]
            ref = split.maps[normals]
            rel = float(np.sqrt(np.mean((maps - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
            share = int8_share(float_graph, onnx.load(str(graph)))["int8_share"]
            rows.append({"part": name, "nodes_in_float": len(kept), "int8_mac_share": round(share, 4),
                         "map_rel_rms_normals": round(rel, 4), **{k: v[k] for k in (
                             "passed", "score_abs_max", "score_rms", "spearman_min", "decision_agreement_min",
                             "mask_iou_min")}})
            if args.rounding:
                rows[-1]["rounding"] = rounding_sources(b, split, graph, float_work, eng["score"])
    what = f"PTQ {settings.method}{' + bias correction' if args.bias_correction else ''}"
    table = Table(title=f"{args.bundle}: INT8 ({args.recipe} recipe, {what}) by part, build split "
                        f"({len(split)} images)")
    sources = [f"{k} RMS (corr)" for k in ROUNDINGS] if args.rounding else []
    for col in ("part", "INT8 MACs", "map rel. RMS (normals)", "score err max", "RMS", "Spearman", "decisions",
                "mask IoU", *sources):
        table.add_column(col)
    for r in rows:
        extra = [f"{r['rounding'][k]['rms']:.4f} ({r['rounding'][k]['corr']:+.2f})" for k in ROUNDINGS] \
            if args.rounding else []
        table.add_row(r["part"], f"{100 * r['int8_mac_share']:.1f} %", f"{r['map_rel_rms_normals']:.3f}",
                      f"{r['score_abs_max']:.3f}", f"{r['score_rms']:.4f}", f"{r['spearman_min']:.4f}",
                      f"{r['decision_agreement_min']:.3f}", f"{r['mask_iou_min']:.3f}", *extra)
    Console().print(table)
    if args.json:
        atomic_write_json(args.json, {"bundle": str(args.bundle), "recipe": args.recipe, "method": settings.method,
                                      "bias_correction": args.bias_correction, "beside_trunk": args.beside_trunk,
                                      "alone": args.alone,
                                      "split_images": len(split), "rows": rows})


if __name__ == "__main__":
    main()
