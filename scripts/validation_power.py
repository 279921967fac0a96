"""How clearly the validation set tells two runs apart, at its standard size and larger ones: the val_score of
run B minus run A (same data and held-out normals) and the paired bootstrap of that difference
(``post_select.paired_bootstrap``: 90 % interval, share of resamples where B is ahead). Validation images only.

    .venv/bin/python scripts/validation_power.py RUN_A RUN_B [--size 32x1 --size 64x3]

A size is NxK: N held-out normals per category, K synthetic twins each (``edgead train --val-normals/--val-twins``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.data.preprocess import Preprocess
from edgead.post_select import paired_bootstrap
from edgead.runs import load_model
from edgead.validation import ValidationSet, strengths_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--size", action="append", help="NxK (default: 32x1 and 64x3)")
    args = ap.parse_args()
    (model_a, info), (model_b, info_b) = load_model(args.run_a), load_model(args.run_b)
    if info["data"]["holdout_files"] != info_b["data"]["holdout_files"]:
        raise SystemExit(f"{args.run_b}: holds out other normals than {args.run_a}; compare runs of one split")
    pre = Preprocess.from_dict(info["preprocess"])
    for size in args.size or ["32x1", "64x3"]:
        n, k = (int(v) for v in size.lower().split("x"))
        val = ValidationSet.from_holdout(info["data"]["holdout_files"], info["data"]["categories"], pre, n,
                                         strengths=strengths_of(info), twins=k)
        a, b = val.predict(model_a.eval(), pre), val.predict(model_b.eval(), pre)
        ma, mb = val.metrics(*a), val.metrics(*b)
        print(json.dumps({"a": str(args.run_a), "b": str(args.run_b), "size": size, "images": len(val),
                          "val_score_a": ma["val_score"], "val_score_b": mb["val_score"],
                          "b_minus_a": round(mb["val_score"] - ma["val_score"], 5),
                          "bootstrap": paired_bootstrap(val, b, a)}), flush=True)


if __name__ == "__main__":
    main()
