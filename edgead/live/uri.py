"""Camera sources and outputs named by URI, parsed once into typed, validated options (as jetson-utils
names them).

Sources: ``csi://0``, ``v4l2:///dev/video0``, ``rtsp://host:8554/path``, ``file://clip.mp4``,
``images://DIR`` (a folder of stills, as triggered cameras produce; ``?watch=1`` keeps inspecting files
as they arrive, ``&settle=MS`` how long a file's size must hold still) and ``test://``.
Outputs: ``display://``, ``file://out.mp4``, ``rtsp://:8554/edgead`` (served), ``images://DIR``
(flagged frames only) and ``none``. Options ride in the query string, e.g.
``v4l2:///dev/video0?format=mjpeg&width=1280&height=720&fps=30`` or ``rtsp://cam/stream?latency=200&codec=h265``.

Every option is converted to its type and checked against its range or choices here; an unknown
option is an error (an ``rtsp://`` source passes unknown query keys on to the camera's own URL). The
pipelines set these values as element properties, never as pipeline text, so no URI can add an element.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from edgead.errors import EdgeadError

SOURCE_SCHEMES = ("csi", "v4l2", "rtsp", "file", "images", "test")
SINK_SCHEMES = ("display", "file", "rtsp", "images", "none")
# videotestsrc's pattern names (GstVideoTestSrcPattern), or their numbers 0-25
PATTERNS = ("smpte", "snow", "black", "white", "red", "green", "blue", "checkers-1", "checkers-2", "checkers-4",
            "checkers-8", "circular", "blink", "smpte75", "zone-plate", "gamut", "chroma-zone-plate", "solid-color",
            "ball", "smpte100", "bar", "pinwheel", "spokes", "gradient", "colors", "smpte-rp-219")
V4L2_FORMATS = {"yuy2": "yuy2", "yuyv": "yuy2", "raw": "yuy2", "mjpeg": "mjpeg", "jpeg": "mjpeg", "mjpg": "mjpeg"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s")


def _whole(lo: int, hi: int) -> Callable[[str], int]:
    def conv(v: str) -> int:
        if not re.fullmatch(r"\d{1,6}", v) or not lo <= int(v) <= hi:
            raise ValueError(f"a whole number from {lo} to {hi}")
        return int(v)
    return conv


def _choice(choices: dict[str, str] | tuple[str, ...]) -> Callable[[str], str]:
    table = choices if isinstance(choices, dict) else {c: c for c in choices}

    def conv(v: str) -> str:
        if v.lower() not in table:
            raise ValueError("one of " + ", ".join(dict.fromkeys(table)))
        return table[v.lower()]
    return conv


def _pattern(v: str) -> str:
    if v.isdigit() and int(v) < len(PATTERNS):
        return PATTERNS[int(v)]
    return _choice(PATTERNS)(v)


# option -> converter (raises ValueError with what it must be)
CONVERTERS: dict[str, Callable[[str], object]] = {
    "width": _whole(16, 8192), "height": _whole(16, 8192), "fps": _whole(1, 1000), "flip": _whole(0, 7),
    "latency": _whole(0, 60000), "port": _whole(1, 65535), "format": _choice(V4L2_FORMATS),
    "codec": _choice(("h264", "h265")), "pattern": _pattern, "watch": _whole(0, 1), "settle": _whole(0, 60000),
}
# scheme -> options it takes, for sources and outputs
SOURCE_OPTIONS = {"csi": ("width", "height", "fps", "flip"), "v4l2": ("width", "height", "fps", "format"),
                  "rtsp": ("latency", "codec"), "file": (), "images": ("watch", "settle"),
                  "test": ("width", "height", "fps", "pattern")}
SINK_OPTIONS = {"display": (), "file": (), "rtsp": ("port",), "images": (), "none": ()}


@dataclass(frozen=True)
class Uri:
    scheme: str
    location: str  # device path, file path, folder, sensor id, rtsp URL without edgead options, or mount
    options: dict = field(default_factory=dict)  # typed and validated
    text: str = ""

    def opt(self, key: str, default=None):
        return self.options.get(key, default)

    def int_opt(self, key: str, default: int) -> int:
        return int(self.options.get(key, default))


def _options(text: str, kind: str, scheme: str, pairs: list[tuple[str, str]]) -> tuple[dict, list]:
    """Typed edgead options, and the pairs left for an rtsp camera's own URL."""
    allowed = (SOURCE_OPTIONS if kind == "source" else SINK_OPTIONS)[scheme]
    opts, rest = {}, []
    for k, v in pairs:
        if k not in allowed:
            if scheme == "rtsp" and kind == "source" and k not in CONVERTERS:
                rest.append((k, v))
                continue
            takes = ", ".join(allowed) or "no options"
            raise EdgeadError(f"{kind} {text!r}: option {k!r} does not apply to {scheme}://; it takes {takes}")
        try:
            opts[k] = CONVERTERS[k](v)
        except ValueError as e:
            raise EdgeadError(f"{kind} {text!r}: option {k}={v!r} must be {e}") from None
    return opts, rest


