"""INT8 that earns its place: exact input grid, mse ranges, QAD and the build split's gates (real images)."""

import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgead.build import BuildRequest, build
from edgead.bundle import Bundle, onnx_name
from edgead.data import mvtec
from edgead.errors import EdgeadError
from edgead.precision import search
from edgead.precision.int8 import activation_scales, read_ranges
from edgead.precision.ranges import exact_input, mse_range
from edgead.precision.split import build_split, score_errors


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("search") / "b")


def _copy(bundle, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("*.int8-*", "reports"))
    return dst


def _maps(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["anomaly_map"], {"image": x[i:i + 1]})[0] for i in range(len(x))])


def _map_error(bundle, key, x):
    b = Bundle.load(bundle)
    ref, got = _maps(b.onnx("fp32"), x), _maps(b.onnx(key), x)
    return float(np.mean([np.linalg.norm(g - r) / np.linalg.norm(r) for g, r in zip(got, ref, strict=True)]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_exact_input_puts_every_pixel_value_on_one_int8_level(symmetric):
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["image", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="/c/Conv")],
                          "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(4, np.float32), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = (np.random.default_rng(1).integers(0, 256, (1, 3, 8, 8)) / 255.0 - 0.5) / 0.5
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"image": x.astype(np.float32)})[0]
    fixed = exact_input(model, "image", (0.5,) * 3, (0.5,) * 3, symmetric)
    (name, (lo, hi)), = fixed.items()
    assert name != "image"  # the shifted tensor is the one quantized
    scale = hi / 127 if symmetric else (hi - lo) / 255
    zp = 0 if symmetric else round(-lo / scale)
    pixels = (np.arange(256) / 255.0 - 0.5) / 0.5
    shifted = pixels + float(numpy_helper.to_array(next(i for i in model.graph.initializer if "offset" in i.name)))
    q = np.round(shifted / scale) + zp
    assert np.abs((q - zp) * scale - shifted).max() < 1e-6  # every pixel is one level, no rounding at all
    assert q.min() >= (-128 if symmetric else 0) and q.max() <= 127 + (0 if symmetric else 128)
    assert len(np.unique(q)) == 256
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"image": x.astype(np.float32)})[0]
    assert np.abs(after - before)[..., 1:-1, 1:-1].max() < 1e-5  # same function (borders: one padded tap)


def test_mse_range_clips_a_long_tail_and_keeps_a_compact_one():
    rng = np.random.default_rng(0)
    tail = np.concatenate([rng.normal(0, 1, 1_000_000), [20.0]])
    hist, edges = np.histogram(tail, 2048, range=(-20, 20))
    lo, hi = mse_range(hist, edges, float(tail.min()), 20.0, symmetric=True)
    assert hi < 10 and lo == -hi  # one outlier does not set the step for a million values
    flat = rng.uniform(0, 6, 100_000)
    hist, edges = np.histogram(flat, 2048, range=(-6, 6))
    lo, hi = mse_range(hist, edges, 0.0, float(flat.max()), symmetric=False)
    assert lo == 0.0 and hi > 5.8  # a uniform tensor keeps its whole range


def test_equalisation_keeps_the_function_and_gives_each_depthwise_input_one_range(bundle, tiny_real, tmp_path):
    from edgead.precision.equalize import channel_max, depthwise_pairs, equalize
    from edgead.precision.int8 import prepare

    b = Bundle.load(bundle)
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "train"), b.preprocess)[:8]
    prepare(b.onnx("fp32"), tmp_path / "pre.onnx")
    model = onnx.load(str(tmp_path / "pre.onnx"))
    pairs = depthwise_pairs(model)
    assert len(pairs) == 11  # Lite0: the stem and the ten expand convs feed a depthwise conv through ReLU6
    tensors = [clip.output[0] for _, clip, _ in pairs]
    before_max = channel_max(model, tensors, x, "image", 1)
    before = _maps(tmp_path / "pre.onnx", x)
    done = equalize(model, x, "image", 1)
    onnx.save(model, str(tmp_path / "eq.onnx"))
    after = _maps(tmp_path / "eq.onnx", x)
    assert done["pairs"] == 11
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()  # the float function is unchanged
    after_max = channel_max(model, tensors, x, "image", 1)
    for t in tensors:
        live = before_max[t] > before_max[t].max() / 64  # channels within the scale cap
        assert np.allclose(after_max[t][live], before_max[t].max(), rtol=1e-3)  # one range for all of them
        assert after_max[t].max() == pytest.approx(before_max[t].max(), rel=1e-3)  # the tensor's range stays


