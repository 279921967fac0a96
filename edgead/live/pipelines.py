"""GStreamer pipelines for each source and output URI, desktop and Jetson variants, built from elements.

A pipeline is a :class:`Chain` of typed parts (an element factory with properties, or caps) made from
the validated options of a :class:`~edgead.live.uri.Uri`. :func:`build` creates each element with
``Gst.ElementFactory.make`` and sets its properties one by one, so a value (a file path with spaces, an
RTSP URL, a query option) is only ever a property value and can never add an element. ``str(chain)``
renders gst-launch syntax with every string quoted, for ``--dry-run``, the summary and doctor.

Scaling to the model size (``Target.scale``): ``bundle`` (the default) hands Python the full frame in
RGB and the bundle's own preprocessing resizes it, the resize training and verify used, so the model
sees the pixels it was verified on at any camera size; ``pipeline`` scales in GStreamer
(``videoscale`` on the desktop, the VIC through ``nvvidconv`` on a Jetson), cheaper but with other
filters (bilinear without antialiasing on the desktop): ``edgead verify --source-size`` measures what
that costs. ``add-borders=false`` makes a pipeline scale a plain stretch, as the preprocessing does.
Frames reach Python through an ``appsink`` named ``sink`` behind an ``identity`` named ``tap``
(which counts what the source delivered, so dropped frames can be counted); outputs are fed
through an ``appsrc`` named ``out``.
``images://`` needs no pipeline: stills are read by edgead's own image reader (``edgead.live.source``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgead.errors import EdgeadError
from edgead.live.uri import Uri

POLICIES = ("latest", "every")
SCALES = ("bundle", "pipeline")
_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


@dataclass(frozen=True)
class Target:
    """What the pipeline must hand to Python, and where it runs."""
    width: int  # the model's input size (and the output stream's)
    height: int
    jetson: bool = False
    nvenc: bool = False  # a hardware H.264 encoder (Orin Nano has none)
    scale: str = "bundle"  # bundle: full frames to Python, the bundle's resize; pipeline: GStreamer scales

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise EdgeadError(f"--scale {self.scale!r}: choose bundle (the resize verify used) or pipeline "
                              f"(GStreamer scales; check it with edgead verify --source-size)")


@dataclass(frozen=True)
class Caps:
    """A caps filter; every field value is a number or one of edgead's own format names."""
    media: str
    fields: tuple[tuple[str, object], ...] = ()
    memory: str | None = None  # "NVMM" on a Jetson

    def __str__(self) -> str:
        head = self.media + (f"(memory:{self.memory})" if self.memory else "")
        return ",".join([head, *(f"{k}={v}" for k, v in self.fields)])


@dataclass(frozen=True)
class El:
    """One element: factory, optional name, properties (set one by one, never parsed)."""
    factory: str
    props: tuple[tuple[str, object], ...] = ()
    name: str | None = None

    def __str__(self) -> str:
        parts = [self.factory] + ([f"name={self.name}"] if self.name else [])
        return " ".join(parts + [f"{k}={_quote(v)}" for k, v in self.props])


