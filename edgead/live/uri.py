"""Camera sources and outputs named by URI, one abstraction for all (as jetson-utils names them).

Sources: ``csi://0``, ``v4l2:///dev/video0``, ``rtsp://host:8554/path``, ``file://clip.mp4``,
``images://DIR`` (a folder of stills, as triggered cameras produce) and ``test://``.
Outputs: ``display://``, ``file://out.mp4``, ``rtsp://:8554/edgead`` (served), ``images://DIR``
(flagged frames only) and ``none``. Options ride in the query string, e.g.
``v4l2:///dev/video0?format=mjpeg&width=1280&height=720&fps=30`` or ``rtsp://cam/stream?latency=200&codec=h265``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from edgead.errors import EdgeadError

SOURCE_SCHEMES = ("csi", "v4l2", "rtsp", "file", "images", "test")
SINK_SCHEMES = ("display", "file", "rtsp", "images", "none")
# Query keys edgead reads; anything else in an rtsp:// query belongs to the camera's own URL.
OPTION_KEYS = {"width", "height", "fps", "format", "flip", "latency", "codec", "pattern", "port", "bitrate", "loop"}


@dataclass(frozen=True)
class Uri:
    scheme: str
    location: str  # device path, file path, folder, sensor id, rtsp URL without edgead options, or mount
    options: dict = field(default_factory=dict)
    text: str = ""

    def opt(self, key: str, default=None):
        return self.options.get(key, default)

    def int_opt(self, key: str, default: int) -> int:
        v = self.options.get(key, default)
        try:
            return int(v)
        except (TypeError, ValueError):
            raise EdgeadError(f"{self.text}: option {key}={v!r} is not a whole number") from None


def parse(text: str, kind: str = "source") -> Uri:
    """Parse a source or output URI; one-line errors that name the accepted forms."""
    schemes = SOURCE_SCHEMES if kind == "source" else SINK_SCHEMES
    if kind == "sink" and text in ("none", "none://"):
        return Uri("none", "", {}, text)
    if "://" not in text:
        forms = ", ".join(f"{s}://" for s in schemes)
        raise EdgeadError(f"{kind} {text!r}: expected a URI ({forms}), e.g. "
                          + ("v4l2:///dev/video0 or file://clip.mp4" if kind == "source" else "file://out.mp4"))
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in schemes:
        raise EdgeadError(f"{kind} {text!r}: unknown scheme {scheme!r}; use one of {', '.join(schemes)}")
    path, _, query = rest.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    opts = {k: v for k, v in pairs if k in OPTION_KEYS}
    if scheme == "rtsp":
        own = [(k, v) for k, v in pairs if k not in OPTION_KEYS]
        parts = urlsplit(f"rtsp://{path}")
        location = f"rtsp://{path}" + (f"?{urlencode(own)}" if own else "")
        if kind == "sink":
            location = parts.path or "/edgead"
            opts.setdefault("port", str(parts.port or 8554))
    elif scheme == "csi":
        location = path or "0"
        if not location.isdigit():
            raise EdgeadError(f"source {text!r}: csi://N takes a sensor number, e.g. csi://0")
    elif scheme == "v4l2":
        location = path or "/dev/video0"
    elif scheme in ("file", "images"):
        location = path
        if not location:
            example = "out.mp4" if scheme == "file" else "frames/"
            raise EdgeadError(f"{kind} {text!r}: {scheme}:// needs a path, e.g. {scheme}://{example}")
    else:
        location = path
    return Uri(scheme, location, opts, text)
