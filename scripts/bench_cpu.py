"""CPU latency of every graph in a bundle against torch eager, measured side by side in one run.

Each (engine, threads) cell runs in a fresh process (median of >= 50 calls after warm-up,
batch 1); ratios are against torch eager at the same thread count. Prints a table and writes JSON.

    .venv/bin/python scripts/bench_cpu.py runs/crad_mt/bundle --run runs/crad_mt --json runs/bench_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgead.bench import machine, measure_in_subprocess
from edgead.bundle import Bundle
from edgead.fileio import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--run", type=Path, required=True, help="the run folder (torch reference)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    b = Bundle.load(args.bundle)
    engines = [("torch", "fp32")] + [("onnxruntime", k) for k in ("fp32", "fp16", "int8-cpu", "int8-tensorrt")
                                     if k in b.meta["files"]]
    rows = []
    for threads in args.threads:
        for backend, precision in engines:
            target = args.run if backend == "torch" else args.bundle
            r = measure_in_subprocess(target, backend, precision, threads, args.iters)
            r["size_mb"] = None if backend == "torch" else (args.bundle / b.meta["files"][precision]["path"]).stat(
            ).st_size / 1e6
            rows.append(r)
            print(f"{backend}/{precision} x{threads}: p50 {r['p50_ms']:.2f} ms", file=sys.stderr)
    for r in rows:
        ref = next(x for x in rows if x["backend"]["backend"] == "torch" and x["threads"] == r["threads"])
        r["speedup_vs_torch"] = ref["p50_ms"] / r["p50_ms"]
    table = Table(title=f"CPU latency, batch 1, median of {args.iters} ({machine()['cpu']})")
    for col in ("engine", "threads", "p50 ms", "p90 ms", "p99 ms", "x torch", "size MB", "peak RSS MB"):
        table.add_column(col)
    for r in rows:
        name = "torch eager" if r["backend"]["backend"] == "torch" else f"ORT {r['precision']}"
        table.add_row(name, str(r["threads"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['speedup_vs_torch']:.2f}", "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
                      f"{r['peak_rss_mb']:.0f}")
    Console(width=160).print(table)
    if args.json:
        atomic_write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