def test_equalisation_headroom_keeps_brighter_images_unclipped(bundle, tiny_real, tmp_path):
    """With headroom 2 a scaled channel reaches at most half the tensor's range on the calibration images, so on
    the same parts under 1.2x the light the float graph stays close to the original; with none (1) the ReLU6
    clips the scaled channels where they pass their calibrated largest value."""
    from edgead.precision.equalize import channel_max, depthwise_pairs, equalize
    from edgead.precision.int8 import prepare

    b = Bundle.load(bundle)
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "train"), b.preprocess)[:8]
    rgb = np.stack([b.preprocess.denormalize(v) for v in x])
    bright = np.stack([b.preprocess.normalize(np.clip(v * 1.2, 0, 255).astype(np.uint8)) for v in rgb])
    prepare(b.onnx("fp32"), tmp_path / "pre.onnx")
    ref = _maps(tmp_path / "pre.onnx", bright)
    err = {}
    for room in (1.0, 2.0):
        model = onnx.load(str(tmp_path / "pre.onnx"))
        tensors = [clip.output[0] for _, clip, _ in depthwise_pairs(model)]
        before = channel_max(model, tensors, x, "image", 1)
        equalize(model, x, "image", 1, headroom=room)
        onnx.save(model, str(tmp_path / f"eq{room}.onnx"))
        after = channel_max(model, tensors, x, "image", 1)
        for t in tensors:
            scaled = after[t] > before[t] * (1 + 1e-3)
            assert (after[t][scaled] <= before[t].max() / room * (1 + 1e-3)).all()
        err[room] = np.abs(_maps(tmp_path / f"eq{room}.onnx", bright) - ref).max() / np.abs(ref).max()
    assert err[1.0] > 1e-3 and err[2.0] < err[1.0] / 4  # measured: 0.011 and 0.0012


def test_relit_calibration_share_adds_relit_normals_and_leaves_the_anomalies(tiny_real):
    """The calibration images: the normals, the synthetic share as before (its own random stream), then a
    relit share: each a calibration normal under another light, on the 8-bit input grid."""
    from edgead.calibration import with_anomalies
    from edgead.data.preprocess import Preprocess

    pre = Preprocess(height=64, width=64)
    normals = mvtec.load_images(mvtec.discover(tiny_real, ["magnetic_tile"], "train"), pre)[:8]
    plain, src0 = with_anomalies(normals, pre, 0.5, 3)
    lit, src = with_anomalies(normals, pre, 0.5, 3, relit_share=0.5)
    assert len(plain) == 12 and len(lit) == 16
    np.testing.assert_array_equal(lit[:12], plain)  # normals and anomalies unchanged
    np.testing.assert_array_equal(src[:12], src0)
    assert len(set(src[12:])) == 4 and set(src[12:]) <= set(range(8))
    for img, i in zip(lit[12:], src[12:], strict=True):
        assert np.abs(img - normals[i]).mean() > 0.01  # another light
        np.testing.assert_allclose(pre.normalize(pre.denormalize(img)), img, atol=1e-6)  # on the input grid
    again, _ = with_anomalies(normals, pre, 0.5, 3, relit_share=0.5)
    np.testing.assert_array_equal(again, lit)


def test_stream_equalisation_keeps_the_function_and_gives_each_stream_one_range(bundle, tiny_real, tmp_path):
    from edgead.precision.equalize import channel_max
    from edgead.precision.int8 import prepare
    from edgead.precision.rules import in_scopes
    from edgead.precision.streams import equalize_streams, streams

    b = Bundle.load(bundle)
    scopes = b.precision_scopes["int8"]
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "train"), b.preprocess)[:8]
    prepare(b.onnx("fp32"), tmp_path / "pre.onnx")
    model = onnx.load(str(tmp_path / "pre.onnx"))
    found = streams(model, scopes)
    trunk = [s for s in found if any("/backbone/blocks." in w.name for w in s.writers)]
    assert len(trunk) == 5  # Lite0 up to block 10: one linear stream per stage (16, 24, 40, 80, 112 channels)
    assert [len(s.writers) for s in trunk] == [1, 2, 2, 3, 3]  # every projection conv of the stage writes it
    tensors = [t for s in found for t in s.tensors]
    before_max = channel_max(model, tensors, x, "image", 1, magnitude=True)
    before = _maps(tmp_path / "pre.onnx", x)
    done = equalize_streams(model, x, "image", 1, scopes)
    onnx.save(model, str(tmp_path / "eq.onnx"))
    assert done["streams"] == len(found) and done["unscaled_taps"] >= 2  # the stride-8 and 16 taps leave the scopes
    after = _maps(tmp_path / "eq.onnx", x)
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()  # the float function is unchanged
    after_max = channel_max(model, tensors, x, "image", 1, magnitude=True)
    for s in found:
        top_before = np.max([before_max[t] for t in s.tensors], axis=0)
        top_after = np.max([after_max[t] for t in s.tensors], axis=0)
        live = top_before > top_before.max() / 64  # channels within the scale cap
        assert np.allclose(top_after[live], top_before.max(), rtol=1e-3)  # one range for the whole stream
    unscale = [n for n in model.graph.node if n.name.startswith("/stream_eq_")]
    assert unscale and not any(in_scopes(n.name, scopes) for n in unscale)  # the original taps again, in float

    from edgead.calibration import CalibSettings, load_recipes
    from edgead.precision.int8 import to_int8

    recipes = load_recipes()
    recipe = {**recipes["recipes"]["cpu"], "equalize": True, "equalize_streams": True}
    report = to_int8(b.onnx("fp32"), tmp_path / "q.onnx", "cpu", recipe, CalibSettings.from_recipes(recipes), x,
                     "image", 1, scopes, tmp_path / "work", normalization=(b.preprocess.mean, b.preprocess.std))
    assert report["equalized"]["pairs"] == 11 and report["equalized"]["streams"] == len(found)
    quantized = [n.input[0] for n in onnx.load(str(tmp_path / "q.onnx")).graph.node if n.op_type == "QuantizeLinear"]
    assert quantized and not any(t.endswith("__stream_unscaled") for t in quantized)  # the taps leave INT8 as before


