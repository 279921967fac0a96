"""The single preprocessing definition, shared by train, export, calibration, parity and live.

An image (any of grayscale, RGB, RGBA; any size) becomes a float32 CHW array:
resize to (height, width) with bilinear filtering, convert to RGB, scale to [0, 1], then
``(x - mean) / std`` with the backbone's own constants. The definition is serialised into
every run and bundle (``to_dict``) so that every stage reproduces it exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    height: int = 256
    width: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color: str = "RGB"
    resize: str = "bilinear"
    layout: str = "NCHW"
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def resize_image(self, img: Image.Image) -> Image.Image:
        """Colour conversion then resize, as PIL images (uint8)."""
        if img.mode != self.color:
            img = img.convert("RGBA").convert(self.color) if img.mode in ("P", "LA") else img.convert(self.color)
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), RESAMPLE[self.resize])
        return img

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """HWC uint8 RGB at model size -> CHW float32, backbone scaling."""
        x = rgb.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, img: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        return self.normalize(np.asarray(self.resize_image(img)))

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """CHW float32 -> HWC uint8 RGB (for overlays)."""
        rgb = x.transpose(1, 2, 0) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    def mask(self, mask: Image.Image) -> np.ndarray:
        """Ground-truth mask at model size: bilinear resize, then binarise at > 127."""
        m = mask.convert("L")
        if m.size != (self.width, self.height):
            m = m.resize((self.width, self.height), Image.Resampling.BILINEAR)
        return (np.asarray(m) > 127).astype(np.uint8)
