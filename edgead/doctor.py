"""``edgead doctor``: what this machine has for each job, what is missing, and the command that fixes it."""

from __future__ import annotations

import glob
import importlib
import shutil

# GStreamer element -> the Debian/JetPack package that provides it
PACKAGE = {
    "appsrc": "gstreamer1.0-plugins-base", "appsink": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base", "videoscale": "gstreamer1.0-plugins-base",
    "videotestsrc": "gstreamer1.0-plugins-base", "decodebin": "gstreamer1.0-plugins-base",
    "identity": "gstreamer1.0 (core)", "filesrc": "gstreamer1.0 (core)", "filesink": "gstreamer1.0 (core)",
    "v4l2src": "gstreamer1.0-plugins-good", "jpegdec": "gstreamer1.0-plugins-good",
    "pngdec": "gstreamer1.0-plugins-good", "rtspsrc": "gstreamer1.0-plugins-good",
    "rtph264depay": "gstreamer1.0-plugins-good", "rtph265depay": "gstreamer1.0-plugins-good",
    "rtph264pay": "gstreamer1.0-plugins-good", "mp4mux": "gstreamer1.0-plugins-good",
    "matroskamux": "gstreamer1.0-plugins-good", "autovideosink": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad", "h265parse": "gstreamer1.0-plugins-bad",
    "jpegparse": "gstreamer1.0-plugins-bad", "x264enc": "gstreamer1.0-plugins-ugly",
    "avdec_h264": "gstreamer1.0-libav", "avdec_h265": "gstreamer1.0-libav", "avenc_ffv1": "gstreamer1.0-libav",
    "nvarguscamerasrc": "nvidia-l4t-gstreamer (JetPack)", "nvvidconv": "nvidia-l4t-gstreamer (JetPack)",
    "nvv4l2decoder": "nvidia-l4t-gstreamer (JetPack)", "nvv4l2h264enc": "nvidia-l4t-gstreamer (JetPack)",
    "nv3dsink": "nvidia-l4t-gstreamer (JetPack)",
}

NEEDS = {  # (what, platform) -> elements
    ("source test://", "any"): ["videotestsrc", "videoconvert", "videoscale", "identity", "appsink"],
    ("source file://", "desktop"): ["filesrc", "decodebin", "videoconvert", "videoscale", "appsink"],
    ("source images://", "desktop"): ["appsrc", "decodebin", "pngdec", "jpegdec", "videoscale", "appsink"],
    ("source v4l2://", "desktop"): ["v4l2src", "jpegdec", "videoconvert", "videoscale", "appsink"],
    ("source rtsp://", "desktop"): ["rtspsrc", "rtph264depay", "h264parse", "avdec_h264", "rtph265depay",
                                    "h265parse", "avdec_h265", "videoscale", "appsink"],
    ("output file://", "desktop"): ["appsrc", "videoconvert", "x264enc", "h264parse", "mp4mux", "filesink"],
    ("output display://", "desktop"): ["appsrc", "videoconvert", "autovideosink"],
    ("output rtsp://", "any"): ["appsrc", "x264enc", "rtph264pay"],
    ("source csi://", "jetson"): ["nvarguscamerasrc", "nvvidconv", "appsink"],
    ("source v4l2:// (mjpeg)", "jetson"): ["v4l2src", "jpegparse", "nvv4l2decoder", "nvvidconv"],
    ("source rtsp:// / file://", "jetson"): ["rtspsrc", "nvv4l2decoder", "nvvidconv", "decodebin"],
    ("output display://", "jetson"): ["nvvidconv", "nv3dsink"],
    ("output file:// (NVENC)", "jetson"): ["nvvidconv", "nvv4l2h264enc", "mp4mux"],
}


def _row(area: str, item: str, ok: bool | None, detail: str = "", fix: str = "") -> dict:
    return {"area": area, "item": item, "status": {True: "ok", False: "missing", None: "n/a"}[ok],
            "detail": detail, "fix": fix if ok is False else ""}