def test_build_split_never_holds_a_test_image(bundle, tiny_real):
    b = Bundle.load(bundle)
    split = build_split(b)
    pre = b.preprocess
    tests = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "test"), pre)
    test_pixels = {np.asarray([pre.denormalize(t)]).tobytes() for t in tests}
    assert len(split) > 0 and set(split.labels.tolist()) == {0, 1}
    assert not any(np.asarray([im]).tobytes() in test_pixels for im in split.images)
    held = {p.rsplit("/", 1)[-1] for p in b.holdout_files}
    names = [f.rsplit("/", 1)[-1] for f in split.files]
    assert all(n in held for n in names)  # normals and their synthetic twins come from held-out training normals
    assert split.masks[split.labels == 1].any() and not split.masks[split.labels == 0].any()
    good, relit = (split.images[split.defects == d].astype(float) for d in ("good", "relit"))
    assert len(relit) == len(good) and (split.labels[split.defects == "relit"] == 0).all()
    gain = relit.mean(axis=(1, 2, 3)) / good.mean(axis=(1, 2, 3))
    assert np.ptp(gain) > 0.05  # each relit normal under its own light, not one global shift
    cols = relit.mean(axis=(1, 3)) / good.mean(axis=(1, 3))  # brightness per row: a gradient across the frame
    assert np.abs(cols[:, -8:].mean(1) - cols[:, :8].mean(1)).max() > 0.05


def test_build_split_fades_anomalies_to_the_threshold(bundle):
    from edgead.precision.split import BISECT, BOUNDARY

    b = Bundle.load(bundle)
    split = build_split(b)
    faded, full = split.defects == "boundary", split.defects == "synthetic"
    assert faded.sum() >= full.sum() // 2 and (split.labels[faded] == 1).all()
    s = np.array([b.category_norm(str(c)).score(float(v)) for c, v in zip(split.categories, split.scores, strict=True)])
    # the fade stops where the FP32 score first reaches its target, spread over BOUNDARY; full strength far beyond
    assert s[faded].min() >= BOUNDARY[0] and s[faded].max() < BOUNDARY[1] + 1.0
    assert np.median(s[faded]) < 0.5 * np.median(s[full])
    index = {str(f): i for i, f in enumerate(split.files)}
    for i in np.flatnonzero(faded):  # each a fade of its full-strength twin: the same mask, less contrast
        j = index[split.files[i].replace("/boundary/", "/synthetic/")]
        good = split.images[index[split.files[i].replace("/boundary/", "/holdout/")]].astype(float)
        assert (split.masks[i] == split.masks[j]).all()
        moved = np.abs(split.images[i].astype(float) - good).sum()
        assert 0 < moved <= np.abs(split.images[j].astype(float) - good).sum() * (1 + 2.0 ** -BISECT)


