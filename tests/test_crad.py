import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.models import available_models, build_model
from edgead.models.layers import tent_weights_2d


@pytest.mark.parametrize("n", [4, 8])
def test_tent_matmul_equals_grid_sample(n):
    g = torch.Generator().manual_seed(n)
    grid = torch.randn(1, 5, n, n, generator=g, dtype=torch.float64)
    coords = torch.rand(1, 300, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2  # beyond [-1, 1] too (jitter)
    ref = F.grid_sample(grid, coords.view(1, 1, 300, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
    w = tent_weights_2d(coords[..., 0], coords[..., 1], n, n)  # (1, 300, n*n)
    ours = w @ grid.reshape(5, n * n).t()
    assert torch.allclose(ours[0].t(), ref[0, :, 0], atol=1e-12)
    assert (ours[0].t() - ref[0, :, 0]).abs().max() < 1e-6


@pytest.fixture(scope="module")
def crad():
    torch.manual_seed(0)
    return build_model("crad", (128, 160))


def test_model_reads_equal_grid_sample(crad):
    crad.eval()
    coord = torch.rand(2, 2, *crad.feat_size) * 2 - 1
    gcoord = torch.rand(2, 2) * 2 - 1
    with torch.no_grad():
        crad.global_grid.normal_()
        a_l, a_g = crad.read_local(coord), crad.read_global(gcoord)
        crad.cfg.sampling = "grid_sample"
        b_l, b_g = crad.read_local(coord), crad.read_global(gcoord)
        crad.cfg.sampling = "tent"
    assert (a_l - b_l).abs().max() < 1e-6 and (a_g - b_g).abs().max() < 1e-6


def test_outputs_and_determinism(crad):
    crad.eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        m1, s1 = crad(x)
        m2, s2 = crad(x)
    assert m1.shape == (2, 1, 128, 160) and s1.shape == (2,)
    assert torch.equal(m1, m2) and torch.equal(s1, s2)


def test_blend_closed_form(crad):
    """||rec' - f|| with rec' = s f + (1 - s) rec equals (1 - s) ||rec - f||."""
    crad.eval()  # no coordinate jitter: both calls reconstruct alike (this test alone failed without it)
    f = torch.randn(1, crad.channels, *crad.feat_size)
    with torch.no_grad():
        amap = crad.raw_map(f)
        rec = crad.reconstruct(f)
        direct = torch.linalg.vector_norm(crad.refined(f) - f, dim=1, keepdim=True)
    assert torch.allclose(amap, direct, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(amap, torch.linalg.vector_norm(rec - f, dim=1, keepdim=True))  # the blend acts


def _straddling(model, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """rec and f whose per-pixel 0.05 MSE is 0.5 + eps: the blend gate's edge."""
    rec = torch.zeros(1, model.channels, 2, 2)
    return rec, torch.full_like(rec, (10.0 * (1 + 2 * eps)) ** 0.5)  # MSE = 10 (1 + 2 eps)


def test_gate_is_the_step_while_training_and_continuous_when_scoring():
    smooth = build_model("crad", (64, 64)).eval()
    step = build_model("crad", (64, 64), {"gate": "step"}).eval()
    below, above = _straddling(smooth, -1e-4), _straddling(smooth, 1e-4)
    jump = [(m.blend_factor(*below) - m.blend_factor(*above)).abs().max().item() for m in (smooth, step)]
    assert jump[1] == pytest.approx(0.3, abs=1e-6)  # the paper's m flips from 1 to 0
    assert jump[0] < 1e-3  # the smooth gate moves by ~ the perturbation
    far = _straddling(smooth, 1.0)  # far past the edge both agree (m ~ 0)
    assert (smooth.blend_factor(*far) - step.blend_factor(*far)).abs().max() < 1e-6
    smooth.train()
    jump = (smooth.blend_factor(*below) - smooth.blend_factor(*above)).abs().max().item()
    assert jump == pytest.approx(0.3, abs=1e-6)  # training weighs the loss with the paper's step


def test_runs_saved_before_the_gate_keep_the_step(trained_run, tmp_path):
    import json
    import shutil

    from edgead.runs import load_model

    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    info = json.loads((run / "run.json").read_text())
    assert load_model(run)[0].cfg.gate == "smooth"  # trained now: the default
    del info["model_config"]["gate"], info["model_config"]["gate_width"]
    (run / "run.json").write_text(json.dumps(info))
    old = load_model(run)[0]
    assert old.cfg.gate == "step"
    # the step's trunk stays FP32 under FP16; the smooth gate's does not; both name it for the INT8 fallback
    smooth = build_model("crad", (64, 64)).precision_scope_map()
    assert "-backbone/stem" in old.precision_scope_map()["fp16"] and "-backbone/stem" not in smooth["fp16"]
    assert "-backbone/stem" in smooth["sensitive"] and "backbone" in smooth["fp16"]


def test_short_training_on_real_images_lowers_loss(data_root):
    torch.manual_seed(0)
    model = build_model("crad", (128, 128))
    samples = mvtec.discover(data_root, ["magnetic_tile"], "train")[:32]
    with torch.no_grad():
        feats = model.encode(torch.from_numpy(mvtec.load_images(samples, Preprocess(128, 128))))
    opt = torch.optim.AdamW(model.param_groups(model.train_defaults()), weight_decay=0.01)
    model.train()
    losses = []
    for step in range(12):
        loss = model.training_step(feats[(step % 2) * 16:(step % 2) * 16 + 16], step)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    model.eval()
    with torch.no_grad():
        m, s = model(torch.from_numpy(mvtec.load_images(samples[:2], Preprocess(128, 128))))
    assert torch.isfinite(m).all() and torch.isfinite(s).all()


def test_registry_and_config_errors():
    assert "crad" in available_models()
    with pytest.raises(EdgeadError, match="unknown model"):
        build_model("nope", (64, 64))
    with pytest.raises(EdgeadError, match="unknown config key 'grid'"):
        build_model("crad", (64, 64), {"grid": 3})


def test_ablation_variants_build_and_paper_size():
    local = build_model("crad", (64, 64), {"use_global": False})
    glob = build_model("crad", (64, 64), {"use_local": False, "blend": False})
    paper = build_model("crad", (64, 64), {"size": "paper"})
    assert not hasattr(local, "global_grid") and not hasattr(glob, "local_grid")
    assert len(paper.fusion) == 11 and paper.fusion[0].body[0].out_channels == 4 * paper.channels
    for m in (local, glob):
        m.eval()
        with torch.no_grad():
            amap, score = m(torch.randn(1, 3, 64, 64))
        assert amap.shape == (1, 1, 64, 64)
