"""GStreamer pipeline strings for each source and output URI, desktop and Jetson variants.

Scaling to the model size happens in the pipeline (``videoscale`` on the desktop, the VIC through
``nvvidconv`` on a Jetson), so only a model-sized frame reaches Python. ``add-borders=false`` makes
the scale a plain stretch, as the training preprocessing does. Frames reach Python through an
``appsink`` named ``sink`` behind an ``identity`` named ``tap`` (which counts what the source
delivered, so dropped frames can be counted); outputs are fed through an ``appsrc`` named ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgead.errors import EdgeadError
from edgead.live.uri import Uri

POLICIES = ("latest", "every")


@dataclass(frozen=True)
class Target:
    """What the pipeline must hand to Python, and where it runs."""
    width: int
    height: int
    jetson: bool = False
    nvenc: bool = False  # a hardware H.264 encoder (Orin Nano has none)


def appsink(policy: str, sync: bool = False) -> str:
    """``latest``: one-buffer queue that drops old frames (live lines). ``every``: no drops, back-pressure."""
    if policy not in POLICIES:
        raise EdgeadError(f"--policy {policy!r}: choose latest (live lines) or every (audit a recording)")
    sync_s = "true" if sync else "false"
    if policy == "latest":
        return f"appsink name=sink emit-signals=false max-buffers=1 drop=true sync={sync_s}"
    return f"appsink name=sink emit-signals=false max-buffers=2 drop=false sync={sync_s}"


def _scale(t: Target, nvmm_in: bool = False) -> str:
    """To model size in the pipeline: VIC on a Jetson (RGBA out), videoscale on the desktop (RGB out)."""
    if t.jetson:
        return f"nvvidconv ! video/x-raw,format=RGBA,width={t.width},height={t.height}"
    return (f"videoconvert ! videoscale add-borders=false ! "
            f"video/x-raw,format=RGB,width={t.width},height={t.height},pixel-aspect-ratio=1/1")


def source_pipeline(uri: Uri, t: Target, policy: str = "latest") -> str:
    """The capture pipeline string for a source URI (ends in ``identity name=tap ! appsink name=sink``)."""
    tail = f"identity name=tap signal-handoffs=true ! {appsink(policy, sync=False)}"
    w, h, fps = uri.int_opt("width", 1280), uri.int_opt("height", 720), uri.int_opt("fps", 30)
    s = uri.scheme
    if s == "csi":
        if not t.jetson:
            raise EdgeadError(f"source {uri.text}: csi:// needs a Jetson (nvarguscamerasrc); on this machine use "
                              f"v4l2://, rtsp://, file:// or test:// (or --platform jetson with --dry-run)")
        w, h = uri.int_opt("width", 1920), uri.int_opt("height", 1080)
        head = (f"nvarguscamerasrc sensor-id={uri.location} ! video/x-raw(memory:NVMM),width={w},height={h},"
                f"framerate={fps}/1,format=NV12 ! nvvidconv flip-method={uri.int_opt('flip', 0)} ! "
                f"video/x-raw,format=RGBA,width={t.width},height={t.height}")
        return f"{head} ! {tail}"
    if s == "v4l2":
        fmt = str(uri.opt("format", "yuy2")).lower()
        base = f"v4l2src device={uri.location} do-timestamp=true"
        if fmt in ("mjpeg", "jpeg", "mjpg"):
            caps = f"image/jpeg,width={w},height={h},framerate={fps}/1"
            dec = "jpegparse ! nvv4l2decoder mjpeg=1" if t.jetson else "jpegdec"
            head = f"{base} io-mode=2 ! {caps} ! {dec}" if t.jetson else f"{base} ! {caps} ! {dec}"
        elif fmt in ("yuy2", "yuyv", "raw"):
            head = f"{base} ! video/x-raw,format=YUY2,width={w},height={h},framerate={fps}/1"
        else:
            raise EdgeadError(f"source {uri.text}: format={fmt!r}; choose yuy2 or mjpeg")
        return f"{head} ! {_scale(t)} ! {tail}"
    if s == "rtsp":
        codec = str(uri.opt("codec", "h264")).lower()
        if codec not in ("h264", "h265"):
            raise EdgeadError(f"source {uri.text}: codec={codec!r}; choose h264 or h265")
        drop = " drop-on-latency=true" if policy == "latest" else ""
        dec = "nvv4l2decoder enable-max-performance=1" if t.jetson else f"avdec_{codec}"
        head = (f"rtspsrc location={uri.location} latency={uri.int_opt('latency', 200)}{drop} ! "
                f"rtp{codec}depay ! {codec}parse ! {dec}")
        return f"{head} ! {_scale(t)} ! {tail}"
    if s == "file":
        p = Path(uri.location)
        # decodebin picks the demuxer and decoder (nvv4l2decoder on a Jetson by rank); sync in latest
        # mode replays at the recorded rate, as a live camera would deliver it.
        sink = appsink(policy, sync=(policy == "latest"))
        return f"filesrc location={p} ! decodebin ! {_scale(t)} ! identity name=tap signal-handoffs=true ! {sink}"
    if s == "images":
        return (f"appsrc name=imgsrc format=time block=true max-bytes=0 ! decodebin ! {_scale(t)} ! {tail}")
    if s == "test":
        pattern = uri.opt("pattern", "ball")
        head = (f"videotestsrc is-live=true pattern={pattern} ! "
                f"video/x-raw,width={uri.int_opt('width', 640)},height={uri.int_opt('height', 480)},"
                f"framerate={fps}/1")
        return f"{head} ! {_scale(t)} ! {tail}"
    raise EdgeadError(f"source {uri.text}: not a source URI")


def out_caps(width: int, height: int, fps: int) -> str:
    return f"video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1"


def encoder(t: Target) -> str:
    """H.264: NVENC on Jetsons that have it, x264 otherwise (Orin Nano has no NVENC)."""
    if t.jetson and t.nvenc:
        return "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc bitrate=4000000 insert-sps-pps=true"
    return "x264enc tune=zerolatency speed-preset=ultrafast bitrate=4000 key-int-max=30"


def sink_pipeline(uri: Uri, t: Target, fps: int = 30) -> str | None:
    """Output pipeline string (fed by ``appsrc name=out``); None for ``none`` and ``images://``
    (flagged frames are written by Python)."""
    src = f"appsrc name=out is-live=true format=time do-timestamp=true caps={out_caps(t.width, t.height, fps)}"
    s = uri.scheme
    if s in ("none", "images"):
        return None
    if s == "display":
        sink = "nvvidconv ! nv3dsink sync=false" if t.jetson else "autovideosink sync=false"
        return f"{src} ! videoconvert ! {sink}"
    if s == "file":
        ext = Path(uri.location).suffix.lower()
        mux = {".mp4": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux"}.get(ext)
        if mux is None:
            raise EdgeadError(f"output {uri.text}: use a .mp4, .mov or .mkv file name")
        enc = encoder(t)
        conv = "videoconvert ! video/x-raw,format=I420" if not (t.jetson and t.nvenc) else "videoconvert"
        return f"{src} ! {conv} ! {enc} ! h264parse ! {mux} ! filesink location={uri.location}"
    if s == "rtsp":
        conv = "videoconvert ! video/x-raw,format=I420" if not (t.jetson and t.nvenc) else "videoconvert"
        return f"( {src} ! {conv} ! {encoder(t)} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    raise EdgeadError(f"output {uri.text}: not an output URI")
