"""Outputs named by URI: display, video file, RTSP server (appsrc pipelines), flagged-image folder, none."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgead.errors import EdgeadError
from edgead.live.alerts import save_png
from edgead.live.gst import gst
from edgead.live.pipelines import Target, build, sink_pipeline
from edgead.live.uri import Uri


class Output:
    """Base: ``push(rgb, flagged, name)`` per frame, ``close()`` once; ``wants(flagged)`` says whether a
    frame needs its overlay drawn at all (none: never; images://: flagged frames only)."""

    description: str | None = None

    def wants(self, flagged: bool) -> bool:
        return True

    def push(self, rgb: np.ndarray, flagged: bool, name: str) -> None: ...

    def close(self) -> None: ...


class NoOutput(Output):
    def wants(self, flagged: bool) -> bool:
        return False


class ImagesOutput(Output):
    """Flagged frames only, as PNGs (temp name, then rename)."""

    def __init__(self, uri: Uri):
        self.root = Path(uri.location)
        self.root.mkdir(parents=True, exist_ok=True)
        self.description = f"flagged frames -> {self.root}/*.png"

    def wants(self, flagged: bool) -> bool:
        return flagged

    def push(self, rgb: np.ndarray, flagged: bool, name: str) -> None:
        if flagged:
            save_png(self.root / f"{name}.png", rgb)


class PipelineOutput(Output):
    """display:// and file://: frames pushed into ``appsrc name=out``; EOS on close so files are finalised."""

    def __init__(self, uri: Uri, target: Target, fps: int):
        Gst, _ = gst()
        if uri.scheme == "file" and not Path(uri.location).parent.is_dir():
            raise EdgeadError(f"output {uri.text}: folder {Path(uri.location).parent} does not exist; create it or "
                              f"choose another path")
        chain = sink_pipeline(uri, target, fps)
        self.description = str(chain)
        self.pipe = build(chain, f"output {uri.text}")
        self.src = self.pipe.get_by_name("out")
        self.uri = uri
        if self.pipe.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise EdgeadError(f"output {uri.text}: the pipeline does not start (no display? use file:// or none)")

    def push(self, rgb: np.ndarray, flagged: bool, name: str) -> None:
        Gst, _ = gst()
        self.src.emit("push-buffer", Gst.Buffer.new_wrapped(np.ascontiguousarray(rgb).tobytes()))
        msg = self.pipe.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, _ = msg.parse_error()
            raise EdgeadError(f"output {self.uri.text}: {err.message}")

    def close(self) -> None:
        Gst, _ = gst()
        self.src.emit("end-of-stream")
        self.pipe.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        self.pipe.set_state(Gst.State.NULL)


class RtspOutput(Output):
    """rtsp://:PORT/MOUNT served with gst-rtsp-server; every client shares one live appsrc."""

    def __init__(self, uri: Uri, target: Target, fps: int):
        Gst, _ = gst()
        try:
            import gi

            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GLib, GstRtspServer
        except (ImportError, ValueError):
            raise EdgeadError("rtsp:// output needs gst-rtsp-server: apt-get install gir1.2-gst-rtsp-server-1.0 "
                              "gstreamer1.0-rtsp") from None
        # gst-rtsp-server takes a description; every value in it is edgead's own or a validated number
        self.description = str(sink_pipeline(uri, target, fps))
        self.port, self.mount = str(uri.int_opt("port", 8554)), uri.location or "/edgead"
        self.server = GstRtspServer.RTSPServer()
        self.server.set_service(self.port)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( {self.description} )")
        factory.set_shared(True)
        factory.connect("media-configure", self._configure)
        self.server.get_mount_points().add_factory(self.mount, factory)
        self.loop = GLib.MainLoop()
        self.ctx = self.loop.get_context()
        self.server_id = self.server.attach(None)
        self.appsrc = None
        self._thread = threading.Thread(target=self.loop.run, daemon=True)
        self._thread.start()
        self.url = f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def _configure(self, _factory, media) -> None:
        self.appsrc = media.get_element().get_child_by_name("out")

    def push(self, rgb: np.ndarray, flagged: bool, name: str) -> None:
        Gst, _ = gst()
        if self.appsrc is not None:  # frames are only encoded while a client watches
            self.appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(np.ascontiguousarray(rgb).tobytes()))

    def close(self) -> None:
        if self.appsrc is not None:
            self.appsrc.emit("end-of-stream")
        self.loop.quit()


def open_output(uri: Uri, target: Target, fps: int = 30) -> Output:
    if uri.scheme == "none":
        return NoOutput()
    if uri.scheme == "images":
        return ImagesOutput(uri)
    if uri.scheme == "rtsp":
        return RtspOutput(uri, target, fps)
    return PipelineOutput(uri, target, fps)