def _version(mod: str) -> str | None:
    try:
        return getattr(importlib.import_module(mod), "__version__", "present")
    except Exception:
        return None


def doctor(platform: str = "auto") -> dict:
    from edgead.device import jetson_facts, run_cmd
    from edgead.errors import EdgeadError

    rows: list[dict] = []
    for mod, fix in (("onnxruntime", "pip install onnxruntime (make setup)"),
                     ("torch", "pip install torch==2.13.0 (training and the reference; make setup)"),
                     ("onnx", "pip install onnx (make setup)")):
        v = _version(mod)
        rows.append(_row("python", mod, v is not None, v or "", fix))
    jet_facts = jetson_facts()
    jetson = jet_facts is not None if platform == "auto" else platform == "jetson"
    rows.append(_row("device", "Jetson", jetson if jet_facts else None,
                     f"{jet_facts['model']} ({jet_facts['l4t']}), power mode: {jet_facts['power_mode']}"
                     if jet_facts else "not a Jetson (desktop pipelines)"))
    trt = _version("tensorrt")
    cuda = _version("cuda") or _version("cuda.bindings")
    gpu = run_cmd(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    gpu_expected = jetson or gpu is not None
    rows.append(_row("tensorrt", "TensorRT (python)", trt is not None if gpu_expected else None,
                     trt or "no NVIDIA GPU here: engines are built on the device",
                     "JetPack: sudo apt install python3-libnvinfer; desktop: pip install tensorrt"))
    rows.append(_row("tensorrt", "CUDA Python (cuda-python)", cuda is not None if gpu_expected else None,
                     cuda or "", "pip install cuda-python"))
    rows.append(_row("tensorrt", "GPU", gpu_expected if gpu_expected else None, gpu or ("Jetson iGPU" if jetson
                                                                                      else "none")))
    try:
        from edgead.live.gst import gst, has_element

        Gst, _ = gst()
        rows.append(_row("gstreamer", "PyGObject + Gst", True, Gst.version_string()))
        gst_ok = True
    except EdgeadError as e:
        from edgead.live.gst import FIX

        rows.append(_row("gstreamer", "PyGObject + Gst", False, str(e).split(";")[0], FIX))
        gst_ok = False
    if gst_ok:
        for (what, plat), elements in NEEDS.items():
            if plat not in ("any", "jetson" if jetson else "desktop"):
                continue
            missing = [e for e in elements if not has_element(e)]
            pkgs = sorted({PACKAGE.get(e, "?") for e in missing})
            rows.append(_row("pipelines", what, not missing, "missing: " + ", ".join(missing) if missing else "",
                             "sudo apt-get install " + " ".join(p for p in pkgs if " " not in p)
                             if missing else ""))
        try:
            import gi

            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GstRtspServer  # noqa: F401

            rows.append(_row("pipelines", "gst-rtsp-server (rtsp:// output)", True))
        except (ImportError, ValueError):
            rows.append(_row("pipelines", "gst-rtsp-server (rtsp:// output)", False, "",
                             "sudo apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp"))
    cams = sorted(glob.glob("/dev/video*"))
    rows.append(_row("cameras", "V4L2 devices", bool(cams) if cams else None, ", ".join(cams) or "none found",
                     "plug in a USB camera; check with v4l2-ctl --list-devices"))
    if jetson:
        argus = run_cmd(["systemctl", "is-active", "nvargus-daemon"])
        rows.append(_row("cameras", "nvargus-daemon (csi://)", argus == "active", argus or "unknown",
                         "sudo systemctl restart nvargus-daemon"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    rows.append(_row("reports", "headless Chromium (report test)", chromium is not None, chromium or "",
                     "sudo apt-get install chromium"))
    return {"rows": rows, "missing": [r for r in rows if r["status"] == "missing"], "jetson": jetson}