def test_qad_lowers_map_error_exports_for_tensorrt_and_is_reproducible(bundle, tiny_real, tmp_path):
    common = {"precision": "int8", "recipe": "tensorrt", "count": 22, "fallback": False, "bias_correction": False}
    ptq, qad, again = (_copy(bundle, tmp_path, n) for n in ("ptq", "qad", "again"))
    build(BuildRequest(bundle=ptq, qad="never", **common))
    entry = build(BuildRequest(bundle=qad, qad="always", qad_steps=80, **common))
    steps = [s["step"] for s in entry["report"]["search"]]
    assert steps == ["ptq-minmax", "qad"]
    split = build_split(Bundle.load(qad))
    kinds = set(np.unique(split.defects).tolist())
    for row in entry["report"]["search"]:  # the RMS beside the max the gate takes, from the same per-image errors
        assert 0 < row["score_rms"] <= row["score_abs_max"]
        # and per kind of split image: the largest of them is the gate's, each spread within its largest
        by = row["by_kind"]
        assert set(by) == kinds and max(v["max_abs"] for v in by.values()) == pytest.approx(row["score_abs_max"])
        assert all(abs(v["mean"]) <= v["max_abs"] and v["std"] <= v["max_abs"] for v in by.values())
    err = score_errors(Bundle.load(qad), split, qad / onnx_name("int8-tensorrt"))
    assert entry["report"]["search"][-1]["score_rms"] == pytest.approx(float(np.sqrt(np.mean(err ** 2))))
    info = entry["report"]["search"][1]["qad"]
    print("QAD", info["best_step"], info["history"])
    assert info["best_step"] > 0  # the student beat the PTQ graph on its held-out training images
    b = Bundle.load(qad)
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "test"), b.preprocess)  # never seen in training
    assert entry["report"]["chosen"] == "qad"  # --qad always: the distilled graph is the one kept
    assert _map_error(qad, "int8-tensorrt", x) < _map_error(ptq, "int8-tensorrt", x)
    ready = entry["tensorrt_readiness"]
    assert ready["ok"], ready["findings"][:3]  # signed, symmetric, zero point 0, per-channel weights
    model = onnx.load(str(qad / entry["path"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].ndim == 4]
    assert weight_dq and all(inits[n.input[1]].size == inits[n.input[0]].shape[0] for n in weight_dq)
    grid = "image__on_int8_grid"  # the exact input grid is not tuned: every pixel stays one INT8 level
    assert activation_scales(qad / entry["path"])[grid] == activation_scales(ptq / entry["path"])[grid]
    same = build(BuildRequest(bundle=again, qad="always", qad_steps=80, **common))
    assert same["sha256"] == entry["sha256"]  # same seed, same graph


@pytest.mark.parametrize("recipe", ["cpu", "tensorrt"])
def test_bias_correction_lowers_map_error_on_unseen_real_images(bundle, tiny_real, tmp_path, recipe):
    """Each quantized conv's mean output error (calibration normals) comes off its bias: test images then
    move less, the TensorRT recipe stays buildable and only biases changed."""
    from edgead.precision.readiness import report as readiness
    from edgead.precision.search import run_bias_correction

    b = Bundle.load(_copy(bundle, tmp_path, "b"))
    q = _quantizer(b, recipe, 16)
    ptq, bc = tmp_path / "ptq.onnx", tmp_path / "bc.onnx"
    q(ptq, tmp_path / "ptq")
    info = run_bias_correction(q, ptq, tmp_path / "ptq", tmp_path / "bc", bc)
    assert info["convs"] > 10 and info["n_images"] == len(q.calib)
    error = _unseen_map_error(b, tiny_real)
    print(recipe, "map error PTQ", error(ptq), "bias-corrected", error(bc))
    assert error(bc) < 0.9 * error(ptq)
    if recipe == "tensorrt":
        assert readiness(bc)["ok"]
    graphs = [onnx.load(str(p)) for p in (ptq, bc)]
    assert [{i.name: tuple(i.dims) for i in g.graph.initializer} for g in graphs][0] == \
        {i.name: tuple(i.dims) for i in graphs[1].graph.initializer}  # the same graph, other numbers
    if recipe == "cpu":  # the fallback walks again: a conv kept in float keeps its own bias
        _kept_conv_keeps_its_bias(q, tmp_path)
    else:
        _kept_nodes_run_fp16_only_inside_the_fp16_scopes(q, tmp_path)


@pytest.mark.parametrize("recipe", ["cpu", "tensorrt"])
def test_learned_rounding_moves_weights_one_step_and_lowers_map_error(bundle, tiny_real, tmp_path, recipe):
    """AdaRound: each quantized conv's weights rounded up or down (bias beside) to fit its FP32 output; the graph keeps
    PTQ's scales, moves integer weights by at most one level, and test images move less than with PTQ."""
    from edgead.precision.readiness import report as readiness
    from edgead.precision.rounding import RoundingSettings
    from edgead.precision.search import run_learned_rounding

    b = Bundle.load(_copy(bundle, tmp_path, "b"))
    q = _quantizer(b, recipe, 16)
    ptq, ar = tmp_path / "ptq.onnx", tmp_path / "ar.onnx"
    q(ptq, tmp_path / "ptq")
    info = run_learned_rounding(q, ptq, tmp_path / "ptq", tmp_path / "ar", ar, settings=RoundingSettings(steps=60))
    assert info["convs"] > 10 and info["learned"] > 0 and info["flipped"] > 0
    for layer in info["layers"].values():  # kept only where the whole calibration set fits better
        assert layer["learned"] <= layer["nearest"] if layer["kept"] else layer["flipped"] == 0  # (5 decimals)
    before, after = ({i.name: numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer} for p in (ptq, ar))
    weights = [k for k, v in before.items() if v.dtype == np.int8 and v.ndim == 4]
    assert weights and all(np.array_equal(before[k.replace("_quantized", "_scale")],
                                          after[k.replace("_quantized", "_scale")]) for k in weights)
    moved = [np.abs(after[k].astype(int) - before[k].astype(int)) for k in weights]
    assert max(int(m.max()) for m in moved) == 1  # (a few more than flipped: ties ONNX Runtime rounds otherwise)
    assert info["flipped"] <= sum(int(m.sum()) for m in moved) <= 1.01 * info["flipped"]
    error = _unseen_map_error(b, tiny_real)
    print(recipe, "map error PTQ", error(ptq), "learned rounding", error(ar))
    assert error(ar) < error(ptq)
    if recipe == "tensorrt":
        assert readiness(ar)["ok"]


def test_learned_rounding_fits_a_non_square_strided_conv(tmp_path):
    """Windows are cut per axis: a 1x3 kernel with strides (1, 2) (a plugin model's conv) is fitted, not a crash."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgead.precision.int8 import ArrayReader
    from edgead.precision.onnx_torch import QuantGraph
    from edgead.precision.rounding import RoundingSettings, learn

    rng = np.random.default_rng(0)
    w, bias = rng.normal(size=(6, 3, 1, 3)).astype(np.float32), np.zeros(6, np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["image", "w", "b"], ["y"], pads=[0, 1, 0, 1], strides=[1, 2],
                                            name="/c/Conv")], "g",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 16, 10])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    x = rng.normal(size=(16, 3, 16, 20)).astype(np.float32)
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), ArrayReader(x, "image", 1),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    student = QuantGraph(onnx.load(str(tmp_path / "q.onnx")), {"w": w, "b": bias})
    info = learn(student, x, "image", RoundingSettings(steps=30, crop=8))
    layer = info["layers"]["/c/Conv"]
    assert info["convs"] == 1 and 0 < layer["nearest"] < 0.05
    assert layer["learned"] <= layer["nearest"] if layer["kept"] else layer["flipped"] == 0


def _unseen_map_error(b, tiny_real):
    """A graph's mean relative map error against FP32 on the test images (never calibrated on)."""
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "test"), b.preprocess)
    ref = _maps(b.onnx("fp32"), x)
    return lambda path: float(np.mean([np.linalg.norm(g - r) / np.linalg.norm(r)
                                       for g, r in zip(_maps(path, x), ref, strict=True)]))


