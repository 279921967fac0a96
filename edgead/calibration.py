"""Calibration sets: chosen from training normals, written to a manifest, cached as ``.npz``.

A set is class-balanced over the run's categories, drawn with a fixed seed from the training
normals that the run did not hold out, and recorded with the SHA-256 of every file, so the same
seed and files give the same set and the same scales. Missing or too few images is an error:
there is never a silent fallback to random data.

The cache holds the normals; ``with_anomalies`` adds seeded copies of a share of them with synthetic
anomalies (``anomaly_synth.Synthesizer``). INT8 ranges are calibrated, and QAD trained, on that one
set: activation ranges seen on normals alone clip what an anomaly produces, and the clipped part is
the anomaly score (issue 13: max score error on the build split's synthetic anomalies 0.72 -> 0.20
threshold units, CRAD magnetic_tile, cpu recipe).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_bytes, sha256_file

METHODS = ("minmax", "entropy", "percentile", "mse")
RECIPES_FILE = Path(__file__).resolve().parent / "precision" / "recipes.yaml"  # package data


def load_recipes(path: Path | None = None) -> dict:
    path = Path(path or RECIPES_FILE)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise EdgeadError(f"{path}: calibration recipes not found; pass --recipes FILE (copy "
                          f"edgead/precision/recipes.yaml)") from None
    except yaml.YAMLError as e:
        raise EdgeadError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix or restore it") from None


def pick_recipe(recipes: dict, name: str, path: Path | None = None) -> dict:
    """The recipe ``name`` of a loaded recipes file (``path``: where it came from, for the error)."""
    if name not in recipes["recipes"]:
        raise EdgeadError(f"recipe {name!r} not in {path or RECIPES_FILE}; choose {', '.join(recipes['recipes'])}")
    return recipes["recipes"][name]


@dataclass(frozen=True)
class CalibSettings:
    count: int = 64
    seed: int = 0
    method: str = "minmax"
    percentile: float = 99.99
    num_bins: int = 2048
    num_quantized_bins: int = 128
    synthetic_fraction: float = 0.5  # share of the normals also used with a synthetic anomaly (added, not replaced)
    relit_fraction: float = 0.5  # share of the normals also used under another light (data.lighting; added)

    @classmethod
    def from_recipes(cls, recipes: dict, **overrides) -> CalibSettings:
        d = {**recipes.get("defaults", {}), **{k: v for k, v in overrides.items() if v is not None}}
        for share in ("synthetic_fraction", "relit_fraction"):
            if not 0.0 <= float(d.get(share, 0.0)) <= 1.0:
                raise EdgeadError(f"{share} {d[share]}: expected a share between 0 and 1")
        if d.get("method") not in METHODS:
            raise EdgeadError(f"calibration method {d.get('method')!r}: choose {', '.join(METHODS)}")
        return cls(**d)


def select(root: Path, categories: list[str], exclude: set[str], count: int, seed: int) -> list[mvtec.Sample]:
    """Class-balanced, seeded choice of training normals (``exclude``: held-out files)."""
    pool = [s for s in mvtec.discover(root, categories, "train") if str(s.path.resolve()) not in exclude]
    per_cat = {c: [s for s in pool if s.category == c] for c in categories}
    quota = {c: count // len(categories) + (1 if i < count % len(categories) else 0) for i, c in enumerate(categories)}
    chosen: list[mvtec.Sample] = []
    for c in categories:
        if len(per_cat[c]) < quota[c]:
            raise EdgeadError(f"{root / c / 'train' / 'good'}: {len(per_cat[c])} usable normal images for "
                              f"calibration, {quota[c]} needed; add images or lower --calib-count")
        rng = random.Random(f"{seed}:{c}")
        chosen += sorted(rng.sample(per_cat[c], quota[c]), key=lambda s: s.path.name)
    return chosen


def manifest(samples: list[mvtec.Sample], settings: CalibSettings, pre: Preprocess, root: Path) -> dict:
    return {"settings": settings.__dict__, "root": str(root), "preprocess": pre.to_dict(), "cache": "normals",
            "per_category": {c: sum(s.category == c for s in samples) for c in sorted({s.category for s in samples})},
            "files": [{"path": str(s.path.resolve().relative_to(root.resolve())), "category": s.category,
                       "sha256": sha256_file(s.path)} for s in samples]}


def build_cache(samples: list[mvtec.Sample], pre: Preprocess, input_name: str, path: Path) -> np.ndarray:
    """Preprocess the normals once and cache them as ``.npz``."""
    x = mvtec.load_images(samples, pre)
    buf = io.BytesIO()
    np.savez(buf, **{input_name: x})
    atomic_write_bytes(path, buf.getvalue())
    return x


def painted(x: np.ndarray, pre: Preprocess, synth, rng: np.random.Generator) -> np.ndarray:
    """One preprocessed image with a synthetic anomaly (on its 8-bit pixels, so it stays on the input grid)."""
    return pre.normalize(synth(pre.denormalize(x), rng)[0])


def relit(x: np.ndarray, pre: Preprocess, rng: np.random.Generator) -> np.ndarray:
    """One preprocessed image under another light (``data.lighting.relight``, on its 8-bit pixels)."""
    from edgead.data.lighting import relight

    return pre.normalize(relight(pre.denormalize(x), rng))


def with_anomalies(normals: np.ndarray, pre: Preprocess, share: float, seed: int, relit_share: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The normals, a seeded ``share`` of them again with a synthetic anomaly and a seeded ``relit_share`` again
    under another light; returns (images, index of the normal each image was made from)."""
    from edgead.data.anomaly_synth import Synthesizer

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(normals))[: round(share * len(normals))]
    synth = Synthesizer()
    made = [painted(normals[i], pre, synth, rng) for i in idx]
    light = np.random.default_rng([seed, 1])  # its own stream: the anomalies above stay what they were
    lit = light.permutation(len(normals))[: round(relit_share * len(normals))]
    made += [relit(normals[i], pre, light) for i in lit]
    images = np.concatenate([normals, np.stack(made)]) if made else normals
    return images.astype(np.float32), np.concatenate([np.arange(len(normals)), idx, lit]).astype(int)


def load_cache(path: Path, input_name: str) -> np.ndarray:
    try:
        with np.load(path) as z:
            return z[input_name]
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise EdgeadError(f"{path}: unusable calibration cache ({type(e).__name__}); delete it to rebuild") from None


def check_manifest(man: dict, root: Path) -> None:
    """Files still there and unchanged; otherwise say which one and what to do."""
    for f in man["files"]:
        p = root / f["path"]
        if not p.is_file():
            raise EdgeadError(f"{p}: calibration image missing; restore it or rebuild with --force")
        if sha256_file(p) != f["sha256"]:
            raise EdgeadError(f"{p}: calibration image changed since the manifest; rebuild with --force")
