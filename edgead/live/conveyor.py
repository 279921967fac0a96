"""A "conveyor" video from still images (lossless FFV1 in Matroska), for replaying a known sequence
of parts through the live pipeline and comparing its decisions with offline ones exactly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from edgead.errors import EdgeadError
from edgead.live.gst import gst
from edgead.live.pipelines import Chain, build, caps, el, out_caps


def make_video(frames: list[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write RGB frames (same size, uint8) losslessly to ``path`` (.mkv); temp file, then rename."""
    Gst, _ = gst()
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise EdgeadError(f"{path}: the conveyor video is lossless FFV1 in Matroska; name it .mkv")
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".mkv", dir=path.parent)
    os.close(fd)
    pipe = build(Chain((el("appsrc", "src", format="time", caps=out_caps(w, h, fps)), el("videoconvert"),
                        caps("video/x-raw", format="BGRx"), el("avenc_ffv1"), el("matroskamux"),
                        el("filesink", location=tmp))), f"conveyor {path}")
    src = pipe.get_by_name("src")
    pipe.set_state(Gst.State.PLAYING)
    dur = Gst.SECOND // fps
    try:
        for i, f in enumerate(frames):
            if f.shape[:2] != (h, w):
                raise EdgeadError(f"frame {i}: size {f.shape[:2]} differs from the first frame's {(h, w)}")
            buf = Gst.Buffer.new_wrapped(np.ascontiguousarray(f[:, :, :3], np.uint8).tobytes())
            buf.pts, buf.duration = i * dur, dur
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")
        msg = pipe.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        if msg is None or msg.type == Gst.MessageType.ERROR:
            why = msg.parse_error()[0].message if msg else "timeout"
            raise EdgeadError(f"{path}: writing the video failed ({why})")
    except BaseException:
        pipe.set_state(Gst.State.NULL)
        Path(tmp).unlink(missing_ok=True)
        raise
    pipe.set_state(Gst.State.NULL)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
    os.replace(tmp, path)
    return path
