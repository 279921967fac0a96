"""CRR: anomaly synthesis properties under a seed, real training lowers both stages' losses,
deterministic inference (torch and the exported graph), and build + verify end to end on ORT."""

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgead.cli import app, normalize_argv
from edgead.data import mvtec
from edgead.data.anomaly_synth import Synthesizer, foreground, perlin, perlin_mask
from edgead.data.image import read_image
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.models import build_model
from edgead.runs import load_model
from edgead.train import TrainRequest, train
from tests.conftest import built


@pytest.fixture(scope="module")
def real_rgb(tiny_real):
    pre = Preprocess(128, 160)
    samples = mvtec.discover(tiny_real, ["magnetic_tile"], "train")[:8]
    return np.stack([np.asarray(pre.resize_image(read_image(s.path))) for s in samples])


def test_perlin_noise_and_masks():
    rng = np.random.default_rng(0)
    n = perlin((96, 128), (4, 8), rng)
    assert n.shape == (96, 128) and -1.5 < n.min() < -0.2 and 0.2 < n.max() < 1.5
    m = perlin_mask((96, 128), np.random.default_rng(1))
    assert set(np.unique(m)) <= {0.0, 1.0} and 0 < m.mean() < 0.6


def test_synthesis_is_deterministic_and_only_touches_the_mask(real_rgb):
    syn = Synthesizer()
    a, ma = syn.batch(real_rgb, seed=3)
    b, mb = syn.batch(real_rgb, seed=3)
    c, mc = syn.batch(real_rgb, seed=4)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)
    assert a.dtype == np.uint8 and ma.shape == real_rgb.shape[:3] and set(np.unique(ma)) <= {0.0, 1.0}
    out = ma == 0
    assert np.array_equal(a[out], real_rgb[out])  # outside the mask: the original pixels
    inside = ma == 1
    assert (np.abs(a[inside].astype(int) - real_rgb[inside]).mean()) > 3  # inside: really changed
    assert syn.describe()["texture_source"].startswith("procedural")


def test_foreground_estimate_and_texture_folder(tmp_path):
    obj = np.full((64, 64, 3), 200, np.uint8)
    obj[16:48, 20:44] = 40  # a dark part on a plain background
    fg = foreground(obj, "auto")
    assert fg[30, 30] == 1 and fg[2, 2] == 0 and fg.mean() == pytest.approx(32 * 24 / 64 / 64, abs=0.02)
    tex = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert foreground(tex, "all").min() == 1
    (tmp_path / "tex").mkdir()
    Image.fromarray(tex).save(tmp_path / "tex" / "a.png")
    syn = Synthesizer(tmp_path / "tex", texture_share=1.0)
    assert "1 images" in syn.describe()["texture_source"]
    x, m = syn.batch(obj[None], seed=0)
    assert x.shape == (1, 64, 64, 3)
    with pytest.raises(EdgeadError, match="texture folder not found"):
        Synthesizer(tmp_path / "missing")


def test_training_on_real_images_lowers_both_losses(tiny_real, tmp_path):
    info = train(TrainRequest(model="crr", data=tiny_real, out=tmp_path / "crr", categories=["magnetic_tile"],
                              image_size=(128, 160), epochs=7, batch_size=8, quiet=True,
                              train_overrides={"seg_epochs": 3, "lr_step": 100}))
    curve = info["curve"]
    s1, s2 = curve[:4], curve[4:]
    assert all("repair" in r and "reconstruct" in r for r in s1) and all("segment" in r for r in s2)
    assert s1[-1]["reconstruct"] < 0.8 * s1[0]["reconstruct"] and s1[-1]["repair"] < 0.8 * s1[0]["repair"]
    assert s2[-1]["segment"] < s2[0]["segment"]
    assert info["model_config"]["texture_dir"] is None  # procedural textures, recorded in the run


