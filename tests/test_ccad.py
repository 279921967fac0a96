"""CCAD: k tokens per category, a deterministic exported graph, real training lowers the loss, few-shot."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgead.errors import EdgeadError
from edgead.export import export_onnx
from edgead.models import build_model, model_class
from edgead.runs import load_model
from edgead.train import TrainRequest, train
from tests.conftest import built


@pytest.mark.parametrize("bank", ["adaptive", "kmeans"])
def test_compression_yields_k_tokens_per_category(bank):
    torch.manual_seed(0)
    m = build_model("ccad", (64, 64), {"categories": ["a", "b", "c"], "bank_rows": 30, "bank": bank, "k": 4})
    f = torch.randn(30, m.channels, 8, 8)
    f[10:20] += 3.0  # three well-separated categories
    f[20:] -= 3.0
    info = m.prepare(f, ["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    tok = m.compressed().detach()
    assert tok.shape == (12, m.channels) and info["tokens"] == 12 and info["tokens_per_category"] == 4
    pooled = m._standardise(f).mean(dim=(2, 3))
    for i in range(3):  # each category's tokens sit near its own bank rows, not the others'
        own = pooled[i * 10:(i + 1) * 10].mean(0)
        d = [(tok[i * 4:(i + 1) * 4].mean(0) - pooled[j * 10:(j + 1) * 10].mean(0)).norm() for j in range(3)]
        assert int(np.argmin(d)) == i, (bank, i, d)
        assert own.shape == (m.channels,)


@pytest.mark.parametrize("variant", ["shortcut", "bottleneck"])
def test_exported_graph_is_deterministic(tmp_path, variant):
    torch.manual_seed(0)
    m = build_model("ccad", (64, 96), {"categories": ["a"], "bank_rows": 6, "steps": 3,
                                       **model_class("ccad").variants[variant]})
    m.prepare(torch.randn(6, m.channels, 8, 12), ["a"] * 6)
    m.eval()
    export_onnx(m, tmp_path / "m.onnx", (1, 3, 64, 96))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert not {o for o in ops if o.startswith("Random")}
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    s = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    a, b = s.run(None, {"image": x}), s.run(None, {"image": x})
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with torch.no_grad():
        ref = m(torch.from_numpy(x))
    np.testing.assert_allclose(a[0], ref[0].numpy(), atol=1e-4)


def test_training_on_real_images_lowers_the_loss_and_reloads(tiny_real, tmp_path):
    info = train(TrainRequest(model="ccad", data=tiny_real, out=tmp_path / "ccad", image_size=(128, 160), epochs=6,
                              batch_size=8, quiet=True))
    losses = [r["loss"] for r in info["curve"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert info["prepare"]["tokens_per_category"] == 8 and info["prepare"]["categories"] == info["data"]["categories"]
    model, _ = load_model(tmp_path / "ccad")  # bank sizes come back from the run's config
    assert model.compressed().shape[0] == 8 * len(info["data"]["categories"])


def test_few_shot_choice_is_seeded_and_recorded(tiny_real, tmp_path):
    runs = [train(TrainRequest(model="ccad", data=tiny_real, out=tmp_path / f"s{i}", categories=["magnetic_tile"],
                               image_size=(64, 64), epochs=1, batch_size=2, shots=4, quiet=True)) for i in range(2)]
    files = [r["data"]["few_shot"]["files"] for r in runs]
    assert len(files[0]) == 4 and files[0] == files[1] and runs[0]["data"]["n_train"] == 4
    run = json.loads((tmp_path / "s0" / "run.json").read_text())
    assert run["data"]["few_shot"]["shots"] == 4


def test_build_fp16_int8_and_verify_end_to_end(tiny_real, tmp_path):
    from typer.testing import CliRunner

    from edgead.cli import app, normalize_argv

    run = tmp_path / "runs" / "ccad"
    args = ["train", "--model", "ccad", "--data", tiny_real, "--out", run, "--epochs", 2, "--image-size", 128, 160,
            "--batch-size", 8]
    assert CliRunner().invoke(app, normalize_argv([str(a) for a in args])).exit_code == 0
    for p in ("fp16", "int8"):
        # INT8: two QAD steps run CCAD's Q/DQ graph in torch on batches of 4 and 8 (a batch-1 graph whose
        # MatMuls ONNX Runtime reshaped to Gemm inputs with the batch folded in)
        qad = ["--qad", "always", "--qad-steps", "2"] if p == "int8" else ["--qad", "never"]
        r = CliRunner().invoke(app, ["build", "--model", "ccad", "--workspace", str(tmp_path / "runs"), "--precision",
                                     p, "--calib-count", "16", *qad, "--no-fallback"])
        built(r.exit_code, r.output, run / "bundle", "fp16" if p == "fp16" else "int8-cpu")
        js = tmp_path / "v.json"
        r = CliRunner().invoke(app, ["verify", str(run / "bundle"), "--precision", p, "--json", str(js)])
        res = json.loads(js.read_text())
        assert r.exit_code == (0 if res["passed"] else 1) and res["levels"]["L0"] == "pass", r.output


def test_training_corruption_noises_one_rectangle_per_chosen_sample_and_is_off_by_default():
    torch.manual_seed(0)
    f = torch.randn(6, 8, 16, 20)
    m = build_model("ccad", (128, 160), {"categories": ["a"], "bank_rows": 6, "corrupt": 1.0})
    g = m._corrupt(f)
    for j in range(len(f)):  # every sample: the changed cells form one rectangle of 1/8 to 1/2 of each side
        ys, xs = torch.nonzero((g[j] != f[j]).any(0), as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert len(ys) == h * w and 2 <= h <= 8 and 2 <= w <= 10, (j, h, w)
    plain = build_model("ccad", (128, 160), {"categories": ["a"], "bank_rows": 6})
    assert plain.cfg.corrupt == 0 and plain.cfg.train_t == 0
    assert torch.equal(plain.abar_train, plain.abar)  # training noise levels = inference levels by default
    for bad in ({"corrupt": 1.5}, {"train_t": 2000}, {"steps": 7}):  # out of range: one-line errors, not tracebacks
        with pytest.raises(EdgeadError, match=f"model 'ccad': .*{next(iter(bad))}"):
            build_model("ccad", (128, 160), {"categories": ["a"], "bank_rows": 6, **bad})