def _quote(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    text = str(v)
    if isinstance(v, (int, float)) or _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Chain:
    """A linear pipeline: elements and caps in order."""
    parts: tuple[El | Caps, ...]

    def __str__(self) -> str:
        return " ! ".join(str(p) for p in self.parts)

    def factories(self) -> list[str]:
        """Element factory names in order (caps filters as ``capsfilter``): what doctor checks."""
        return [p.factory if isinstance(p, El) else "capsfilter" for p in self.parts]


def caps(media: str, memory: str | None = None, **fields) -> Caps:
    return Caps(media, tuple((k.replace("_", "-"), v) for k, v in fields.items()), memory)


def el(factory: str, name: str | None = None, **props) -> El:
    return El(factory, tuple((k.replace("_", "-"), v) for k, v in props.items()), name)


def appsink(policy: str, sync: bool = False) -> El:
    """``latest``: one-buffer queue that drops old frames (live lines). ``every``: no drops, back-pressure."""
    if policy not in POLICIES:
        raise EdgeadError(f"--policy {policy!r}: choose latest (live lines) or every (audit a recording)")
    if policy == "latest":
        return el("appsink", "sink", emit_signals=False, max_buffers=1, drop=True, sync=sync)
    return el("appsink", "sink", emit_signals=False, max_buffers=2, drop=False, sync=sync)


def _scale(t: Target, **convert) -> tuple:
    """To RGB(A) in system memory: at the model size (``scale=pipeline``: VIC on a Jetson, videoscale on
    the desktop) or at the frame's own size (``scale=bundle``: Python resizes with the bundle's resize)."""
    size = {"width": t.width, "height": t.height} if t.scale == "pipeline" else {}
    if t.jetson:
        return (el("nvvidconv", **convert), caps("video/x-raw", format="RGBA", **size))
    if t.scale == "bundle":
        return (el("videoconvert"), caps("video/x-raw", format="RGB"))
    return (el("videoconvert"), el("videoscale", add_borders=False),
            caps("video/x-raw", format="RGB", pixel_aspect_ratio="1/1", **size))


def source_pipeline(uri: Uri, t: Target, policy: str = "latest") -> Chain:
    """The capture pipeline of a source URI (ends in ``identity name=tap ! appsink name=sink``)."""
    tail = (el("identity", "tap", signal_handoffs=True), appsink(policy, sync=False))
    w, h, fps = uri.int_opt("width", 1280), uri.int_opt("height", 720), uri.int_opt("fps", 30)
    s = uri.scheme
    if s == "csi":
        if not t.jetson:
            raise EdgeadError(f"source {uri.text}: csi:// needs a Jetson (nvarguscamerasrc); on this machine use "
                              f"v4l2://, rtsp://, file:// or test:// (or --platform jetson with --dry-run)")
        w, h = uri.int_opt("width", 1920), uri.int_opt("height", 1080)
        head = (el("nvarguscamerasrc", sensor_id=int(uri.location)),
                caps("video/x-raw", "NVMM", width=w, height=h, framerate=f"{fps}/1", format="NV12"))
        return Chain(head + _scale(t, flip_method=uri.int_opt("flip", 0)) + tail)
    if s == "v4l2":
        fmt = uri.opt("format", "yuy2")
        if fmt == "mjpeg":
            src = el("v4l2src", device=uri.location, do_timestamp=True, **({"io_mode": "dmabuf"} if t.jetson else {}))
            dec = (el("jpegparse"), el("nvv4l2decoder", mjpeg=True)) if t.jetson else (el("jpegdec"),)
            head = (src, caps("image/jpeg", width=w, height=h, framerate=f"{fps}/1"), *dec)
        else:
            head = (el("v4l2src", device=uri.location, do_timestamp=True),
                    caps("video/x-raw", format="YUY2", width=w, height=h, framerate=f"{fps}/1"))
        return Chain(head + _scale(t) + tail)
    if s == "rtsp":
        codec = uri.opt("codec", "h264")
        drop = {"drop_on_latency": True} if policy == "latest" else {}
        dec = el("nvv4l2decoder", enable_max_performance=True) if t.jetson else el(f"avdec_{codec}")
        head = (el("rtspsrc", location=uri.location, latency=uri.int_opt("latency", 200), **drop),
                el(f"rtp{codec}depay"), el(f"{codec}parse"), dec)
        return Chain(head + _scale(t) + tail)
    if s == "file":
        # decodebin picks the demuxer and decoder (nvv4l2decoder on a Jetson by rank); sync in latest
        # mode replays at the recorded rate, as a live camera would deliver it.
        sink = appsink(policy, sync=(policy == "latest"))
        return Chain((el("filesrc", location=str(Path(uri.location))), el("decodebin")) + _scale(t)
                     + (tail[0], sink))
    if s == "test":
        head = (el("videotestsrc", is_live=True, pattern=uri.opt("pattern", "ball")),
                caps("video/x-raw", width=uri.int_opt("width", 640), height=uri.int_opt("height", 480),
                     framerate=f"{fps}/1"))
        return Chain(head + _scale(t) + tail)
    raise EdgeadError(f"source {uri.text}: no GStreamer pipeline for {s}://")


def out_caps(width: int, height: int, fps: int) -> Caps:
    return caps("video/x-raw", format="RGB", width=width, height=height, framerate=f"{fps}/1")


def encoder(t: Target) -> tuple:
    """H.264: NVENC on Jetsons that have it, x264 otherwise (Orin Nano has no NVENC)."""
    if t.jetson and t.nvenc:
        return (el("nvvidconv"), caps("video/x-raw", "NVMM", format="NV12"),
                el("nvv4l2h264enc", bitrate=4000000, insert_sps_pps=True))
    return (el("x264enc", tune="zerolatency", speed_preset="ultrafast", bitrate=4000, key_int_max=30),)


def sink_pipeline(uri: Uri, t: Target, fps: int = 30) -> Chain | None:
    """Output pipeline (fed by ``appsrc name=out``); None for ``none`` and ``images://``
    (flagged frames are written by Python)."""
    src = el("appsrc", "out", is_live=True, format="time", do_timestamp=True, caps=out_caps(t.width, t.height, fps))
    s = uri.scheme
    if s in ("none", "images"):
        return None
    conv = (el("videoconvert"),) if t.jetson and t.nvenc else (el("videoconvert"), caps("video/x-raw", format="I420"))
    if s == "display":
        sink = (el("nvvidconv"), el("nv3dsink", sync=False)) if t.jetson else (el("autovideosink", sync=False),)
        return Chain((src, el("videoconvert"), *sink))
    if s == "file":
        ext = Path(uri.location).suffix.lower()
        mux = {".mp4": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux"}.get(ext)
        if mux is None:
            raise EdgeadError(f"output {uri.text}: use a .mp4, .mov or .mkv file name")
        return Chain((src, *conv, *encoder(t), el("h264parse"), el(mux), el("filesink", location=uri.location)))
    if s == "rtsp":
        return Chain((src, *conv, *encoder(t), el("rtph264pay", "pay0", pt=96, config_interval=1)))
    raise EdgeadError(f"output {uri.text}: not an output URI")


def build(chain: Chain, what: str):
    """A ``Gst.Pipeline`` of the chain's elements, properties set one by one, linked in order (elements
    whose source pads appear later, such as decodebin and rtspsrc, are linked when they do)."""
    from edgead.live.gst import gst, package_of

    Gst, _ = gst()
    from gi.repository import GObject

    pipe = Gst.Pipeline.new(None)
    made = []
    for part in chain.parts:
        factory = part.factory if isinstance(part, El) else "capsfilter"
        e = Gst.ElementFactory.make(factory, part.name if isinstance(part, El) else None)
        if e is None:
            raise EdgeadError(f"{what}: GStreamer element {factory!r} is missing (package {package_of(factory)}); "
                              f"run edgead doctor")
        props = part.props if isinstance(part, El) else (("caps", part),)
        for key, value in props:
            spec = e.find_property(key)
            if spec is None:
                raise EdgeadError(f"{what}: element {factory} has no property {key!r} in this GStreamer version")
            if isinstance(value, Caps):
                e.set_property(key, Gst.Caps.from_string(str(value)))
            elif isinstance(value, str) and spec.value_type != GObject.TYPE_STRING:
                Gst.util_set_object_arg(e, key, value)  # an enum or flags value by its nick (ours, validated)
            else:
                e.set_property(key, value)
        pipe.add(e)
        made.append(e)
    for a, b in zip(made, made[1:], strict=False):
        if any(tp.direction == Gst.PadDirection.SRC and tp.presence == Gst.PadPresence.SOMETIMES
               for tp in a.get_pad_template_list()) and not a.get_static_pad("src"):
            a.connect("pad-added", _link_new_pad, b)
        elif not a.link(b):
            raise EdgeadError(f"{what}: cannot link {a.get_factory().get_name()} to {b.get_factory().get_name()} "
                              f"(formats do not match); run edgead doctor")
    return pipe


def _link_new_pad(_element, pad, downstream) -> None:
    """Link a pad that appeared at run time (decodebin, rtspsrc) if downstream can take it; an audio
    pad of a video file simply stays unlinked."""
    sink = downstream.get_static_pad("sink")
    if sink is not None and not sink.is_linked():
        pad.link(sink)
