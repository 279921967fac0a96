"""The seams: a fourth model and a new backend are one file each (tests/plugins/), a fixed-batch bundle
runs through every verb, and the package installs and runs without the source tree."""

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.cli import app, normalize_argv
from tests.conftest import built

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "tests.plugins.tinymean,tests.plugins.scaledort"


def edgead(*args):
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert "Traceback" not in r.output, r.output
    return r


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """The test-only model and backend, also for the fresh processes bench starts."""
    old = {k: os.environ.get(k) for k in ("EDGEAD_PLUGINS", "PYTHONPATH")}
    os.environ["EDGEAD_PLUGINS"] = PLUGINS
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old["PYTHONPATH"]]))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _stills(tiny_real, folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i, p in enumerate(sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))[:n]):
        shutil.copy(p, folder / f"{i:03d}.png")
    return folder


def test_a_fourth_model_is_one_file(tiny_real, tmp_path):
    from edgead.models import available_models
    from edgead.train import TrainRequest, train

    assert "tinymean" in available_models()
    run = tmp_path / "tiny"
    seen = []

    def stop_after_first(epoch, model):
        seen.append(model.epochs_seen)
        if epoch == 1:
            raise KeyboardInterrupt

    req = TrainRequest(model="tinymean", data=tiny_real, out=run, categories=["magnetic_tile"], image_size=(128, 160),
                       epochs=2, batch_size=8, quiet=True, on_epoch=stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(req)
    train(req)  # resumes: the model's own training state came back from the checkpoint
    assert seen == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "trained"
    bundle = tmp_path / "tb"
    assert edgead("export", run, "--out", bundle, "--parity-images", 4).exit_code == 0
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["precision_scopes"]["fp16"] == ["backbone", "-backbone/stem",
                                                *(f"-backbone/blocks.{i}" for i in range(5))]
    r = edgead("build", bundle, "--precision", "int8", "--calib-count", 8, "--qad", "never", "--no-fallback")
    built(r.exit_code, r.output, bundle, "int8-cpu")
    r = edgead("verify", bundle, "--precision", "int8", "--per-category", 6, "--json", tmp_path / "v.json")
    assert r.exit_code in (0, 1), r.output
    assert json.loads((tmp_path / "v.json").read_text())["precision"] == "int8-cpu"
    r = edgead("inspect", bundle, "--precision", "int8", "--source", f"images://{_stills(tiny_real, tmp_path / 's')}",
               "--alerts", tmp_path / "alerts", "--json", tmp_path / "i.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "i.json").read_text())["frames"] == 4


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    return export_run(tmp_path_factory.mktemp("ext") / "crad")


def test_a_new_backend_is_one_file(bundle, tiny_real, tmp_path):
    from edgead.backends import available_backends

    assert "plainort" in available_backends()
    res = {}
    for be in ("onnxruntime", "plainort"):
        r = edgead("eval", bundle, "--backend", be, "--overlays", 0, "--json", tmp_path / f"{be}.json")
        assert r.exit_code == 0, r.output
        res[be] = json.loads((tmp_path / f"{be}.json").read_text())
    assert res["plainort"]["backend"]["backend"] == "plainort"
    for cat, m in res["onnxruntime"]["per_category"].items():
        assert abs(m["image_auroc"] - res["plainort"]["per_category"][cat]["image_auroc"]) < 1e-6
    r = edgead("verify", bundle, "--backend", "plainort", "--per-category", 6, "--json", tmp_path / "v.json")
    assert r.exit_code == 0, r.output  # an unoptimised FP32 graph passes the FP32 gates
    r = edgead("bench", bundle, "--backend", "plainort", "--iters", 5, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    assert "plainort fp32" in json.loads((tmp_path / "b.json").read_text())["engines"]
    r = edgead("inspect", bundle, "--backend", "plainort", "--source", f"images://{_stills(tiny_real, tmp_path / 's')}",
               "--category", "magnetic_tile", "--alerts", tmp_path / "alerts")
    assert r.exit_code == 0, r.output


def test_a_fixed_batch_bundle_runs_through_every_verb(trained_run, bundle, tiny_real, tmp_path):
    b4 = tmp_path / "b4"
    r = edgead("export", trained_run, "--out", b4, "--batch", 4, "--parity-images", 4)
    assert r.exit_code == 0, r.output
    assert json.loads((b4 / "meta.json").read_text())["input"]["shape"][0] == 4
    evals = {}
    for name, b in (("b1", bundle), ("b4", b4)):
        r = edgead("eval", b, "--overlays", 0, "--json", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        evals[name] = json.loads((tmp_path / f"{name}.json").read_text())["per_category"]
    for cat in evals["b1"]:
        for k in ("image_auroc", "pixel_auroc"):
            assert np.isclose(evals["b1"][cat][k], evals["b4"][cat][k], atol=1e-6), (cat, k)
    r = edgead("verify", b4, "--per-category", 5, "--json", tmp_path / "v.json")  # 5: a short last batch
    assert r.exit_code == 0, r.output
    r = edgead("bench", b4, "--iters", 5, "--json", tmp_path / "bench.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "bench.json").read_text())["batch"] == 4, r.output
    r = edgead("inspect", b4, "--source", f"images://{_stills(tiny_real, tmp_path / 's', 3)}", "--category",
               "magnetic_tile", "--alerts", tmp_path / "alerts", "--json", tmp_path / "i.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "i.json").read_text())["frames"] == 3, r.output


def _venv(path: Path, site_from: Path | None = None) -> Path:
    venv.create(path, with_pip=True, clear=True)
    if site_from is not None:  # reuse the pinned packages already installed here instead of fetching them again
        site = next(path.glob("lib/python*/site-packages"))
        (site / "pinned-stack.pth").write_text(str(site_from) + "\n")
    return path / "bin"


def _pip(bin_dir: Path, *args: str) -> None:
    r = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_runtime_install_without_torch_runs_every_runtime_verb(bundle, tiny_real, tmp_path):
    """pip install .[runtime] (not editable) in a fresh venv: verify, bench, eval and inspect on a bundle."""
    r = edgead("verify", bundle, "--per-category", 6)  # the reference is made here, where torch is
    assert r.exit_code == 0, r.output
    shutil.copytree(ROOT, tmp_path / "src", ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info",
                                                                           "build", "__pycache__"))
    bin_dir = _venv(tmp_path / "venv")
    _pip(bin_dir, f"{tmp_path / 'src'}[runtime]")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEAD_PLUGINS")}
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import importlib.util as u, edgead; "
                            "print(u.find_spec('torch') is None, edgead.__file__)"], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    no_torch, where = probe.stdout.split()
    assert no_torch == "True" and "site-packages" in where, probe.stdout + probe.stderr
    stills = _stills(tiny_real, tmp_path / "s")
    for args in (["verify", bundle], ["bench", bundle, "--iters", 5], ["eval", bundle, "--overlays", 0],
                 ["inspect", bundle, "--source", f"images://{stills}", "--category", "magnetic_tile", "--alerts",
                  tmp_path / "alerts"]):
        r = subprocess.run([str(bin_dir / "edgead"), *map(str, args)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, (args, r.stderr[-1500:])


@pytest.mark.slow
def test_plain_install_builds_int8_with_the_packaged_recipes(bundle, tmp_path):
    """pip install . (not editable) beside the pinned CPU stack: INT8 from the recipes inside the package."""
    import torch

    shutil.copytree(ROOT, tmp_path / "src", ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info",
                                                                           "build", "__pycache__"))
    bin_dir = _venv(tmp_path / "venv", site_from=Path(torch.__file__).parents[1])
    _pip(bin_dir, "--no-deps", str(tmp_path / "src"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEAD_PLUGINS")}
    b = tmp_path / "b"
    shutil.copytree(bundle, b, ignore=shutil.ignore_patterns("model.int8-*", "calibration", "reports"))
    r = subprocess.run([str(bin_dir / "edgead"), "build", str(b), "--precision", "int8", "--calib-count", "8",
                        "--qad", "never", "--no-fallback"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=900)
    built(r.returncode, r.stderr, b, "int8-cpu")
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import edgead.calibration as c; print(c.RECIPES_FILE)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "site-packages" in probe.stdout and Path(probe.stdout.strip()).is_file(), probe.stdout + probe.stderr
    assert (b / "model.int8-cpu.onnx").is_file()
