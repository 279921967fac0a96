"""Live inspection with real GStreamer pipelines: a conveyor video of real images decided exactly as
offline, alerts that are complete lines, RTSP reconnects after a server restart, test:// and images://
runs, clean SIGTERM, and the Jetson pipeline strings checked element by element."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.cli import app
from edgead.data import mvtec
from edgead.data.image import read_image
from edgead.errors import EdgeadError
from edgead.live.alerts import EventLog, read_events
from edgead.live.inspect import InspectRequest, inspect, live_threads
from edgead.live.pipelines import Target, source_pipeline
from edgead.live.uri import parse

gst_missing = False
try:
    from edgead.live.gst import gst

    gst()
except EdgeadError as e:  # make test installs GStreamer; say why when it is not there
    gst_missing = str(e)
needs_gst = pytest.mark.skipif(bool(gst_missing), reason=f"GStreamer missing: {gst_missing}")


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("live") / "crad")


@pytest.fixture(scope="module")
def conveyor(bundle, tiny_real, tmp_path_factory):
    """Real magnetic_tile test images, good and defective alternating (a known order), lossless video;
    the bundle's threshold set to the median of their offline scores (conftest.threshold_at_median)."""
    from edgead.live.conveyor import make_video
    from tests.conftest import threshold_at_median

    b = Bundle.load(bundle)
    pre = b.preprocess
    samples = mvtec.discover(tiny_real, ["magnetic_tile"], "test")
    good = [s for s in samples if s.label == 0]
    bad = [s for s in samples if s.label == 1]
    order = [x for pair in zip(good, bad, strict=False) for x in pair]
    frames = [np.asarray(pre.resize_image(read_image(s.path))) for s in order]
    be = open_engine(bundle, "fp32")
    raw = np.array([float(be.infer(pre.normalize(f)[None])["score"][0]) for f in frames])
    n = threshold_at_median(bundle, "magnetic_tile", raw)
    offline = (raw - n["center"]) / n["scale"]
    path = tmp_path_factory.mktemp("conveyor") / "conveyor.mkv"
    make_video(frames, path, fps=10)
    return path, order, offline, frames


