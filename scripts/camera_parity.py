"""Camera-size parity table: the bundle's reference parts framed at camera sizes, through the real
live pipeline (``edgead inspect``), against the offline path on the same frames.

    .venv/bin/python scripts/camera_parity.py BUNDLE --precision int8-cpu --data ../shared/datasets \\
        --size 256x256 --size 1280x720 --size 1920x1080 --json camera.json

For each size and each ``--scale`` (pipeline: GStreamer's videoscale; bundle: the bundle's resize in
Python) it reports decision agreement and the max normalised-score error against the offline path on
the same frame (what ``verify --source-size`` gates), the FP32 graph's frame score against the bundle's
FP32 reference of the original image (what the camera's resolution itself changes, whatever the
scaling), the live fps and the preprocessing time per frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.data.image import read_image
from edgead.decision import THRESHOLD
from edgead.verify.live import camera_video, live_parity, parse_size
from edgead.verify.reference import load_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--size", action="append", default=None)
    ap.add_argument("--scale", action="append", default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    b = Bundle.load(args.bundle)
    if len(b.categories) != 1:
        raise SystemExit(f"{args.bundle}: one product per table ({', '.join(b.categories)}); use a one-product bundle")
    ref = load_reference(b)
    key = b.resolve(args.precision, "onnxruntime")
    norm, pre = b.category_norm(b.categories[0]), b.preprocess
    rn = norm.score(ref.scores.astype(np.float64))
    rows = []
    for text in args.size or ["256x256", "1280x720", "1920x1080"]:
        size = parse_size(text)
        with tempfile.TemporaryDirectory(prefix="edgead-camera-") as tmp:
            video, manifest = camera_video(ref, np.arange(len(ref)), size, args.data, Path(tmp))
            frames = json.loads(manifest.read_text())["frames"]
            engine = open_engine(b.path, "fp32", "onnxruntime")
            off = np.array([float(engine.run_batched(pre(read_image(Path(f["file"])))[None])["score"][0])
                            for f in frames])
            engine.close()
            on = norm.score(off)
            camera = {"score_abs_max": float(np.abs(on - rn).max()),
                      "decision_agreement": float(((on >= THRESHOLD) == (rn >= THRESHOLD)).mean())}
            for scale in args.scale or ["pipeline", "bundle"]:
                live = live_parity(b, key, "onnxruntime", f"file://{video}", None, manifest, None, scale)
                row = {"size": text, "scale": scale, "n": live["n_compared"],
                       "live_vs_offline_frame": {"score_abs_max": live["score_abs_max"],
                                                 "decision_agreement": live["decision_agreement"]},
                       "fp32_frame_vs_reference": camera, "live_fps": live["live_fps"],
                       "preprocess_p50_ms": live["live_p50_ms"]["preprocess"]}
                rows.append(row)
                print(f"{text:>10s} scale={scale:8s} live vs offline frame: max err {live['score_abs_max']:.4f} "
                      f"decisions {live['decision_agreement']:.3f} | fp32 frame vs reference: max err "
                      f"{camera['score_abs_max']:.4f} decisions {camera['decision_agreement']:.3f} | "
                      f"{live['live_fps']:.1f} fps, preprocess p50 {row['preprocess_p50_ms']:.2f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(b.path), "precision": key, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