def _quantizer(b, recipe, count):
    from edgead.build import calibration_set
    from edgead.calibration import CalibSettings, load_recipes
    from edgead.precision.quantizer import Quantizer

    recipes = load_recipes()
    settings = CalibSettings.from_recipes(recipes, count=count)
    calib, _ = calibration_set(b, settings, None)
    return Quantizer.make(b, recipe, recipes["recipes"][recipe], settings, calib)


def _kept_nodes_run_fp16_only_inside_the_fp16_scopes(q, tmp_path):
    """The tensorrt fallback runs a node out of INT8 in FP16, except in the trunk an FP16 build keeps FP32."""
    from edgead.precision.rules import in_scopes
    from edgead.precision.search import quantize_from

    b = q.bundle
    convs = [n for n in onnx.load(str(tmp_path / "ptq" / "preprocessed.onnx")).graph.node if n.op_type == "Conv"]
    if not any(n.name.startswith("/backbone/") and not in_scopes(n.name, b.precision_scopes["fp16"]) for n in convs):
        b.meta["precision_scopes"]["fp16"].append("-backbone/stem")  # as a step-gate CRAD bundle keeps its trunk
    fp16 = b.precision_scopes["fp16"]
    trunk = next(n for n in convs if n.name.startswith("/backbone/") and not in_scopes(n.name, fp16))
    later = next(n for n in convs if in_scopes(n.name, fp16) and in_scopes(n.name, b.precision_scopes["int8"]))
    dst = tmp_path / "keep-trt.onnx"
    quantize_from(q, tmp_path / "ptq", dst, [trunk.name, later.name])
    model = onnx.load(str(dst))
    half = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16}
    node = {n.name: n for n in model.graph.node}
    assert node[later.name].input[1] in half  # kept inside the FP16 scopes: FP16 weights
    assert node[trunk.name].input[1] == trunk.input[1] and trunk.input[1] not in half  # the sensitive trunk: FP32
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in node[trunk.name].input for n in model.graph.node)


def _kept_conv_keeps_its_bias(q, tmp_path):
    from edgead.precision.search import quantize_from, run_bias_correction

    b = q.bundle
    float_graph = onnx.load(str(tmp_path / "ptq" / "preprocessed.onnx"))
    conv = next(n for n in float_graph.graph.node if n.op_type == "Conv" and n.name.startswith("/backbone/blocks.1/"))
    bias = conv.input[2]

    def bias_in(work):
        return next(numpy_helper.to_array(i) for i in onnx.load(str(work / "preprocessed.onnx")).graph.initializer
                    if i.name == bias)

    first, kept = tmp_path / "keep-ptq.onnx", tmp_path / "keep-bc.onnx"
    quantize_from(q, tmp_path / "ptq", first, [conv.name])
    run_bias_correction(q, first, tmp_path / "ptq", tmp_path / "keep", kept, keep_float=[conv.name])
    assert not np.array_equal(bias_in(tmp_path / "bc"), bias_in(tmp_path / "ptq"))  # corrected when INT8
    assert np.array_equal(bias_in(tmp_path / "keep"), bias_in(tmp_path / "ptq"))  # its own when kept in float
    model = onnx.load(str(kept))  # the cpu recipe's fallback is FP32: the conv reads its float bias, no casts
    assert next(n for n in model.graph.node if n.name == conv.name).input[2] == bias
    assert not any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    from edgead.precision.rules import split_nodes

    inside, _ = split_nodes(float_graph, b.precision_scopes["int8"])
    with pytest.raises(EdgeadError, match="nothing is left to quantize"):  # ORT would quantize every node
        quantize_from(q, tmp_path / "ptq", tmp_path / "all.onnx", inside)


def test_torch_student_runs_the_cpu_int8_graph_as_onnx_runtime_does(bundle, tiny_real, tmp_path):
    """QAD and bias correction train the Q/DQ graph through torch; for the cpu recipe that includes the
    int32 biases ONNX Runtime rounds to (input scale x weight scale). Real test images, unoptimised ORT."""
    import torch

    from edgead.precision.onnx_torch import QuantGraph

    b = Bundle.load(_copy(bundle, tmp_path, "b"))
    q = tmp_path / "q.onnx"
    _quantizer(b, "cpu", 16)(q, tmp_path / "w")
    x = mvtec.load_images(mvtec.discover(tiny_real, b.categories, "test"), b.preprocess)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
    ort_maps = np.concatenate([sess.run(["anomaly_map"], {b.input_name: x[i:i + 1]})[0] for i in range(len(x))])
    weights = {i.name: numpy_helper.to_array(i)
               for i in onnx.load(str(tmp_path / "w" / "preprocessed.onnx")).graph.initializer}
    student = QuantGraph(onnx.load(str(q)), weights)
    for p in student.log_scales.values():
        p.requires_grad_(False)

    def error(ref) -> float:
        with torch.no_grad():
            got = student({b.input_name: torch.from_numpy(x)})["anomaly_map"].numpy()
        return float(np.mean([np.linalg.norm(g - r) / np.linalg.norm(r) for g, r in zip(got, ref, strict=True)]))

    exact, int8_error = error(ort_maps), error(_maps(b.onnx("fp32"), x))
    assert student.bias_q  # the cpu recipe stores int32 biases
    student.bias_q.clear()  # biases left in float, as the student ran them before
    loose = error(ort_maps)
    print("student vs ORT map error", exact, "with float biases", loose, "INT8 vs FP32", int8_error)
    assert exact < 0.25 * int8_error  # the student's own disagreement is small against what QAD corrects
    assert exact < 0.75 * loose


