"""Heatmap colouring and overlays (eval PNGs now; the live pipeline later)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# A compact "jet"-like colormap: 256 x 3 uint8, computed once.
_t = np.linspace(0.0, 1.0, 256)
JET = (np.clip(np.stack([1.5 - np.abs(4 * _t - 3), 1.5 - np.abs(4 * _t - 2), 1.5 - np.abs(4 * _t - 1)], 1), 0, 1)
       * 255).astype(np.uint8)


def colorize(norm_map: np.ndarray) -> np.ndarray:
    """A map normalised so that 0 = normal and 1 = threshold -> RGB; saturates at 2x threshold."""
    idx = np.clip(norm_map / 2.0, 0.0, 1.0) * 255
    return JET[idx.astype(np.uint8)]


def overlay(rgb: np.ndarray, norm_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    heat = colorize(norm_map).astype(np.float32)
    return (rgb.astype(np.float32) * (1 - alpha) + heat * alpha).astype(np.uint8)


def mask_outline(rgb: np.ndarray, mask: np.ndarray, color=(0, 255, 0)) -> np.ndarray:
    m = mask.astype(bool)
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out = rgb.copy()
    out[edge] = color
    return out


def panel(rgb: np.ndarray, norm_map: np.ndarray, mask: np.ndarray | None, title: str) -> Image.Image:
    """Image | heatmap overlay | ground truth, with a title strip."""
    gt = mask_outline(rgb, mask) if mask is not None else rgb
    return strip([rgb, overlay(rgb, norm_map), gt], title)


def strip(tiles: list[np.ndarray], title: str) -> Image.Image:
    """Same-size RGB tiles side by side (4 px apart) under a title line."""
    h, w = tiles[0].shape[:2]
    canvas = Image.new("RGB", (len(tiles) * (w + 4) - 4, h + 18), (20, 20, 20))
    for i, t in enumerate(tiles):
        canvas.paste(Image.fromarray(t), (i * (w + 4), 18))
    ImageDraw.Draw(canvas).text((4, 3), title, fill=(255, 255, 255))
    return canvas
