"""Make a "conveyor" video (lossless) from real test images in a known order, plus its manifest.

    .venv/bin/python scripts/make_conveyor.py --data ../shared/datasets --category magnetic_tile \\
        --bundle runs/crad_mt/bundle --per-class 40 --out runs/live/conveyor.mkv

Frames are the bundle's preprocessing resize of each image (so the live pipeline's scale step is a
no-op and live and offline decisions can be compared exactly); good and defective alternate.
The manifest (``.json`` beside the video) lists the source file of every frame.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from edgead.bundle import Bundle
from edgead.data import mvtec
from edgead.data.image import read_image
from edgead.fileio import atomic_write_json
from edgead.live.conveyor import make_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    pre = Bundle.load(args.bundle).preprocess
    samples = mvtec.discover(args.data, [args.category], "test")
    rng = random.Random(args.seed)
    goods, bads = [s for s in samples if s.label == 0], [s for s in samples if s.label == 1]
    n = min(args.per_class, len(goods), len(bads))
    if n == 0:
        raise SystemExit(f"{args.data}/{args.category}/test: needs good and defective images")
    good, bad = rng.sample(goods, n), rng.sample(bads, n)
    order = [x for pair in zip(good, bad, strict=True) for x in pair]
    frames = [np.asarray(pre.resize_image(read_image(s.path))) for s in order]
    make_video(frames, args.out, fps=args.fps)
    atomic_write_json(args.out.with_suffix(".json"), {"fps": args.fps, "frames": [
        {"frame": i + 1, "file": str(s.path), "label": s.label, "defect": s.defect} for i, s in enumerate(order)]})
    print(f"wrote {args.out} ({len(frames)} frames) and its manifest")


if __name__ == "__main__":
    main()