def test_tuned_weights_export_as_the_student_ran_them(bundle, tmp_path):
    """QAD moves weights by up to one step; ONNX Runtime's quantizer takes each channel's scale from its largest
    |w| again on export. A weight moved past that largest value changed the scale and so every rounding of its
    channel: the exported graph was not the one QAD had tuned. Every weight pushed one step outwards (the worst
    case); the exported INT8 weights and scales must be the student's."""
    import torch

    from edgead.precision.onnx_torch import QuantGraph
    from edgead.precision.search import export_tuned

    b = Bundle.load(_copy(bundle, tmp_path, "b"))
    qz = _quantizer(b, "tensorrt", 16)
    q = tmp_path / "q.onnx"
    qz(q, tmp_path / "w")
    float_graph = onnx.load(str(tmp_path / "w" / "preprocessed.onnx"))
    student = QuantGraph(onnx.load(str(q)), {i.name: numpy_helper.to_array(i) for i in float_graph.graph.initializer})
    with torch.no_grad():
        for key, r in student.rounding.items():
            r.copy_(torch.sign(student.base[key][0]))  # every weight one step away from zero
    out = tmp_path / "tuned.onnx"
    export_tuned(qz, float_graph, student.float_weights(), read_ranges(tmp_path / "w" / qz.ranges_file),
                 tmp_path / "t", out)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    checked = 0
    for key, (_, step, _) in student.base.items():
        name = key.replace("\x1f", ".")
        if f"{name}_quantized" not in inits or inits[f"{name}_quantized"].ndim < 2:
            continue  # left in float by the export, or a scalar constant rather than a filter
        got, scale = inits[f"{name}_quantized"].astype(np.float64), inits[f"{name}_scale"].astype(np.float64)
        with torch.no_grad():
            want = torch.round(student.weight(key) / step).numpy()
        live = step.numpy().ravel() > 1e-6  # ORT floors the scale of an all-but-zero channel its own way
        np.testing.assert_allclose(scale.ravel()[live], step.numpy().ravel()[live], rtol=1e-6)
        got, want = got[live], want[live]
        assert np.abs(got - want).max() <= 1, name  # ties may round either way
        assert np.mean(got != want) < 0.01, name
        checked += 1
    assert checked >= 20


def test_when_nothing_passes_the_closest_candidate_keeping_most_int8_work_is_kept():
    """A failing fallback candidate replaces the all-INT8 best only when it is closer to the gates and keeps
    KEEP_SHARE of the best's INT8 MACs; the closest such one wins, the best stays on a tie."""
    def cand(name, badness, share):
        return ({"step": name, "badness": badness, "int8_share": share}, name, None)

    best = cand("qad", 16.8, 0.999)
    trunk, ranked, float_heavy = cand("trunk", 1.12, 0.882), cand("trunk+fp32x31", 1.3, 0.848), cand("x", 0.9, 0.2)
    assert search.closest(best, [trunk, ranked, float_heavy]) is trunk
    assert search.closest(best, [float_heavy]) is best  # closer, but most of INT8's speed is gone
    assert search.closest(best, [cand("tie", 16.8, 0.99)]) is best
    assert search.closest(best, [ranked, trunk]) is trunk
    assert search.closest(best, []) is best
    assert search.closest(best, [cand("edge", 1.0, search.KEEP_SHARE * 0.999)]) is not best


def test_fallback_leaves_the_most_harmful_activations_in_fp16_until_the_gates(bundle, tmp_path):
    strict, easy = tmp_path / "strict.yaml", tmp_path / "easy.yaml"
    strict.write_text("int8:\n  L2: {score_abs_max: 0.0}\n")  # no INT8 graph can meet it
    easy.write_text("int8:\n  L2: {score_abs_max: 1000, spearman_min: -1}\n  L3: {decision_agreement_min: 0, "
                    "mask_iou_min: 0}\n  L4: {image_auroc_drop_max: 100, pixel_auroc_drop_max: 100, "
                    "aupro_drop_max: 100}\n")
    b = _copy(bundle, tmp_path, "fb")
    entry = build(BuildRequest(bundle=b, precision="int8", recipe="tensorrt", count=8, qad="never", gates_file=strict,
                               bias_correction=False))
    rep = entry["report"]
    names = [s["step"] for s in rep["search"]]
    assert names[0] == "ptq-minmax" and len(names) >= 4
    # First the model's sensitive trunk (FP16 for tensorrt: CRAD's FP16 scopes take it in), then the ranked activations.
    assert re.fullmatch(r"ptq-minmax\+trunk:fp16x\d+", names[1]), names
    trunk = rep["search"][1]["kept_float"]
    assert trunk and all(n.startswith("/backbone/") for n in trunk)
    assert all(re.fullmatch(r"ptq-minmax(\+trunk)?\+(fp16x\d+)?\+?(fp32x\d+)?", n) for n in names[2:]), names
    if "+trunk+" in names[2]:  # the trunk came closer: the ranked rounds keep it too
        assert all(set(trunk) <= set(s["kept_float"]) for s in rep["search"][2:])
    left = [s["left_in_float"] for s in rep["search"][2:]]
    assert [len(t) for t in left][:2] == [2, 4] and left[1][:2] == left[0]  # one ranking, growing prefix
    # Every round fails a gate no graph can meet by the same margin: the rounds stop once they stop coming closer.
    assert len(left) == search.FLAT_ROUNDS < search.MAX_FALLBACK_ROUNDS
    assert "came no closer" in rep["search"][-1]["stopped"]
    assert not any("stopped" in s for s in rep["search"][:-1])
    assert not rep["build_split"]["passed"] and rep["plan"]["gates_file"] == str(strict)
    # Nothing passed and no candidate came closer to a gate none can meet: the all-INT8 graph is kept.
    assert rep["chosen"] == "ptq-minmax" and rep["kept_float"] == []
    shares = [s["int8_share"] for s in rep["search"]]
    assert shares[1] < shares[0] and shares[2:] == sorted(shares[2:], reverse=True) and shares[2] < shares[0]
    model = onnx.load(str(b / entry["path"]))
    assert not any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert entry["tensorrt_readiness"]["ok"]
    ok = build(BuildRequest(bundle=b, precision="int8", recipe="tensorrt", count=8, qad="never", gates_file=easy,
                            force=True, bias_correction=False))
    assert ok["report"]["build_split"]["passed"] and ok["report"]["kept_float"] == []
    assert [s["step"] for s in ok["report"]["search"]] == ["ptq-minmax"]


