"""The summary of a Jetson acceptance run (``scripts/jetson_acceptance.sh``): which verify levels passed per
precision, bench p50s and machine facts, read from the JSON files the run's edgead commands wrote.

    python -m edgead.acceptance OUT_DIR BACKEND STATUS   # writes OUT_DIR/summary.json and prints it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgead.fileio import atomic_write_json, read_json


def summarize(out: Path, backend: str, status: int) -> dict:
    summary = {"backend": backend, "all_steps_passed": status == 0, "verify": {}, "bench": None}
    for p in ("fp32", "fp16", "int8"):
        f = out / f"verify-{p}.json"
        if f.is_file():
            r = read_json(f)
            summary["verify"][p] = {"passed": r["passed"], "levels": r["levels"], "precision": r["precision"],
                                    "failed": [(g["level"], g["gate"], g["category"], g["value"]) for g in r["failed"]]}
    for scale in ("bundle", "pipeline"):  # the camera path at 1920x1080 (LIVE rows of verify --source-size)
        f = out / f"camera-{scale}.json"
        if f.is_file():
            r = read_json(f)
            summary.setdefault("camera", {})[scale] = {
                "passed": r["levels"].get("LIVE") == "pass",
                "cameras": [{k: c[k] for k in ("category", "size", "score_abs_max", "decision_agreement")}
                            for c in r.get("cameras", [])]}
    if (out / "bench.json").is_file():
        b = read_json(out / "bench.json")
        summary["bench"] = {k: v["p50_ms"] for k, v in b["engines"].items()}
        summary["machine"] = b["machine"]
    atomic_write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    out, backend, status = (argv or sys.argv[1:])[:3]
    print(json.dumps(summarize(Path(out), backend, int(status)), indent=1))


if __name__ == "__main__":
    main()
