"""Export to a bundle: real ONNX Runtime sessions on real images against the PyTorch reference."""

import json
import stat

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.cli import app
from edgead.data import mvtec
from edgead.errors import EdgeadError
from edgead.export import ExportRequest, export_bundle, parity_samples


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("bundles") / "crad")


def test_bundle_layout_and_meta(bundle, trained_run):
    meta = json.loads((bundle / "meta.json").read_text())
    run = json.loads((trained_run / "run.json").read_text())
    assert meta["input"] == {"name": "image", "shape": [1, 3, 128, 160], "layout": "NCHW", "dtype": "float32"}
    assert [o["name"] for o in meta["outputs"]] == ["anomaly_map", "score"]
    assert meta["preprocess"] == run["preprocess"] and meta["normalization"] == run["normalization"]
    assert meta["export"]["parity"]["anomaly_map_max_rel"] < 1e-3 and meta["export"]["parity"]["n_images"] == 4
    assert stat.S_IMODE((bundle / "meta.json").stat().st_mode) & 0o044  # readable by others, not 0600
    model = onnx.load(str(bundle / "model.fp32.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" not in ops and {"MatMul", "AveragePool", "ReduceMax"} <= ops  # tent sampling, post-proc


def test_ort_matches_torch_on_real_defects(bundle, trained_run, tiny_real):
    b = Bundle.load(bundle)
    samples = [s for s in mvtec.discover(tiny_real, None, "test") if s.label][:3]
    images = mvtec.load_images(samples, b.preprocess)
    ort = open_engine(bundle)
    ref = open_engine(trained_run, backend="torch")
    for img in images:
        got, want = ort.infer(img[None]), ref.infer(img[None])
        assert got["anomaly_map"].shape == (1, 1, 128, 160)
        scale = np.abs(want["anomaly_map"]).max()
        assert np.abs(got["anomaly_map"] - want["anomaly_map"]).max() / scale < 1e-4
        assert got["score"] == pytest.approx(want["score"], rel=1e-4)


def test_parity_uses_normals_and_defects_of_each_category(trained_run):
    info = json.loads((trained_run / "run.json").read_text())
    samples = parity_samples(info, None, 8)
    for cat in info["data"]["categories"]:
        labels = {s.label for s in samples if s.category == cat}
        assert labels == {0, 1}, cat


def test_reexport_is_idempotent_and_failed_parity_writes_nothing(bundle, trained_run, tmp_path):
    before = (bundle / "model.fp32.onnx").stat().st_mtime_ns
    export_bundle(ExportRequest(run=trained_run, out=bundle))
    assert (bundle / "model.fp32.onnx").stat().st_mtime_ns == before
    out = tmp_path / "strict"
    with pytest.raises(EdgeadError, match="differs from PyTorch"):
        export_bundle(ExportRequest(run=trained_run, out=out, tolerance=0.0, parity_images=2))
    assert not list(out.glob("*.onnx")) and not (out / "meta.json").exists()


def test_fixed_larger_batch(trained_run, tmp_path):
    meta = export_bundle(ExportRequest(run=trained_run, out=tmp_path / "b2", batch=2, parity_images=4))
    assert meta["input"]["shape"][0] == 2
    out = open_engine(tmp_path / "b2").infer(np.zeros((2, 3, 128, 160), np.float32))
    assert out["anomaly_map"].shape == (2, 1, 128, 160) and out["score"].shape == (2,)


def test_not_a_bundle_is_one_line_error(tmp_path):
    with pytest.raises(EdgeadError, match="not a bundle"):
        Bundle.load(tmp_path)


def test_eval_bundle_on_ort_matches_torch_reference(bundle, trained_run, tiny_real, tmp_path):
    runner = CliRunner()
    for target, js in ((trained_run, tmp_path / "torch.json"), (bundle, tmp_path / "ort.json")):
        r = runner.invoke(app, ["eval", str(target), "--data", str(tiny_real), "--json", str(js), "--overlays", "0"])
        assert r.exit_code == 0, r.output
    ref, got = json.loads((tmp_path / "torch.json").read_text()), json.loads((tmp_path / "ort.json").read_text())
    assert got["backend"]["backend"] == "onnxruntime" and ref["backend"]["backend"] == "torch"
    for cat, m in ref["per_category"].items():
        for k in ("image_auroc", "pixel_auroc", "aupro"):
            assert got["per_category"][cat][k] == pytest.approx(m[k], abs=1e-3), (cat, k)


def test_bench_reports_side_by_side_and_enforces_budget(bundle, tmp_path):
    js = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", str(bundle), "--iters", "5", "--json", str(js)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    for key in ("engines", "torch_reference", "preprocess", "postprocess", "machine"):
        assert key in res, key
    e = res["engines"]["onnxruntime fp32"]
    assert e["p50_ms"] > 0 and res["speedup_vs_torch"]["onnxruntime fp32"] > 0 and e["iters"] == 5
    assert res["machine"]["cores"] and "onnxruntime" in res["machine"] and res["machine"]["tensorrt"] is None
    assert json.loads((bundle / "reports" / "bench.json").read_text())["engines"].keys() == res["engines"].keys()
    r = CliRunner().invoke(app, ["bench", str(bundle), "--iters", "5", "--budget-ms", "0.0001", "--json", str(js)])
    assert r.exit_code == 1 and "budget missed" in r.output
