"""A small synthetic texture set (DAGM-style) with drawn defects, generated on the fly.

For ``make demo`` on a machine without real data, and for fast tests of the data layer. Results
on this set are never quoted as accuracy: it exists so that everything runs offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFECTS = ("scratch", "spot")


def _texture(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """Smooth random texture: filtered noise plus oriented stripes, grayscale uint8."""
    noise = rng.normal(0, 1, (size, size))
    img = Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(1.5 + kind))
    base = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    angle = 0.6 + 0.9 * kind
    stripes = 18 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (3.0 + 2 * kind) + rng.uniform(0, 6.28))
    out = (base - base.mean()) * 2.0 + 128 + stripes
    return np.clip(out, 0, 255).astype(np.uint8)


def _defect(rng: np.random.Generator, img: np.ndarray, kind: str, shift: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scratch or a spot on a uint8 image (H, W) or (H, W, C); returns (image, mask 0/255)."""
    size = min(img.shape[:2])
    mask = Image.new("L", (img.shape[1], img.shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "scratch":
        x0, y0 = rng.integers(size // 6, size - size // 6, 2)
        ang = rng.uniform(0, np.pi)
        length = rng.integers(size // 5, size // 2)
        x1, y1 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=int(rng.integers(3, 6)))
    else:
        cx, cy = rng.integers(size // 6, size - size // 6, 2)
        r = int(rng.integers(size // 24, size // 12))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    m = np.asarray(mask) > 127
    out = img.astype(np.int16)
    out[m] = np.clip(out[m] + (shift if rng.random() < 0.5 else -shift), 0, 255)
    return out.astype(np.uint8), (m * 255).astype(np.uint8)


def paint_defects(images: np.ndarray, seed: int = 0, shift: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Drawn defects (grey-level ``shift``) on copies of uint8 images (N, H, W, C): a labelled split
    without real defects."""
    rng = np.random.default_rng(seed)
    out, masks = [], []
    for i, img in enumerate(images):
        d, m = _defect(rng, img, DEFECTS[i % len(DEFECTS)], shift)
        out.append(d)
        masks.append(m > 127)
    return np.stack(out), np.stack(masks)


def make_dataset(root: str | Path, categories: int = 2, n_train: int = 24, n_good: int = 6, n_defect: int = 6,
                 size: int = 256, seed: int = 0) -> Path:
    """Write an MVTec-style tree ``root/texture<k>/...``; returns ``root``. Idempotent for a seed."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(categories):
        cat = root / f"texture{k}"
        for split, n in (("train/good", n_train), ("test/good", n_good)):
            (cat / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_texture(rng, size, k)).save(cat / split / f"{i:03d}.png")
        for d in DEFECTS:
            (cat / "test" / d).mkdir(parents=True, exist_ok=True)
            (cat / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
            for i in range(n_defect):
                img, mask = _defect(rng, _texture(rng, size, k), d)
                Image.fromarray(img).save(cat / "test" / d / f"{i:03d}.png")
                Image.fromarray(mask).save(cat / "ground_truth" / d / f"{i:03d}_mask.png")
    return root
