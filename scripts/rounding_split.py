"""Learned rounding against bias correction on the build split (no test image): PTQ, + bias correction,
+ learned rounding (``precision.rounding``), and learned rounding followed by bias correction.

    .venv/bin/python scripts/rounding_split.py runs/crad_mt/bundle cpu [--scope backbone]

Prints each graph's split numbers (score error max and RMS in threshold units, Spearman, decisions, mask IoU)
and the per-layer output errors learned rounding reached; the graphs stay in a work folder beside the bundle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgead.bundle import Bundle
from edgead.precision.quantizer import Quantizer
from edgead.precision.rounding import RoundingSettings
from edgead.precision.search import run_bias_correction, run_learned_rounding
from edgead.precision.split import build_split, judge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("recipe", choices=["cpu", "tensorrt"])
    ap.add_argument("--scope", action="append", help="only the convs of these top-level modules (repeat)")
    ap.add_argument("--steps", type=int, default=RoundingSettings.steps)
    args = ap.parse_args()
    b = Bundle.load(args.bundle)
    q = Quantizer.default(b, args.recipe)
    split = build_split(b)
    work = args.bundle.parent / f"rounding-{args.recipe}"
    ptq = work / "ptq.onnx"
    q(ptq, work / "ptq")
    run_bias_correction(q, ptq, work / "ptq", work / "bc", work / "bc.onnx")
    t = time.time()
    info = run_learned_rounding(q, ptq, work / "ptq", work / "ar", work / "ar.onnx",
                                settings=RoundingSettings(steps=args.steps, seed=q.settings.seed), scopes=args.scope)
    seconds = time.time() - t
    run_bias_correction(q, work / "ar.onnx", work / "ar", work / "ar-bc", work / "ar-bc.onnx")
    for name, layer in info["layers"].items():
        print(f"{name:60s} output error nearest {layer['nearest']:.4f} learned {layer['learned']:.4f}"
              f"{'' if layer['kept'] else ' (not kept)'}")
    print(f"learned rounding: {info['learned']} of {info['convs']} convs, {info['flipped']} weights flipped, "
          f"{seconds:.0f} s with the export")
    for name, graph in (("PTQ", ptq), ("+ bias correction", work / "bc.onnx"), ("+ learned rounding", work / "ar.onnx"),
                        ("learned rounding, then bias correction", work / "ar-bc.onnx")):
        r = judge(b, split, graph, f"int8-{args.recipe}")
        print(f"{name:40s} score error max {r['score_abs_max']:.3f} RMS {r['score_rms']:.3f}  Spearman "
              f"{r['spearman_min']:.4f}  decisions {r['decision_agreement_min']:.3f}  mask IoU {r['mask_iou_min']:.3f}"
              f"  {'PASS' if r['passed'] else 'fail'}")


if __name__ == "__main__":
    main()
