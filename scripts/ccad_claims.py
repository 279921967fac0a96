"""CCAD's claims on real data: (a) conditioning helps (no bank vs adaptive vs k-means vs uncompressed),
(b) compression speeds up convergence (epochs and wall time to 95 % of the final image AUROC), and
few-shot behaviour (1, 4, 16 shots). Same seed, data and epoch budget for every variant.

Convergence probe: after every epoch, the image AUROC on a fixed probe set of test images (features
cached once; only the head runs). The probe only watches training; the reported metrics are the full
test-split evaluation at the end. Example:

    .venv/bin/python scripts/ccad_claims.py --data ../shared/datasets --category magnetic_tile \\
        --epochs 15 --max-per-category 160 --out runs/ccad_claims
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.evaluate import EvalRequest, evaluate
from edgead.fileio import atomic_write_json
from edgead.metrics import auroc
from edgead.train import TrainRequest, train

CONDITIONING = {"no bank": {"bank": "none"}, "adaptive (k=8)": {"bank": "adaptive"},
                "k-means (k=8)": {"bank": "kmeans"}, "uncompressed bank": {"bank": "full"}}
SHOTS = (1, 4, 16)


def probe_set(data: Path, categories: list[str] | None, n: int, size: tuple[int, int]):
    samples = mvtec.discover(data, categories, "test")
    rng = random.Random(0)
    pick = []
    for c in sorted({s.category for s in samples}):
        cs = [s for s in samples if s.category == c]
        good, bad = [s for s in cs if s.label == 0], [s for s in cs if s.label == 1]
        pick += rng.sample(good, min(n // 2, len(good))) + rng.sample(bad, min(n // 2, len(bad)))
    pre = Preprocess(*size)
    return torch.from_numpy(mvtec.load_images(pick, pre)), np.array([s.label for s in pick]), \
        np.array([s.category for s in pick])


def make_probe(images, labels, cats):
    cache = {}

    def on_epoch(epoch, model):
        with torch.no_grad():
            if "f" not in cache:  # frozen backbone: features once
                cache["f"] = torch.cat([model.encode(images[i:i + 16]) for i in range(0, len(images), 16)])
            f = model._standardise(cache["f"])
            scores = torch.cat([model.post(model.raw_map(f[i:i + 16]))[1] for i in range(0, len(f), 16)]).numpy()
        return {"probe_image_auroc": float(np.mean([auroc(scores[cats == c], labels[cats == c])
                                                    for c in np.unique(cats)]))}
    return on_epoch


def convergence(curve: list[dict], share: float = 0.95) -> dict:
    final = curve[-1]["probe_image_auroc"]
    wall = np.cumsum([r["seconds"] for r in curve])
    for i, r in enumerate(curve):
        if r["probe_image_auroc"] >= share * final:
            return {"final_probe_auroc": final, "epochs_to_95": i + 1, "seconds_to_95": float(wall[i])}
    return {"final_probe_auroc": final, "epochs_to_95": None, "seconds_to_95": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", action="append")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--max-per-category", type=int, default=None)
    ap.add_argument("--probe", type=int, default=64, help="probe images per category (half good)")
    ap.add_argument("--out", type=Path, default=Path("runs/ccad_claims"))
    ap.add_argument("--skip-shots", action="store_true")
    args = ap.parse_args()
    size = (256, 256)
    probe = make_probe(*probe_set(args.data, args.category, args.probe, size))
    summary = args.out / "claims.json"
    results = json.loads(summary.read_text()) if summary.exists() else {}
    runs = [(name, cfg, None) for name, cfg in CONDITIONING.items()]
    if not args.skip_shots:
        runs += [(f"{n}-shot, adaptive", {"bank": "adaptive", "k": min(8, n)}, n) for n in SHOTS]
    for i, (name, cfg, shots) in enumerate(runs):
        if name in results:
            continue
        run = args.out / f"v{i}"
        info = train(TrainRequest(model="ccad", data=args.data, out=run, categories=args.category, epochs=args.epochs,
                                  model_config=cfg, max_per_category=None if shots else args.max_per_category,
                                  shots=shots, on_epoch=probe,
                                  train_overrides={"lr_step": max(1, round(args.epochs * 0.8)),
                                                   **({"batch_size": max(2, min(16, shots))} if shots else {})}))
        res = evaluate(EvalRequest(run=run, overlays=0, quiet=True))
        results[name] = {"config": cfg, "shots": shots, "epochs": args.epochs,
                         "train_seconds": info["timing"]["train_seconds"], "prepare": info.get("prepare"),
                         "params_head": info["profile"]["params_head"], "gmacs_total": info["profile"]["gmacs_total"],
                         "convergence": convergence(info["curve"]), "curve": info["curve"],
                         "mean": res["mean"], "per_category": res["per_category"]}
        atomic_write_json(summary, results)
    table = Table(title=f"CCAD claims ({args.epochs} epochs each)")
    for col in ("variant", "image AUROC", "pixel AUROC", "AUPRO", "tokens", "epochs to 95%", "s to 95%", "train s"):
        table.add_column(col)
    for name, r in results.items():
        m, c = r["mean"], r["convergence"]
        table.add_row(name, f"{m['image_auroc']:.4f}", f"{m['pixel_auroc']:.4f}", f"{m['aupro']:.4f}",
                      str((r.get("prepare") or {}).get("tokens")), str(c["epochs_to_95"]),
                      f"{c['seconds_to_95']:.0f}" if c["seconds_to_95"] else "-", f"{r['train_seconds']:.0f}")
    Console(width=160).print(table)
    print(f"wrote {summary}")


if __name__ == "__main__":
    main()
