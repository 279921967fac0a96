"""Frame sources behind one interface (jetson-utils' videoSource is the model): ``start``, ``read``,
``stop``, ``stats`` and ``description``. :class:`GstSource` runs a GStreamer capture pipeline (cameras,
RTSP, video files, the test pattern) with policies, timestamps, drop counting and reconnects;
:class:`ImageFolderSource` reads a folder of stills with edgead's one image reader and the bundle's own
preprocessing, so ``images://`` sees exactly the pixels that eval and verify saw, and a damaged file is
named, counted and skipped instead of ending the run.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgead.data.image import read_image
from edgead.data.mvtec import image_files
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.live.gst import gst
from edgead.live.pipelines import Target, build, source_pipeline
from edgead.live.uri import Uri


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
    produced: int = 0  # buffers that reached the appsink tap (images: files tried)
    delivered: int = 0
    reconnects: int = 0
    events: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # unreadable stills: {"file", "reason"}
    last_problem: str | None = None

    @property
    def dropped(self) -> int:
        return max(0, self.produced - self.delivered - len(self.skipped))


def default_policy(uri: Uri) -> str:
    return "every" if uri.scheme in ("file", "images") else "latest"


class Source:
    """What the inspection loop needs of any source."""

    description: str
    stats: CaptureStats
    idle_ok: bool = False  # no frame for a long time is normal (a watched folder), not a dead source

    def start(self) -> None: ...

    def read(self, timeout_s: float = 0.5) -> Frame | None:
        """The next frame, or None when none arrived in ``timeout_s``; raises EndOfStream at the end."""
        raise NotImplementedError

    def stop(self) -> None: ...

    def interrupt(self) -> None:
        """From another thread: stop any wait (a reconnect back-off) so the loop can end."""


def open_source(uri: Uri, target: Target, pre: Preprocess, policy: str, stall_s: float = 5.0,
                log: Callable[[str], None] = print) -> Source:
    """The source class of a URI's kind (``SOURCES``)."""
    if uri.scheme == "images":
        return ImageFolderSource(uri, pre, log)
    return SOURCES[uri.scheme](uri, target, policy, stall_s=stall_s, log=log)


class ImageFolderSource(Source):
    """``images://DIR``: every still in name order, decoded and resized exactly as offline.

    ``?watch=1``: the folder is polled and the run keeps going; each file is inspected once, in arrival
    order (modification time, then name), when it is complete: its size and modification time held still
    for ``settle`` ms (default 300), or it appeared under its final name by a rename (hidden files and
    other suffixes, e.g. ``part.png.tmp``, are never read). Files already there at start are inspected
    first. A file that still does not decode is named, counted and skipped."""

    POLL_S = 0.05

    def __init__(self, uri: Uri, pre: Preprocess, log: Callable[[str], None] = print):
        self.uri, self.pre, self.log = uri, pre, log
        self.root = root = Path(uri.location)
        if not root.is_dir():
            raise EdgeadError(f"{root}: no such folder; images:// takes a folder of stills (png, jpg, bmp, tif)")
        self.watch = bool(uri.opt("watch", 0))
        self.settle_s = uri.int_opt("settle", 300) / 1e3
        self.idle_ok = self.watch  # a watched folder may stay empty for hours
        self.stats = CaptureStats()
        self._next = 0
        if self.watch:
            self.files: list[Path] = []
            self._pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
            self._done: set[str] = set()
            self.description = f"{root}/* (watched: each new still once, settled {self.settle_s * 1e3:.0f} ms)"
            return
        self.files = image_files(root)
        if not self.files:
            raise EdgeadError(f"{root}: no .png, .jpg, .bmp or .tif images; put the stills there or choose another "
                              f"folder, or watch it for new ones with images://{root}?watch=1")
        self.description = f"{root}/* ({len(self.files)} stills; edgead's image reader and the bundle's resize)"

    def read(self, timeout_s: float = 0.5) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while True:
            while self._next < len(self.files):
                p = self.files[self._next]
                self._next += 1
                frame = self._decode(p)
                if frame is not None:
                    return frame
            if not self.watch:
                raise EndOfStream
            self._poll()
            if self._next < len(self.files):
                continue
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.POLL_S)

    def _poll(self) -> None:
        """Move settled new files to the queue, in arrival order."""
        now = time.monotonic()
        ready = []
        names = set()
        for p in image_files(self.root):
            names.add(p.name)
            if p.name in self._done:
                continue
            try:
                st = p.stat()
            except OSError:  # moved away between listing and stat
                continue
            seen = self._pending.get(p.name)
            if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                self._pending[p.name] = (st.st_size, st.st_mtime_ns, now)
            elif st.st_size > 0 and now - seen[2] >= self.settle_s:
                ready.append((st.st_mtime_ns, p.name, p))
        for _, name, p in sorted(ready):
            del self._pending[name]
            self._done.add(name)
            self.files.append(p)
        self._done &= names  # files moved away can be forgotten (a new file may reuse the name)
        for gone in set(self._pending) - names:
            del self._pending[gone]

    def _decode(self, p: Path) -> Frame | None:
        self.stats.produced += 1
        t0 = time.perf_counter()
        try:
            rgb = np.asarray(self.pre.resize_image(read_image(p)))
        except EdgeadError as e:
            reason = str(e).removeprefix(f"{p}: ")
            self.stats.skipped.append({"file": str(p), "reason": reason})
            self.stats.last_problem = f"{p.name}: {reason}"
            self.log(f"skipped {p}: {reason}")
            return None
        self.stats.delivered += 1
        age = None
        if self.watch:
            try:
                age = (time.time_ns() - p.stat().st_mtime_ns) / 1e6  # written -> decoded
            except OSError:
                pass
        return Frame(rgb, self.stats.delivered, None, age, (time.perf_counter() - t0) * 1e3, p.name)


