"""Operating points: false-reject budgets with exact confidence bounds (checked against scipy's binomial
test and by simulation), and edgead threshold moving a bundle's decisions without touching its graphs."""

import json
import shutil

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.cli import app
from edgead.data import mvtec
from edgead.data.image import read_image
from edgead.fileio import sha256_file
from edgead.live.inspect import InspectRequest, inspect
from edgead.operating import for_budget, for_recall, interval, needed_normals, upper


def test_intervals_match_the_exact_binomial_reference():
    for k, n in ((0, 64), (1, 64), (3, 300), (12, 190), (190, 190)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        np.testing.assert_allclose(interval(k, n), (ci.low, ci.high), atol=1e-9)
    assert needed_normals(0.01) == 299 and needed_normals(0.05) == 59
    assert upper(0, 299) <= 0.01 < upper(0, 298)


def test_budget_threshold_keeps_its_promise_in_simulation():
    """Thresholds set on 400 normals for a 2 % budget: the true false-reject rate is within the budget in
    at least ~95 % of draws (one-sided 95 % bound), and the stated interval covers it as often."""
    rng = np.random.default_rng(0)
    within = covered = 0
    trials = 400
    for _ in range(trials):
        op = for_budget(rng.standard_normal(400), 0.02)
        true = float(norm.sf(op.threshold))
        within += true <= 0.02
        covered += op.frr_interval[0] <= true <= op.frr_interval[1]
        assert op.warning is None and op.flagged_normals == int(op.flagged_normals)
    assert within / trials >= 0.93 and covered / trials >= 0.93


def test_too_few_normals_warn_with_the_number_needed_and_recall_targets_count_defects():
    op = for_budget(np.arange(64.0), 0.01)
    assert op.warning and "needs 299" in op.warning and op.flagged_normals == 0
    assert op.threshold > 63  # above every normal seen
    op = for_recall(np.arange(10.0), np.array([1.0, 5.0, 7.0, 9.0, 11.0]), 0.8)
    assert op.recall == 0.8 and op.threshold == 5.0 and op.flagged_normals == 5


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("operating") / "crad")


def test_threshold_moves_inspect_and_verify_decisions_without_touching_the_graphs(bundle, tiny_real, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for s in mvtec.discover(tiny_real, ["magnetic_tile"], "test"):
        shutil.copy(s.path, folder / f"{s.defect}_{s.path.name}")
    b = Bundle.load(bundle)
    engine = open_engine(bundle, "fp32")
    raw = {p.name: float(engine.run_batched(b.preprocess(read_image(p))[None])["score"][0])
           for p in sorted(folder.iterdir())}
    engine.close()
    hashes = {p.name: sha256_file(p) for p in bundle.glob("*.onnx")}
    old = b.category_norm("magnetic_tile").threshold
    normals = tmp_path / "normals"
    normals.mkdir()
    for name in sorted(raw, key=raw.get)[: len(raw) // 2 + 1]:  # the lower half of the scores as "good images"
        shutil.copy(folder / name, normals / name)
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--quantile", "0.99", "--normals", str(normals),
                                 "--category", "magnetic_tile", "--json", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    change = json.loads((tmp_path / "t.json").read_text())["categories"]["magnetic_tile"]
    new = Bundle.load(bundle).category_norm("magnetic_tile").threshold
    assert change["old_threshold"] == pytest.approx(old) and change["new_threshold"] == pytest.approx(new) != old
    assert {p.name: sha256_file(p) for p in bundle.glob("*.onnx")} == hashes  # graphs untouched
    res = inspect(InspectRequest(bundle=bundle, source=f"images://{folder}", category="magnetic_tile",
                                 alerts_dir=tmp_path / "alerts", quiet=True))
    flagged = {d["name"]: d["flagged"] for d in res["decisions_tail"]}
    assert flagged == {k: v >= new for k, v in raw.items()}  # inspect decides at the new operating point
    op = res["operating_point"]  # the live summary: flag rate beside what the threshold expects
    assert op["flag_rate"] == pytest.approx(sum(flagged.values()) / len(flagged))
    assert op["policy"]["kind"] == "quantile" and len(op["expected_false_reject_interval"]) == 2
    r = CliRunner().invoke(app, ["verify", str(bundle), "--json", str(tmp_path / "v.json")])
    assert r.exit_code in (0, 1), r.output
    per = json.loads((tmp_path / "v.json").read_text())["per_category"]["magnetic_tile"]
    assert per["threshold"] == pytest.approx(new)
    ref = json.loads((tmp_path / "v.json").read_text())
    assert ref["n_images"] > 0
    r = CliRunner().invoke(app, ["eval", str(bundle), "--overlays", "0", "--category", "magnetic_tile",
                                 "--data", str(tiny_real), "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "e.json").read_text())["per_category"]["magnetic_tile"]
    rows = m["operating_points"]["rows"]
    assert [r["label"] for r in rows] == ["0.1%", "0.5%", "1.0%", "2.0%", "5.0%", "current"]
    assert rows[-1]["threshold"] == pytest.approx(new) and rows[0]["warning"]  # too few normals for 0.1 %
    assert "<svg" in open(m["score_plot"]).read()  # the trade-off drawn: scores and the operating point


def test_threshold_bad_requests_are_one_line_errors(bundle, tiny_real, tmp_path):
    goods = tmp_path / "labelled" / "magnetic_tile" / "test" / "good"
    goods.mkdir(parents=True)
    good = next(s for s in mvtec.discover(tiny_real, ["magnetic_tile"], "test") if s.label == 0)
    shutil.copy(good.path, goods / good.path.name)  # a labelled folder with good images only
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--recall", "0.9", "--labelled", str(tmp_path / "labelled"),
                                 "--category", "magnetic_tile"])
    assert r.exit_code == 2 and "no defect images" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--recall", "0.9"])
    assert r.exit_code == 2 and "--labelled" in r.output
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--false-reject", "0.01", "--quantile", "0.9"])
    assert r.exit_code == 2 and "one policy" in r.output
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--false-reject", "0.01"])
    assert r.exit_code == 0 and "needs 299" in r.output
    js = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["threshold", str(bundle), "--recall", "1.0", "--labelled", str(tiny_real),
                                 "--category", "magnetic_tile", "--json", str(js)])
    assert r.exit_code == 0, r.output
    change = json.loads(js.read_text())["categories"]["magnetic_tile"]
    assert change["recall"] == 1.0 and change["policy"]["kind"] == "recall"
