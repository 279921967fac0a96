"""The one image reader: bit depths, colour modes, orientation, limits, and damaged files (fuzzed)."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgead.data import mvtec
from edgead.data.image import image_size, read_image
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError


def _grey16(tmp_path, name="g16.png"):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    p = tmp_path / name
    Image.fromarray(ramp).save(p)  # mode I;16
    return p, ramp


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    p, ramp = _grey16(tmp_path)
    assert Image.open(p).mode.startswith("I;16")
    assert np.asarray(Image.open(p).convert("RGB")).mean() > 250  # what Pillow's convert does: nearly all white
    img = read_image(p)
    assert img.mode == "L" and img.size == (64, 48)
    want = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(img), want)


def test_16bit_and_8bit_copies_give_the_same_model_input(tmp_path):
    p16, ramp = _grey16(tmp_path)
    p8 = tmp_path / "g8.png"
    Image.fromarray(np.round(ramp / 257.0).astype(np.uint8)).save(p8)
    pre = Preprocess(height=32, width=32)
    a = mvtec.load_images([mvtec.Sample(p16, "c", "good"), mvtec.Sample(p8, "c", "good")], pre)
    np.testing.assert_array_equal(a[0], a[1])


def test_palette_la_cmyk_and_rgba_become_8bit_rgb_or_grey(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    src = Image.fromarray(rgb)
    cases = {"p.png": src.convert("P"), "la.png": src.convert("LA"), "rgba.png": src.convert("RGBA"),
             "cmyk.jpg": src.convert("CMYK"), "one.png": src.convert("1")}
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.mode in ("L", "RGB") and out.size == (50, 40), name
        assert np.asarray(Preprocess(height=32, width=32)(out)).shape == (3, 32, 32)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # left half white
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = np.asarray(read_image(tmp_path / "r.jpg"))
    assert out.shape[:2] == (40, 20) and image_size(tmp_path / "r.jpg") == (20, 40)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # the white half is now on top


def _png_header_only(path, w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_and_tiny_images_are_one_line_errors(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)  # 400 MP claimed, a few bytes on disk
    with pytest.raises(EdgeadError, match=r"bomb.png: image is 20000x20000 px .*EDGEAD_MAX_IMAGE_PIXELS"):
        read_image(bomb)
    Image.new("L", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(EdgeadError, match=r"dot.png: image is 1x1 px"):
        read_image(tmp_path / "dot.png")
    ok = tmp_path / "ok.png"
    Image.new("L", (300, 300)).save(ok)
    monkeypatch.setenv("EDGEAD_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(EdgeadError, match="over edgead's limit"):
        read_image(ok)
    monkeypatch.setenv("EDGEAD_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(EdgeadError, match="EDGEAD_MAX_IMAGE_PIXELS='lots'"):
        read_image(ok)


def test_empty_truncated_and_missing_files_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    for name in ("empty.png", "cut.png", "gone.png"):
        with pytest.raises(EdgeadError, match=name):
            read_image(tmp_path / name)


def test_wrong_size_mask_is_refused(tmp_path):
    img, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.new("L", (64, 48)).save(img)
    Image.new("L", (32, 32)).save(mask)
    with pytest.raises(EdgeadError, match=r"a_mask.png: mask is 32x32 px but its image a.png is 64x48"):
        mvtec.load_masks([mvtec.Sample(img, "c", "crack", mask)], Preprocess(height=32, width=32))


def test_fuzzed_png_and_jpeg_files_never_raise_anything_else(tmp_path):
    """140 damaged files (random byte flips, cuts, inserted bytes): decoded, or a one-line EdgeadError."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    seeds = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        buf = io.BytesIO()
        base.save(buf, format=fmt)
        seeds[ext] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)).save(buf, format="PNG")
    seeds["16.png"] = buf.getvalue()
    outcomes = {"decoded": 0, "error": 0}
    for i in range(140):
        ext = list(seeds)[i % 3]
        data = bytearray(seeds[ext])
        kind = i % 4
        if kind == 0:
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2:
            pos = int(rng.integers(0, len(data)))
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:
            start = int(rng.integers(0, 40))
            data[start:start + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()  # header damage
        p = tmp_path / f"f{i}.{ext.split('.')[-1]}"
        p.write_bytes(bytes(data))
        try:
            img = read_image(p)
            assert img.mode in ("L", "RGB")
            outcomes["decoded"] += 1
        except EdgeadError as e:
            assert p.name in str(e) and "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 20 and sum(outcomes.values()) == 140
