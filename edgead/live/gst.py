"""GStreamer through PyGObject, imported lazily (users without live inspection need neither)."""

from __future__ import annotations

import os

from edgead.device import is_jetson, jetson_model
from edgead.errors import EdgeadError

# GStreamer element -> the Debian (or JetPack) package that provides it
PACKAGE = {
    **dict.fromkeys(("identity", "filesrc", "filesink", "capsfilter", "queue", "fakesink"), "libgstreamer1.0-0"),
    **dict.fromkeys(("appsrc", "appsink", "videoconvert", "videoscale", "videotestsrc", "decodebin"),
                    "gstreamer1.0-plugins-base"),
    **dict.fromkeys(("v4l2src", "jpegdec", "pngdec", "rtspsrc", "rtph264depay", "rtph265depay", "rtph264pay", "mp4mux",
                     "qtmux", "matroskamux", "autovideosink", "qtdemux", "matroskademux"), "gstreamer1.0-plugins-good"),
    **dict.fromkeys(("h264parse", "h265parse", "jpegparse"), "gstreamer1.0-plugins-bad"),
    "x264enc": "gstreamer1.0-plugins-ugly",
    **dict.fromkeys(("avdec_h264", "avdec_h265", "avenc_ffv1"), "gstreamer1.0-libav"),
    **dict.fromkeys(("nvarguscamerasrc", "nvvidconv", "nvv4l2decoder", "nvv4l2h264enc", "nv3dsink"),
                    "nvidia-l4t-gstreamer"),
}


def package_of(element: str) -> str:
    return PACKAGE.get(element, "gstreamer1.0-plugins-bad")  # most remaining elements live there


FIX = ("apt-get install gstreamer1.0-tools gstreamer1.0-plugins-{base,good,bad,ugly} gstreamer1.0-libav "
       "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 libgirepository1.0-dev libcairo2-dev, then "
       "pip install 'PyGObject>=3.42,<3.51' (make setup does both)")


def _pin_unwinder() -> None:
    """Load libgcc_s into the global symbol scope before GStreamer. Debian's libgstreamer links
    libunwind, and GObject introspection opens it globally; its ``_Unwind_Resume`` then wins over
    libgcc's for extension modules that resolve it later (onnxruntime's pybind module), and the first
    C++ exception they throw aborts the process (seen: torch.onnx.export after Gst.init)."""
    import ctypes

    try:
        ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass


def gst():
    """(Gst, GstVideo), initialised; a one-line error naming the fix when missing."""
    _pin_unwinder()
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import Gst, GstVideo
    except (ImportError, ValueError) as e:
        raise EdgeadError(f"GStreamer for Python is missing ({e}); {FIX}") from None
    if not Gst.is_initialized():
        Gst.init(None)
    return Gst, GstVideo


def has_element(name: str) -> bool:
    Gst, _ = gst()
    return Gst.ElementFactory.find(name) is not None


def has_nvenc() -> bool:
    """NVENC is absent on Orin Nano even though the element may be installed (jetson-utils does the same)."""
    model = (jetson_model() or "").lower()
    return "orin nano" not in model and has_element("nvv4l2h264enc")


def resolve_platform(choice: str = "auto") -> tuple[bool, bool]:
    """(jetson, nvenc) for ``--platform auto|jetson|desktop``; EDGEAD_PLATFORM overrides auto."""
    choice = os.environ.get("EDGEAD_PLATFORM", choice) if choice == "auto" else choice
    if choice == "desktop":
        return False, False
    if choice == "jetson":
        try:
            return True, has_nvenc()
        except EdgeadError:  # dry runs on a machine without GStreamer
            return True, False
    if choice != "auto":
        raise EdgeadError(f"--platform {choice!r}: choose auto, jetson or desktop")
    jet = is_jetson()
    return jet, jet and has_nvenc()
