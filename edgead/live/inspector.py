"""The per-frame work of live inspection, apart from the loop: ``Inspector.prepare(frame)`` then
``decide(prepared) -> Decision``
(the bundle's preprocessing, the engine, the shared decision rule) and ``AlertWriter`` (frame and
heatmap PNGs by temp name and rename, then one fsynced event line)."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgead.backends import Backend
from edgead.data.preprocess import Preprocess
from edgead.decision import THRESHOLD, Normalization
from edgead.live.source import Frame
from edgead.visual import colorize, overlay


@dataclass
class Decision:
    frame: Frame
    raw: float  # raw image score from the graph
    score: float  # normalised (1.0 = threshold)
    flagged: bool
    rgb: np.ndarray  # the model-size image that was inspected
    nmap: np.ndarray  # normalised anomaly map
    ms: dict[str, float] = field(default_factory=dict)  # preprocess, inference, postprocess

    @property
    def stem(self) -> str:
        return Path(self.frame.name).stem if self.frame.name else f"frame{self.frame.number:07d}"


@dataclass
class Prepared:
    frame: Frame
    rgb: np.ndarray  # model-size RGB
    x: np.ndarray  # (1, 3, H, W) float32, the engine's input
    preprocess_ms: float
    ready: float  # perf_counter when preprocessing ended


class Inspector:
    """One bundle graph, one category: frames in, decisions out."""

    def __init__(self, engine: Backend, pre: Preprocess, norm: Normalization, category: str):
        self.engine, self.pre, self.norm, self.category = engine, pre, norm, category

    def prepare(self, fr: Frame) -> Prepared:
        """The bundle's preprocessing of one frame (any size: the bundle's own resize)."""
        t0 = time.perf_counter()
        pre = self.pre
        rgb = fr.rgb if fr.rgb.shape[:2] == (pre.height, pre.width) else np.asarray(
            pre.resize_image(Image.fromarray(fr.rgb)))
        x = pre.normalize(rgb)[None]
        t1 = time.perf_counter()
        return Prepared(fr, rgb, x, (t1 - t0) * 1e3, t1)

    def decide(self, p: Prepared) -> Decision:
        """Inference, post-processing and the shared decision rule on a prepared frame."""
        t1 = time.perf_counter()
        res = self.engine.run_batched(p.x)
        t2 = time.perf_counter()
        raw = float(res["score"][0])
        d = Decision(p.frame, raw, float(self.norm.score(raw)), bool(self.norm.decide(raw)), p.rgb,
                     self.norm.pixel(res["anomaly_map"][0, 0]))
        d.ms = {"preprocess": p.preprocess_ms, "handoff": (t1 - p.ready) * 1e3, "inference": (t2 - t1) * 1e3,
                "postprocess": (time.perf_counter() - t2) * 1e3}
        return d

    def render(self, d: Decision, fps: float) -> np.ndarray:
        """The output frame: heatmap overlay and a status strip."""
        vis = Image.fromarray(overlay(d.rgb, d.nmap))
        draw = ImageDraw.Draw(vis)
        text = f"{'DEFECT' if d.flagged else 'good'} {d.score:.2f}  {self.category}  {fps:.1f} fps"
        draw.rectangle((0, 0, vis.width, 14), fill=(160, 0, 0) if d.flagged else (0, 110, 0))
        draw.text((3, 1), text, fill=(255, 255, 255))
        return np.asarray(vis)


class AlertWriter:
    """Durable alerts off the hot path: ``write`` queues a flagged decision (bounded queue) and a writer
    thread saves frame and heatmap PNGs (temp name, rename) before it appends and fsyncs the event line
    that names them, so after a crash every line is valid and every file it names exists. A full queue
    makes ``write`` wait (counted, never a lost alert); ``close`` drains the queue.

    A box that runs for months must not fill its disk: with less than ``min_free_mb`` free, an alert's
    line is still written (``frame_path``/``heatmap_path`` null, ``images_skipped`` says why) but no
    images; with ``max_mb``, the oldest image pairs in the folder are deleted once the folder's PNGs pass
    that size (their lines stay; the newest pair is never deleted)."""

    def __init__(self, folder: Path, events, key: str, backend: str, queue_size: int = 64,
                 on_written: list | None = None, *, min_free_mb: float, max_mb: float | None = None):
        self.folder, self.events = Path(folder), events
        self.on_written = list(on_written or [])  # called after each event line is fsynced (notifier relays)
        self.fields = {"threshold": THRESHOLD, "precision": key, "backend": backend}
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stats = {"queued": 0, "written": 0, "queue_full_waits": 0, "max_depth": 0, "errors": 0,
                      "images_skipped": 0, "images_pruned": 0, "folder_recreated": 0}
        self.error: str | None = None
        self.min_free, self.max_bytes = min_free_mb * 1e6, None if max_mb is None else max_mb * 1e6
        # (stem, bytes) of the image pairs in the folder, oldest first
        self._pairs: deque[tuple[str, int]] = deque(self._existing() if max_mb is not None else [])
        self._bytes = sum(n for _, n in self._pairs)
        self._thread = threading.Thread(target=self._run, name="edgead-alerts", daemon=True)
        self._thread.start()

    def write(self, d: Decision, source: str, category: str, norm: Normalization) -> None:
        """Queue one alert: the frame's source URI and product, and the raw threshold it was decided at."""
        stamp = time.time()
        tag = {"source": source, "category": category, "raw_threshold": norm.threshold}
        job = (d.frame.number, d.frame.name, d.stem, d.score, d.raw, d.rgb, d.nmap, stamp, tag)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.stats["queue_full_waits"] += 1
            self.queue.put(job)
        self.stats["queued"] += 1
        self.stats["max_depth"] = max(self.stats["max_depth"], self.queue.qsize())

    def _existing(self) -> list[tuple[str, int]]:
        """Image pairs already in the folder (earlier runs), oldest first: stems start with their local time."""
        sizes: dict[str, int] = {}
        for p in self.folder.glob("*.png"):
            stem = p.name.removesuffix(".frame.png").removesuffix(".heatmap.png")
            if stem != p.name:
                try:
                    sizes[stem] = sizes.get(stem, 0) + p.stat().st_size
                except OSError:
                    continue
        return sorted(sizes.items())

    def _ensure_folder(self) -> None:
        """An alerts folder deleted while the run goes on (an operator's clean-up) is made again, its image
        accounting restarted, rather than every later alert failing."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._pairs.clear()
            self._bytes = 0
            self.stats["folder_recreated"] += 1

    def _prune(self) -> None:
        """Delete the oldest image pairs until the folder's PNGs fit ``max_mb`` (the newest pair stays)."""
        while self._bytes > self.max_bytes and len(self._pairs) > 1:
            stem, n = self._pairs.popleft()
            for suffix in (".frame.png", ".heatmap.png"):
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)
            self._bytes -= n
            self.stats["images_pruned"] += 1

    def _run(self) -> None:
        from edgead.live.alerts import save_png

        while True:
            job = self.queue.get()
            if job is None:
                return
            number, name, stem_name, score, raw, rgb, nmap, stamp, tag = job
            try:
                stem = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(stamp))}_{number:07d}_{stem_name}"
                fpath, hpath = self.folder / f"{stem}.frame.png", self.folder / f"{stem}.heatmap.png"
                images: dict = {"frame_path": str(fpath), "heatmap_path": str(hpath)}
                self._ensure_folder()
                free = shutil.disk_usage(self.folder).free
                if free < self.min_free:
                    images = {"frame_path": None, "heatmap_path": None,
                              "images_skipped": f"{free / 1e6:.0f} MB free in {self.folder}, under "
                                                f"{self.min_free / 1e6:.0f} MB (--alerts-min-free-mb)"}
                    self.stats["images_skipped"] += 1
                else:
                    save_png(fpath, rgb)
                    save_png(hpath, colorize(nmap))
                self.events.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp)),
                                    "unix": stamp, "frame": number, **tag, "name": name,
                                    "score": score, "raw_score": raw, **self.fields, **images})
                self.stats["written"] += 1
                if self.max_bytes is not None and images["frame_path"] is not None:
                    self._pairs.append((stem, fpath.stat().st_size + hpath.stat().st_size))
                    self._bytes += self._pairs[-1][1]
                    self._prune()
                for fn in self.on_written:
                    fn()
            except OSError as e:  # a full or read-only disk: counted and reported, the line is not written
                self.stats["errors"] += 1
                self.error = f"{type(e).__name__}: {e}"

    def close(self) -> dict:
        """Write every queued alert, then stop the thread; the counts for the summary."""
        if self._thread.is_alive():
            self.queue.put(None)
            self._thread.join()
        return dict(self.stats, last_error=self.error)
