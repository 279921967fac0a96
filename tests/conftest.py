"""Shared fixtures. Real data comes from ../shared/datasets (never shipped); tests skip without it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

DATA_ROOT = Path(os.environ.get("EDGEAD_TEST_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"))
SKIP_REASON = f"real datasets not found at {DATA_ROOT} (set EDGEAD_TEST_DATA to an MVTec-style root)"

torch.set_num_threads(2)


def _need(category: str) -> Path:
    root = DATA_ROOT / category
    if not (root / "train" / "good").is_dir():
        pytest.skip(SKIP_REASON)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    _need("magnetic_tile")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_real(tmp_path_factory) -> Path:
    """A small copy of real magnetic_tile (and deeppcb when present): a few normals and defects each."""
    out = tmp_path_factory.mktemp("tiny_real")
    for cat, n_train, n_test in (("magnetic_tile", 24, 3), ("deeppcb", 12, 3)):
        src = DATA_ROOT / cat
        if not (src / "train" / "good").is_dir():
            if cat == "magnetic_tile":
                pytest.skip(SKIP_REASON)
            continue
        dst = out / cat
        (dst / "train" / "good").mkdir(parents=True)
        for p in sorted((src / "train" / "good").iterdir())[:n_train]:
            shutil.copy(p, dst / "train" / "good" / p.name)
        for d in sorted(x.name for x in (src / "test").iterdir())[:3]:
            (dst / "test" / d).mkdir(parents=True)
            for p in sorted((src / "test" / d).iterdir())[:n_test]:
                shutil.copy(p, dst / "test" / d / p.name)
                if d != "good":
                    (dst / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
                    m = src / "ground_truth" / d / f"{p.stem}_mask.png"
                    shutil.copy(m, dst / "ground_truth" / d / m.name)
        if not (dst / "test" / "good").exists():
            (dst / "test" / "good").mkdir()
            for p in sorted((src / "test" / "good").iterdir())[:n_test]:
                shutil.copy(p, dst / "test" / "good" / p.name)
    return out


@pytest.fixture
def tiny_copy(tiny_real, tmp_path) -> Path:
    """A writable copy of ``tiny_real`` for tests that plant bad files."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_real, dst)
    return dst


@pytest.fixture(scope="session")
def trained_run(tiny_real, tmp_path_factory) -> Path:
    """A CRAD run trained 2 epochs on the tiny real subset, non-square input, through the real CLI."""
    from typer.testing import CliRunner

    from edgead.cli import app, normalize_argv

    out = tmp_path_factory.mktemp("runs") / "crad"
    args = ["train", "--model", "crad", "--data", tiny_real, "--out", out, "--epochs", 2, "--image-size", 128, 160,
            "--batch-size", 8, "--json", out.parent / "train.json"]
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def export_run(trained_run):
    """Export the tiny trained run to a fresh bundle folder through the real CLI (4 parity images).
    Each test module gets its own copy because several of them change their bundle."""
    from typer.testing import CliRunner

    from edgead.cli import app

    def export(out: Path) -> Path:
        r = CliRunner().invoke(app, ["export", str(trained_run), "--out", str(out), "--parity-images", "4"])
        assert r.exit_code == 0, r.output
        return out
    return export


def built(code: int, output: str, bundle: Path, key: str) -> bool:
    """``edgead build``'s exit code for the graph ``key``: 0 when it passed its build split (or had none), 1 when it
    is written but fails it (a gate failed, as in verify). Returns whether it passed."""
    import json

    entry = json.loads((Path(bundle) / "meta.json").read_text())["files"][key]
    split = entry.get("report", {}).get("build_split")
    ok = split is None or bool(split["passed"])
    assert (Path(bundle) / entry["path"]).is_file()  # written either way
    assert code == (0 if ok else 1), output[-2000:]
    if not ok:
        assert "fails the default gates on the build split" in " ".join(output.split()), output[-2000:]
    return ok


def threshold_at_median(bundle: Path, category: str, raw) -> dict:
    """Set ``category``'s threshold in the bundle to the median of these raw image scores, so both decisions occur,
    and its centre to their lowest, so the scale is their spread (a 2-epoch model's test scores may sit below
    its held-out normals' centre, which would leave no scale at all). Returns the new normalisation."""
    import numpy as np

    from edgead.fileio import atomic_write_json, read_json

    raw = np.asarray(raw, dtype=float)
    meta = read_json(Path(bundle) / "meta.json")
    n = meta["normalization"][category]
    n["threshold"], n["center"] = float(np.median(raw)), float(raw.min())
    n["scale"] = n["threshold"] - n["center"]
    assert n["scale"] > 0, f"the scores do not spread: {raw}"
    atomic_write_json(Path(bundle) / "meta.json", meta)
    return n