def test_inference_is_deterministic_and_graph_has_no_random_ops(tmp_path):
    torch.manual_seed(0)
    m = build_model("crr", (64, 96)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, sa = m(x)
        b, sb = m(x)
    assert torch.equal(a, b) and torch.equal(sa, sb)
    from edgead.export import export_onnx

    export_onnx(m, tmp_path / "m.onnx", (1, 3, 64, 96))
    graph = onnx.load(str(tmp_path / "m.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert not {o for o in ops if o.startswith("Random")} and "Einsum" not in ops and "Dropout" not in ops
    assert {"TopK", "Softmax"} <= ops  # top-1 % score and the segmentation probability in the graph
    # The decoder is a ModuleList ('/decoder.0/...'): its convolutions are in the scopes the model declares; the
    # projections and the segmentation head's convolutions take part in INT8 (the cosine map and softmax do not)
    from edgead.precision.rules import split_nodes

    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    for precision, module in (("int8", "decoder"), ("fp16", "decoder"), ("fp16", "proj"), ("int8", "proj"),
                              ("int8", "seg_head")):
        inside, _ = split_nodes(graph, m.precision_scopes[precision])
        mine = [c for c in convs if c.startswith((f"/{module}.", f"/{module}/"))]
        assert mine and set(mine) <= set(inside), (precision, module)
    inside, _ = split_nodes(graph, m.precision_scopes["int8"])
    assert not {n.name for n in graph.graph.node if n.op_type in ("Softmax", "TopK", "ReduceSum")} & set(inside)


def test_a_post_processing_chosen_in_place_is_the_one_exported(tmp_path):
    """post_select sets CRR's smoothing width and top share on the live model; the model built from the run's
    config and its ONNX graph (run by ONNX Runtime) give the same maps and scores as that model."""
    from edgead import post_select
    from edgead.backends.onnxruntime import OrtBackend
    from edgead.export import export_onnx

    assert set(build_model("crr", (64, 96)).post_choices) == {"gauss_size", "topk_ratio"}
    torch.manual_seed(0)
    m = build_model("crr", (64, 96)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before = m(x)
        info = {"model_config": {}}
        post_select.apply(m, info, {"gauss_size": 1, "topk_ratio": 0.001})  # no smoothing, top 7 of 6144 pixels
        amap, score = m(x)
    assert m.post.topk == 7 and not torch.allclose(score, before[1])
    assert amap.abs().sum() > 0 and not torch.allclose(amap, before[0])  # the unsmoothed map
    raw = amap[:, 0].flatten(1)
    assert torch.allclose(score, raw.topk(7, dim=1).values.mean(dim=1))
    rebuilt = build_model("crr", (64, 96), info["model_config"]).eval()
    rebuilt.load_state_dict(m.state_dict())
    with torch.no_grad():
        again = rebuilt(x)
    assert torch.equal(again[0], amap) and torch.equal(again[1], score)
    export_onnx(rebuilt, tmp_path / "m.onnx", (1, 3, 64, 96))
    got = OrtBackend(tmp_path / "m.onnx").run_batched(x.numpy())
    np.testing.assert_allclose(got["anomaly_map"], amap.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["score"], score.numpy(), rtol=1e-4, atol=1e-5)


def test_build_int8_and_verify_end_to_end(tiny_real, tmp_path):
    run = tmp_path / "runs" / "crr"
    args = ["train", "--model", "crr", "--data", tiny_real, "--out", run, "--epochs", 2, "--image-size", 128, 160,
            "--batch-size", 8]
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["build", "--model", "crr", "--workspace", str(tmp_path / "runs"), "--precision",
                                 "int8", "--calib-count", "16", "--qad", "never", "--no-fallback",
                                 "--json", str(tmp_path / "b.json")])
    bundle = run / "bundle"
    built(r.exit_code, r.output, bundle, "int8-cpu")
    model, _ = load_model(run)
    assert json.loads((bundle / "meta.json").read_text())["model"] == "crr"
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "int8", "--json", str(tmp_path / "v.json")])
    res = json.loads((tmp_path / "v.json").read_text())
    assert r.exit_code == (0 if res["passed"] else 1) and res["levels"]["L0"] == "pass"
    assert res["precision"] == "int8-cpu" and res["n_images"] > 0
    r = CliRunner().invoke(app, ["verify", str(bundle), "--precision", "fp32"])
    assert r.exit_code == 0, r.output