def parse(text: str, kind: str = "source") -> Uri:
    """Parse a source or output URI; one-line errors that name the accepted forms."""
    schemes = SOURCE_SCHEMES if kind == "source" else SINK_SCHEMES
    if kind == "sink" and text in ("none", "none://"):
        return Uri("none", "", {}, text)
    if _CONTROL.search(text):
        raise EdgeadError(f"{kind} {text!r}: contains control characters (a newline or NUL); remove them")
    if "://" not in text:
        forms = ", ".join(f"{s}://" for s in schemes)
        raise EdgeadError(f"{kind} {text!r}: expected a URI ({forms}), e.g. "
                          + ("v4l2:///dev/video0 or file://clip.mp4" if kind == "source" else "file://out.mp4"))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in schemes:
        raise EdgeadError(f"{kind} {text!r}: unknown scheme {scheme!r}; use one of {', '.join(schemes)}")
    path, _, query = rest.partition("?")
    opts, own = _options(text, kind, scheme, parse_qsl(query, keep_blank_values=True))
    if scheme == "rtsp":
        location = _rtsp(text, kind, path, own, opts)
    elif scheme == "csi":
        location = path or "0"
        if not location.isdigit() or int(location) > 15:
            raise EdgeadError(f"source {text!r}: csi://N takes a sensor number 0-15, e.g. csi://0")
    elif scheme == "v4l2":
        location = path or "/dev/video0"
        if not re.fullmatch(r"/dev/[A-Za-z0-9_./:-]+", location) or ".." in location:
            raise EdgeadError(f"source {text!r}: v4l2:// takes a device under /dev, e.g. v4l2:///dev/video0")
    elif scheme in ("file", "images"):
        location = path
        if not location:
            example = "out.mp4" if scheme == "file" else "frames/"
            raise EdgeadError(f"{kind} {text!r}: {scheme}:// needs a path, e.g. {scheme}://{example}")
    else:
        location = path
        if location:
            raise EdgeadError(f"{kind} {text!r}: {scheme}:// takes no path (options go after ?)")
    return Uri(scheme, location, opts, text)


def _rtsp(text: str, kind: str, path: str, own: list, opts: dict) -> str:
    if _SPACE.search(path):
        raise EdgeadError(f"{kind} {text!r}: an RTSP URL has no spaces; percent-encode them (%20)")
    if kind == "sink":
        parts = urlsplit(f"rtsp://{path}")
        if parts.hostname not in (None, "", "0.0.0.0", "127.0.0.1", "localhost"):
            raise EdgeadError(f"output {text!r}: the RTSP output is served here; write rtsp://:PORT/MOUNT")
        try:
            port = parts.port
        except ValueError:
            raise EdgeadError(f"output {text!r}: the port must be a number 1-65535, e.g. rtsp://:8554/edgead") from None
        mount = parts.path or "/edgead"
        if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", mount):
            raise EdgeadError(f"output {text!r}: mount {mount!r} may hold letters, digits, _ . - and /")
        opts.setdefault("port", port or 8554)
        return mount
    parts = urlsplit(f"rtsp://{path}")
    try:
        _ = parts.port
    except ValueError:
        raise EdgeadError(f"source {text!r}: the port must be a number, e.g. rtsp://10.0.0.5:554/stream") from None
    if not parts.hostname:
        raise EdgeadError(f"source {text!r}: expected rtsp://HOST[:PORT]/PATH")
    return f"rtsp://{path}" + (f"?{urlencode(own)}" if own else "")
