"""Soak run of ``edgead inspect``: a live test source for N minutes, memory sampled from outside.

    .venv/bin/python scripts/soak.py BUNDLE --precision int8-cpu --minutes 10 --json soak.json

Runs ``edgead inspect BUNDLE --source test://?fps=30 --policy latest --duration ...`` as its own
process (the way a service runs it), samples its resident memory every 5 s from /proc, and reports
the run's p99 capture-to-decision latency, frames, drops and alerts from its summary, RSS at minute 1
and at the end (growth in %), and temp files left in the alerts folder. Numbers from one run on this
machine; not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--precision", default="int8-cpu")
    ap.add_argument("--category")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--source", default="test://?fps=30")
    ap.add_argument("--threads", type=int, help="inference threads per frame (default: inspect's)")
    ap.add_argument("--workers", type=int, default=1, help="frames inferred at once (inspect --workers)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgead-soak-") as tmp:
        tmp = Path(tmp)
        summary = tmp / "summary.json"
        cmd = [sys.executable, "-m", "edgead", "inspect", str(args.bundle), "--source", args.source, "--policy",
               "latest", "--precision", args.precision, "--duration", str(args.minutes * 60), "--alerts",
               str(tmp / "alerts"), "--json", str(summary)] + (["--category", args.category] if args.category else []) \
            + (["--threads", str(args.threads)] if args.threads else []) + ["--workers", str(args.workers)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0, samples = time.monotonic(), []
        while proc.poll() is None:
            r = rss_mb(proc.pid)
            if r is not None:
                samples.append((time.monotonic() - t0, r))
            time.sleep(5)
        err = proc.stderr.read()
        if proc.returncode not in (0, 1):
            raise SystemExit(f"inspect exited {proc.returncode}: {err.strip()[-500:]}")
        res = json.loads(summary.read_text())
        after_1 = [r for t, r in samples if t >= 60]
        out = {"source": args.source, "precision": res["precision"], "minutes": args.minutes,
               "threads": res["backend"].get("threads"), "workers": res["workers"],
               "frames": res["frames"], "produced": res["produced"], "dropped": res["dropped"], "fps": res["fps"],
               "flagged": res["flagged"], "alerts_written": res["alerts"]["written"],
               "p99_capture_to_decision_ms": res["latency"]["capture_to_decision_p99_ms"],
               "stage_p99_ms": {k: round(v["p99_ms"], 2) for k, v in res["stages"].items()},
               "rss_mb_minute_1": after_1[0] if after_1 else None, "rss_mb_end": samples[-1][1] if samples else None,
               "temp_files_left": len(list((tmp / "alerts").glob(".*.tmp")))}
        if after_1:
            out["rss_growth_pct"] = round(100 * (after_1[-1] - after_1[0]) / after_1[0], 2)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**out, "rss_samples": samples}, indent=1))


if __name__ == "__main__":
    main()
