"""Bad input, tried as an attacker and a new user would: no pipeline injection, no silently skipped part,
no traceback, a live run that always ends, and images:// that sees what the offline path saw."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.cli import app, normalize_argv
from edgead.data.image import read_image
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_json, read_json, sha256_file
from tests.conftest import built

gst_missing = False
try:
    from edgead.live.gst import gst

    gst()
except EdgeadError as e:
    gst_missing = str(e)
needs_gst = pytest.mark.skipif(bool(gst_missing), reason=f"GStreamer missing: {gst_missing}")


def edgead(*args):
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert "Traceback" not in r.output, r.output
    return r


def cli(*args, timeout=120, **kw):
    """The real command in its own process (signals, exit codes, stdout apart from stderr)."""
    return subprocess.run([sys.executable, "-m", "edgead", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("hardening") / "crad")


@pytest.fixture
def bundle_copy(bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("engines", "reports"))
    return dst


def _edit_meta(bundle_dir: Path, change) -> None:
    meta = read_json(bundle_dir / "meta.json")
    change(meta)
    atomic_write_json(bundle_dir / "meta.json", meta)


# -- 1. pipeline injection ----------------------------------------------------------------------------
@needs_gst
def test_no_uri_option_or_bundle_field_can_add_an_element(bundle, bundle_copy, tmp_path):
    inject = f"videotestsrc num-buffers=5 ! pngenc ! multifilesink location={tmp_path}/x_%d.png"
    base = ["inspect", bundle, "--category", "magnetic_tile", "--max-frames", 3, "--first-frame-timeout", 5,
            "--alerts", tmp_path / "alerts"]
    cases = [
        (["--source", f"rtsp://127.0.0.1:1/a {inject} rtspsrc location=rtsp://127.0.0.1:1/b"], "no spaces"),
        (["--source", f"test://?pattern=ball ! pngenc ! filesink location={tmp_path}/y.png"], "pattern"),
        (["--output", f"file://{tmp_path}/o.mkv {inject} ! filesink location={tmp_path}/z.mkv"], "does not exist"),
    ]
    for args, msg in cases:
        r = edgead(*base, *args)
        assert r.exit_code == 2 and msg in r.output, (args, r.output)
    _edit_meta(bundle_copy, lambda m: m["preprocess"].__setitem__("height", f"128 ! pngenc ! filesink "
                                                                           f"location={tmp_path}/w.png"))
    r = edgead("inspect", bundle_copy, "--category", "magnetic_tile", "--max-frames", 1)
    assert r.exit_code == 2 and "field preprocess.height" in r.output
    assert not list(tmp_path.glob("x_*.png")) and not list(tmp_path.glob("[yzw].*"))


@needs_gst
def test_values_are_properties_never_pipeline_text(tmp_path):
    """Even a value that reads like a pipeline is one property of one element."""
    from edgead.live.pipelines import Target, build, sink_pipeline
    from edgead.live.uri import parse

    evil = f"{tmp_path}/o.mkv videotestsrc ! pngenc ! multifilesink location={tmp_path}/x.mkv"
    chain = sink_pipeline(parse(f"file://{evil}", "sink"), Target(64, 64))
    pipe = build(chain, "test")
    names = sorted(e.get_factory().get_name() for e in pipe.children)
    assert names == sorted(chain.factories()) and "pngenc" not in names and "multifilesink" not in names
    sink = next(e for e in pipe.children if e.get_factory().get_name() == "filesink")
    assert sink.get_property("location") == evil


@needs_gst
def test_a_video_path_with_spaces_plays(bundle, tiny_real, tmp_path):
    from edgead.live.conveyor import make_video

    pre = Bundle.load(bundle).preprocess
    files = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:4]
    frames = [np.asarray(pre.resize_image(read_image(p))) for p in files]
    video = make_video(frames, tmp_path / "line 3 camera" / "clip one.mkv")
    r = edgead("inspect", bundle, "--source", f"file://{video}", "--category", "magnetic_tile", "--alerts",
               tmp_path / "alerts", "--json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 4


# -- 2. images:// never stops at a bad file; live parity with the offline path ----------------------------
def test_images_folder_skips_and_names_bad_files(bundle, tiny_real, tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    real = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:3]
    shutil.copy(real[0], folder / "000.png")
    (folder / "001.png").write_bytes(real[1].read_bytes()[:300])  # truncated
    (folder / "002.png").write_bytes(b"")  # 0 bytes (crashed the GStreamer decoder before)
    shutil.copy(real[1], folder / "003.png")
    shutil.copy(real[2], folder / "004.png")
    r = edgead("inspect", bundle, "--source", f"images://{folder}", "--category", "magnetic_tile", "--alerts",
               tmp_path / "alerts", "--json", tmp_path / "s.json")
    assert r.exit_code == 2 and "001.png" in r.output and "002.png" in r.output, r.output
    res = json.loads((tmp_path / "s.json").read_text())
    assert [d["name"] for d in res["decisions_tail"]] == ["000.png", "003.png", "004.png"]
    assert [Path(s["file"]).name for s in res["skipped"]] == ["001.png", "002.png"] and res["dropped"] == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    r = edgead("inspect", bundle, "--source", f"images://{bad}", "--category", "magnetic_tile", "--alerts",
               tmp_path / "alerts")
    assert r.exit_code == 2 and "a.png" in r.output and "no readable image" in r.output


def test_images_at_their_own_size_score_as_offline(bundle, tiny_real, tmp_path):
    """FP32 graph: the live images:// path and the offline path (eval/verify) give the same scores."""
    b = Bundle.load(bundle)
    pre, norm = b.preprocess, b.category_norm("magnetic_tile")
    folder = tmp_path / "stills"
    folder.mkdir()
    files = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))
    for i, p in enumerate(files):
        shutil.copy(p, folder / f"{i:03d}.png")
    sizes = {Image.open(p).size for p in files}
    assert len(sizes) > 1 and all(s != (pre.width, pre.height) for s in sizes)  # real sizes, not model size
    be = open_engine(bundle, "fp32")
    offline = np.array([norm.score(float(be.infer(pre(read_image(p))[None])["score"][0]))
                        for p in sorted(folder.iterdir())])
    r = edgead("inspect", bundle, "--source", f"images://{folder}", "--category", "magnetic_tile", "--alerts",
               tmp_path / "alerts", "--json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    live = np.array([d["score"] for d in json.loads((tmp_path / "s.json").read_text())["decisions_tail"]])
    assert len(live) == len(offline) and np.abs(live - offline).max() <= 0.005
    assert ((live >= 1.0) == (offline >= 1.0)).all()
    # the same check as a verify level: edgead verify --live
    r = edgead("verify", bundle, "--per-category", 6, "--live", f"images://{folder}", "--category", "magnetic_tile",
               "--json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "v.json").read_text())
    rows = {x["gate"]: x for x in v["gates"] if x["level"] == "LIVE"}
    assert set(rows) == {"live_score_abs_max", "live_decision_agreement_min", "parts_not_inspected"}
    assert all(x["passed"] for x in rows.values()) and rows["live_score_abs_max"]["value"] <= 0.005
    assert v["live"]["n_compared"] == len(files) and v["levels"]["LIVE"] == "pass"


# -- 3. a live run always ends: --duration, SIGTERM, a source that never starts -----------------------------
@needs_gst
def test_a_source_that_never_answers_honours_duration_and_sigterm(bundle, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts TCP connections, never says a word of RTSP
    port = silent.getsockname()[1]
    args = ["inspect", bundle, "--source", f"rtsp://127.0.0.1:{port}/cam", "--category", "magnetic_tile",
            "--alerts", tmp_path / "alerts"]
    try:
        t = time.monotonic()
        r = cli(*args, "--duration", 4, timeout=60)
        took = time.monotonic() - t
        assert r.returncode == 2 and "no frame" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert took < 4 + 20, took
        proc = subprocess.Popen([sys.executable, "-m", "edgead", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(6)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - t < 20 and proc.returncode == 2 and "no frame" in err, err
    finally:
        silent.close()


@needs_gst
def test_dead_camera_and_missing_device_are_error_exits(bundle, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    t = time.monotonic()
    r = cli("inspect", bundle, "--source", f"rtsp://127.0.0.1:{port}/cam", "--category", "magnetic_tile",
            "--max-frames", 5, "--first-frame-timeout", 3, "--alerts", tmp_path / "alerts", timeout=60)
    assert r.returncode == 2 and "no frame" in r.stderr and time.monotonic() - t < 30, r.stderr
    r = edgead("inspect", bundle, "--source", "v4l2:///dev/video97", "--category", "magnetic_tile")
    assert r.exit_code == 2 and "/dev/video97: no such camera device" in r.output


# -- 5. what used to be tracebacks: one line, exit 2 -------------------------------------------------------
def test_bad_files_and_values_are_one_line_errors(bundle, trained_run, tiny_copy, tmp_path):
    from tests.test_images import _png_header_only

    _png_header_only(tiny_copy / "magnetic_tile" / "train" / "good" / "zz_bomb.png", 30000, 30000)
    r = edgead("train", "--model", "crad", "--data", tiny_copy, "--out", tmp_path / "run", "--epochs", 1)
    assert r.exit_code == 2 and "zz_bomb.png: image is 30000x30000 px" in r.output, r.output
    for args, msg in ((["--set", "box_kernel=abc"], "box_kernel='abc' is not int"),
                      (["--size", "huge"], "size='huge'; choose edge, paper"),
                      (["--set", "nope=1"], "unknown config key 'nope'")):
        r = edgead("train", "--model", "crad", "--data", tiny_copy, "--out", tmp_path / "run2", *args)
        assert r.exit_code == 2 and msg in r.output, (args, r.output)
    for text, msg in (("int8: 5\n", "int8: expected a mapping"),
                      ("fp32:\n  L2: {score_abs_max: abc}\n", "fp32.L2.score_abs_max = 'abc' must be a number")):
        gates = tmp_path / "gates.yaml"
        gates.write_text(text)
        r = edgead("verify", bundle, "--gates", gates)
        assert r.exit_code == 2 and msg in r.output, r.output


def test_blocked_output_paths_and_missing_data_are_one_line_errors(bundle, trained_run, tmp_path, monkeypatch):
    in_the_way = tmp_path / "in_the_way"
    in_the_way.write_text("keep me")
    r = edgead("export", trained_run, "--out", in_the_way)
    assert r.exit_code == 2 and f"{in_the_way}: File exists; a file is in the way" in r.output, r.output
    r = edgead("verify", bundle, "--html", in_the_way / "report.html")
    assert r.exit_code == 2 and f"{in_the_way / 'report.html'}: " in r.output, r.output
    assert in_the_way.read_text() == "keep me"  # nothing already written is lost
    r = edgead("verify", bundle, "--data", tmp_path / "no_such_data")
    assert r.exit_code == 2 and "no_such_data: data folder not found" in r.output, r.output
    import edgead.evaluate as evaluation

    def no_filename(_req):  # an OSError that names no file of the user's stays a bug
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation, "evaluate", no_filename)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert edgead("eval", trained_run).exit_code == 3
    r = edgead("eval", trained_run, "--json", in_the_way / "m.json")  # refused before the work starts
    assert r.exit_code == 2 and f"{in_the_way / 'm.json'}: File exists" in r.output, r.output


def test_a_failed_atomic_write_names_its_file_and_stays_an_oserror(tmp_path):
    from edgead.errors import file_error

    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError) as e:  # alert writers catch OSError: it must stay one
        atomic_write_json(tmp_path / "f" / "out.json", {})
    assert e.value.filename == str(tmp_path / "f" / "out.json") and not list(tmp_path.glob(".*.tmp"))
    full = file_error(OSError(28, "No space left on device", "/data/run.json"))
    assert str(full) == "/data/run.json: No space left on device; the disk is full; free space and rerun"
    assert file_error(OSError(28, "No space left on device")) is None


def test_a_damaged_graph_in_bench_is_the_childs_one_line_error(bundle_copy):
    onnx = bundle_copy / "model.fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[:5000])
    r = cli("bench", bundle_copy, "--precision", "fp32", "--threads", 1)
    assert r.returncode == 2, r.stderr
    assert "SHA-256 differs from meta.json" in r.stderr
    assert "EdgeadError" not in r.stderr and "Traceback" not in r.stderr


def test_damaged_bundles_are_one_line_errors(bundle, tmp_path):
    def fresh(name):
        dst = tmp_path / name
        shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("engines", "reports"))
        return dst

    b = fresh("nofield")
    _edit_meta(b, lambda m: m.pop("input"))
    for args in (["verify", b], ["inspect", b, "--source", "test://", "--max-frames", 1],
                 ["build", b, "--precision", "fp16"], ["eval", b], ["bench", b]):
        r = edgead(*args)
        assert r.exit_code == 2 and "field input" in r.output and "re-export" in r.output, (args, r.output)
    b = fresh("cut")
    onnx = b / "model.fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 3])
    r = edgead("build", b, "--precision", "fp16")
    assert r.exit_code == 2 and "model.fp32.onnx: SHA-256 differs" in r.output
    b = fresh("evil-path")
    _edit_meta(b, lambda m: m["files"]["fp32"].__setitem__("path", "../../etc/passwd"))
    r = edgead("verify", b)
    assert r.exit_code == 2 and "files.fp32" in r.output


def test_bundle_format_versions(bundle_copy, monkeypatch):
    import edgead.bundle as bundle_mod

    _edit_meta(bundle_copy, lambda m: m.__setitem__("format_version", 2))
    r = edgead("verify", bundle_copy)
    assert r.exit_code == 2 and "newer than this edgead reads" in r.output
    _edit_meta(bundle_copy, lambda m: (m.__setitem__("format_version", 0), m["preprocess"].pop("extra")))
    r = edgead("inspect", bundle_copy, "--source", "test://", "--dry-run", "--category", "magnetic_tile")
    assert r.exit_code == 2 and "re-export the bundle" in r.output
    # an upgrade path: version 0 lacked preprocess.extra
    monkeypatch.setitem(bundle_mod.UPGRADES, 0, lambda m: {**m, "format_version": 1,
                                                           "preprocess": {**m["preprocess"], "extra": {}}})
    assert Bundle.load(bundle_copy).preprocess.extra == {}


def test_object_array_in_the_reference_is_refused(bundle, tmp_path):
    b = tmp_path / "ref"
    shutil.copytree(bundle, b, ignore=shutil.ignore_patterns("engines", "reports"))
    r = edgead("verify", b, "--per-category", 4)
    assert r.exit_code in (0, 1), r.output
    ref = b / "reference.npz"
    with np.load(ref) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = np.array([{"__reduce__": "os.system"}] * len(arrays["labels"]), dtype=object)
    np.savez(ref, **arrays)  # a crafted file whose hash is then written into meta.json
    _edit_meta(b, lambda m: m["reference"].__setitem__("sha256", sha256_file(ref)))
    r = edgead("verify", b)
    assert r.exit_code == 2 and "reference.npz: not a readable reference" in r.output, r.output


# -- 6. one precision key for every verb, and advice that works ----------------------------------------------
def test_an_int8_build_failing_its_split_is_written_and_exits_1(bundle_copy, tmp_path):
    """No candidate meets the gates: the best is written (for verify to explain) and the build exits 1, as verify
    does, so a deploy script stops; under gates it meets, the same build exits 0."""
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text("int8:\n  L2: {spearman_min: 1.5}\n")  # no graph ranks better than perfectly
    args = ["build", bundle_copy, "--precision", "int8", "--calib-count", 8, "--qad", "never", "--no-fallback",
            "--no-bias-correction", "--force", "--gates"]
    r = edgead(*args, impossible)
    assert r.exit_code == 1 and (bundle_copy / "model.int8-cpu.onnx").is_file(), r.output
    assert "int8-cpu graph is written but fails its gates file on the build split" in " ".join(r.output.split())
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("int8:\n  L2: {score_abs_max: null, spearman_min: null}\n"
                       "  L3: {decision_agreement_min: null, mask_iou_min: null}\n"
                       "  L4: {image_auroc_drop_max: null, pixel_auroc_drop_max: null, aupro_drop_max: null}\n")
    r = edgead(*args, lenient)
    assert r.exit_code == 0 and "fails" not in r.output, r.output


def test_every_verb_resolves_int8_the_same_way(bundle_copy, tmp_path):
    r = edgead("inspect", bundle_copy, "--precision", "int8-tensorrt", "--source", "test://", "--category",
               "magnetic_tile")
    assert r.exit_code == 2 and f"edgead build {bundle_copy} --precision int8 --recipe tensorrt" in r.output
    r = edgead("eval", bundle_copy, "--precision", "int8")
    assert r.exit_code == 2 and "--precision int8 --recipe cpu" in r.output
    r = edgead("build", bundle_copy, "--precision", "int8", "--calib-count", 8, "--qad", "never", "--no-fallback")
    built(r.exit_code, r.output, bundle_copy, "int8-cpu")
    r = edgead("eval", bundle_copy, "--precision", "int8", "--overlays", 0, "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["precision"] == "int8-cpu"
    r = edgead("bench", bundle_copy, "--precision", "int8", "--iters", 5, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "b.json").read_text())["engines"]) == ["onnxruntime int8-cpu"]
    r = edgead("eval", bundle_copy, "--precision", "int9")
    assert r.exit_code == 2 and "choose fp32, fp16, int8, int8-cpu, int8-tensorrt" in r.output
    import yaml

    from edgead.calibration import load_recipes

    own = load_recipes()
    del own["recipes"]["tensorrt"]
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(own))  # a site's own recipes file without that recipe
    r = edgead("build", bundle_copy, "--precision", "int8", "--recipe", "tensorrt", "--recipes", tmp_path / "site.yaml")
    assert r.exit_code == 2 and f"recipe 'tensorrt' not in {tmp_path / 'site.yaml'}; choose cpu" in " ".join(
        r.output.split()), r.output


# -- 7. smaller ones ------------------------------------------------------------------------------------------
def _strict(text: str):
    def no_constant(c):
        raise ValueError(f"{c} in JSON")
    return json.loads(text, parse_constant=no_constant)


def test_eval_json_is_strict_without_good_test_images(trained_run, tiny_copy, tmp_path):
    shutil.rmtree(tiny_copy / "magnetic_tile" / "test" / "good")
    r = edgead("eval", trained_run, "--data", tiny_copy, "--category", "magnetic_tile", "--json",
               tmp_path / "e.json", "--overlays", 0)
    assert r.exit_code == 0, r.output
    res = _strict((tmp_path / "e.json").read_text())
    assert res["per_category"]["magnetic_tile"]["image_auroc"] is None


def test_thresholds_from_few_normals_are_flagged(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    n = info["normalization"]["magnetic_tile"]["n_images"]
    assert n < 20 and any(f"threshold from {n} held-out normal" in w for w in info["warnings"])


def test_stale_temp_folders_are_cleaned_on_the_next_build(bundle_copy):
    stale = bundle_copy / ".build-999999999-abcd"  # a pid that cannot be running
    stale.mkdir()
    (stale / "model.fp16.onnx").write_bytes(b"x" * 1000)
    r = edgead("build", bundle_copy, "--precision", "fp16")
    assert r.exit_code == 0, r.output
    assert not stale.exists() and not list(bundle_copy.glob(".build-*"))


def test_version_json_to_stdout_and_piped_tables(bundle):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("edgead ")
    r = cli("inspect", bundle, "--source", "test://", "--category", "magnetic_tile", "--dry-run", "--json", "-")
    assert r.returncode == 0 and not (Path.cwd() / "-").exists()
    assert _strict(r.stdout)["policy"] == "latest"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    r = cli("train", env=env)  # the models table, piped
    assert r.returncode == 0 and "…" not in r.stdout and "crad" in r.stdout
    r = cli("inspect", "--help", env=env)
    assert r.returncode == 0 and "--first-frame-timeout" in r.stdout and max(map(len, r.stdout.splitlines())) > 80


def test_an_internal_error_says_where_its_traceback_is(monkeypatch, tmp_path, trained_run):
    import edgead.evaluate as evaluation

    def broken(_req):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = edgead("eval", trained_run)
    assert r.exit_code == 3 and "internal error: ZeroDivisionError: planted bug" in r.output
    saved = list((tmp_path / "edgead" / "crashes").glob("crash-*.txt"))
    assert len(saved) == 1 and "Traceback" in saved[0].read_text() and str(saved[0]) in r.output.replace("\n", "")


def test_doctor_on_a_machine_that_is_not_a_jetson():
    from edgead.doctor import doctor

    res = doctor("jetson")
    gpu = next(r for r in res["rows"] if r["item"] == "GPU")
    assert gpu["status"] == "missing" and "not a Jetson" in gpu["detail"]
    fixes = [r["fix"] for r in res["rows"] if r["area"] == "pipelines" and r["status"] == "missing"]
    assert fixes and all(f.startswith("sudo apt-get install ") and len(f.split()) > 3 for f in fixes)


# -- fuzz: damaged meta.json never gives a traceback ---------------------------------------------------------------
def test_fuzzed_meta_json_never_raises_anything_else(bundle, tmp_path):
    """60 damaged metadata files (byte flips, removed fields, wrong types): loaded and planned, or EdgeadError."""
    from edgead.live.inspect import InspectRequest, plan

    good = (bundle / "meta.json").read_bytes()
    meta = json.loads(good)
    rng = np.random.default_rng(0)
    dst = tmp_path / "fz"
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("engines", "reports", "*.onnx"))
    leaves = []

    def walk(obj, path):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, path + [k])
        elif path:
            leaves.append(path)
    walk(meta, [])
    wrong = ["x", -1, None, [], {}, 1e309, True, "256 ! fakesink", 0]
    errors = 0
    for i in range(60):
        if i % 2 == 0:
            data = bytearray(good)
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(32, 127))
            (dst / "meta.json").write_bytes(bytes(data))
        else:
            m = json.loads(good)
            path = leaves[int(rng.integers(len(leaves)))]
            parent = m
            for k in path[:-1]:
                parent = parent[k]
            if i % 4 == 1:
                del parent[path[-1]]
            else:
                parent[path[-1]] = wrong[int(rng.integers(len(wrong)))]
            (dst / "meta.json").write_text(json.dumps(m))
        try:
            b = Bundle.load(dst)
            _ = b.preprocess, b.input_shape, b.category_norm(b.meta["categories"][0])
            plan(InspectRequest(bundle=dst, source="test://", category=b.meta["categories"][0], platform="desktop"))
        except EdgeadError as e:
            assert "\n" not in str(e)
            errors += 1
    assert errors > 20
