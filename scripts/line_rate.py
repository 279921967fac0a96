"""Line-rate benchmark of ``edgead inspect``: a camera-size H.264 recording of real parts, ``every``
policy (no frame skipped), alerts on for about half the frames.

    .venv/bin/python scripts/line_rate.py BUNDLE --precision int8-cpu --size 1280x720 --frames 600 \\
        --json line_rate.json

The recording cycles through the bundle's reference parts, each stretched to the frame size
(Lanczos) and encoded with x264 (high quality). A copy of the bundle gets the median score of those
frames as its threshold, so about half the frames raise an alert (a stress setting for the alert
path, not an operating point). Reported per ``--scale``: fps, the share of the time between
decisions not spent in inference, per-stage p50, dropped frames, alerts written vs flagged, and
whether every alert line is valid and names files that exist. Ratios from one run; not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from edgead.backends import open_engine
from edgead.bundle import Bundle, update_meta
from edgead.live.alerts import read_events
from edgead.live.gst import gst
from edgead.live.inspect import InspectRequest, inspect
from edgead.live.pipelines import Chain, build, caps, el, out_caps
from edgead.verify.live import parse_size
from edgead.verify.reference import load_reference


def encode_h264(frames: list[np.ndarray], path: Path, fps: int = 30) -> None:
    Gst, _ = gst()
    h, w = frames[0].shape[:2]
    pipe = build(Chain((el("appsrc", "src", format="time", caps=out_caps(w, h, fps)), el("videoconvert"),
                        caps("video/x-raw", format="I420"),
                        el("x264enc", speed_preset="medium", bitrate=16000, key_int_max=30),
                        el("h264parse"), el("mp4mux"), el("filesink", location=str(path)))), str(path))
    src = pipe.get_by_name("src")
    pipe.set_state(Gst.State.PLAYING)
    dur = Gst.SECOND // fps
    for i, f in enumerate(frames):
        buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(f, np.uint8).tobytes())
        buf.pts, buf.duration = i * dur, dur
        src.emit("push-buffer", buf)
    src.emit("end-of-stream")
    pipe.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--precision", default="int8-cpu")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--scale", action="append", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1, help="frames inferred at once (inspect --workers)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="edgead-linerate-") as tmp:
        tmp = Path(tmp)
        b = Bundle.load(args.bundle)
        cat = b.categories[0]
        ref = load_reference(b)
        parts = [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.LANCZOS)) for im in ref.images]
        frames = [parts[i % len(parts)] for i in range(args.frames)]
        video = tmp / "line.mp4"
        encode_h264(frames, video)
        copy = tmp / "bundle"
        shutil.copytree(args.bundle, copy, ignore=shutil.ignore_patterns("reports"))
        engine = open_engine(copy, "fp32")
        pre = b.preprocess
        raw = [float(engine.run_batched(pre(Image.fromarray(p))[None])["score"][0]) for p in parts]
        engine.close()
        median = float(np.median(raw))

        def half(m: dict) -> None:
            n = m["normalization"][cat]
            n["threshold"], n["scale"] = median, max(median - n["center"], 1e-6)
        update_meta(copy, half)
        rows = []
        for scale in args.scale or ["bundle", "pipeline"]:
            alerts = tmp / f"alerts-{scale}"
            res = inspect(InspectRequest(bundle=copy, source=f"file://{video}", precision=args.precision,
                                         category=cat, policy="every", alerts_dir=alerts, threads=args.threads,
                                         workers=args.workers, quiet=True, scale=scale))
            events = read_events(alerts / "events.jsonl")
            valid = all(Path(e["frame_path"]).is_file() and Path(e["heatmap_path"]).is_file() for e in events)
            row = {"scale": scale, "size": args.size, "workers": res["workers"],
                   "threads": res["backend"].get("threads"), "precision": res["precision"], "frames": res["frames"],
                   "fps": round(res["fps"], 1), "overhead_share": round(res["pipeline_overhead_share"], 3),
                   "dropped": res["dropped"], "flagged": res["flagged"], "alert_lines": len(events),
                   "alerts_valid": valid, "temp_files_left": len(list(alerts.glob(".*.tmp"))),
                   "p50_ms": {k: round(v["p50_ms"], 2) for k, v in res["stages"].items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