@needs_gst
@pytest.mark.parametrize("workers", [1, 3])
def test_conveyor_every_frame_decided_as_offline_and_alerts_complete(bundle, conveyor, tmp_path, workers):
    """One frame at a time, or several inferred at once (--workers): the same decisions in the source's order."""
    path, order, offline, _ = conveyor
    res = inspect(InspectRequest(bundle=bundle, source=f"file://{path}", category="magnetic_tile",
                                 alerts_dir=tmp_path / "alerts", policy="every", quiet=True, workers=workers))
    (tmp_path / "summary.json").write_text(json.dumps(res))
    assert res["frames"] == len(order) and res["dropped"] == 0 and res["end"] == "end of stream"
    assert res["workers"] == workers and res["backend"]["threads"] == live_threads(None, workers)
    live = np.array([d["score"] for d in res["decisions_tail"]])
    np.testing.assert_allclose(live, offline, rtol=0, atol=1e-5)  # same pixels, same graph: same scores
    want = [i + 1 for i, s in enumerate(offline) if s >= 1.0]
    events = read_events(tmp_path / "alerts" / "events.jsonl")
    assert [e["frame"] for e in events] == want and 0 < len(want) < len(order)
    lines = (tmp_path / "alerts" / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(want)
    for e in events:
        assert {"time", "frame", "source", "score", "threshold", "category", "frame_path", "heatmap_path"} <= set(e)
        assert Path(e["frame_path"]).is_file() and Path(e["heatmap_path"]).is_file() and e["score"] >= 1.0
    assert not list((tmp_path / "alerts").glob(".*.tmp"))  # no temp files left behind
    summary = json.loads((tmp_path / "summary.json").read_text())
    for stage in ("preprocess", "inference", "postprocess", "output", "frame"):
        assert summary["stages"][stage]["p50_ms"] >= 0
    assert 0 <= summary["pipeline_overhead_share"] < 1


@needs_gst
def test_verify_live_compares_the_conveyor_with_its_source_images(bundle, conveyor, tmp_path):
    path, order, offline, _ = conveyor
    manifest = tmp_path / "conveyor.json"
    manifest.write_text(json.dumps({"frames": [{"frame": i + 1, "file": str(s.path)} for i, s in enumerate(order)]}))
    js = tmp_path / "v.json"
    r = CliRunner().invoke(app, ["verify", str(bundle), "--per-category", "6", "--live", f"file://{path}",
                                 "--manifest", str(manifest), "--category", "magnetic_tile", "--json", str(js)])
    assert r.exit_code == 0, r.output
    live = json.loads(js.read_text())["live"]
    assert live["n_compared"] == len(order) and live["decision_agreement"] == 1.0
    assert live["score_abs_max"] <= 1e-5  # frames made at model size: the same pixels as offline


def test_scale_bundle_hands_full_frames_to_python_scale_pipeline_scales_in_gstreamer():
    uri = parse("file:///tmp/x.mkv")
    own = source_pipeline(uri, Target(160, 128))
    assert "videoscale" not in own.factories() and "video/x-raw,format=RGB ! identity" in str(own)
    gst_scaled = source_pipeline(uri, Target(160, 128, scale="pipeline"))
    assert "videoscale" in gst_scaled.factories() and "width=160,height=128" in str(gst_scaled)
    with pytest.raises(EdgeadError, match="--scale 'vic'"):
        Target(160, 128, scale="vic")


@needs_gst
def test_verify_source_size_proves_the_camera_path_at_a_camera_size(bundle, tmp_path):
    """Reference parts framed at 640x360 through the real pipeline: with the bundle's resize the live scores
    equal the offline ones on the same frames; GStreamer's scaling sees other pixels (measured, gated)."""
    js, js2 = tmp_path / "v.json", tmp_path / "v2.json"
    r = CliRunner().invoke(app, ["verify", str(bundle), "--per-category", "6", "--source-size", "640x360",
                                 "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    cams = res["cameras"]  # one camera per product of the (multi-class) bundle
    assert sorted(c["category"] for c in cams) == sorted(Bundle.load(bundle).categories)
    assert sum(c["n_compared"] for c in cams) == res["n_images"]
    for cam in cams:
        assert cam["size"] == [640, 360] and cam["scale"] == "bundle"
        assert cam["score_abs_max"] <= 1e-5 and cam["decision_agreement"] == 1.0
    live_rows = [g for g in res["gates"] if g["level"] == "LIVE"]
    assert len(live_rows) == 3 * len(cams) and all(g["passed"] and "@640x360" in g["category"] for g in live_rows)
    r = CliRunner().invoke(app, ["verify", str(bundle), "--per-category", "6", "--source-size", "640x360",
                                 "--scale", "pipeline", "--category", "magnetic_tile", "--json", str(js2)])
    assert r.exit_code in (0, 1), r.output
    if any(g["level"] == "LIVE" and g["passed"] is False for g in json.loads(js2.read_text())["gates"]):
        assert "worst: part" in " ".join(r.output.split())  # a failed live gate names the part (live flips crashed it)
    (cam,) = json.loads(js2.read_text())["cameras"]
    assert cam["category"] == "magnetic_tile" and cam["score_abs_max"] > 1e-4  # bilinear, no antialiasing
    r = CliRunner().invoke(app, ["verify", str(bundle), "--source-size", "640"])
    assert r.exit_code == 2 and "WIDTHxHEIGHT" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(video, port):
    proc = subprocess.Popen([sys.executable, "-m", "edgead.live.serve", str(video), "--port", str(port), "--mount",
                             "/cam"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().startswith("serving")
    return proc


@needs_gst
def test_rtsp_reconnects_after_server_restart(bundle, conveyor, tmp_path):
    from edgead.live.conveyor import make_video

    _, _, _, frames = conveyor
    long = make_video(frames * 8, tmp_path / "long.mkv", fps=10)  # ~10 s of video per connection
    port = _free_port()
    servers = [_serve(long, port)]
    logs = []

    def camera_reboot():
        time.sleep(4)
        servers[0].kill()  # the camera goes away without a goodbye
        servers[0].wait()
        time.sleep(2)
        servers.append(_serve(long, port))

    t = threading.Thread(target=camera_reboot)
    t.start()
    try:
        res = inspect(InspectRequest(bundle=bundle, source=f"rtsp://127.0.0.1:{port}/cam?latency=50",
                                     category="magnetic_tile", alerts_dir=tmp_path / "alerts", duration=14,
                                     stall_s=2.0, quiet=True), log=logs.append)
    finally:
        t.join()
        for s in servers:
            s.kill()
    assert res["end"] == "duration" and res["reconnects"] >= 1, logs
    after = [d for d in res["decisions_tail"] if d["frame"] > 0]
    assert res["frames"] >= 20 and len(after) == res["frames"]
    assert any("reconnect" in m for m in logs)


@needs_gst
@pytest.mark.parametrize("workers", [1, 2])
def test_test_source_latest_policy_file_output_and_sigterm(bundle, tmp_path, workers):
    """SIGTERM: frames in flight are decided, the alert queue drained, the recording finalised (also with two
    frames inferred at once)."""
    out = tmp_path / "out.mp4"
    summary = tmp_path / "s.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgead.cli", "inspect", str(bundle), "--source", "test://",
                             "--output", f"file://{out}", "--category", "magnetic_tile", "--alerts",
                             str(tmp_path / "alerts"), "--json", str(summary), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    res = json.loads(summary.read_text())
    assert res["end"] == "SIGTERM" and res["frames"] > 0 and res["policy"] == "latest" and res["workers"] == workers
    # the alert queue was drained on the way out: one complete line per flagged frame, files on disk
    events = read_events(tmp_path / "alerts" / "events.jsonl")
    assert res["flagged"] > 0 and len(events) == res["flagged"] == res["alerts"]["written"]
    assert all(Path(e["frame_path"]).is_file() and Path(e["heatmap_path"]).is_file() for e in events)
    assert res["produced"] >= res["frames"] and res["dropped"] == res["produced"] - res["frames"]
    # the recording was finalised on the way out (EOS): it decodes to as many frames as were inspected
    Gst, _ = gst()
    pipe = Gst.parse_launch(f"filesrc location={out} ! decodebin ! fakesink name=f signal-handoffs=true")
    count = [0]
    pipe.get_by_name("f").connect("handoff", lambda *a: count.__setitem__(0, count[0] + 1))
    pipe.set_state(Gst.State.PLAYING)
    pipe.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    assert count[0] == res["frames"]


@needs_gst
def test_images_folder_source_keeps_names(bundle, tiny_real, tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    srcs = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:5]
    for i, p in enumerate(srcs):
        shutil.copy(p, folder / f"{i:03d}_{p.name}")
    res = inspect(InspectRequest(bundle=bundle, source=f"images://{folder}", output=f"images://{tmp_path / 'flag'}",
                                 category="magnetic_tile", alerts_dir=tmp_path / "alerts", quiet=True))
    assert res["frames"] == 5 and res["policy"] == "every" and res["dropped"] == 0
    assert [d["name"] for d in res["decisions_tail"]] == sorted(p.name for p in folder.iterdir())
    flagged = sum(d["flagged"] for d in res["decisions_tail"])
    assert len(list((tmp_path / "flag").glob("*.png"))) == flagged


def test_jetson_pipelines_element_by_element():
    t = Target(256, 256, jetson=True, scale="pipeline")
    csi = source_pipeline(parse("csi://0?flip=2"), t)
    assert csi.factories() == ["nvarguscamerasrc", "capsfilter", "nvvidconv", "capsfilter", "identity", "appsink"]
    assert "memory:NVMM" in str(csi) and "format=RGBA,width=256,height=256" in str(csi) and "drop=true" in str(csi)
    assert "nvvidconv flip-method=2" in str(csi)
    full = str(source_pipeline(parse("csi://0"), Target(256, 256, jetson=True)))  # default: the bundle resizes
    assert "video/x-raw,format=RGBA ! identity" in full and "width=256" not in full
    mj = source_pipeline(parse("v4l2:///dev/video1?format=mjpeg&width=1920&height=1080"), t)
    assert mj.factories() == ["v4l2src", "capsfilter", "jpegparse", "nvv4l2decoder", "nvvidconv", "capsfilter",
                              "identity", "appsink"]
    assert "device=/dev/video1" in str(mj) and "mjpeg=true" in str(mj) and "width=1920" in str(mj)
    yuy = source_pipeline(parse("v4l2:///dev/video0"), t)
    assert yuy.factories() == ["v4l2src", "capsfilter", "nvvidconv", "capsfilter", "identity", "appsink"]
    assert "YUY2" in str(yuy)
    rtsp = source_pipeline(parse("rtsp://10.0.0.5:554/live?latency=100&codec=h265&user=x"), t)
    assert rtsp.factories() == ["rtspsrc", "rtph265depay", "h265parse", "nvv4l2decoder", "nvvidconv", "capsfilter",
                                "identity", "appsink"]
    assert ('location="rtsp://10.0.0.5:554/live?user=x" latency=100 drop-on-latency=true') in str(rtsp)
    every = source_pipeline(parse("rtsp://cam/s"), t, policy="every")
    assert "drop-on-latency" not in str(every) and "max-buffers=2 drop=false" in str(every)


@needs_gst
def test_desktop_pipelines_build_and_render_as_valid_gstreamer(bundle):
    from edgead.live.pipelines import build

    Gst, _ = gst()
    t = Target(160, 128)
    for uri in ("test://", "file:///tmp/x.mkv", "file:///tmp/a dir/with \"quotes\".mkv", "v4l2:///dev/video0",
                "v4l2:///dev/video0?format=mjpeg", "rtsp://127.0.0.1:8554/cam"):
        chain = source_pipeline(parse(uri), t)
        pipe = build(chain, uri)  # every element made and every property set one by one
        made = sorted(e.get_factory().get_name() for e in pipe.children)
        assert made == sorted(chain.factories()), uri
        text_pipe = Gst.parse_launch(str(chain))  # the rendered description is valid and means the same
        assert sorted(e.get_factory().get_name() for e in text_pipe.children) == made, uri
        if uri.startswith("file"):
            assert pipe.get_by_name("tap") is not None
            src = next(e for e in pipe.children if e.get_factory().get_name() == "filesrc")
            assert src.get_property("location") == uri.removeprefix("file://")
    r = CliRunner().invoke(app, ["inspect", str(bundle), "--source", "csi://0", "--dry-run", "--platform", "jetson",
                                 "--category", "magnetic_tile", "--output", "file://o.mp4"])
    assert r.exit_code == 0 and "nvarguscamerasrc sensor-id=0" in r.output and "x264enc" in r.output


@needs_gst
def test_kill_9_leaves_only_valid_alert_lines_naming_existing_files(bundle, tmp_path):
    """Alerts are written by a thread: PNGs (temp name, rename) before the fsynced line naming them."""
    alerts = tmp_path / "alerts"
    proc = subprocess.Popen([sys.executable, "-m", "edgead", "inspect", str(bundle), "--source", "test://?fps=30",
                             "--category", "magnetic_tile", "--alerts", str(alerts)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len((alerts / "events.jsonl").read_text().splitlines()
                                              if (alerts / "events.jsonl").is_file() else []) < 5:
        time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=30)
    lines = (alerts / "events.jsonl").read_text().splitlines()
    assert len(lines) >= 5
    for line in lines:
        e = json.loads(line)  # every line complete
        assert Path(e["frame_path"]).is_file() and Path(e["heatmap_path"]).is_file()


@needs_gst
def test_latest_hands_inference_the_newest_frame_and_counts_the_replaced_ones(bundle):
    """``latest``: while inference is busy the prepared frame waiting for it is replaced by newer ones, so the
    next inference starts on a frame captured during the busy time, not on the one that waited through it."""
    from edgead.live.prefetch import Prefetch
    from edgead.live.source import open_source

    b = Bundle.load(bundle)
    src = open_source(parse("test://?fps=30"), Target(64, 64), b.preprocess, "latest", log=lambda _m: None)
    pre = Prefetch([src], [lambda fr: (time.monotonic(), fr.number)], fresh=[True])
    src.start()
    pre.start()
    try:
        got = [pre.read(10.0) for _ in range(3)]  # running: the first frames
        busy = []
        for _ in range(4):
            start = time.monotonic()
            time.sleep(0.4)  # a slow inference: about 12 frames come meanwhile
            _, (made, number) = pre.read(10.0)
            busy.append((made - start, number))
    finally:
        pre.stop()
        src.stop()
    assert all(g is not None for g in got)
    assert all(made > 0.15 for made, _ in busy), busy  # prepared late in the busy time, not at its start
    assert src.stats.dropped >= 4  # the replaced frames are counted as dropped
    numbers = [n for _, n in busy]
    assert numbers == sorted(numbers)


def test_event_log_survives_a_torn_line(tmp_path):
    p = tmp_path / "events.jsonl"
    log = EventLog(p)
    log.append({"frame": 1})
    log.close()
    with open(p, "a") as f:
        f.write('{"frame": 2, "sco')  # power cut mid-write
    log = EventLog(p)
    log.append({"frame": 3})
    log.close()
    assert [e["frame"] for e in read_events(p)] == [1, 3]


def test_event_log_rotates_within_its_budget_and_keeps_the_newest_lines(tmp_path):
    from edgead.live.alerts import KEEP, chain

    p = tmp_path / "events.jsonl"
    budget = 8000  # bytes for the whole chain: each file rotates at a quarter
    log = EventLog(p, budget)
    record = {"frame": 0, "name": "x" * 150}  # about 180 bytes a line
    for i in range(200):
        log.append({**record, "frame": i})
        assert sum(q.stat().st_size for q in chain(p)) <= budget
    log.close()
    files = chain(p)
    assert len(files) == KEEP + 1 and log.rotations > KEEP
    assert [q.name for q in files[:-1]] == [f"events.{n:06d}.jsonl" for n in range(log.rotations - KEEP + 1,
                                                                                   log.rotations + 1)]
    frames = [e["frame"] for e in read_events(p, rotated_too=True)]
    assert frames == list(range(200 - len(frames), 200)) and len(frames) > 30  # the newest, in order, no gap
    assert all(q.read_bytes().endswith(b"\n") for q in files)
    # a restart goes on with the numbering and the budget
    first = log.rotations
    log = EventLog(p, budget)
    for i in range(200, 260):
        log.append({**record, "frame": i})
    log.close()
    assert int(chain(p)[-2].name.split(".")[1]) == first + log.rotations and len(chain(p)) == KEEP + 1
    assert [e["frame"] for e in read_events(p, rotated_too=True)][-1] == 259
    unbounded = EventLog(tmp_path / "all.jsonl")
    for i in range(200):
        unbounded.append({**record, "frame": i})
    unbounded.close()
    assert chain(tmp_path / "all.jsonl") == [tmp_path / "all.jsonl"]


def test_alerts_go_on_after_their_folder_or_log_is_deleted_or_moved_while_running(tmp_path):
    """An operator's clean-up or a logrotate without copytruncate must not make later alerts vanish: the log
    starts a new file at its path, the writer makes the folder again, and both are counted."""
    from edgead.decision import Normalization
    from edgead.live.inspector import AlertWriter, Decision
    from edgead.live.source import Frame

    folder = tmp_path / "alerts"
    log = EventLog(folder / "events.jsonl")
    writer = AlertWriter(folder, log, "fp32", "onnxruntime", min_free_mb=0, max_mb=10)
    norm = Normalization(center=0.0, scale=1.0, threshold=1.0, pixel_center=0.0, pixel_scale=1.0, pixel_threshold=1.0)
    rgb, nmap = np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 2.0, np.float32)

    def alert(n: int) -> None:
        writer.write(Decision(Frame(rgb, n, None, None, 0.0, f"part{n}.png"), 2.0, 2.0, True, rgb, nmap), "test://",
                     "c", norm)
        deadline = time.monotonic() + 10
        while writer.stats["written"] + writer.stats["errors"] < n and time.monotonic() < deadline:
            time.sleep(0.01)

    alert(1)
    (folder / "events.jsonl").rename(tmp_path / "moved.jsonl")  # logrotate's default: move, the writer goes on
    alert(2)
    assert [e["frame"] for e in read_events(tmp_path / "moved.jsonl")] == [1]
    assert [e["frame"] for e in read_events(folder / "events.jsonl")] == [2] and log.reopened == 1
    shutil.rmtree(folder)  # the whole folder cleaned up
    alert(3)
    assert [e["frame"] for e in read_events(folder / "events.jsonl")] == [3]
    assert Path(read_events(folder / "events.jsonl")[0]["frame_path"]).exists()
    with open(folder / "events.jsonl", "r+") as f:  # copytruncate: the same file, emptied
        f.truncate(0)
    alert(4)
    assert [e["frame"] for e in read_events(folder / "events.jsonl")] == [4] and log.reopened == 2
    stats = writer.close()
    log.close()
    assert stats["written"] == 4 and stats["errors"] == 0 and stats["folder_recreated"] == 1


def test_bad_uris_and_missing_inputs_are_one_line_errors(bundle, tmp_path):
    for args, msg in ((["--source", "webcam"], "expected a URI"), (["--source", "http://x"], "unknown scheme"),
                      (["--source", f"file://{tmp_path}/none.mp4", "--category", "magnetic_tile"],
                       "no such video file"),
                      (["--source", "test://"], "--category"),
                      (["--source", f"images://{tmp_path}", "--category", "magnetic_tile"], "no .png, .jpg"),
                      (["--source", f"images://{tmp_path}?watch=yes", "--category", "magnetic_tile"],
                       "watch='yes' must be a whole number from 0 to 1")):
        r = CliRunner().invoke(app, ["inspect", str(bundle), *args, "--max-frames", "1"])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, (args, r.output)


@needs_gst
def test_rtsp_output_serves_the_overlay_stream(bundle, tmp_path):
    Gst, _ = gst()
    port = _free_port()
    got = {"frames": 0}

    def client():
        deadline = time.monotonic() + 30  # the server listens once the bundle and engine are loaded
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        pipe = Gst.parse_launch(f"rtspsrc location=rtsp://127.0.0.1:{port}/edgead latency=0 ! rtph264depay ! "
                                "h264parse ! avdec_h264 ! fakesink name=f signal-handoffs=true sync=false")
        pipe.get_by_name("f").connect("handoff", lambda *a: got.__setitem__("frames", got["frames"] + 1))
        pipe.set_state(Gst.State.PLAYING)
        time.sleep(4)
        pipe.set_state(Gst.State.NULL)

    t = threading.Thread(target=client)
    t.start()
    res = inspect(InspectRequest(bundle=bundle, source="test://", output=f"rtsp://:{port}/edgead",
                                 category="magnetic_tile", alerts_dir=tmp_path / "alerts", duration=8, quiet=True))
    t.join()
    assert res["frames"] > 0 and got["frames"] > 10, (res["frames"], got)
    assert "rtph264pay" in res["pipelines"]["output"]


@needs_gst
def test_watched_folder_inspects_each_arriving_file_once_when_complete(bundle, tiny_real, tmp_path):
    folder, summary = tmp_path / "drop", tmp_path / "s.json"
    folder.mkdir()
    srcs = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:4]
    for i in (0, 1):  # already there at start: inspected first
        shutil.copy(srcs[i], folder / f"{i:03d}.png")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgead.cli", "inspect", str(bundle), "--source",
                             f"images://{folder}?watch=1&settle=400", "--output", "none", "--category", "magnetic_tile",
                             "--alerts", str(tmp_path / "alerts"), "--json", str(summary)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(6)
    shutil.copy(srcs[2], folder / "002.png.tmp")  # written under a temporary name, then renamed
    os.replace(folder / "002.png.tmp", folder / "002.png")
    data = srcs[3].read_bytes()
    with open(folder / "003.png", "wb") as f:  # a slow writer: never read half-written
        for k in range(4):
            f.write(data[k * len(data) // 4:(k + 1) * len(data) // 4])
            f.flush()
            time.sleep(0.1)
    (folder / ".hidden.png").write_bytes(data)  # hidden files and other suffixes are never read
    (folder / "004.png.part").write_bytes(data)
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    res = json.loads(summary.read_text())
    names = [d["name"] for d in res["decisions_tail"]]
    assert names == ["000.png", "001.png", "002.png", "003.png"], names  # each once, in arrival order
    assert res["frames"] == 4 and res["skipped"] == [] and res["end"] == "SIGTERM"
    b = Bundle.load(bundle)
    x = np.stack([b.preprocess(read_image(folder / n)) for n in names])
    want = b.category_norm("magnetic_tile").score(open_engine(bundle, "fp32").run_batched(x)["score"].astype(float))
    assert np.allclose([d["score"] for d in res["decisions_tail"]], want, atol=1e-4)


def test_latency_budget_counts_frames_over_it_and_fails_the_run_when_p99_misses(bundle, tiny_real, tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    for i, p in enumerate(sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:3]):
        shutil.copy(p, folder / f"{i:03d}.png")
    out = {}
    for budget in ("0.001", "1000000"):
        summary = tmp_path / f"s{budget}.json"
        r = CliRunner().invoke(app, ["inspect", str(bundle), "--source", f"images://{folder}", "--category",
                                     "magnetic_tile", "--alerts", str(tmp_path / "alerts"), "--latency-budget-ms",
                                     budget, "--json", str(summary)])
        out[budget] = (r.exit_code, json.loads(summary.read_text())["latency"], r.output)
    code, lat, text = out["0.001"]  # no frame is decided in a microsecond
    assert code == 1 and lat["over_budget"] == 3 and lat["met"] is False and "over the 0.001 ms budget" in text
    assert "Traceback" not in text
    code, lat, _ = out["1000000"]
    assert code == 0 and lat["over_budget"] == 0 and lat["met"] is True and lat["capture_to_decision_p99_ms"] > 0


def test_two_sources_one_engine_decisions_and_alerts_tagged_by_source(bundle, tiny_real, tmp_path):
    """Two cameras (here two folders of stills, a product each) in one process: every part of each is
    inspected once with its own product's normalisation, and each alert line names its source."""
    from edgead.threshold import ThresholdRequest, set_thresholds

    b2 = tmp_path / "b"
    shutil.copytree(bundle, b2, ignore=shutil.ignore_patterns("reports"))
    cats = ["magnetic_tile", "deeppcb"] if "deeppcb" in Bundle.load(b2).categories else ["magnetic_tile"] * 2
    for c in set(cats):
        set_thresholds(ThresholdRequest(target=b2, quantile=0.01, category=c))  # most parts flagged: alerts
    folders, offline = [], {}
    b = Bundle.load(b2)
    engine = open_engine(b2, "fp32")
    for k, cat in enumerate(cats):
        f = tmp_path / f"cam{k}"
        f.mkdir()
        for s in mvtec.discover(tiny_real, [cat], "test"):
            shutil.copy(s.path, f / f"{k}_{s.defect}_{s.path.name}")
            raw = float(engine.run_batched(b.preprocess(read_image(s.path))[None])["score"][0])
            offline[f"{k}_{s.defect}_{s.path.name}"] = float(b.category_norm(cat).score(raw))
        folders.append(f)
    engine.close()
    uris = [f"images://{f}" for f in folders]
    res = inspect(InspectRequest(bundle=b2, source=uris, category=cats, alerts_dir=tmp_path / "alerts", quiet=True))
    assert res["end"] == "end of stream" and res["frames"] == len(offline)
    assert [s["frames"] for s in res["sources"]] == [len(list(f.iterdir())) for f in folders]
    for d in res["decisions_tail"]:
        assert d["source"] == uris[int(d["name"][0])] and d["category"] == cats[int(d["name"][0])]
        assert d["score"] == pytest.approx(offline[d["name"]], abs=1e-4)  # its own product's normalisation
    events = read_events(tmp_path / "alerts" / "events.jsonl")
    assert len(events) == res["flagged"] > 0
    for e in events:
        assert e["source"] == uris[int(e["name"][0])] and e["category"] == cats[int(e["name"][0])]
    assert res["backend"]["threads"] == live_threads(None)  # the one engine leaves a core to capture and alerts
    assert res["verification"]["state"] == "exported" and res["verification"]["trusted"]  # FP32: export's parity
    assert sum(s["flagged"] for s in res["sources"]) == res["flagged"]
    with pytest.raises(EdgeadError, match="given twice"):
        inspect(InspectRequest(bundle=b2, source=[uris[0], uris[0]], category="magnetic_tile", quiet=True))


def test_live_inference_leaves_a_core_to_capture_and_alerts(monkeypatch):
    """Unless asked, a live run infers on one thread fewer than the CPUs it may use, never fewer than one."""
    for cpus, threads in ((1, 1), (2, 1), (4, 3), (8, 7)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert live_threads(None) == threads
        assert live_threads(3) == 3
        assert live_threads(None, workers=2) == 1  # frames side by side, one thread each


def test_stage_windows_keep_the_last_values_in_fixed_memory():
    from edgead.live.inspect import Window, _pct

    w = Window(100)
    buf = w.a
    for i in range(1000):
        w.append(float(i))
    assert w.a is buf and w.a.nbytes == 800  # no growth however long the run
    assert sorted(w.values()) == [float(i) for i in range(900, 1000)]
    assert list(w.last(3)) == [999.0, 998.0, 997.0] and _pct(w)["n"] == 100 and _pct(Window(4)) == {}


@needs_gst
def test_alert_images_respect_free_space_and_the_folder_cap(bundle, tmp_path):
    """An unattended box must not fill its disk: under --alerts-min-free-mb the lines are written without images;
    with --alerts-max-mb the oldest image pairs (an earlier run's first) are deleted and the newest kept."""
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    old = [alerts / f"20000101-000000_0000001_old.{k}.png" for k in ("frame", "heatmap")]
    for p in old:
        p.write_bytes(b"\x89PNG" + bytes(40_000))
    res = inspect(InspectRequest(bundle=bundle, source="test://", category="magnetic_tile", alerts_dir=alerts,
                                 max_frames=12, policy="every", alerts_max_mb=0.1, quiet=True))
    events = read_events(alerts / "events.jsonl")
    assert res["flagged"] >= 3 and len(events) == res["flagged"] == res["alerts"]["written"]
    assert not any(p.exists() for p in old)  # the oldest pair went first
    kept = sorted(p.name.removesuffix(".frame.png") for p in alerts.glob("*.frame.png"))
    assert kept and len(list(alerts.glob("*.heatmap.png"))) == len(kept)
    assert sum(p.stat().st_size for p in alerts.glob("*.png")) <= 0.1e6 or len(kept) == 1
    newest = [Path(e["frame_path"]).name.removesuffix(".frame.png") for e in events][-len(kept):]
    assert kept == newest and res["alerts"]["images_pruned"] == 1 + len(events) - len(kept)

    full = tmp_path / "full"  # more free space asked for than the disk has: lines only, no images
    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    res = inspect(InspectRequest(bundle=bundle, source="test://", category="magnetic_tile", alerts_dir=full,
                                 max_frames=4, policy="every", alerts_min_free_mb=free_mb * 10, quiet=True))
    events = read_events(full / "events.jsonl")
    assert res["flagged"] > 0 and len(events) == res["flagged"] == res["alerts"]["images_skipped"]
    assert all(e["frame_path"] is None and "--alerts-min-free-mb" in e["images_skipped"] for e in events)
    assert not list(full.glob("*.png"))
    r = CliRunner().invoke(app, ["inspect", str(bundle), "--source", "test://", "--category", "magnetic_tile",
                                 "--alerts", str(tmp_path / "full2"), "--max-frames", "2", "--policy", "every",
                                 "--alerts-min-free-mb", str(free_mb * 10)])
    assert r.exit_code == 0 and "saved without images" in " ".join(r.output.split()), r.output


def test_frames_inferred_side_by_side_come_back_in_order_and_errors_surface():
    """``InOrder``: later frames that finish first wait for the earlier ones; a worker's error is raised at its turn."""
    from edgead.live.workers import InOrder

    done = []

    def work(i: int) -> int:
        time.sleep(0.05 if i % 3 == 0 else 0.0)  # every third frame slow: the next ones finish before it
        if i == 7:
            raise ValueError("bad frame 7")
        done.append(i)
        return i * i

    flight = InOrder(work, workers=3)
    got = []
    for i in range(7):
        flight.submit(f"t{i}", i)
        if flight.full:
            got.append(flight.pop())
    while flight:
        got.append(flight.pop())
    assert [g[0] for g in got] == [f"t{i}" for i in range(7)] and [g[2] for g in got] == [i * i for i in range(7)]
    assert done != sorted(done)  # they did finish out of order
    flight.submit("t7", 7)
    with pytest.raises(ValueError, match="bad frame 7"):
        flight.pop()
    flight.close()


def test_workers_stop_at_max_frames_and_need_a_concurrent_engine(bundle, tiny_real, tmp_path):
    src = f"images://{tiny_real / 'magnetic_tile' / 'train' / 'good'}"
    res = inspect(InspectRequest(bundle=bundle, source=src, category="magnetic_tile", max_frames=3, workers=2,
                                 alerts_dir=tmp_path / "alerts", quiet=True))
    assert res["frames"] == 3 and res["workers"] == 2 and res["end"] == "max frames"
    r = CliRunner().invoke(app, ["inspect", str(bundle), "--source", src, "--backend", "torch", "--workers", "2",
                                 "--category", "magnetic_tile", "--alerts", str(tmp_path / "a2"), "--max-frames", "1"])
    assert r.exit_code == 2 and "one frame at a time" in r.output, r.output
