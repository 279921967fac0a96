"""Seconds per training epoch, FP32 against bf16 autocast (``edgead train --amp bf16``), per model.

    .venv/bin/python scripts/train_speed.py --data ../shared/datasets --category magnetic_tile \\
        --images 128 --epochs 2 --json train_speed.json

Each model trains ``--epochs`` epochs on the first ``--images`` normals of the category (validation
off), once per precision, in a fresh run folder. Reported: seconds of the last epoch (the first may
include warm-up) and the final loss, from ``run.json``'s curve. Ratios from one run on one machine;
not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgead.train import TrainRequest, train

MODELS = ("crad", "crr", "ccad")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--model", action="append", choices=MODELS, help="repeat; default all")
    ap.add_argument("--images", type=int, default=128, help="normals trained on per run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgead-speed-") as tmp:
        for model in args.model or MODELS:
            for amp in ("off", "bf16"):
                info = train(TrainRequest(model=model, data=args.data, out=Path(tmp) / f"{model}-{amp}",
                                          categories=[args.category], epochs=args.epochs, quiet=True,
                                          validate=False, max_per_category=args.images, amp=amp))
                last = info["curve"][-1]
                rows.append({"model": model, "amp": amp, "seconds_per_epoch": last["seconds"],
                             "loss": round(last["loss"], 4), "n_train": info["data"]["n_train"]})
                print(json.dumps(rows[-1]), flush=True)
    for model in args.model or MODELS:
        f32, b16 = (next(r for r in rows if r["model"] == model and r["amp"] == a) for a in ("off", "bf16"))
        print(f"{model}: {f32['seconds_per_epoch']:.1f} s/epoch FP32, {b16['seconds_per_epoch']:.1f} s bf16 "
              f"({f32['seconds_per_epoch'] / b16['seconds_per_epoch']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "settings": vars(args) | {"data": str(args.data),
                                                                                "json": str(args.json)}}, indent=1))


if __name__ == "__main__":
    main()
