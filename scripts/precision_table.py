"""Accuracy per precision on the labelled test split: torch vs ONNX Runtime fp32/fp16/int8 recipes,
and the three INT8 calibration methods side by side. Prints a table, writes JSON.

    .venv/bin/python scripts/precision_table.py runs/crad_mt --bundle runs/crad_mt/bundle \
        --json runs/crad_mt.precision.json
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgead.build import BuildRequest, build
from edgead.evaluate import EvalRequest, evaluate
from edgead.export import ExportRequest, export_bundle
from edgead.fileio import atomic_write_json

KEYS = ("image_auroc", "pixel_auroc", "aupro")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--methods", nargs="*", default=["minmax", "entropy", "percentile"])
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bundle = args.bundle or args.run / "bundle"
    export_bundle(ExportRequest(run=args.run, out=bundle))
    rows = {"torch fp32": evaluate(EvalRequest(run=args.run, overlays=0))}
    rows["ORT fp32"] = evaluate(EvalRequest(run=bundle, precision="fp32", overlays=0))
    build(BuildRequest(bundle=bundle, precision="fp16"))
    rows["ORT fp16"] = evaluate(EvalRequest(run=bundle, precision="fp16", overlays=0))
    for recipe in ("cpu", "tensorrt"):
        build(BuildRequest(bundle=bundle, precision="int8", recipe=recipe, count=args.calib_count))
        rows[f"ORT int8-{recipe} (default build)"] = evaluate(
            EvalRequest(run=bundle, precision=f"int8-{recipe}", overlays=0))
    for method in args.methods:
        copy = bundle.parent / f"{bundle.name}-{method}"
        if not copy.exists():
            shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("*.int8-*", "eval"))
        build(BuildRequest(bundle=copy, precision="int8", recipe="tensorrt", method=method, count=args.calib_count))
        rows[f"ORT int8-tensorrt, {method}"] = evaluate(EvalRequest(run=copy, precision="int8-tensorrt", overlays=0))
    ref = rows["torch fp32"]["mean"]
    table = Table(title=f"{args.run}: accuracy per precision (mean over categories; drop in AUROC points)")
    for col in ("graph", "image AUROC", "pixel AUROC", "AUPRO", "drop img", "drop px", "drop AUPRO"):
        table.add_column(col)
    out = {}
    for name, res in rows.items():
        m = res["mean"]
        drops = {k: 100 * (ref[k] - m[k]) for k in KEYS}
        out[name] = {"mean": m, "per_category": res["per_category"], "drop_points": drops}
        table.add_row(name, *[f"{m[k]:.4f}" for k in KEYS], *[f"{drops[k]:+.2f}" for k in KEYS])
    Console(width=160).print(table)
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
