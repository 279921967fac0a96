"""``edgead build``: precision graphs in a bundle (and, on a Jetson, TensorRT engines).

fp32 is the exported graph; fp16 and int8 graphs are made here from it, by the rule in
``edgead.precision``. INT8 files are named by recipe (``model.int8-cpu.onnx``,
``model.int8-tensorrt.onnx``) and carry the calibration manifest in ``meta.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgead.bundle import Bundle, onnx_name, update_meta
from edgead.calibration import (
    CalibSettings,
    build_cache,
    check_manifest,
    load_cache,
    load_recipes,
    manifest,
    pick_recipe,
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
    relit_fraction: float | None = None
    count: int | None = None
    seed: int | None = None
    data: Path | None = None
    recipes_file: Path | None = None
    force: bool = False
    qad: str | None = None  # INT8: auto (when PTQ fails the build split) | always | never
    qad_steps: int | None = None
    fallback: bool = True  # INT8: leave the most harmful activations in FP16 when nothing else passes
    bias_correction: bool = True  # INT8: correct PTQ's conv biases for the INT8 graph's mean error
    learned_rounding: bool = False  # INT8: round each conv's weights to fit its FP32 output (AdaRound)
    gates_file: Path | None = None  # INT8: gate overrides for the build split (as edgead verify --gates)
    log: object = None


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
    """What ``edgead build`` does: find or export the bundle, then build (INT8: PTQ, QAD and FP16 fallback
    until the build split passes the default gates, see ``edgead.precision.search``)."""
    bundle = bundle_for(target, model, workspace, out, fields.get("data"), log)
    return bundle, build(BuildRequest(bundle=bundle, log=log, **fields))


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
    want = {"method": req.method, "count": req.count, "seed": req.seed, "synthetic_fraction": req.synthetic_fraction,
            "relit_fraction": req.relit_fraction}
    plan = entry.get("report", {}).get("plan", {})
    named = {"qad": req.qad, "qad_steps": req.qad_steps, "fallback": req.fallback,  # None = not named: any
             "gates_file": str(req.gates_file) if req.gates_file else None, "bias_correction": req.bias_correction,
             "learned_rounding": req.learned_rounding}
    plan = {"bias_correction": False, "learned_rounding": False, **plan}  # built before these existed
    same_plan = all(plan.get(k) == v for k, v in named.items() if v is not None)
    return same_plan and all(v is None or have.get(k) == v for k, v in want.items())


def _plan(req: BuildRequest):
    """The INT8 search this request asks for (unset fields: the defaults)."""
    from edgead.precision.search import SearchPlan

    return SearchPlan(qad=req.qad or "auto", qad_steps=req.qad_steps or SearchPlan.qad_steps,
                      fallback=req.fallback, gates_file=req.gates_file, bias_correction=req.bias_correction,
                      learned_rounding=req.learned_rounding)


def _make(b: Bundle, req: BuildRequest, key: str, src: Path, dst: Path) -> dict:
    scopes = b.precision_scopes
    with scratch_dir(b.path, ".build-") as tmp:
        tmp_dst = Path(tmp) / dst.name
        if req.precision == "fp16":
            from edgead.precision.fp16 import to_fp16

            report = to_fp16(src, tmp_dst, scopes["fp16"])
            extra = {}
        else:
            from edgead.precision.quantizer import Quantizer
            from edgead.precision.search import search

            recipes = load_recipes(req.recipes_file)
            recipe_name = PrecisionKey.parse(key).recipe
            recipe = pick_recipe(recipes, recipe_name, req.recipes_file)
            settings = CalibSettings.from_recipes(recipes, method=req.method, count=req.count, seed=req.seed,
                                                 synthetic_fraction=req.synthetic_fraction,
                                                 relit_fraction=req.relit_fraction)
            data, man = calibration_set(b, settings, req.data)
            plan = _plan(req)
            quantizer = Quantizer.make(b, recipe_name, recipe, settings, data)
            report = search(quantizer, key, tmp_dst, Path(tmp) / "work", plan, req.log)
            report["plan"] = plan.record()
            extra = {"calibration": {k: man[k] for k in ("settings", "per_category")}
                     | {"manifest": "calibration/manifest.json", "n_files": len(man["files"])}}
        tmp_dst.replace(dst)
    stale = stale_scopes(b, req.precision)
    if stale:
        report["warnings"] = [stale]
        if req.log:
            req.log(f"warning: {stale}")
    entry = {"path": dst.name, "sha256": sha256_file(dst), "report": report, "tensorrt_readiness": readiness(dst),
             **extra}
    update_meta(b.path, lambda m: m["files"].__setitem__(key, entry))
    return entry


def stale_scopes(b: Bundle, precision: str) -> str | None:
    """A warning when the bundle was exported before its model's ``precision`` scopes changed (a bundle keeps the
    scopes it was exported with; a new export of the run takes the model's current ones)."""
    from edgead.models import model_class
    from edgead.models.base import TRUNK

    try:
        declared = model_class(b.model).precision_scopes.get(precision, ())
    except EdgeadError:  # a plugin model not loaded in this process: nothing to compare with
        return None
    now = sorted(s for s in declared if s != TRUNK and not s.startswith("-"))
    had = sorted(s for s in b.precision_scopes.get(precision, []) if not s.startswith("-"))
    if now == had:
        return None
    run = b.meta.get("source", {}).get("run", "RUN")
    return (f"{b.path} was exported with {precision} scopes ({', '.join(had)}); model {b.model!r} now declares "
            f"({', '.join(now)}): export the run again (edgead export {run} --out NEW_BUNDLE) to build with them")


def calibration_set(b: Bundle, settings: CalibSettings, data: Path | None):
    """The bundle's calibration set: reuse the cache when the manifest matches, else select and cache."""
    root = Path(data or b.data_root)
    cdir = b.path / "calibration"
    man_path, cache = cdir / "manifest.json", cdir / "calib.npz"
    if man_path.is_file() and cache.is_file():
        man = read_json(man_path)
        keys = ("count", "seed")
        same = {k: man["settings"].get(k) for k in keys} == {k: getattr(settings, k) for k in keys}
        # caches before anomalies were added at build time held painted images when synthetic_fraction > 0
        normals_only = man.get("cache") == "normals" or not man["settings"].get("synthetic_fraction")
        if same and normals_only and Path(man["root"]) == root.resolve():
            check_manifest(man, root)
            man["settings"] = settings.__dict__
            return load_cache(cache, b.input_name), man
    samples = select(root, b.categories, set(b.holdout_files),
                     settings.count, settings.seed)
    man = manifest(samples, settings, b.preprocess, root.resolve())
    x = build_cache(samples, b.preprocess, b.input_name, cache)
    atomic_write_json(man_path, man)
    return x, man
