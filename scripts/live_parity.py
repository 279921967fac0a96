"""Did the live pipeline decide like offline? Compare an ``edgead inspect`` run over a conveyor video
(scripts/make_conveyor.py) with the same bundle graph run offline on the manifest's source images.

    .venv/bin/python scripts/live_parity.py runs/live/conveyor.json runs/live/alerts/events.jsonl \\
        --bundle runs/crad_mt/bundle --precision int8-cpu --category magnetic_tile
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.data.mvtec import open_image
from edgead.live.alerts import read_events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("events", type=Path)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--category", required=True)
    args = ap.parse_args()
    b = Bundle.load(args.bundle)
    be = open_engine(args.bundle, b.resolve(args.precision))
    norm = b.category_norm(args.category)
    frames = json.loads(args.manifest.read_text())["frames"]
    offline, want = {}, []
    for f in frames:
        raw = float(be.infer(b.preprocess(open_image(Path(f["file"])))[None])["score"][0])
        offline[f["frame"]] = norm.score(raw)
        if norm.decide(raw):
            want.append(f["frame"])
    want.sort()
    events = read_events(args.events)
    got = [e["frame"] for e in events]
    worst = max((abs(e["score"] - offline[e["frame"]]) for e in events), default=0.0)
    labels = {f["frame"]: f["label"] for f in frames}
    res = {"frames": len(frames), "flagged_offline": len(want), "flagged_live": len(got), "identical": got == want,
           "max_score_difference_on_flags": worst, "event_lines": len(events),
           "flagged_defective": sum(labels[k] for k in got), "flagged_good": sum(1 - labels[k] for k in got)}
    print(json.dumps(res, indent=1))
    raise SystemExit(0 if res["identical"] else 1)


if __name__ == "__main__":
    main()
