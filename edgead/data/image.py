"""Reading images: the one decoder used by train, eval, calibration, verify and ``images://``.

Every file becomes an 8-bit ``L`` (grey) or ``RGB`` PIL image, upright:

- 16-bit grey (``I;16*``, common from industrial cameras) and 32-bit integer images are scaled from
  their full 0-65535 range to 0-255 (``round(v / 257)``), never clipped (Pillow's own ``convert`` turns
  every value over 255 white);
- palette, grey+alpha, RGBA, CMYK and YCbCr become RGB or L; alpha is dropped;
- the EXIF orientation tag is applied (a rotated phone or camera JPEG is read as it is displayed);
- an image over ``max_pixels()`` (``EDGEAD_MAX_IMAGE_PIXELS``, default 100 MP) or under ``MIN_SIDE``
  pixels on a side is refused; so is a 32-bit float image (its range is not defined).

Any decoding failure is an :class:`EdgeadError` naming the file and the fix: the decoder is the
boundary where untrusted bytes enter, so no exception type escapes it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from edgead.errors import EdgeadError

MIN_SIDE = 16
DEFAULT_MAX_PIXELS = 100_000_000
_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees
# Pillow warns between its limit and twice it; edgead refuses over its own limit with an error instead.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def max_pixels() -> int:
    """The largest image edgead decodes (width x height), from ``EDGEAD_MAX_IMAGE_PIXELS``."""
    raw = os.environ.get("EDGEAD_MAX_IMAGE_PIXELS", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise EdgeadError(f"EDGEAD_MAX_IMAGE_PIXELS={raw!r}: expected a whole number of pixels, e.g. 200000000"
                          ) from None
    if value < MIN_SIDE * MIN_SIDE:
        raise EdgeadError(f"EDGEAD_MAX_IMAGE_PIXELS={raw!r}: must be at least {MIN_SIDE * MIN_SIDE}")
    return value


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit integers holding 16-bit data)
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray((np.clip(a, 0, 65535) / 257.0 + 0.5).astype(np.uint8), "L")
    if mode == "F":
        raise EdgeadError(f"{path}: 32-bit float image (range undefined); save it as 8- or 16-bit PNG or TIFF")
    if mode == "LA":
        return img.convert("L")
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")  # RGBA, RGBX, CMYK, YCbCr, LAB, HSV


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``path`` opened by Pillow within edgead's pixel limit (checked from the header, before anything is decoded);
    every failure, in the block too, a one-line error naming the file."""
    limit = max_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check must not refuse what the user allowed
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > limit:
                raise EdgeadError(_too_large(path, w, h, limit))
            yield im
    except EdgeadError:
        raise
    except FileNotFoundError:
        raise EdgeadError(f"{path}: image not found; check the path") from None
    except IsADirectoryError:
        raise EdgeadError(f"{path}: is a folder, not an image") from None
    except Image.DecompressionBombError:  # Pillow's own check (over twice its limit) came first
        w, h = _header_size(path)
        raise EdgeadError(_too_large(path, w, h, limit)) from None
    except Exception as e:  # Pillow raises many types on damaged files (OSError, SyntaxError, struct.error, ...)
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise EdgeadError(f"{path}: cannot decode image ({why}); replace or remove the file") from None


def read_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit L or RGB image, or raise a one-line error naming it."""
    path = Path(path)
    with _opened(path) as im:
        im.load()
        img = _to_8bit(ImageOps.exif_transpose(im) or im.copy(), path)
    if min(img.size) < MIN_SIDE:
        raise EdgeadError(f"{path}: image is {img.width}x{img.height} px; edgead needs at least {MIN_SIDE} px per "
                          f"side (is it a thumbnail or an empty capture?)")
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as ``read_image`` would return it, from the header only; the files it refuses, refused alike."""
    path = Path(path)
    with _opened(path) as im:
        w, h = im.size
        turned = im.getexif().get(0x0112) in _SWAPPED
    return (h, w) if turned else (w, h)


_PILLOW_LIMIT = threading.Lock()


def _header_size(path: Path) -> tuple[int, int]:
    """Width and height from the header of an image Pillow refuses to open (its bomb check off)."""
    with _PILLOW_LIMIT:
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                return im.size
        except Exception:
            return (0, 0)
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _too_large(path: Path, w: int, h: int, limit: int) -> str:
    size = f"{w}x{h} px ({w * h / 1e6:.0f} MP)" if w else "far over the limit"
    return (f"{path}: image is {size}, over edgead's limit of {limit / 1e6:.0f} MP; downscale it, or raise "
            f"EDGEAD_MAX_IMAGE_PIXELS if the file is trusted")
