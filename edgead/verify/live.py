"""Does the live path see what verify saw? The same bundle graph on the same parts, once offline (the one
image reader, the bundle's preprocessing, the engine) and once through ``edgead inspect`` from a source
URI: ``images://DIR`` (stills at their own size) or ``file://VIDEO`` with the manifest that lists the
source file of every frame (``scripts/make_conveyor.py`` writes both). Gated like the precision's L2
score error and L3 decision agreement (``edgead verify BUNDLE --live URI``)."""

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


def live_parity(b: Bundle, key: str, backend: str, uri: str, category: str | None = None,
                manifest: Path | None = None, threads: int | None = None) -> dict:
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
                                     keep_decisions=len(parts) + 1))
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
            "live_fps": res["fps"], "live_frames": res["frames"], "skipped": res["skipped"]}
