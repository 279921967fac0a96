"""Frames from a source URI through an appsink: policies, timestamps, drop counting, reconnects."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgead.errors import EdgeadError
from edgead.live.gst import gst
from edgead.live.pipelines import Target, source_pipeline
from edgead.live.uri import Uri

LIVE = ("csi", "v4l2", "rtsp", "test")  # sources that are reconnected on error, EOS or stall
STILLS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class EndOfStream(Exception):
    """The source has no more frames (end of a file or image folder)."""


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8 at model size
    number: int  # 1-based, frames handed to the inspection loop
    pts_ns: int | None
    age_ms: float | None  # capture -> pulled, from the buffer timestamp (live sources)
    queue_ms: float  # arrival at the appsink -> pulled by Python
    name: str | None = None  # file name (images://) or None


@dataclass
class CaptureStats:
    produced: int = 0  # buffers that reached the appsink tap
    delivered: int = 0
    reconnects: int = 0
    events: list[dict] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return max(0, self.produced - self.delivered)


def default_policy(uri: Uri) -> str:
    return "every" if uri.scheme in ("file", "images") else "latest"


class Capture:
    def __init__(self, uri: Uri, target: Target, policy: str, stall_s: float = 5.0, fps: int = 10,
                 log: Callable[[str], None] = print, max_backoff_s: float = 8.0):
        self.uri, self.target, self.policy = uri, target, policy
        self.stall_s, self.fps, self.log, self.max_backoff_s = stall_s, fps, log, max_backoff_s
        self.description = source_pipeline(uri, target, policy)
        self.stats = CaptureStats()
        self.pipe = None
        self._arrivals: OrderedDict[int, int] = OrderedDict()
        self._names: dict[int, str] = {}
        self._files: list[Path] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._last_frame = time.monotonic()
        self._backoff = 0.5
        if uri.scheme == "images":
            self._files = self._list_images()
        if uri.scheme == "file" and not Path(uri.location).is_file():
            raise EdgeadError(f"{uri.location}: no such video file; check the path in {uri.text}")

    # -- lifecycle -----------------------------------------------------------------------------
    def _list_images(self) -> list[Path]:
        root = Path(self.uri.location)
        if not root.is_dir():
            raise EdgeadError(f"{root}: no such folder; images:// takes a folder of .png or .jpg stills")
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in STILLS)
        if not files:
            raise EdgeadError(f"{root}: no .png or .jpg images; put the stills there or choose another folder")
        kinds = {STILLS[p.suffix.lower()] for p in files}
        if len(kinds) > 1:
            raise EdgeadError(f"{root}: mixes PNG and JPEG stills; one folder per format")
        return files

    def start(self) -> None:
        Gst, _ = gst()
        try:
            self.pipe = Gst.parse_launch(self.description)
        except Exception as e:  # GLib.Error: a missing element or bad property
            raise EdgeadError(f"source {self.uri.text}: cannot build the pipeline ({e}); run edgead doctor") from None
        self.sink = self.pipe.get_by_name("sink")
        self.pipe.get_by_name("tap").connect("handoff", self._on_handoff)
        if self.uri.scheme == "images":
            src = self.pipe.get_by_name("imgsrc")
            src.set_property("caps", Gst.Caps.from_string(f"{STILLS[self._files[0].suffix.lower()]},"
                                                          f"framerate={self.fps}/1"))
            self._feeder = threading.Thread(target=self._feed, args=(src,), daemon=True)
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            if self.uri.scheme not in LIVE:
                raise EdgeadError(f"source {self.uri.text}: the pipeline does not start; run edgead doctor")
        if self._feeder is not None:
            self._feeder.start()
        self._last_frame = time.monotonic()

    def _feed(self, src) -> None:
        Gst, _ = gst()
        dur = Gst.SECOND // self.fps
        for i, p in enumerate(self._files):
            if self._stop.is_set():
                break
            buf = Gst.Buffer.new_wrapped(p.read_bytes())
            buf.pts, buf.duration = i * dur, dur
            self._names[i * dur] = p.name
            if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                break
        src.emit("end-of-stream")

    def _on_handoff(self, _identity, buf) -> None:
        with self._lock:
            self.stats.produced += 1
            self._arrivals[int(buf.pts)] = time.monotonic_ns()
            while len(self._arrivals) > 256:
                self._arrivals.popitem(last=False)

    def stop(self) -> None:
        """EOS first (a Jetson camera daemon needs a clean end), then NULL."""
        self._stop.set()
        if self.pipe is None:
            return
        Gst, _ = gst()
        self.pipe.send_event(Gst.Event.new_eos())
        self.pipe.get_bus().timed_pop_filtered(2 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        self.pipe.set_state(Gst.State.NULL)
        self.pipe = None

    # -- frames ----------------------------------------------------------------------------------
    def read(self, timeout_s: float = 0.5) -> Frame | None:
        """The next frame, or None when none arrived in ``timeout_s``; raises EndOfStream at the end."""
        Gst, GstVideo = gst()
        if self.pipe is None:
            self._reconnect("pipeline down")
            return None
        sample = self.sink.emit("try-pull-sample", int(timeout_s * Gst.SECOND))
        if sample is None:
            self._check_bus()
            if self.uri.scheme in LIVE and time.monotonic() - self._last_frame > self.stall_s:
                self._reconnect(f"no frame for {self.stall_s:g} s")
            return None
        now = time.monotonic_ns()
        buf, caps = sample.get_buffer(), sample.get_caps()
        info = GstVideo.VideoInfo.new_from_caps(caps)
        ok, m = buf.map(Gst.MapFlags.READ)
        if not ok:
            return None
        try:
            ch = int(info.finfo.pixel_stride[0])  # 3 for RGB, 4 for RGBA (Jetson VIC output)
            rows = np.ndarray((info.height, info.stride[0]), np.uint8, m.data)
            rgb = rows[:, : info.width * ch].reshape(info.height, info.width, ch)[:, :, :3].copy()
        finally:
            buf.unmap(m)
        pts = int(buf.pts) if buf.pts != Gst.CLOCK_TIME_NONE else None
        with self._lock:
            arrived = self._arrivals.pop(pts, now) if pts is not None else now
        age = None
        if self.uri.scheme in LIVE and pts is not None:
            clock = self.pipe.get_clock()
            if clock is not None:
                age = (clock.get_time() - self.pipe.get_base_time() - pts) / 1e6
        self.stats.delivered += 1
        self._last_frame = time.monotonic()
        self._backoff = 0.5
        return Frame(rgb, self.stats.delivered, pts, age, (now - arrived) / 1e6, self._names.get(pts))

    def _check_bus(self) -> None:
        Gst, _ = gst()
        msg = self.pipe.get_bus().pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return
        if msg.type == Gst.MessageType.EOS:
            if self.uri.scheme in LIVE:
                self._reconnect("end of stream from a live source")
                return
            raise EndOfStream
        err, _debug = msg.parse_error()
        if self.uri.scheme in LIVE:
            self._reconnect(f"error: {err.message}")
            return
        raise EdgeadError(f"source {self.uri.text}: {err.message}")

    def _reconnect(self, why: str) -> None:
        """Tear down, wait (exponential back-off, interruptible), rebuild; counted and logged."""
        Gst, _ = gst()
        if self.pipe is not None:
            self.pipe.set_state(Gst.State.NULL)
            self.pipe = None
        self.stats.reconnects += 1
        self.stats.events.append({"time": time.time(), "event": "reconnect", "reason": why,
                                  "backoff_s": self._backoff})
        self.log(f"source {self.uri.text}: {why}; reconnecting in {self._backoff:.1f} s "
                 f"(reconnect {self.stats.reconnects})")
        if self._stop.wait(self._backoff):
            return
        self._backoff = min(self.max_backoff_s, self._backoff * 2)
        with self._lock:
            self._arrivals.clear()
        self.start()
