"""Anomaly synthesis (DRAEM / CRR style): Perlin-noise masks filled from a texture source or the
image's own shuffled patches, blended with beta in [0.2, 0.8). Deterministic under a seed.

x_syn = x * (1 - M) + (1 - beta) * src * M + beta * x * M

Texture sources: a user folder of images (the papers use DTD, not reachable here), else
procedural textures (coloured Perlin noise, stripes, checkers, blobs). Which one was used is
reported by ``Synthesizer.describe`` and recorded in the run config.

Foreground: ``"all"`` (textures such as tiles and PCBs: every pixel may carry a defect) or
``"auto"``: pixels whose colour differs from the border's median colour by more than an Otsu
threshold (objects on a plain background); falls back to all-ones when that is under 5 % or over
95 % of the image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from edgead.data.image import read_image
from edgead.errors import EdgeadError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise in about [-1, 1]; ``res`` periods along each axis."""
    h, w = shape
    ry, rx = res
    gy, gx = math.ceil(h / ry) * ry, math.ceil(w / rx) * rx  # grid size divisible by res
    angles = 2 * math.pi * rng.random((ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], -1)
    yy, xx = np.meshgrid(np.arange(gy) * ry / gy, np.arange(gx) * rx / gx, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grad[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    uy, ux = _fade(fy), _fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return (math.sqrt(2) * (top * (1 - uy) + bottom * uy))[:h, :w]


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, threshold: float = 0.5,
                max_scale_log2: int = 5, tries: int = 50) -> np.ndarray:
    """Binary mask: Perlin noise at random scales 2^a x 2^b, rotated by U(-90, 90) degrees, > threshold."""
    h, w = shape
    for _ in range(tries):
        a, b = rng.integers(0, max_scale_log2 + 1, 2)
        noise = perlin((h, w), (2 ** int(a), 2 ** int(b)), rng)
        angle = float(rng.uniform(-90, 90))
        rot = np.asarray(Image.fromarray(noise.astype(np.float32), mode="F").rotate(angle, Image.Resampling.BILINEAR))
        mask = rot > threshold
        if mask.any():
            return mask.astype(np.float32)
    return np.zeros(shape, np.float32)


def foreground(rgb: np.ndarray, mode: str = "all") -> np.ndarray:
    """Where defects may be drawn (H, W) float32 in {0, 1}; see the module docstring."""
    h, w = rgb.shape[:2]
    if mode == "all":
        return np.ones((h, w), np.float32)
    if mode != "auto":
        raise EdgeadError(f"foreground mode {mode!r}: choose all or auto")
    x = rgb.astype(np.float32)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    dist = np.linalg.norm(x - np.median(border, 0), axis=-1)
    hist, edges = np.histogram(dist, 64)
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centers)
    between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)  # Otsu
    fg = dist > centers[int(np.argmax(between))]
    share = fg.mean()
    return fg.astype(np.float32) if 0.05 <= share <= 0.95 else np.ones((h, w), np.float32)


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random colourful texture (H, W, 3) uint8: Perlin colour noise, stripes, checkers or blobs."""
    h, w = shape
    kind = int(rng.integers(0, 4))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:
        chans = [perlin((h, w), (2 ** int(rng.integers(1, 5)),) * 2, rng) for _ in range(3)]
        img = np.stack(chans, -1) * 0.5 + 0.5
    elif kind == 1:
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 32)
        base = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
        img = base[..., None] * rng.random(3) + (1 - base[..., None]) * rng.random(3)
    elif kind == 2:
        cell = int(rng.integers(4, 33))
        base = ((yy // cell + xx // cell) % 2).astype(np.float32)
        img = base[..., None] * rng.random(3) + (1 - base[..., None]) * rng.random(3)
    else:
        img = np.zeros((h, w, 3), np.float32) + rng.random(3)
        for _ in range(int(rng.integers(5, 30))):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 20)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - blob) + blob * rng.random(3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def augment(rgb: np.ndarray, rng: np.random.Generator, n_ops: int = 3) -> np.ndarray:
    """Three random photometric/geometric ops (the papers' list, PIL versions)."""
    img = Image.fromarray(rgb)
    ops = [
        lambda im: ImageOps.autocontrast(im),
        lambda im: ImageOps.equalize(im),
        lambda im: ImageOps.invert(im),
        lambda im: ImageOps.posterize(im, int(rng.integers(2, 6))),
        lambda im: ImageOps.solarize(im, int(rng.integers(32, 224))),
        lambda im: im.point(lambda v, g=float(rng.uniform(0.5, 2.0)): 255 * (v / 255) ** g),  # gamma
        lambda im: Image.fromarray(np.clip(np.asarray(im, np.float32) * rng.uniform(0.8, 1.2)
                                           + rng.uniform(-30, 30), 0, 255).astype(np.uint8)),  # brightness
        lambda im: im.rotate(float(rng.uniform(-45, 45)), Image.Resampling.BILINEAR),
    ]
    for k in rng.choice(len(ops), n_ops, replace=False):
        img = ops[int(k)](img)
    return np.asarray(img.convert("RGB"))


def shuffled_patches(rgb: np.ndarray, rng: np.random.Generator, grid: int = 8) -> np.ndarray:
    """The image cut into a grid x grid set of cells, rows and columns shuffled (self-augmentation)."""
    h, w = rgb.shape[:2]
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    rows = [rgb[ys[i]:ys[i + 1]] for i in rng.permutation(grid)]
    img = np.concatenate(rows, 0)
    cols = [img[:, xs[j]:xs[j + 1]] for j in rng.permutation(grid)]
    return np.concatenate(cols, 1)


class Synthesizer:
    """Draws synthetic anomalies on uint8 RGB images; ``texture_dir`` None = procedural textures."""

    def __init__(self, texture_dir: str | Path | None = None, foreground_mode: str = "all",
                 texture_share: float = 0.5):
        self.files: list[Path] = []
        if texture_dir:
            root = Path(texture_dir)
            if not root.is_dir():
                raise EdgeadError(f"{root}: texture folder not found; pass a folder of images (e.g. DTD's images/)")
            self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXT)
            if not self.files:
                raise EdgeadError(f"{root}: no images (png/jpg/bmp/tif) found; pass a folder of texture images")
        self.texture_dir = str(texture_dir) if texture_dir else None
        self.foreground_mode, self.texture_share = foreground_mode, texture_share

    def describe(self) -> dict:
        return {"texture_source": f"folder {self.texture_dir} ({len(self.files)} images)" if self.files
                else "procedural (no texture folder given; the paper's DTD is not reachable offline)",
                "foreground": self.foreground_mode, "texture_share": self.texture_share,
                "blend_beta": [0.2, 0.8], "perlin_threshold": 0.5}

    def _texture(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        if self.files:
            p = self.files[int(rng.integers(len(self.files)))]
            img = read_image(p).convert("RGB").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
            return np.asarray(img)
        return procedural_texture(shape, rng)

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One image (H, W, 3) uint8 -> (synthetic image uint8, mask (H, W) float32 in {0, 1})."""
        h, w = rgb.shape[:2]
        mask = perlin_mask((h, w), rng) * foreground(rgb, self.foreground_mode)
        if rng.random() < self.texture_share:
            src = augment(self._texture((h, w), rng), rng)
        else:
            src = shuffled_patches(augment(rgb, rng), rng)
        beta = float(rng.uniform(0.2, 0.8))
        m = mask[..., None]
        x = rgb.astype(np.float32)
        out = x * (1 - m) + (1 - beta) * src.astype(np.float32) * m + beta * x * m
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask

    def batch(self, rgb: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        pairs = [self(x, rng) for x in rgb]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
