"""INT8 step by step for one bundle: PTQ (mse, minmax, + synthetic anomalies, + equalisation) / + QAD / default build.

For each: the build split's verdict (what the build saw), `edgead verify` on the reference test images
(L2 error, Spearman, decisions, mask IoU), the full test split's AUROC drops against the FP32 graph,
the share of MACs in INT8, file size and ORT CPU latency as a ratio to torch eager (one bench run).
Each variant is built in its own copy of the bundle; nothing is chosen here.

    .venv/bin/python scripts/int8_table.py runs/crad_mt/bundle --recipe cpu --json int8.cpu.json
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from edgead.bench import bench
from edgead.build import BuildRequest, build
from edgead.calibration import load_recipes
from edgead.evaluate import EvalRequest, evaluate
from edgead.fileio import atomic_write_json
from edgead.verify.run import VerifyRequest, verify

PTQ = {"qad": "never", "fallback": False, "bias_correction": False}
NORMALS_ONLY = {"synthetic_fraction": 0.0}
VARIANTS = {  # name -> (BuildRequest fields, settings of the recipe changed)
    "PTQ mse, normals": ({"method": "mse", **NORMALS_ONLY, **PTQ}, {"equalize": False}),
    "PTQ minmax, normals": ({"method": "minmax", **NORMALS_ONLY, **PTQ}, {"equalize": False}),
    "+ synthetic anomalies": ({"method": "minmax", **PTQ}, {"equalize": False}),
    "+ depthwise equalisation": ({"method": "minmax", **PTQ}, {"equalize": True}),
    "+ bias correction": ({"method": "minmax", "qad": "never", "fallback": False}, {}),
    "+ learned rounding": ({"method": "minmax", **PTQ, "learned_rounding": True}, {}),
    "+ QAD": ({"method": "minmax", "qad": "always", "fallback": False}, {}),
    "default build": ({}, {}),
}
KEYS = ("image_auroc", "pixel_auroc", "aupro")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--recipe", default="cpu", choices=["cpu", "tensorrt"])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--only", nargs="*", help="variant names to run (default all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    key = f"int8-{args.recipe}"
    fp32 = evaluate(EvalRequest(run=args.bundle, precision="fp32", data=args.data, overlays=0, quiet=True))["mean"]
    rows = {}
    for i, (name, (fields, changed)) in enumerate(VARIANTS.items()):
        if args.only and name not in args.only:
            continue
        copy = args.bundle.parent / f"{args.bundle.name}-v{i}-{args.recipe}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(args.bundle, copy, ignore=shutil.ignore_patterns("model.int8-*", "reports", "eval"))
        recipes = load_recipes()
        recipes["recipes"][args.recipe].update(changed)
        (copy / "recipes.yaml").write_text(yaml.safe_dump(recipes))
        entry = build(BuildRequest(bundle=copy, precision="int8", recipe=args.recipe, data=args.data,
                                   recipes_file=copy / "recipes.yaml", **fields))
        rep = entry["report"]
        chosen = next(s for s in rep["search"] if s["step"] == rep["chosen"])
        v = verify(VerifyRequest(bundle=copy, precision=key, data=args.data, quiet=True))
        gate = {g["gate"]: g["value"] for g in v["gates"] if g.get("value") is not None}
        ev = evaluate(EvalRequest(run=copy, precision=key, data=args.data, overlays=0, quiet=True))["mean"]
        speed = bench(copy, ["fp32", key], save=False)
        ratio = speed.get("speedup_vs_torch", {})
        rows[name] = {"split": {k: chosen[k] for k in ("passed", "score_abs_max", "spearman_min",
                                                       "decision_agreement_min", "mask_iou_min")},
                      "verify": {"passed": v["passed"], **{k: gate.get(k) for k in (
                          "score_abs_max", "spearman_min", "decision_agreement_min", "mask_iou_min")}},
                      "test_drop_points": {k: 100 * (fp32[k] - ev[k]) for k in KEYS},
                      "int8_mac_share": chosen["int8_share"], "size_mb": chosen["size_mb"],
                      "kept_float": len(rep.get("kept_float", [])), "chosen": rep["chosen"],
                      "latency_ms": {k: e["p50_ms"] for k, e in speed["engines"].items()},
                      "speedup_vs_torch": ratio}
    table = Table(title=f"{args.bundle}: {key}, build split vs verify (threshold units; drops in points)")
    for c in ("variant", "split pass / L2", "verify pass / L2", "Spearman", "decisions", "mask IoU",
              "test drop img/pix/PRO", "MACs INT8", "MB", "x torch (int8 / fp32)"):
        table.add_column(c)
    for name, r in rows.items():
        sv, vv, d = r["split"], r["verify"], r["test_drop_points"]
        sp = list(r["speedup_vs_torch"].values())
        table.add_row(name, f"{'PASS' if sv['passed'] else 'fail'} {sv['score_abs_max']:.3f}",
                      f"{'PASS' if vv['passed'] else 'fail'} {vv['score_abs_max']:.3f}",
                      f"{vv['spearman_min']:.4f}", f"{100 * vv['decision_agreement_min']:.1f} %",
                      f"{vv['mask_iou_min']:.3f}", " / ".join(f"{d[k]:+.2f}" for k in KEYS),
                      f"{100 * r['int8_mac_share']:.1f} %", f"{r['size_mb']:.2f}",
                      " / ".join(f"{x:.2f}" for x in reversed(sp)) if sp else "n/a")
    Console().print(table)
    if args.json:
        atomic_write_json(args.json, {"bundle": str(args.bundle), "precision": key, "fp32_test": fp32, "rows": rows})


if __name__ == "__main__":
    main()