def test_qad_beside_the_float_trunk_keeps_the_trunk_float(bundle, tmp_path):
    """The fallback's distilled trunk candidate: QAD from a graph with the trunk in float exports it in float again."""
    from edgead.precision.macs import int8_share
    from edgead.precision.rules import split_nodes
    from edgead.precision.search import SearchPlan, quantize_from, run_qad

    b = Bundle.load(_copy(bundle, tmp_path, "kf"))
    q = _quantizer(b, "cpu", 8)
    scopes, work = b.precision_scopes["int8"], tmp_path / "ptq"
    q(tmp_path / "ptq.onnx", work)
    float_graph = onnx.load(str(work / "preprocessed.onnx"))
    inside, _ = split_nodes(float_graph, scopes)
    trunk = search.sensitive_nodes(b, inside)
    assert trunk and len(trunk) < len(inside)
    cand, tuned = tmp_path / "trunk.onnx", tmp_path / "tuned.onnx"
    quantize_from(q, work, cand, trunk)
    info = run_qad(q, cand, work, tmp_path / "qad", tuned, SearchPlan(qad_steps=8), keep_float=trunk)
    assert len(info["history"]) > 1

    def share(g):
        return int8_share(float_graph, onnx.load(str(g)))["int8_share"]

    assert share(tuned) == share(cand) < share(tmp_path / "ptq.onnx")
    model = onnx.load(str(tuned))
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.name in trunk and n.op_type == "Conv"]
    assert convs and not any(i in dq_out for n in convs for i in n.input[1:])  # float weights in the trunk


def test_build_warns_when_the_bundle_predates_the_models_scopes(bundle, tmp_path):
    import json

    common = {"precision": "int8", "recipe": "cpu", "count": 8, "qad": "never", "fallback": False,
              "bias_correction": False}
    fresh = build(BuildRequest(bundle=_copy(bundle, tmp_path, "fresh"), **common))
    assert "warnings" not in fresh["report"]  # exported by this code: the model's own scopes
    old = _copy(bundle, tmp_path, "old")
    meta = json.loads((old / "meta.json").read_text())
    meta["precision_scopes"]["int8"] = ["backbone"]  # as an export before the model's INT8 scopes grew
    (old / "meta.json").write_text(json.dumps(meta))
    said = []
    entry = build(BuildRequest(bundle=old, log=said.append, **common))
    (w,) = entry["report"]["warnings"]
    assert "int8 scopes (backbone)" in w and "edgead export" in w and any(w in s for s in said)


def test_fresh_qad_batches_are_flipped_normals_or_new_synthetic_anomalies(tiny_real):
    """QAD's training batches: each a training normal, flipped at random, a share with a new synthetic
    anomaly (never the same twice); the same seed gives the same batch."""
    from edgead.data.image import read_image
    from edgead.data.preprocess import Preprocess
    from edgead.precision.qad import fresh_maker

    pre = Preprocess(height=64, width=64)
    files = sorted((tiny_real / "magnetic_tile" / "train" / "good").iterdir())[:4]
    normals = np.stack([pre(read_image(f)) for f in files])

    def flips(x):
        return [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]

    idx = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    plain = fresh_maker(normals, pre, 0.0)(idx, np.random.default_rng(0))
    assert all(any(np.array_equal(p, f) for f in flips(normals[i])) for p, i in zip(plain, idx, strict=True))
    painted = fresh_maker(normals, pre, 1.0)(idx, np.random.default_rng(0))
    assert not any(np.array_equal(p, f) for p, i in zip(painted, idx, strict=True) for f in flips(normals[i]))
    assert not np.array_equal(painted[0], painted[4])  # the same normal, a different anomaly each time
    again = fresh_maker(normals, pre, 1.0)(idx, np.random.default_rng(0))
    np.testing.assert_array_equal(painted, again)
    lit = fresh_maker(normals, pre, 0.0, relit_share=1.0)(idx, np.random.default_rng(0))
    assert not any(np.array_equal(p, f) for p, i in zip(lit, idx, strict=True) for f in flips(normals[i]))
    np.testing.assert_allclose(pre.normalize(pre.denormalize(lit[0])), lit[0], atol=1e-6)  # on the input grid


