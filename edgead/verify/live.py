"""Does the live path see what verify saw? The same bundle graph on the same parts, once offline (the one
image reader, the bundle's preprocessing, the engine) and once through ``edgead inspect`` from a source
URI: ``images://DIR`` (stills at their own size) or ``file://VIDEO`` with the manifest that lists the
source file of every frame (``scripts/make_conveyor.py`` writes both). Gated like the precision's L2
score error and L3 decision agreement (``edgead verify BUNDLE --live URI``).

``--source-size WxH`` proves the camera path at a camera's resolution: each reference part is framed
as a camera of that size would see it (the original image stretched to fill the frame, Lanczos), the
frames go into a lossless video, and ``edgead inspect`` (with the chosen ``--scale``) must score every
frame as the offline path scores that same frame."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgead.backends import EngineOptions, open_engine
from edgead.bundle import Bundle
from edgead.data.image import read_image
from edgead.data.mvtec import image_files
from edgead.decision import THRESHOLD
from edgead.errors import EdgeadError
from edgead.fileio import read_json
from edgead.live.uri import parse


def _parts(uri: str, manifest: Path | None) -> list[tuple[int | str, Path]]:
    """(frame number or still name, source file) of every part the source will show."""
    src = parse(uri, "source")
    if src.scheme == "images":
        root = Path(src.location)
        if not root.is_dir():
            raise EdgeadError(f"--live {uri}: no such folder")
        return [(p.name, p) for p in image_files(root)]
    if src.scheme == "file":
        if manifest is None:
            manifest = Path(src.location).with_suffix(".json")
        if not Path(manifest).is_file():
            raise EdgeadError(f"{manifest}: no manifest for {uri}; pass --manifest FILE (frames: [{{frame, file}}]), "
                              f"as scripts/make_conveyor.py writes it")
        frames = read_json(manifest).get("frames")
        if not isinstance(frames, list) or not all(isinstance(f, dict) and {"frame", "file"} <= set(f)
                                                   for f in frames):
            raise EdgeadError(f"{manifest}: expected {{frames: [{{frame, file}}, ...]}}")
        return [(int(f["frame"]), Path(f["file"])) for f in frames]
    raise EdgeadError(f"--live {uri}: use images://DIR or file://VIDEO (with its manifest)")


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()) or not (16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
        raise EdgeadError(f"--source-size {text!r}: write WIDTHxHEIGHT, e.g. 1280x720 (16..8192 each)")
    return int(w), int(h)


def camera_video(ref, idx, size: tuple[int, int], data: Path | None, folder: Path) -> tuple[Path, Path]:
    """Reference parts ``idx`` framed at ``size`` (W, H): frame PNGs, a lossless video and its manifest.

    Frames come from the original files under ``data`` when they are there, else from the reference's
    model-size images (upscaled; less detail than a real camera, still the same pipeline)."""
    from PIL import Image

    from edgead.fileio import atomic_write_json
    from edgead.live.conveyor import make_video

    folder.mkdir(parents=True, exist_ok=True)
    frames, rows = [], []
    for n, i in enumerate(idx, start=1):
        src = Path(data) / str(ref.files[i]) if data is not None else None
        img = read_image(src).convert("RGB") if src is not None and src.is_file() else Image.fromarray(ref.images[i])
        frame = img.resize(size, Image.Resampling.LANCZOS)
        png = folder / f"frame{n:04d}.png"
        frame.save(png)
        frames.append(np.asarray(frame))
        rows.append({"frame": n, "file": str(png), "part": str(ref.files[i])})
    video = make_video(frames, folder / "camera.mkv", fps=10)
    manifest = folder / "camera.json"
    atomic_write_json(manifest, {"fps": 10, "size": list(size), "frames": rows})
    return video, manifest


def camera_parity(b: Bundle, key: str, backend: str, ref, size: tuple[int, int], data: Path | None,
                  category: str | None = None, threads: int | None = None, scale: str = "bundle") -> list[dict]:
    """``live_parity`` on the reference parts as a ``size`` camera frames them: one camera (one video,
    one inspect run) per category, as a line has a camera per product."""
    cats = [category] if category else sorted(set(map(str, ref.categories)))
    out = []
    for cat in cats:
        idx = np.flatnonzero(ref.categories == cat)
        if not len(idx):
            raise EdgeadError(f"--category {cat}: the bundle's reference has no part of it ({', '.join(b.categories)})")
        with tempfile.TemporaryDirectory(prefix="edgead-camera-") as tmp:
            video, manifest = camera_video(ref, idx, size, data, Path(tmp))
            res = live_parity(b, key, backend, f"file://{video}", cat, manifest, threads, scale)
        out.append({**res, "source": f"{size[0]}x{size[1]} camera (reference parts, lossless video)",
                    "size": list(size), "scale": scale})
    return out


def live_parity(b: Bundle, key: str, backend: str, uri: str, category: str | None = None,
                manifest: Path | None = None, threads: int | None = None, scale: str = "bundle") -> dict:
    from edgead.live.inspect import InspectRequest, inspect

    cats = b.categories
    category = category or (cats[0] if len(cats) == 1 else None)
    if category is None:
        raise EdgeadError(f"--live on a multi-class bundle: say which product the source shows with --category "
                          f"({', '.join(cats)})")
    norm, pre = b.category_norm(category), b.preprocess
    parts = _parts(uri, manifest)
    engine = open_engine(b.path, key, backend, EngineOptions(threads=threads))
    offline = {}
    for ident, path in parts:
        offline[ident] = float(engine.run_batched(pre(read_image(path))[None])["score"][0])
    engine.close()
    with tempfile.TemporaryDirectory(prefix="edgead-live-") as tmp:
        res = inspect(InspectRequest(bundle=b.path, source=uri, precision=key, backend=backend, category=category,
                                     policy="every", alerts_dir=Path(tmp), threads=threads, quiet=True,
                                     keep_decisions=len(parts) + 1, scale=scale))
    by = "name" if parse(uri, "source").scheme == "images" else "frame"
    live = {d[by]: d["score"] for d in res["decisions_tail"]}
    common = [i for i, _ in parts if i in live]
    if not common:
        raise EdgeadError(f"--live {uri}: the live run inspected none of the {len(parts)} parts")
    ref = np.array([float(norm.score(offline[i])) for i in common])
    got = np.array([live[i] for i in common])
    err = np.abs(got - ref)
    flips = [{"part": str(i), "offline": float(r), "live": float(g)} for i, r, g in zip(common, ref, got, strict=True)
             if (r >= THRESHOLD) != (g >= THRESHOLD)]
    w = int(err.argmax())
    return {"source": uri, "category": category, "n_parts": len(parts), "n_compared": len(common),
            "missing": [str(i) for i, _ in parts if i not in live][:20],
            "score_abs_max": float(err.max()), "decision_agreement": 1 - len(flips) / len(common),
            "worst": {"part": str(common[w]), "offline": float(ref[w]), "live": float(got[w])}, "flips": flips[:20],
            "live_fps": res["fps"], "live_frames": res["frames"], "skipped": res["skipped"], "scale": scale,
            "live_p50_ms": {k: round(v["p50_ms"], 3) for k, v in res["stages"].items()}}
