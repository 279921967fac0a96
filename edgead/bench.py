"""Latency measurement of one backend: warm-up, then per-call timings and their percentiles.

Run as ``python -m edgead.bench TARGET --backend B --precision P --threads N`` to measure in a
fresh process (thread settings do not carry over reliably within one process); prints JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgead.data.preprocess import Preprocess
from edgead.device import jetson_facts, run_cmd
from edgead.errors import EXIT_BAD_INPUT, EdgeadError


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min())}


def measure(backend, batch: np.ndarray, warmup: int = 10, iters: int = 50) -> dict:
    for _ in range(warmup):
        backend.infer(batch)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        backend.infer(batch)
        times.append((time.perf_counter() - t) * 1e3)
    stats = percentiles(times)
    stats["throughput_ips"] = 1e3 * len(batch) / stats["p50_ms"]
    stats["iters"], stats["warmup"], stats["batch"] = iters, warmup, len(batch)
    return stats


def measure_in_subprocess(target: Path, backend: str, precision: str, threads: int, iters: int = 50,
                          warmup: int = 10) -> dict:
    """One (engine, threads) cell in a fresh process: ``python -m edgead.bench`` prints its JSON."""
    cmd = [sys.executable, "-m", "edgead.bench", str(target), "--backend", backend, "--precision", precision,
           "--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        if out.returncode == EXIT_BAD_INPUT:  # the child's one-line user error names the file and the fix
            raise EdgeadError(last)
        raise EdgeadError(f"{target}: benchmark of {backend}/{precision} failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def preprocess_ms(pre: Preprocess, image: Path, iters: int = 20) -> dict:
    """Host preprocessing of one real image (decode, colour, resize, scale), as the live path does it."""
    from edgead.data.image import read_image

    times = []
    for _ in range(iters):
        t = time.perf_counter()
        pre(read_image(image))
        times.append((time.perf_counter() - t) * 1e3)
    return percentiles(times)


def postprocess_ms(bundle, iters: int = 50) -> dict:
    """Host work after the graph for one image: normalised score, decision, thresholded defect mask."""
    _, _, h, w = bundle.input_shape
    rng = np.random.default_rng(0)
    amap, score = rng.random((1, 1, h, w), np.float32), rng.random(1, np.float32)
    norm = bundle.category_norm(bundle.categories[0])
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        _ = norm.score(float(score[0])), norm.decide(float(score[0])), norm.mask(amap[0, 0])
        times.append((time.perf_counter() - t) * 1e3)
    return percentiles(times)


def bench(bundle: Path, precisions: str | list[str], backend: str = "onnxruntime", threads: int | list[int] = 1,
          iters: int = 50, reference: bool = True, save: bool = True) -> dict:
    """Engines vs the torch reference side by side (each in a fresh process), plus host pre/post-processing;
    the ratios come from this one run. Several thread counts: ``engines`` etc. hold the first, ``by_threads``
    every one. Saved in the bundle as ``reports/bench.json``."""
    from edgead.bundle import Bundle
    from edgead.fileio import atomic_write_json

    b = Bundle.load(bundle)
    precisions = [b.resolve(p, backend) for p in ([precisions] if isinstance(precisions, str) else precisions)]
    counts = [threads] if isinstance(threads, int) else list(threads)
    run = b.source_run
    with_ref = reference and (run / "run.json").is_file() and importlib.util.find_spec("torch") is not None
    by_threads = {}
    for t in counts:
        engines = {f"{backend} {p}": measure_in_subprocess(bundle, backend, p, t, iters) for p in precisions}
        cell = {"engines": engines}
        if with_ref:
            ref = measure_in_subprocess(run, "torch", "fp32", t, iters)
            cell.update(torch_reference=ref,
                        speedup_vs_torch={k: ref["p50_ms"] / e["p50_ms"] for k, e in engines.items()})
        by_threads[t] = cell
    out = {"bundle": str(bundle), "precisions": precisions, "backend": backend, "threads": counts[0],
           "batch": b.input_shape[0], "input_shape": list(b.input_shape), "machine": machine(),
           **by_threads[counts[0]],
           "graph_mb": {f"{backend} {p}": (b.path / b.files[p]["path"]).stat().st_size / 1e6
                        for p in precisions if p in b.files},
           "note": "engine = the bundle graph incl. in-graph post-processing (map smoothing, image score)"}
    if len(counts) > 1:
        out["by_threads"] = {str(t): c for t, c in by_threads.items()}
    image = next((Path(p) for p in b.meta["export"]["parity"]["images"] if Path(p).is_file()), None)
    if image is not None:
        out["preprocess"] = preprocess_ms(b.preprocess, image)
    out["postprocess"] = postprocess_ms(b)
    if save:
        atomic_write_json(b.path / "reports" / "bench.json", out)
    return out


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    facts = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
             "gpu": run_cmd(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])}
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:  # lazily: TensorRT is only on the device
        import tensorrt

        facts["tensorrt"] = tensorrt.__version__
    except ImportError:
        facts["tensorrt"] = None
    jetson = jetson_facts()
    if jetson:
        facts["jetson"] = jetson
    return facts


def main() -> None:
    try:
        _main()
    except EdgeadError as e:  # one line for the parent to pass on (``measure_in_subprocess``)
        print(e, file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _main() -> None:
    ap = argparse.ArgumentParser(description="measure one backend in this process")
    ap.add_argument("target")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    from edgead.backends import EngineOptions, open_engine
    from edgead.bundle import META, Bundle
    from edgead.fileio import read_json

    if os.path.isfile(os.path.join(args.target, META)):
        shape = Bundle.load(args.target).input_shape
    else:  # a run folder (the torch reference); read without importing torch's run module
        pre = read_json(Path(args.target) / "run.json")["preprocess"]
        shape = (1, 3, pre["height"], pre["width"])
    be = open_engine(args.target, args.precision, args.backend, EngineOptions(threads=args.threads))
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    stats = measure(be, x, args.warmup, args.iters)
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"backend": be.describe(), "threads": args.threads, "precision": args.precision, **stats}))


if __name__ == "__main__":
    main()