def test_tensorrt_activations_fused_keeping_the_maps(bundle, tiny_real, tmp_path):
    """The tensorrt recipe drops the Q/DQ pair ONNX Runtime puts between a conv and its ReLU6: that pair is on the
    activation's own grid, so the maps stay the same, and TensorRT can fuse Conv + activation + Q."""
    from dataclasses import replace

    from edgead.precision.readiness import check

    b = Bundle.load(bundle)
    q = _quantizer(b, "tensorrt", 8)
    assert q.recipe["fuse_activations"]
    fused = q(tmp_path / "fused.onnx", tmp_path / "work")
    plain_q = replace(q, recipe={**q.recipe, "fuse_activations": False})
    plain = plain_q(tmp_path / "plain.onnx", tmp_path / "work")
    assert fused["fused_activations"] >= 11 and plain["fused_activations"] == 0
    assert plain["quantize_linear"] - fused["quantize_linear"] == fused["fused_activations"]
    model = onnx.load(str(tmp_path / "fused.onnx"))
    made = {o: n for n in model.graph.node for o in n.output}
    direct = [n for n in model.graph.node if n.op_type in ("Relu", "Clip") and made[n.input[0]].op_type == "Conv"]
    assert len(direct) == fused["fused_activations"]
    x = mvtec.load_images(list(mvtec.discover(tiny_real, None, "test"))[:4], b.preprocess)
    a, c = _maps(tmp_path / "fused.onnx", x), _maps(tmp_path / "plain.onnx", x)
    # the same function: the pair rounds to the grid the activation's own Q rounds to again; what is left is
    # ONNX Runtime's kernel choice (an integer QLinearConv where Q follows the conv, a float conv where Clip does)
    assert np.abs(a - c).max() <= 0.02 * np.abs(c).max()
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] > 0.9999
    assert check(model) == []


def test_budget_rows_alone_quantize_one_scope_each(bundle):
    """``scripts/int8_budget.py --alone``: each scope row leaves everything but that scope in float (and the trunk
    too beside it), so the rows' INT8 parts are disjoint, each inside one scope, and together all of the rest."""
    import importlib.util
    from pathlib import Path

    from edgead.precision.rules import in_scopes, split_nodes
    from edgead.precision.search import sensitive_nodes

    path = Path(__file__).resolve().parents[1] / "scripts" / "int8_budget.py"
    spec = importlib.util.spec_from_file_location("int8_budget", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    b = Bundle.load(bundle)
    model = onnx.load(str(b.onnx("fp32")))
    scopes = [s for s in b.precision_scopes["int8"] if not s.startswith("-")]
    inside, _ = split_nodes(model, b.precision_scopes["int8"])
    trunk = set(sensitive_nodes(b, inside))
    assert trunk
    rows = mod.parts(b, model, beside_trunk=True, alone=True)
    quantized = {name: set(inside) - set(kept) for name, kept in rows.items() if name.startswith("trunk in float, ")}
    assert len(quantized) >= 2
    for name, nodes in quantized.items():
        assert nodes and not nodes & trunk, name
        assert sum(any(in_scopes(n, [s]) for n in nodes) for s in scopes) == 1, name
    union = set().union(*quantized.values())
    assert sum(len(v) for v in quantized.values()) == len(union)  # disjoint
    assert union == set(inside) - trunk
    plain = mod.parts(b, model, beside_trunk=True)  # without --alone: each scope left in float beside the trunk
    assert all(set(kept) >= trunk for kept in plain.values() if kept)


def test_student_rounds_weights_and_activations_apart(bundle, tiny_real, tmp_path):
    """``scripts/int8_budget.py --rounding`` runs the Q/DQ graph with only its weights or only its activations
    rounded. With every weight already on its INT8 grid (and biases float), rounding the weights changes nothing:
    weights-only is the float function and activations-only the whole INT8 graph (to float precision); with the
    weights as they were, each rounding moves the maps on its own, and an empty set of rounded weights is the float
    function exactly."""
    import torch

    b = Bundle.load(_copy(bundle, tmp_path, "b"))
    q = tmp_path / "q.onnx"
    _quantizer(b, "cpu", 16)(q, tmp_path / "w")
    x = torch.from_numpy(mvtec.load_images(mvtec.discover(tiny_real, b.categories, "test"), b.preprocess)[:4])
    student, _ = search.load_student(q, tmp_path / "w")

    def maps(mode, weights=None) -> np.ndarray:
        with torch.no_grad():
            return student({b.input_name: x}, quantize=mode, weights=weights)["anomaly_map"].numpy()

    float_fn = maps("clamp")
    np.testing.assert_array_equal(maps("weights", frozenset()), float_fn)
    moved = {m: np.abs(maps(m) - float_fn).max() for m in ("weights", "activations", True)}
    assert min(moved.values()) > 1e-4 * np.abs(float_fn).max(), moved
    student.bias_q.clear()  # biases float: the int32 bias grid is the weights' side of the rounding
    with torch.no_grad():
        for key, (w0, step, movable) in student.base.items():
            on_grid = torch.clamp(torch.round(w0 / step), -127, 127) * step
            student.rounding[key].copy_(torch.where(movable > 0, (on_grid - w0) / step, torch.zeros_like(w0)))
    np.testing.assert_allclose(maps("weights"), maps("clamp"), rtol=0, atol=1e-5 * np.abs(float_fn).max())
    np.testing.assert_allclose(maps("activations"), maps(True), rtol=0, atol=1e-5 * np.abs(float_fn).max())
