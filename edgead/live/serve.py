"""Serve a video file (or the test pattern) as an RTSP camera on this machine, for trying a line
setup without a camera: ``python -m edgead.live.serve conveyor.mkv --port 8554 --mount /cam``.
Each client gets the file from its start, at its recorded rate, as H.264."""

from __future__ import annotations

import argparse
import signal
import sys


def launch_string(path: str | None, fps: int) -> str:
    from edgead.live.pipelines import el

    src = (f"{el('filesrc', location=path)} ! decodebin" if path
           else f"videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate={fps}/1")
    return (f"( {src} ! videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 "
            f"config-interval=1 )")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", help="video file (default: test pattern)")
    ap.add_argument("--port", default="8554")
    ap.add_argument("--mount", default="/cam")
    ap.add_argument("--fps", type=int, default=15)
    args = ap.parse_args(argv)
    from edgead.live.gst import gst

    gst()
    import gi

    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, GstRtspServer

    server = GstRtspServer.RTSPServer()
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_string(args.file, args.fps))
    server.get_mount_points().add_factory(args.mount, factory)
    server.attach(None)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print(f"serving rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
