"""``edgead inspect``: frames from a source URI -> the bundle's preprocessing -> any backend ->
decision at the bundle's per-category threshold -> overlay to an output, alerts to an events file,
per-stage latency and a summary at the end. SIGINT/SIGTERM end the run cleanly (EOS, then NULL)."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgead.bundle import Bundle
from edgead.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EdgeadError
from edgead.live.pipelines import Target, sink_pipeline, source_pipeline
from edgead.live.prefetch import Ended, Prefetch
from edgead.live.source import Source
from edgead.live.uri import parse
from edgead.live.workers import InOrder
from edgead.verify.status import verification

STAGES = ("capture_age", "queue", "preprocess", "handoff", "inference", "postprocess", "alert", "output", "frame",
          "interval", "decision")
WINDOW = 100_000  # stage times kept per stage: the summary's percentiles cover the last WINDOW frames (bounded RSS)


@dataclass
class InspectRequest:
    bundle: Path
    source: str | list[str]  # one URI, or several (one engine, decisions and alerts tagged by source)
    output: str = "none"
    precision: str = "fp32"
    backend: str = "onnxruntime"
    policy: str | None = None  # latest | every (default: every for file/images, latest for cameras)
    category: str | list[str] | None = None  # once for all sources, or once per source
    alerts_dir: Path = Path("alerts")
    alerts_min_free_mb: float = 256.0  # with less free space, alert lines are written without their images (the
    # reserve a box running for months keeps for its OS)
    alerts_max_mb: float | None = None  # the alerts folder's PNGs kept under this size (oldest pairs deleted)
    events: Path | None = None  # default ALERTS_DIR/events.jsonl
    events_max_mb: float | None = 1024.0  # events.jsonl and its rotated files kept under this (oldest file deleted);
    # None: never rotated. 1 GB holds about 3 million alert lines
    max_frames: int | None = None
    duration: float | None = None
    threads: int | None = None  # inference threads per frame; default: live_threads()
    workers: int = 1  # frames inferred at once (one engine; each frame on ``threads`` threads, default 1 then)
    platform: str = "auto"
    fps: int = 10  # output stream caps
    stall_s: float = 5.0
    first_frame_timeout_s: float = 30.0  # a source that gives no frame in this long is an error (exit 2)
    grace_s: float = 15.0  # after a stop (signal or --duration), the run ends within this long, whatever happens
    keep_decisions: int = 1000  # the summary keeps the last N decisions
    latency_budget_ms: float | None = None  # capture (or file written) -> decision; frames over it are counted
    scale: str = "bundle"  # bundle: the bundle's resize on full frames (as verified); pipeline: GStreamer scales
    notify: list[str] = field(default_factory=list)  # mqtt://, mqtts://, opcua:// alert sinks fed from events.jsonl
    notify_env: Path | None = None  # KEY=VALUE file with the notifiers' credentials (never on the command line)
    notify_flush_s: float = 5.0  # at exit, how long the notifiers may take to deliver what is pending
    metrics: str | None = None  # [ADDRESS]:PORT for Prometheus (e.g. :9108)
    require_verified: bool = False  # refuse a graph without a passing edgead verify report (default gates)
    dry_run: bool = False
    quiet: bool = False


def live_threads(requested: int | None, workers: int = 1) -> int:
    """Inference threads per frame in a live run: as asked; else, with one worker, one fewer than the CPUs this
    process may use (at least one), and with several workers one each (they fill the cores side by side).

    Capture, decoding, the preparing thread and the alert writer need a core too. On this 2-core machine with
    the CRR INT8 cpu graph (``scripts/soak.py``, ``test://?fps=30``, ``latest``, every frame alerting) ONNX
    Runtime's default of one thread per core gave p99 capture-to-decision 75 ms and 78 drops in 3 minutes
    (a parallel kernel waits for its slowest thread, and the second core is busy), one thread 37 ms and 1 drop;
    a 1280x720 H.264 recording in ``every`` mode (``scripts/line_rate.py``, CRAD INT8) ran 30 -> 37 fps."""
    if requested:
        return requested
    if workers > 1:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


class Window:
    """The last ``size`` values of a stage time in a preallocated float64 ring (memory fixed from the first
    frame: a run of weeks keeps the same RSS; the summary's percentiles cover these values)."""

    def __init__(self, size: int = WINDOW):
        self.a = np.full(size, np.nan)  # written now, so its pages are resident from the start
        self.n = 0

    def append(self, v: float) -> None:
        self.a[self.n % len(self.a)] = v
        self.n += 1

    def __len__(self) -> int:
        return min(self.n, len(self.a))

    def values(self) -> np.ndarray:
        return self.a[: len(self)]

    def last(self, k: int) -> np.ndarray:
        idx = (self.n - 1 - np.arange(min(k, len(self)))) % len(self.a)
        return self.a[idx]


def _pct(v: Window) -> dict:
    if not len(v):
        return {}
    a = v.values()
    return {"p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": len(v)}


def plan(req: InspectRequest) -> dict:
    """Pipelines and settings without running anything (``--dry-run``)."""
    from edgead.live.gst import resolve_platform
    from edgead.live.source import default_policy
    from edgead.live.telemetry import parse_address
    from edgead.notify import configure

    b = Bundle.load(req.bundle)
    srcs, out = [parse(u, "source") for u in _sources(req)], parse(req.output, "sink")
    jetson, nvenc = resolve_platform(req.platform)
    target = Target(b.preprocess.width, b.preprocess.height, jetson, nvenc, req.scale)
    policies = [req.policy or default_policy(src) for src in srcs]
    sink = sink_pipeline(out, target, req.fps)
    lines = [str(source_pipeline(src, target, pol)) if src.scheme != "images"
             else f"(stills in {src.location} read by edgead's image reader, resized by the bundle's preprocessing)"
             for src, pol in zip(srcs, policies, strict=True)]
    notify = [str(t) for t in configure(req.notify, req.notify_env).targets]
    return {"platform": "jetson" if jetson else "desktop", "nvenc": nvenc, "policy": ", ".join(policies),
            "notify": notify, "metrics": "{}:{}".format(*parse_address(req.metrics)) if req.metrics else None,
            "source_pipeline": "\n        ".join(lines),
            "output_pipeline": str(sink) if sink else
            ("(flagged frames written as PNG by edgead)" if out.scheme == "images" else "(none)"),
            "model_input": [target.height, target.width],
            "scale": "the bundle's resize in Python (as verified)" if target.scale == "bundle"
            else "in the pipeline (check it with edgead verify --source-size)"}


def _hard_exit(source: Source, uri: str, n: list[int], alerts) -> Callable[[str], int]:
    """What the stop watchdog says and returns when the run does not end in time (see live.stopper)."""
    def say(why: str) -> int:
        never = n[0] == 0
        tail = (f"source {uri} produced no frame ({source.stats.last_problem or 'it never started'})" if never
                else f"{n[0]} frames inspected")
        pending = alerts.queue.qsize()
        lines = (f"{pending} queued alert(s) NOT written; the lines in events.jsonl are complete" if pending
                 else "every alert is in events.jsonl")
        os.write(2, f"error: {why}; exiting now ({tail}; {lines})\n".encode())
        return EXIT_BAD_INPUT if never else EXIT_INTERNAL
    return say


def inspect(req: InspectRequest, log=None) -> dict:
    from edgead.backends import EngineOptions, open_engine
    from edgead.live.alerts import EventLog
    from edgead.live.gst import resolve_platform
    from edgead.live.inspector import AlertWriter, Inspector
    from edgead.live.sinks import open_output
    from edgead.live.source import default_policy, open_source
    from edgead.live.stopper import Stopper
    from edgead.live.telemetry import parse_address
    from edgead.notify import configure, open_relays
    from edgead.progress import console

    if req.dry_run:
        return plan(req)
    log = log or (lambda m: console.print(m, highlight=False, soft_wrap=True))
    uris = _sources(req)
    srcs, out_uri = [parse(u, "source") for u in uris], parse(req.output, "sink")
    notify = configure(req.notify, req.notify_env)  # a bad URI, credential file or address: an error before
    if notify.warning:                                # anything opens
        log(f"[yellow]warning:[/] {notify.warning}")
    if req.metrics:
        parse_address(req.metrics)
    b = Bundle.load(req.bundle)
    categories = _categories(req, b, len(uris))
    key = b.resolve(req.precision, req.backend)
    verified = verification(b, key, req.backend)
    if not verified.trusted:
        if req.require_verified:
            raise EdgeadError(f"{req.bundle}: {verified.describe(req.bundle, key)} (--require-verified)")
        if not req.quiet:
            log(f"[yellow]warning:[/] {verified.describe(req.bundle, key)}")
    pre = b.preprocess
    jetson, nvenc = resolve_platform(req.platform)
    target = Target(pre.width, pre.height, jetson, nvenc, req.scale)
    policies = [req.policy or default_policy(src) for src in srcs]
    caps = [open_source(src, target, pre, pol, stall_s=req.stall_s, log=log) for src, pol in zip(srcs, policies,
                                                                                                   strict=True)]
    threads, workers = live_threads(req.threads, req.workers), req.workers
    engine = open_engine(b.path, key, req.backend, EngineOptions(threads=threads))  # one for all sources
    if workers > 1 and not engine.concurrent:
        engine.close()
        raise EdgeadError(f"--workers {workers}: the {req.backend} backend runs one frame at a time; leave --workers "
                          f"at 1 (or use --backend onnxruntime)")
    inspectors = [Inspector(engine, pre, b.category_norm(c), c) for c in categories]
    events_path = Path(req.events or Path(req.alerts_dir) / "events.jsonl")
    events = EventLog(events_path, None if req.events_max_mb is None else req.events_max_mb * 1e6)
    relays = open_relays(notify, events_path)
    alerts = AlertWriter(req.alerts_dir, events, key, req.backend, on_written=[r.wake for r in relays],
                         min_free_mb=req.alerts_min_free_mb, max_mb=req.alerts_max_mb)
    telemetry = None
    output = None
    times: dict[str, Window] = {k: Window() for k in STAGES}
    over_budget = 0
    count = [0]  # frames inspected, shared with the stop watchdog
    per = [{"frames": 0, "flagged": 0} for _ in uris]
    fps = _Rate()
    decisions: deque[dict] = deque(maxlen=req.keep_decisions)
    end_reason = "max frames"
    live = _LiveView(req.quiet)
    stats = _AllStats(caps)

    def interrupt() -> None:
        for c in caps:
            c.interrupt()
    stopper = Stopper(req.duration, req.grace_s, _hard_exit(caps[0], uris[0], count, alerts), on_stop=interrupt)
    try:
        output = open_output(out_uri, target, req.fps)
        if req.metrics:
            telemetry = _telemetry(req, b, key, uris, caps, alerts, events, relays, fps, lambda: over_budget,
                                   verified.state)
        with stopper:
            t_start = stopper.start
            last_decision = None
            loop_ms = [0.0, 0.0]  # time between decisions, and the inference within it (frames 2..n)
            ended: set[int] = set()
            prefetch = Prefetch(caps, [i.prepare for i in inspectors],  # preprocessing overlaps inference
                                fresh=[pol == "latest" for pol in policies])
            flight = InOrder(lambda p, inspector: inspector.decide(p), workers)
            try:
                for c in caps:
                    c.start()
                prefetch.start()
                stopping = False  # no new frame is taken; the frames in flight are still decided
                while True:
                    n = count[0]
                    waited = time.monotonic() - t_start
                    if not stopping:
                        if stopper.reason:
                            end_reason, stopping = stopper.reason, True
                        elif req.duration and waited >= req.duration:
                            end_reason, stopping = "duration", True
                        elif (n == 0 and not flight and waited >= req.first_frame_timeout_s
                              and not all(c.idle_ok for c in caps)):
                            end_reason, stopping = "no first frame", True
                    taking = not stopping and not (req.max_frames and n + len(flight) >= req.max_frames)
                    if taking and not flight.full:
                        # wait for a frame only while nothing is in flight; else poll while the oldest infers
                        got = prefetch.read(0.5 if not flight else 0.002)
                        if got is not None:
                            si, prepared = got
                            if isinstance(prepared, Ended):
                                ended.add(si)
                                if len(ended) == len(caps):
                                    end_reason, stopping = "end of stream", True
                            else:
                                flight.submit(si, prepared, inspectors[si])
                            continue
                        if flight and not flight.oldest_done():
                            continue
                    if not flight:
                        if stopping or (req.max_frames and n >= req.max_frames):
                            break
                        live.update(n, _flagged(per), fps.value, stats, times, over_budget, req.latency_budget_ms)
                        continue
                    si, prepared, d = flight.pop()
                    fr, inspector = prepared.frame, inspectors[si]
                    t3 = time.perf_counter()
                    rate = fps.tick()
                    vis = inspector.render(d, rate) if output.wants(d.flagged) else None
                    t4 = time.perf_counter()
                    per[si]["frames"] += 1
                    if d.flagged:
                        per[si]["flagged"] += 1
                        alerts.write(d, uris[si], inspector.category, inspector.norm)
                    t5 = time.perf_counter()
                    if vis is not None:
                        output.push(vis, d.flagged, d.stem)
                    t6 = time.perf_counter()
                    if last_decision is not None:
                        times["interval"].append((t6 - last_decision) * 1e3)
                        loop_ms[0] += (t6 - last_decision) * 1e3
                        loop_ms[1] += d.ms["inference"]
                    last_decision = t6
                    count[0] = n + 1
                    decisions.append({"frame": fr.number, "name": fr.name, "score": d.score, "flagged": d.flagged,
                                      **({"source": uris[si], "category": inspector.category}
                                         if len(uris) > 1 else {})})
                    stage_ms = _record(times, fr, d, render_ms=(t4 - t3) * 1e3, alert_ms=(t5 - t4) * 1e3,
                                       output_ms=(t6 - t5) * 1e3)
                    latency = stage_ms["decision"]
                    over_budget += bool(req.latency_budget_ms is not None and latency > req.latency_budget_ms)
                    if telemetry is not None:
                        telemetry.frame(uris[si], d.flagged, stage_ms)
                    live.update(count[0], _flagged(per), fps.value, stats, times, over_budget,
                                req.latency_budget_ms)
            finally:
                live.close()
                flight.close()
                prefetch.stop()
                for c in caps:
                    c.stop()
                output.close()
                engine.close()
                alert_stats = alerts.close()  # drains the queue: every flagged frame gets its line
                notify_stats = [r.close(req.notify_flush_s) for r in relays]  # then the notifiers catch up
    finally:
        live.close()
        alerts.close()
        for r in relays:
            r.close(0.0)
        events.close()
        if telemetry is not None:
            telemetry.close()
    wall = time.monotonic() - t_start
    if count[0] == 0:
        raise EdgeadError(_no_frames(uris[0], srcs[0].scheme, caps[0].stats, wall, end_reason))
    summary = _summary(req, b, key, engine.describe(), categories, policies, jetson, caps, stats, output, count[0],
                       end_reason, wall, times, loop_ms, events_path, decisions, uris, per)
    p99 = summary["stages"]["decision"]["p99_ms"]
    summary["latency"] = {"capture_to_decision_p99_ms": p99, "budget_ms": req.latency_budget_ms,
                          "over_budget": over_budget if req.latency_budget_ms is not None else None,
                          "met": None if req.latency_budget_ms is None else p99 <= req.latency_budget_ms,
                          "window_frames": min(count[0], WINDOW)}
    summary["verification"] = verified.as_dict()
    summary["alerts"] = {**alert_stats, "events_rotated": events.rotations, "events_reopened": events.reopened}
    summary["notify"] = notify_stats
    summary["metrics"] = telemetry.url if telemetry is not None else None
    return summary


def _telemetry(req, b, key, uris, caps, alerts, events, relays, fps, over_budget, verified: str):
    """Prometheus endpoint: identity labels, and the run's own counters read at scrape time."""
    from edgead import __version__
    from edgead.live.telemetry import Telemetry

    def state() -> dict:
        return {"sources": {u: {"dropped": c.stats.dropped, "reconnects": c.stats.reconnects}
                            for u, c in zip(uris, caps, strict=True)},
                "fps": fps.value, "over_budget": over_budget(),
                "alerts": {"written": alerts.stats["written"], "errors": alerts.stats["errors"],
                           "depth": alerts.queue.qsize(), "images_skipped": alerts.stats["images_skipped"],
                           "images_pruned": alerts.stats["images_pruned"], "events_rotated": events.rotations,
                           "events_reopened": events.reopened, "folder_recreated": alerts.stats["folder_recreated"]},
                "notify": [r.summary() for r in relays]}
    identity = {"model": b.model, "bundle": str(b.path.resolve()), "precision": key, "backend": req.backend,
                "weights_sha256": b.weights_sha256[:16], "verified": verified, "edgead": __version__}
    return Telemetry(req.metrics, identity, uris, state)


def _sources(req: InspectRequest) -> list[str]:
    uris = [req.source] if isinstance(req.source, str) else list(req.source)
    if not uris:
        raise EdgeadError("no --source given")
    if len(set(uris)) != len(uris):
        raise EdgeadError(f"--source {next(u for u in uris if uris.count(u) > 1)} is given twice")
    return uris


def _categories(req: InspectRequest, b: Bundle, n: int) -> list[str]:
    """The product each source shows: one --category for all, one per source, or the bundle's only one."""
    cats = b.categories
    given = [req.category] if isinstance(req.category, str) else list(req.category or [])
    if not given:
        if len(cats) > 1:
            raise EdgeadError(f"{req.bundle}: a multi-class bundle ({', '.join(cats)}); say which product each "
                              f"camera sees with --category (once, or once per --source)")
        given = [cats[0]]
    if len(given) not in (1, n):
        raise EdgeadError(f"--category given {len(given)} times for {n} sources: once for all, or once per --source")
    for c in given:
        if c not in cats:
            raise EdgeadError(f"--category {c}: not in the bundle ({', '.join(cats)})")
    return given * n if len(given) == 1 else given


def _flagged(per: list[dict]) -> int:
    return sum(p["flagged"] for p in per)


class _AllStats:
    """Dropped frames and reconnects summed over the sources (the console line)."""

    def __init__(self, caps: list[Source]):
        self.caps = caps

    @property
    def dropped(self) -> int:
        return sum(c.stats.dropped for c in self.caps)

    @property
    def reconnects(self) -> int:
        return sum(c.stats.reconnects for c in self.caps)


def _record(times: dict[str, Window], fr, d, render_ms: float, alert_ms: float, output_ms: float) -> dict:
    """One frame's stage times (``alert`` only for flagged frames, ``capture_age`` for live sources), appended
    to their windows and returned; ``decision`` is the capture-to-decision latency (from the buffer's capture
    time, or the file's write, when known; else from its arrival in the queue)."""
    stage = {"queue": fr.queue_ms, "preprocess": d.ms["preprocess"], "handoff": d.ms["handoff"],
             "inference": d.ms["inference"], "postprocess": d.ms["postprocess"] + render_ms, "output": output_ms,
             # the loop thread's own work per frame (preprocessing runs ahead in the prefetch thread)
             "frame": d.ms["inference"] + d.ms["postprocess"] + render_ms + alert_ms + output_ms}
    if d.flagged:
        stage["alert"] = alert_ms
    if fr.age_ms is not None:
        stage["capture_age"] = fr.age_ms
    stage["decision"] = (fr.age_ms if fr.age_ms is not None else fr.queue_ms) + sum(d.ms.values())
    for k, v in stage.items():
        times[k].append(v)
    return stage


def _operating(norm: dict, n: int, flagged: int) -> dict:
    """The flag rate of this run beside what the threshold was set for (a rate far above the expected
    false rejects on a line of mostly good parts is drift, or a real run of defects)."""
    op = norm.get("operating_point") or {}
    return {"rule": norm.get("rule"), "policy": norm.get("policy"), "flag_rate": flagged / n if n else None,
            "expected_false_reject": op.get("frr_estimate"), "expected_false_reject_interval": op.get("frr_interval")}


def _summary(req, b, key, backend, categories, policies, jetson, caps, stats, output, n, end_reason, wall, times,
             loop_ms, events_path, decisions, uris, per) -> dict:
    stages = {k: _pct(v) for k, v in times.items() if len(v)}
    if loop_ms[0] > 0:  # share of the workers' time between decisions not spent in inference (a camera: waits too)
        overhead = max(0.0, 1 - loop_ms[1] / (req.workers * loop_ms[0]))
    else:  # one frame only: its own work outside inference
        frame_mean = stages.get("frame", {}).get("mean_ms", 0.0)
        overhead = (1 - stages["inference"]["mean_ms"] / frame_mean) if frame_mean else None
    sources = [{"source": u, "category": c, "policy": pol, "frames": p["frames"], "flagged": p["flagged"],
                "produced": cap.stats.produced, "dropped": cap.stats.dropped, "skipped": cap.stats.skipped,
                "reconnects": cap.stats.reconnects, "pipeline": cap.description,
                "operating_point": _operating(b.meta["normalization"][c], p["frames"], p["flagged"])}
               for u, c, pol, cap, p in zip(uris, categories, policies, caps, per, strict=True)]
    one = len(uris) == 1
    return {"source": uris[0] if one else uris, "output": req.output, "bundle": str(b.path), "precision": key,
            "backend": backend, "workers": req.workers, "category": categories[0] if one else categories,
            "policy": policies[0] if one else policies, "scale": req.scale,
            "operating_point": sources[0]["operating_point"] if one else None,
            "platform": "jetson" if jetson else "desktop",
            "pipelines": {"source": caps[0].description if one else [c.description for c in caps],
                          "output": output.description},
            "frames": n, "flagged": _flagged(per), "produced": sum(c.stats.produced for c in caps),
            "dropped": stats.dropped, "skipped": [x for c in caps for x in c.stats.skipped],
            "reconnects": stats.reconnects,
            "reconnect_events": [e for c in caps for e in c.stats.events], "end": end_reason,
            "wall_s": wall, "fps": n / wall if wall > 0 else 0.0, "stages": stages,
            "pipeline_overhead_share": overhead,
            "events_file": str(events_path), "sources": sources, "decisions_tail": list(decisions)}


class _Rate:
    """Frames per second over the last two seconds."""

    def __init__(self):
        self.recent: list[float] = []
        self.value = 0.0

    def tick(self) -> float:
        now = time.monotonic()
        self.recent = [t for t in self.recent if now - t < 2.0] + [now]
        r = self.recent
        self.value = (len(r) - 1) / max(r[-1] - r[0], 1e-6) if len(r) > 1 else 0.0
        return self.value


def _no_frames(uri: str, scheme: str, stats, wall: float, end: str) -> str:
    if stats.skipped:
        names = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in stats.skipped[:3])
        return (f"source {uri}: no readable image ({len(stats.skipped)} skipped: {names}); replace or remove "
                f"the files")
    why = stats.last_problem or "nothing arrived"
    fix = ("check the camera, its cable or network and the URI (edgead doctor); the timeout is "
           "--first-frame-timeout" if scheme in ("csi", "v4l2", "rtsp", "test") else "check the file")
    return f"source {uri}: no frame in {wall:.1f} s ({why}; ended by {end}); {fix}"


class _LiveView:
    """fps, counters and latency on the console (rich), refreshed a few times a second."""

    def __init__(self, quiet: bool):
        self.live = None
        self._last = 0.0
        if not quiet:
            from rich.live import Live

            from edgead.progress import console

            self.live = Live(console=console, refresh_per_second=4, transient=False)
            self.live.start()

    def update(self, n, flagged, fps, stats, times, over_budget: int = 0, budget_ms: float | None = None) -> None:
        if self.live is None or time.monotonic() - self._last < 0.25:
            return
        self._last = time.monotonic()
        inf, frame = times["inference"].last(50), times["frame"].last(50)
        # up to two buffers may sit in the appsink queue mid-run: not drops (yet)
        self.live.update(f"frames {n}  flagged {flagged}  fps {fps:.1f}  dropped {max(0, stats.dropped - 2)}  "
                         f"reconnects {stats.reconnects}  inference p50 {np.median(inf) if len(inf) else 0:.1f} ms  "
                         f"frame p50 {np.median(frame) if len(frame) else 0:.1f} ms"
                         + (f"  over {budget_ms:g} ms budget {over_budget}" if budget_ms is not None else ""))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
