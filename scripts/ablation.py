"""Ablations on real data, one model at a time.

CRAD: local grid only, global only, both; refinement blend on/off. CRR: without the repair term,
without feature masking, without the segmentation head. Every variant is trained with the same
seed, data and epoch budget (learning rate x0.1 at 80% of the epochs for CRAD, as the paper's 40 of
50; CRR keeps its own schedule), then evaluated on the test split. Writes a JSON file and prints a
table. Examples (magnetic_tile):

    .venv/bin/python scripts/ablation.py --model crad --data ../shared/datasets --category magnetic_tile \
        --epochs 12 --out runs/ablation
    .venv/bin/python scripts/ablation.py --model crr --data ../shared/datasets --category magnetic_tile \
        --epochs 10 --max-per-category 240 --out runs/crr_ablation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgead.evaluate import EvalRequest, evaluate
from edgead.fileio import atomic_write_json
from edgead.train import TrainRequest, train

VARIANTS = {
    "crad": {
        "local+global, blend": {},
        "local only, blend": {"use_global": False},
        "global only, blend": {"use_local": False},
        "local+global, no blend": {"blend": False},
    },
    "crr": {
        "reconstruct+repair, masking, seg head": {},
        "without the repair term": {"repair": False},
        "without feature masking": {"keep_prob": 1.0},
        "without the segmentation head": {"seg": False},
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(VARIANTS), default="crad")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--max-per-category", type=int, default=None, help="at most N training images per category")
    ap.add_argument("--category", action="append")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--only", action="append", help="run only these variant names")
    args = ap.parse_args()
    results = {}
    summary = args.out / "ablation.json"
    if summary.exists():
        results = json.loads(summary.read_text())
    for i, (name, cfg) in enumerate(VARIANTS[args.model].items()):
        if args.only and name not in args.only:
            continue
        run = args.out / f"v{i}"
        overrides = {"lr_step": max(1, round(args.epochs * 0.8))} if args.model == "crad" else {}
        info = train(TrainRequest(model=args.model, data=args.data, out=run, categories=args.category,
                                  epochs=args.epochs, model_config=cfg, max_per_category=args.max_per_category,
                                  train_overrides=overrides))
        res = evaluate(EvalRequest(run=run, overlays=0))
        results[name] = {"config": cfg, "epochs": args.epochs, "train_seconds": info["timing"]["train_seconds"],
                         "params_head": info["profile"]["params_head"], "gmacs_total": info["profile"]["gmacs_total"],
                         "mean": res["mean"], "per_category": res["per_category"]}
        atomic_write_json(summary, results)
    table = Table(title=f"{args.model.upper()} ablation ({args.epochs} epochs each)")
    for col in ("variant", "image AUROC", "pixel AUROC", "AUPRO", "head params (M)", "GMACs", "train s"):
        table.add_column(col)
    for name, r in results.items():
        m = r["mean"]
        table.add_row(name, f"{m['image_auroc']:.4f}", f"{m['pixel_auroc']:.4f}", f"{m['aupro']:.4f}",
                      f"{r['params_head'] / 1e6:.3f}", f"{r['gmacs_total']:.3f}", f"{r['train_seconds']:.0f}")
    Console(width=160).print(table)
    print(f"wrote {summary}")


if __name__ == "__main__":
    main()
