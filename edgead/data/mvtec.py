"""MVTec-AD-style folders: ``<cat>/train/good``, ``<cat>/test/<type>``, ``<cat>/ground_truth/<type>/<stem>_mask.png``.

Several categories at once (multi-class). Every data problem is an :class:`EdgeadError`
whose one-line message names the file and the fix.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.data.image import image_size, read_image
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    path: Path
    category: str
    defect: str  # "good" or the defect type
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        return int(self.defect != GOOD)


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder in name order (hidden files and sub-folders left out)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
                  and p.is_file())


def category_dirs(root: str | Path, categories: Sequence[str] | None = None) -> dict[str, Path]:
    """Map category name -> folder. ``root`` is a folder of categories or a single category."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeadError(f"{root}: data folder not found; pass --data ROOT with <category>/train/good inside")
    if (root / "train").is_dir():
        found = {root.name: root}
    else:
        found = {p.name: p for p in sorted(root.iterdir()) if (p / "train").is_dir()}
    if not found:
        raise EdgeadError(f"{root}: no category with a train/ folder; expected <category>/train/good/*.png")
    if categories:
        missing = [c for c in categories if c not in found]
        if missing:
            raise EdgeadError(f"{root}: category {missing[0]!r} not found; available: {', '.join(found)}")
        found = {c: found[c] for c in categories}
    return found


def discover(root: str | Path, categories: Sequence[str] | None = None, split: str = "train") -> list[Sample]:
    """List the samples of ``split`` ("train" or "test") for the chosen categories."""
    samples: list[Sample] = []
    for cat, folder in category_dirs(root, categories).items():
        split_dir = folder / split
        if split == "train":
            good = split_dir / GOOD
            imgs = image_files(good) if good.is_dir() else []
            if not imgs:
                raise EdgeadError(f"{good}: category {cat!r} has no training images; add normal images there")
            samples += [Sample(p, cat, GOOD) for p in imgs]
            continue
        if not split_dir.is_dir():
            raise EdgeadError(f"{split_dir}: no test folder for category {cat!r}; add test/good and test/<defect>")
        cat_samples = []
        for type_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            for p in image_files(type_dir):
                mask = None
                if type_dir.name != GOOD:
                    mask = folder / "ground_truth" / type_dir.name / f"{p.stem}_mask.png"
                    if not mask.is_file():
                        raise EdgeadError(f"{mask}: missing ground-truth mask for {p}; add it or remove the image")
                cat_samples.append(Sample(p, cat, type_dir.name, mask))
        if not cat_samples:
            raise EdgeadError(f"{split_dir}: category {cat!r} has no test images")
        samples += cat_samples
    return samples


def holdout_samples(files: Iterable[str | Path], category: str) -> list[Sample]:
    """A run's held-out normals of ``category`` (paths ``<root>/<category>/train/good/<file>``)."""
    return [Sample(Path(p), category, GOOD) for p in files if Path(p).parent.parent.parent.name == category]


def load_images(samples: Sequence[Sample], pre: Preprocess, workers: int = 2) -> np.ndarray:
    """Decode and preprocess images -> (N, 3, H, W) float32."""
    def one(s: Sample) -> np.ndarray:
        return pre(read_image(s.path))

    if not samples:
        return np.zeros((0, 3, pre.height, pre.width), np.float32)
    with ThreadPoolExecutor(workers) as ex:
        return np.stack(list(ex.map(one, samples)))


def load_masks(samples: Sequence[Sample], pre: Preprocess) -> np.ndarray:
    """Ground-truth masks at model size (N, H, W) uint8 in {0, 1}; zeros for good images."""
    out = np.zeros((len(samples), pre.height, pre.width), np.uint8)
    for i, s in enumerate(samples):
        if s.mask_path is not None:
            mask = read_image(s.mask_path)
            want = image_size(s.path)
            if mask.size != want:
                raise EdgeadError(f"{s.mask_path}: mask is {mask.width}x{mask.height} px but its image {s.path.name} "
                                  f"is {want[0]}x{want[1]}; a mask must cover its image pixel for pixel")
            out[i] = pre.mask(mask)
    return out


def split_holdout(samples: Iterable[Sample], fraction: float, seed: int, max_per_category: int = 64
                  ) -> tuple[list[Sample], list[Sample]]:
    """Hold out a seeded fraction of each category's normals (thresholds, calibration checks)."""
    by_cat: dict[str, list[Sample]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    train, held = [], []
    for cat, items in by_cat.items():
        rng = random.Random(f"{seed}:{cat}")
        order = list(items)
        rng.shuffle(order)
        n = min(max_per_category, int(round(len(order) * fraction))) if fraction > 0 else 0
        if n and len(order) - n < 1:
            raise EdgeadError(f"category {cat!r}: too few training images ({len(order)}) to hold out {n}")
        held += sorted(order[:n], key=lambda s: s.path)
        train += sorted(order[n:], key=lambda s: s.path)
    return train, held
