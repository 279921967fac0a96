"""Prometheus metrics of a live run (``edgead inspect --metrics :9108``), served by prometheus-client on
its own registry and thread.

The loop pays for two counter increments and a few histogram observations per frame; everything the
run already counts elsewhere (drops, reconnects, alert queue, notifier deliveries) is read at scrape
time by a collector, so it costs the hot path nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from edgead.errors import EdgeadError

STAGE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
EXPORTED_STAGES = ("preprocess", "inference", "postprocess", "alert", "output", "decision")


def parse_address(text: str) -> tuple[str, int]:
    """``:9108`` (every interface), ``127.0.0.1:9108`` or ``9108`` -> (address, port)."""
    m = re.fullmatch(r"(?:(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})", text.strip())
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise EdgeadError(f"--metrics {text!r}: expected [ADDRESS]:PORT, e.g. :9108 (every interface) or "
                          f"127.0.0.1:9108")
    return (m.group(1) or "0.0.0.0").strip("[]"), int(m.group(2))


class Telemetry:
    """``frame(source, flagged, stage_ms)`` per decision; ``state()`` (a callable the run supplies) gives the
    counters read at scrape time: ``dropped``/``reconnects`` per source, ``over_budget``, ``fps``,
    ``alerts`` (the alert writer's counts) and ``notify`` (one summary per relay)."""

    def __init__(self, address: str, identity: dict[str, str], sources: list[str], state: Callable[[], dict]):
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
        except ImportError:
            raise EdgeadError("--metrics needs prometheus-client: pip install prometheus-client (make setup "
                              "installs it)") from None
        host, port = parse_address(address)
        self.registry = CollectorRegistry()
        Info("edgead_bundle", "The bundle, graph and backend this run inspects with",
             registry=self.registry).info(identity)
        self.frames = Counter("edgead_frames", "Frames inspected", ["source"], registry=self.registry)
        self.flagged = Counter("edgead_flagged", "Frames flagged as defects", ["source"], registry=self.registry)
        self.stages = Histogram("edgead_stage_seconds", "Per-frame time of each stage (decision: capture to "
                                "decision)", ["stage"], buckets=STAGE_BUCKETS_S, registry=self.registry)
        for s in sources:  # every series exists from the first scrape, at 0
            self.frames.labels(s)
            self.flagged.labels(s)
        self._stage = {k: self.stages.labels(k) for k in EXPORTED_STAGES}
        self.registry.register(_Scraped(state))
        try:
            self.server, self.thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise EdgeadError(f"--metrics {address}: cannot listen on {host}:{port} ({e.strerror}); choose another "
                              f"port") from None
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.server_port}/metrics"

    def frame(self, source: str, flagged: bool, stage_ms: dict[str, float]) -> None:
        self.frames.labels(source).inc()
        if flagged:
            self.flagged.labels(source).inc()
        for k, v in stage_ms.items():
            if k in self._stage:
                self._stage[k].observe(v / 1e3)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Scraped:
    """Counters the run keeps anyway, read when Prometheus scrapes."""

    def __init__(self, state: Callable[[], dict]):
        self.state = state

    def describe(self):
        return []  # no fixed names up front: collected only at scrape time

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.state()
        dropped = CounterMetricFamily("edgead_frames_dropped", "Frames the source dropped (latest policy)",
                                      labels=["source"])
        reconnects = CounterMetricFamily("edgead_source_reconnects", "Source reconnects", labels=["source"])
        for src, s in st["sources"].items():
            dropped.add_metric([src], s["dropped"])
            reconnects.add_metric([src], s["reconnects"])
        yield dropped
        yield reconnects
        yield GaugeMetricFamily("edgead_fps", "Decisions per second over the last two seconds", value=st["fps"])
        yield CounterMetricFamily("edgead_frames_over_budget", "Frames whose capture-to-decision latency exceeded "
                                  "--latency-budget-ms", value=st["over_budget"])
        a = st["alerts"]
        yield CounterMetricFamily("edgead_alerts_written", "Alerts written to events.jsonl", value=a["written"])
        yield CounterMetricFamily("edgead_alert_errors", "Alerts that could not be written (disk)", value=a["errors"])
        yield GaugeMetricFamily("edgead_alert_queue_depth", "Alerts waiting for the writer thread", value=a["depth"])
        yield CounterMetricFamily("edgead_alert_images_skipped", "Alerts written without images (disk under "
                                  "--alerts-min-free-mb)", value=a["images_skipped"])
        yield CounterMetricFamily("edgead_alert_images_pruned", "Oldest alert image pairs deleted (--alerts-max-mb)",
                                  value=a["images_pruned"])
        yield CounterMetricFamily("edgead_events_rotated", "events.jsonl rotations (--events-max-mb)",
                                  value=a["events_rotated"])
        yield CounterMetricFamily("edgead_events_reopened", "events.jsonl found moved or deleted and started again",
                                  value=a["events_reopened"])
        yield CounterMetricFamily("edgead_alert_folder_recreated", "Alerts folder found deleted and made again",
                                  value=a["folder_recreated"])
        fams = {k: CounterMetricFamily(f"edgead_alerts_{k}", h, labels=["notifier"]) for k, h in
                (("delivered", "Alerts a notifier confirmed"), ("retried", "Alerts sent again after a lost "
                 "confirmation"), ("expired", "Alerts older than max_age, not sent"),
                 ("files_gone", "Rotated events files deleted before this notifier delivered them"))}
        fams["notifier_connects"] = CounterMetricFamily("edgead_notifier_connects", "Notifier (re)connects",
                                                        labels=["notifier"])
        pending = GaugeMetricFamily("edgead_alerts_pending", "Alerts in events.jsonl not yet delivered",
                                    labels=["notifier"])
        up = GaugeMetricFamily("edgead_notifier_up", "1 while the notifier is connected", labels=["notifier"])
        for n in st["notify"]:
            for k in ("delivered", "retried", "expired", "files_gone"):
                fams[k].add_metric([n["notify"]], n[k])
            fams["notifier_connects"].add_metric([n["notify"]], n["connects"])
            pending.add_metric([n["notify"]], n["pending"])
            up.add_metric([n["notify"]], float(n["connected"]))
        yield from fams.values()
        yield pending
        yield up
