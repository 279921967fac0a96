"""``edgead doctor``: what this machine has for each job, what is missing, and the command that fixes it."""

from __future__ import annotations

import glob
import importlib
import shutil

# What each URI kind needs is read off the pipeline builders themselves (one URI per kind); decodebin
# also needs a demuxer and decoder for the usual recordings.
EXAMPLES = {"source test://": "test://", "source file://": "file:///x.mp4", "source v4l2:// (yuy2)": "v4l2:///dev/video0",
            "source v4l2:// (mjpeg)": "v4l2:///dev/video0?format=mjpeg", "source rtsp:// (h264)": "rtsp://cam/s",
            "source rtsp:// (h265)": "rtsp://cam/s?codec=h265", "source csi://": "csi://0",
            "output display://": "display://", "output file://": "file:///x.mp4", "output rtsp://": "rtsp://:8554/x"}
DECODEBIN_EXTRA = {False: ["qtdemux", "matroskademux", "avdec_h264"], True: ["qtdemux", "matroskademux"]}


def needs(jetson: bool) -> dict[str, list[str]]:
    """URI kind -> the GStreamer elements its pipeline on this platform is made of."""
    from edgead.live.pipelines import Target, sink_pipeline, source_pipeline
    from edgead.live.uri import parse

    t = Target(256, 256, jetson, nvenc=jetson, scale="pipeline")  # every element either scale uses
    out: dict[str, list[str]] = {}
    for what, text in EXAMPLES.items():
        if what == "source csi://" and not jetson:
            continue
        kind = "source" if what.startswith("source") else "sink"
        chain = source_pipeline(parse(text, kind), t) if kind == "source" else sink_pipeline(parse(text, kind), t)
        names = list(dict.fromkeys(chain.factories()))
        if "decodebin" in names:
            names += DECODEBIN_EXTRA[jetson]
        out[what] = names
    return out


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
    if _version("torch"):
        from edgead.device import native_bf16

        why = native_bf16("cpu")
        rows.append(_row("device", "training precision (--amp auto, CPU)", None,
                         f"bf16 autocast: {why}" if why else "FP32: no AVX512-BF16 or AMX-BF16 (bf16 emulated)"))
    trt = _version("tensorrt")
    cuda = _version("cuda") or _version("cuda.bindings")
    gpu = run_cmd(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if jet_facts:
        gpu = gpu or f"{jet_facts['model']} integrated GPU"
    gpu_expected = jetson or gpu is not None
    rows.append(_row("tensorrt", "TensorRT (python)", trt is not None if gpu_expected else None,
                     trt or "no NVIDIA GPU here: engines are built on the device",
                     "JetPack: sudo apt-get install python3-libnvinfer; desktop: pip install tensorrt"))
    rows.append(_row("tensorrt", "CUDA Python (cuda-python)", cuda is not None if gpu_expected else None,
                     cuda or "", "pip install cuda-python"))
    rows.append(_row("tensorrt", "GPU", (gpu is not None) if gpu_expected else None,
                     gpu or ("none found: --platform jetson on a machine that is not a Jetson" if jetson else "none"),
                     "run on the Jetson (JetPack 6), or install the NVIDIA driver (nvidia-smi must answer)"))
    try:
        from edgead.live.gst import gst, has_element, package_of

        Gst, _ = gst()
        rows.append(_row("gstreamer", "PyGObject + Gst", True, Gst.version_string()))
        gst_ok = True
    except EdgeadError as e:
        from edgead.live.gst import FIX

        rows.append(_row("gstreamer", "PyGObject + Gst", False, str(e).split(";")[0], FIX))
        gst_ok = False
    if gst_ok:
        for what, elements in needs(jetson).items():
            missing = [e for e in elements if not has_element(e)]
            pkgs = sorted({package_of(e) for e in missing})
            rows.append(_row("pipelines", what, not missing, "missing: " + ", ".join(missing) if missing else "",
                             "sudo apt-get install " + " ".join(pkgs) if missing else ""))
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
    for mod, pip, what in (("paho.mqtt", "paho-mqtt", "--notify mqtt://"), ("asyncua", "asyncua", "--notify opcua://"),
                           ("prometheus_client", "prometheus-client", "--metrics")):
        v = _version(mod)  # optional: a box that sends no alerts anywhere needs none of them
        rows.append(_row("fleet", f"{pip} ({what})", True if v else None,
                         v or f"not installed (optional): pip install {pip}"))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    rows.append(_row("reports", "headless Chromium (report test)", chromium is not None, chromium or "",
                     "sudo apt-get install chromium"))
    return {"rows": rows, "missing": [r for r in rows if r["status"] == "missing"], "jetson": jetson}
