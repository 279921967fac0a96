"""``edgead build``: precision graphs in a bundle (and, on a Jetson, TensorRT engines).

fp32 is the exported graph; fp16 and int8 graphs are made here from it, by the rule in
``edgead.precision``. INT8 files are named by recipe (``model.int8-cpu.onnx``,
``model.int8-tensorrt.onnx``) and carry the calibration manifest in ``meta.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgead.bundle import Bundle, onnx_name, update_meta
from edgead.calibration import (
    RECIPES_FILE,
    CalibSettings,
    build_cache,
    check_manifest,
    load_cache,
    load_recipes,
    manifest,
    select,
)
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_json, read_json, scratch_dir, sha256_file
from edgead.precision.keys import BASES, PrecisionKey
from edgead.precision.readiness import report as readiness


@dataclass
class BuildRequest:
    bundle: Path
    precision: str = "fp32"  # fp32 | fp16 | int8
    backend: str = "onnxruntime"
    recipe: str | None = None  # int8: tensorrt | cpu (default: cpu on onnxruntime, tensorrt on tensorrt)
    method: str | None = None
    synthetic_fraction: float | None = None
    count: int | None = None
    seed: int | None = None
    data: Path | None = None
    recipes_file: Path | None = None
    force: bool = False
    max_drop: float | None = None  # INT8: image-AUROC points allowed to be lost on the held-out split
    default_max_drop: float | None = None  # used when a new INT8 graph is made and max_drop is None


DEFAULT_MAX_DROP = 0.5  # INT8 image-AUROC points a new graph may lose on the held-out split (edgead build)


def bundle_for(target: Path | None, model: str | None = None, workspace: Path = Path("runs"), out: Path | None = None,
               data: Path | None = None, log=None) -> Path:
    """The bundle to build in: a bundle folder as it is; a run folder, or the newest trained run of ``model``
    in ``workspace``, exported first (to ``out``, default ``RUN/bundle``)."""
    from edgead.bundle import META
    from edgead.runs import RUN_JSON, find_latest_run

    if target is None and model is None:
        raise EdgeadError("edgead build needs a BUNDLE or RUN folder, or --model NAME (e.g. --model crad)")
    target = Path(target) if target is not None else find_latest_run(workspace, model)
    if (target / RUN_JSON).is_file() and not (target / META).is_file():
        from edgead.export import ExportRequest, export_bundle

        bundle = Path(out or target / "bundle")
        export_bundle(ExportRequest(run=target, out=bundle, data=data))
        if log:
            log(f"exported {target} -> {bundle}")
        return bundle
    return target


def build_command(target: Path | None, model: str | None = None, workspace: Path = Path("runs"),
                  out: Path | None = None, log=None, **fields) -> tuple[Path, dict]:
    """What ``edgead build`` does: find or export the bundle, then build with the command's defaults (a new
    INT8 graph keeps nodes in FP16 until it loses at most ``DEFAULT_MAX_DROP`` points)."""
    bundle = bundle_for(target, model, workspace, out, fields.get("data"), log)
    int8 = fields.get("precision") == "int8"
    fields["max_drop"] = fields.get("max_drop") if int8 else None
    fields["default_max_drop"] = DEFAULT_MAX_DROP if int8 else None
    return bundle, build(BuildRequest(bundle=bundle, **fields))


def precision_key(precision: str, recipe: str | None, backend: str) -> str:
    """The graph a build makes: ``int8`` + recipe (default by backend) -> ``int8-cpu`` / ``int8-tensorrt``."""
    key = PrecisionKey.parse(precision if not recipe or precision != "int8" else f"int8-{recipe}")
    return str(key.with_default_recipe(backend))


def build(req: BuildRequest) -> dict:
    """Create the precision graph if missing (or ``force``); returns its entry in meta['files']."""
    if req.precision not in BASES:
        raise EdgeadError(f"--precision {req.precision!r}: edgead build takes fp32, fp16 or int8 (with --recipe "
                          f"cpu|tensorrt)")
    if req.backend not in ("onnxruntime", "tensorrt"):
        raise EdgeadError(f"--backend {req.backend!r}: choose onnxruntime or tensorrt")
    b = Bundle.load(req.bundle)
    key = precision_key(req.precision, req.recipe, req.backend)
    src = b.onnx("fp32")
    entry = b.files.get(key)
    dst = b.path / onnx_name(key)
    if entry and dst.is_file() and not req.force and _same_settings(entry, req):
        out = entry
    elif req.precision == "fp32":
        out = b.files["fp32"]
    else:
        out = _make(b, req, key, src, dst)
    if req.backend == "tensorrt":
        from edgead.backends.tensorrt_builder import build_engine

        ready = out.get("tensorrt_readiness") or readiness(b.path / out["path"])
        if not ready["ok"]:
            raise EdgeadError(f"{b.path / out['path']}: not buildable by TensorRT ({ready['n_findings']} findings, "
                              f"first: {ready['findings'][0]}); see meta.json")

        out = {**out, "engine": build_engine(Bundle.load(req.bundle), key, force=req.force)}
    return out


def _same_settings(entry: dict, req: BuildRequest) -> bool:
    """Whether an existing graph was built with every setting this request names (None = any)."""
    if req.precision != "int8":
        return True
    have = entry.get("calibration", {}).get("settings", {})
    want = {"method": req.method, "count": req.count, "seed": req.seed, "synthetic_fraction": req.synthetic_fraction}
    fb = entry.get("report", {}).get("fallback")
    same_drop = req.max_drop is None or (fb is not None and fb["max_drop_points"] == req.max_drop)
    return same_drop and all(v is None or have.get(k) == v for k, v in want.items())


def _make(b: Bundle, req: BuildRequest, key: str, src: Path, dst: Path) -> dict:
    scopes = b.precision_scopes
    with scratch_dir(b.path, ".build-") as tmp:
        tmp_dst = Path(tmp) / dst.name
        if req.precision == "fp16":
            from edgead.precision.fp16 import to_fp16

            report = to_fp16(src, tmp_dst, scopes["fp16"])
            extra = {}
        else:
            from edgead.precision.int8 import to_int8

            recipes = load_recipes(req.recipes_file)
            recipe_name = PrecisionKey.parse(key).recipe
            if recipe_name not in recipes["recipes"]:
                raise EdgeadError(f"recipe {recipe_name!r} not in {req.recipes_file or RECIPES_FILE}; "
                                  f"choose {', '.join(recipes['recipes'])}")
            settings = CalibSettings.from_recipes(recipes, method=req.method, count=req.count, seed=req.seed,
                                                 synthetic_fraction=req.synthetic_fraction)
            data, man = calibration_set(b, settings, req.data)
            args = (src, tmp_dst, recipe_name, recipes["recipes"][recipe_name], settings, data, b.input_name,
                    b.input_shape[0], scopes["int8"], Path(tmp) / "work")
            report = to_int8(*args)
            max_drop = req.max_drop if req.max_drop is not None else req.default_max_drop
            if max_drop is not None:
                report["fallback"] = fallback(b, args, data, max_drop)
                report.update(kept_fp16=report["fallback"]["kept_fp16"])
            extra = {"calibration": {k: man[k] for k in ("settings", "per_category")}
                     | {"manifest": "calibration/manifest.json", "n_files": len(man["files"])}}
        tmp_dst.replace(dst)
    entry = {"path": dst.name, "sha256": sha256_file(dst), "report": report, "tensorrt_readiness": readiness(dst),
             **extra}
    update_meta(b.path, lambda m: m["files"].__setitem__(key, entry))
    return entry


def fallback(b: Bundle, args: tuple, calib: np.ndarray, max_drop: float) -> dict:
    """Keep the worst INT8 nodes in FP16 (2, 4, 8, ...) until the held-out AUROC drop fits."""
    from edgead.backends.onnxruntime import OrtBackend
    from edgead.precision.int8 import to_int8
    from edgead.precision.rules import split_nodes
    from edgead.precision.sensitivity import SPLIT_SHIFT, holdout_split, mean_auroc, rank_nodes

    src, dst, work, batch = args[0], args[1], args[-1], b.input_shape[0]
    images, labels, cats = holdout_split(b.meta, b.preprocess)
    n = len(images) // batch * batch
    images, labels, cats = images[:n], labels[:n], cats[:n]
    ref = mean_auroc(OrtBackend(src), images, labels, cats, batch)

    def drop() -> float:
        return 100 * (ref - mean_auroc(OrtBackend(dst), images, labels, cats, batch))

    history = [{"kept_fp16": 0, "drop_points": drop()}]
    kept: list[str] = []
    if history[-1]["drop_points"] > max_drop:
        inside, _ = split_nodes(onnx.load(str(work / "preprocessed.onnx")), b.precision_scopes["int8"])
        ranked = rank_nodes(work / "preprocessed.onnx", dst, inside, calib[: 8 // batch * batch or batch],
                            b.input_name, batch, work)
        k = 2
        while history[-1]["drop_points"] > max_drop and len(kept) < len(ranked):
            kept = [name for name, _ in ranked[: min(k, len(ranked))]]
            to_int8(*args, keep_fp16=kept)
            history.append({"kept_fp16": len(kept), "drop_points": drop()})
            k *= 2
    return {"split": f"held-out normals + the same images with faint drawn defects (shift {SPLIT_SHIFT})",
            "n_images": int(n),
            "fp32_image_auroc": ref, "max_drop_points": max_drop, "history": history,
            "budget_met": history[-1]["drop_points"] <= max_drop, "kept_fp16": kept}


def calibration_set(b: Bundle, settings: CalibSettings, data: Path | None):
    """The bundle's calibration set: reuse the cache when the manifest matches, else select and cache."""
    root = Path(data or b.data_root)
    cdir = b.path / "calibration"
    man_path, cache = cdir / "manifest.json", cdir / "calib.npz"
    if man_path.is_file() and cache.is_file():
        man = read_json(man_path)
        keys = ("count", "seed", "synthetic_fraction")
        same = {k: man["settings"].get(k, 0.0) for k in keys} == {k: getattr(settings, k) for k in keys}
        if same and Path(man["root"]) == root.resolve():
            check_manifest(man, root)
            man["settings"] = settings.__dict__
            return load_cache(cache, b.input_name), man
    samples = select(root, b.categories, set(b.holdout_files),
                     settings.count, settings.seed)
    man = manifest(samples, settings, b.preprocess, root.resolve())
    x = build_cache(samples, b.preprocess, b.input_name, cache, settings)
    atomic_write_json(man_path, man)
    return x, man