class GstSource(Source):
    """A capture pipeline per URI; live sources are rebuilt with back-off on error, EOS or stall."""

    live = True  # a camera: reconnected on error, end of stream or stall; capture age measured

    def __init__(self, uri: Uri, target: Target, policy: str, stall_s: float = 5.0,
                 log: Callable[[str], None] = print, max_backoff_s: float = 8.0):
        self.uri, self.target, self.policy = uri, target, policy
        self.stall_s, self.log, self.max_backoff_s = stall_s, log, max_backoff_s
        self.chain = source_pipeline(uri, target, policy)
        self.description = str(self.chain)
        self.stats = CaptureStats()
        self.pipe = None
        self._arrivals: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_frame = time.monotonic()
        self._backoff = 0.5

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        Gst, _ = gst()
        self.pipe = build(self.chain, f"source {self.uri.text}")
        self.sink = self.pipe.get_by_name("sink")
        self.pipe.get_by_name("tap").connect("handoff", self._on_handoff)
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            why = self._bus_error() or "the pipeline does not start"
            if not self.live:
                self._teardown()
                raise EdgeadError(f"source {self.uri.text}: {why}; run edgead doctor")
            self.stats.last_problem = why
        self._last_frame = time.monotonic()

    def _bus_error(self) -> str | None:
        Gst, _ = gst()
        msg = self.pipe.get_bus().pop_filtered(Gst.MessageType.ERROR) if self.pipe is not None else None
        return msg.parse_error()[0].message if msg is not None else None

    def _on_handoff(self, _identity, buf) -> None:
        with self._lock:
            self.stats.produced += 1
            self._arrivals[int(buf.pts)] = time.monotonic_ns()
            while len(self._arrivals) > 256:
                self._arrivals.popitem(last=False)

    def _teardown(self) -> None:
        Gst, _ = gst()
        if self.pipe is not None:
            self.pipe.set_state(Gst.State.NULL)
            self.pipe = None

    def stop(self) -> None:
        """EOS first (a Jetson camera daemon needs a clean end), then NULL."""
        self._stop.set()
        if self.pipe is None:
            return
        Gst, _ = gst()
        if self.stats.produced:  # a pipeline that never ran has nothing to finish
            self.pipe.send_event(Gst.Event.new_eos())
            self.pipe.get_bus().timed_pop_filtered(2 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        self._teardown()

    def interrupt(self) -> None:
        """From another thread: stop waiting for a reconnect."""
        self._stop.set()

    # -- frames ----------------------------------------------------------------------------------
    def read(self, timeout_s: float = 0.5) -> Frame | None:
        Gst, GstVideo = gst()
        if self.pipe is None:
            self._reconnect("pipeline down")
            return None
        sample = self.sink.emit("try-pull-sample", int(timeout_s * Gst.SECOND))
        if sample is None:
            self._check_bus()
            if self.live and time.monotonic() - self._last_frame > self.stall_s:
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
        if self.live and pts is not None:
            clock = self.pipe.get_clock()
            if clock is not None:
                age = (clock.get_time() - self.pipe.get_base_time() - pts) / 1e6
        self.stats.delivered += 1
        self._last_frame = time.monotonic()
        self._backoff = 0.5
        return Frame(rgb, self.stats.delivered, pts, age, (now - arrived) / 1e6)

    def _check_bus(self) -> None:
        Gst, _ = gst()
        msg = self.pipe.get_bus().pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return
        if msg.type == Gst.MessageType.EOS:
            if self.live:
                self._reconnect("end of stream from a live source")
                return
            raise EndOfStream
        err, _debug = msg.parse_error()
        if self.live:
            self._reconnect(f"error: {err.message}")
            return
        raise EdgeadError(f"source {self.uri.text}: {err.message}")

    def _reconnect(self, why: str) -> None:
        """Tear down, wait (exponential back-off, interruptible), rebuild; counted and logged."""
        self._teardown()
        self.stats.reconnects += 1
        self.stats.last_problem = why
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


class V4l2Source(GstSource):
    """A USB/V4L2 camera: the device must exist before the pipeline is built."""

    def __init__(self, uri: Uri, *args, **kwargs):
        if not os.path.exists(uri.location):
            raise EdgeadError(f"{uri.location}: no such camera device; check the cable and v4l2-ctl --list-devices "
                              f"(edgead doctor lists the devices it sees)")
        super().__init__(uri, *args, **kwargs)


class VideoFileSource(GstSource):
    """A recording: played once to its end (no reconnects); the file must exist."""

    live = False

    def __init__(self, uri: Uri, *args, **kwargs):
        if not Path(uri.location).is_file():
            raise EdgeadError(f"{uri.location}: no such video file; check the path in {uri.text}")
        super().__init__(uri, *args, **kwargs)


# URI scheme -> source class (images:// is ImageFolderSource: it needs the bundle's preprocessing)
SOURCES: dict[str, type[GstSource]] = {"csi": GstSource, "v4l2": V4l2Source, "rtsp": GstSource, "test": GstSource,
                                       "file": VideoFileSource}
