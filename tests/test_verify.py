"""edgead verify: reference outputs, each gate on real outputs (and a failure it must catch), culprit
layers for a planted INT8 mis-calibration, and the HTML report rendered by a real headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.build import BuildRequest, build
from edgead.bundle import Bundle, record_graph
from edgead.cli import app
from edgead.verify import compare
from edgead.verify.faults import misscale_activations
from edgead.verify.gates import load_gates
from edgead.verify.reference import REFERENCE, load_reference, tensor_sha256
from edgead.verify.run import evaluate_gates
from edgead.verify.status import verification


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    out = export_run(tmp_path_factory.mktemp("vbundles") / "crad")
    r = CliRunner().invoke(app, ["verify", str(out), "--precision", "fp32", "--json", str(out / "v.json")])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def outputs(bundle):
    """(bundle, reference, fp32 ORT outputs on the reference inputs)."""
    b = Bundle.load(bundle)
    ref = load_reference(b)
    eng = open_engine(bundle, "fp32").run_batched(ref.inputs(b))
    return b, ref, eng


def _failed(rows):
    return {(r["level"], r["gate"]) for r in rows if r["passed"] is False}


def test_reference_is_saved_once_with_input_hashes(bundle):
    b = Bundle.load(bundle)
    entry = b.meta["reference"]
    ref = load_reference(b)
    assert entry["n_good"] > 0 and entry["n_defect"] > 0 and set(entry["per_category"]) == set(b.meta["categories"])
    assert [tensor_sha256(x) for x in ref.inputs(b)] == list(ref.input_sha256)
    assert ref.maps.shape == (len(ref), *b.input_shape[2:]) and ref.masks[ref.labels == 1].any()
    mtime = (bundle / REFERENCE).stat().st_mtime_ns
    res = json.loads((bundle / "v.json").read_text())
    inputs = next(r for r in res["gates"] if r["gate"] == "inputs")["findings"]
    assert inputs["source_files_checked"] == len(ref) == inputs["source_files_identical_tensor"]
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "fp32"])
    assert r.exit_code == 0 and (bundle / REFERENCE).stat().st_mtime_ns == mtime  # reused, not remade


def test_fp32_passes_every_gate(bundle):
    res = json.loads((bundle / "v.json").read_text())
    assert res["passed"] and not res["failed"] and set(res["levels"].values()) == {"pass"}
    levels = {r["level"] for r in res["gates"] if r["passed"] is True}
    assert levels == {"L0", "L1", "L2", "L3", "L4"}


def test_each_gate_catches_its_failure(outputs):
    b, ref, eng = outputs
    gates = load_gates("fp32")
    rows, _ = evaluate_gates(b, ref, eng, gates)
    assert not _failed(rows)
    cat = b.meta["categories"][0]
    idx = np.flatnonzero(ref.categories == cat)
    norm = b.category_norm(cat)

    def copy():
        return {k: v.copy() for k, v in eng.items()}

    bad = copy()  # L0: a NaN
    bad["anomaly_map"][0, 0, 0, 0] = np.nan
    assert ("L0", "structure") in _failed(evaluate_gates(b, ref, bad, gates)[0])
    bad = copy()  # L1: maps with 5% noise
    bad["anomaly_map"] *= 1 + 0.05 * np.random.default_rng(0).standard_normal(bad["anomaly_map"].shape)
    assert {("L1", "map_cosine_min"), ("L1", "map_psnr_min_db")} <= _failed(evaluate_gates(b, ref, bad, gates)[0])
    # L2 and L3: one good image pushed over its threshold, named as the worst image and as the flip
    good = idx[ref.labels[idx] == 0]
    i = good[np.argmax(ref.scores[good])]
    bad = copy()
    bad["score"][i] = norm.threshold + 0.5 * norm.scale
    rows = evaluate_gates(b, ref, bad, gates)[0]
    assert {("L2", "score_abs_max"), ("L3", "decision_agreement_min")} <= _failed(rows)
    l2 = next(r for r in rows if r["gate"] == "score_abs_max" and r["category"] == cat)
    assert l2["worst"]["file"] == ref.files[i] and l2["value"] == pytest.approx(
        abs((bad["score"][i] - ref.scores[i]) / norm.scale), rel=1e-4)
    l3 = next(r for r in rows if r["gate"] == "decision_agreement_min" and r["category"] == cat)
    assert [f["file"] for f in l3["worst"]["flipped"]] == [ref.files[i]]
    bad = copy()  # L3 masks: engine map shifted by 16 px
    bad["anomaly_map"] = np.roll(bad["anomaly_map"], 16, axis=3)
    assert ("L3", "mask_iou_min") in _failed(evaluate_gates(b, ref, bad, gates)[0])
    # L4: scores reversed within the category the reference ranks best -> its AUROC collapses
    from edgead.metrics import auroc

    def ref_auroc(c):
        return auroc(ref.scores[ref.categories == c], ref.labels[ref.categories == c])

    cat = max(b.meta["categories"], key=ref_auroc)
    idx = np.flatnonzero(ref.categories == cat)
    assert auroc(ref.scores[idx], ref.labels[idx]) > 0.6
    bad = copy()
    bad["score"][idx] = ref.scores[idx].max() + ref.scores[idx].min() - ref.scores[idx]
    assert ("L4", "image_auroc_drop_max") in _failed(evaluate_gates(b, ref, bad, gates)[0])


def test_spearman_and_iou_against_references():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)  # with ties
    b = a + rng.normal(0, 1, 40)
    assert compare.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    m1 = np.zeros((2, 4, 4), bool)
    m2 = m1.copy()
    m1[0, :2], m2[0, :1] = True, True
    total, per = compare.pooled_iou(m1, m2)
    assert total == pytest.approx(0.5) and list(per) == [0.5, 1.0]


def test_planted_miscalibration_is_caught_and_located(bundle, tmp_path):
    b = Bundle.load(bundle)
    build(BuildRequest(bundle=bundle, precision="int8", recipe="tensorrt", count=16, qad="never", fallback=False))
    good = bundle / "model.int8-tensorrt.onnx"
    saved = tmp_path / "good.onnx"
    shutil.copy(good, saved)
    # A node in the fusion network: its input activation's scale x0.02 (saturates that layer)
    import onnx

    model = onnx.load(str(good))
    node = next(n.name for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/fusion/"))
    producers = {o: n for n in model.graph.node for o in n.output}
    target = producers[producers[next(n for n in model.graph.node if n.name == node).input[0]].input[0]].input[0]
    misscale_activations(saved, good, 0.02, node=node)
    js, page = tmp_path / "v.json", tmp_path / "v.html"
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "int8-tensorrt", "--json", str(js),
                                 "--html", str(page)])
    res = json.loads(js.read_text())
    assert r.exit_code == 1 and not res["passed"]
    assert "Score error by label" in page.read_text()
    assert res["levels"]["L0"] == "pass" and res["levels"]["L2"] == "fail"
    for cat, m in res["per_category"].items():  # the error by label: its largest is the L2 gate's value
        l2 = next(g for g in res["gates"] if g["gate"] == "score_abs_max" and g["category"] == cat)
        assert max(v["max_abs"] for v in m["score_error"].values()) == pytest.approx(l2["value"])
        assert sum(v["n"] for v in m["score_error"].values()) == m["n_good"] + m["n_defect"]
        assert f"score error [{cat}]" in r.output and f"score_abs_max [{cat}]" in r.output  # categories named
    assert res["culprits"]["top"][0]["tensor"] == target, res["culprits"]["top"][:3]
    # a line must not run it unknowingly: inspect warns, and refuses under --require-verified (before any camera)
    v = verification(Bundle.load(bundle), "int8-tensorrt", "tensorrt")  # the ORT report stands in for the device's
    assert v.state == "failed" and "L2" in v.failed_levels and v.backend == "onnxruntime" and not v.trusted
    inspect_args = ["inspect", str(bundle), "--precision", "int8-tensorrt", "--source", "test://", "--category",
                    b.categories[0], "--max-frames", "1", "--require-verified"]
    r = CliRunner().invoke(app, inspect_args)
    assert r.exit_code == 2 and "failed edgead verify (L2" in " ".join(r.output.split()), r.output
    assert verification(b, "fp32").trusted  # the module's fp32 verify passed
    # the whole calibration mis-scaled
    misscale_activations(saved, good, 0.02)
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "int8-tensorrt", "--json", str(js)])
    assert r.exit_code == 1 and "failed L2" in r.output
    shutil.copy(saved, good)
    record_graph(bundle, "int8-tensorrt")  # the good graph back, as built
    assert verification(Bundle.load(bundle), "int8-tensorrt").state == "stale"  # the report was of another graph
    r = CliRunner().invoke(app, inspect_args)
    assert r.exit_code == 2 and "is of another build of this graph" in " ".join(r.output.split()), r.output
    del b


def test_gates_file_overrides_and_rejects_unknown_gates(bundle, tmp_path):
    strict = tmp_path / "gates.yaml"
    strict.write_text("fp32:\n  L2: {score_abs_max: 0.0}\n  atol: 0.0\n")
    r = CliRunner().invoke(app, ["verify", str(bundle), "--gates", str(strict), "--json", str(tmp_path / "v.json")])
    res = json.loads((tmp_path / "v.json").read_text())
    if res["failed"]:  # exact zero error is possible for fp32 on ORT; the limit is then met
        assert r.exit_code == 1 and {f["gate"] for f in res["failed"]} <= {"score_abs_max", "map_out_of_tolerance_max"}
    assert res["gate_settings"]["L2"]["score_abs_max"] == 0.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("fp16:\n  L2: {score_error: 0.1}\n")
    r = CliRunner().invoke(app, ["verify", str(bundle), "--gates", str(bad)])
    assert r.exit_code == 2 and "fp16.L2.score_error is not a gate" in r.output and "Traceback" not in r.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _screenshot(html, png):
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1280,3000", f"--screenshot={png}", f"file://{html}"],
                   check=True, capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # heatmap overlays are the only strongly saturated red/blue areas on the page
    sat = rgb.max(2) - rgb.min(2)
    return float((sat > 120).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: make test installs it (apt chromium)")
def test_html_report_renders_its_images_in_headless_chromium(bundle, tmp_path):
    page = tmp_path / "report.html"
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "fp32", "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<img src='data:image/png;base64," in text and "<svg" in text
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", text)  # self-contained: nothing fetched
    shown = _screenshot(page, tmp_path / "shot.png")
    broken = tmp_path / "broken.html"  # the same page with its images made undecodable
    broken.write_text(text.replace("data:image/png;base64,", "data:image/png;base64,AAAA"))
    control = _screenshot(broken, tmp_path / "broken.png")
    assert shown > 0.01 and shown > 5 * max(control, 1e-3), (shown, control)
