"""Evaluate a run on the labelled test split: metrics per category and mean, plus overlay PNGs."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.backends import Backend, EngineOptions, open_engine
from edgead.bundle import META, Bundle
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.decision import Normalization
from edgead.fileio import atomic_write_bytes
from edgead.metrics import auroc, category_metrics, mean_metrics
from edgead.progress import progress
from edgead.visual import panel


@dataclass
class EvalRequest:
    run: Path  # a run folder (torch reference) or a bundle folder (any backend)
    backend: str | None = None  # default: torch for a run, onnxruntime for a bundle
    precision: str = "fp32"
    threads: int | None = None
    data: Path | None = None
    categories: list[str] | None = None
    overlays: int = 8
    overlay_dir: Path | None = None
    quiet: bool = False


def decision_stats(scores: np.ndarray, labels: np.ndarray, norm: Normalization) -> dict:
    """What the run's own normal-derived threshold does on the test split (the shared decision rule)."""
    flagged = norm.decide(scores)
    good, bad = labels == 0, labels == 1
    return {"run_threshold": norm.threshold,
            "defect_recall": float(flagged[bad].mean()) if bad.any() else float("nan"),
            "false_reject_rate": float(flagged[good].mean()) if good.any() else float("nan")}


def operating_points(norm: dict, scores: np.ndarray, labels: np.ndarray) -> dict | None:
    """The trade-off: thresholds set by each false-reject budget on the held-out normals (never on these
    labels), and what each realises on the labelled split; plus the target's own operating point."""
    from edgead.operating import BUDGETS, CONFIDENCE, OperatingPoint, for_budget, realised_rates

    normals = norm.get("normal_scores")
    if not normals:
        return None
    rows = []
    for b in BUDGETS:
        op: OperatingPoint = for_budget(normals, b)
        rows.append({"label": f"{b:.1%}", "budget": b, **op.to_dict(),
                     "test": realised_rates(scores, labels, op.threshold)})
    own = norm.get("operating_point") or {}
    if own:
        rows.append({"label": "current", "budget": norm.get("policy", {}).get("budget"), "threshold": norm["threshold"],
                     "policy": norm.get("policy"), **own, "test": realised_rates(scores, labels, norm["threshold"])})
    return {"n_normals": len(normals), "confidence": CONFIDENCE, "rows": rows}


def open_target(req: EvalRequest) -> tuple[Backend, dict, Path]:
    """(backend, {preprocess, normalization, categories, model}, default data root) of a run or bundle."""
    target = Path(req.run)
    if (target / META).is_file():
        b = Bundle.load(target)
        name = req.backend or "onnxruntime"
        key = b.resolve(req.precision, name)
        backend = open_engine(target, key, name, EngineOptions(threads=req.threads))
        return backend, {**b.meta, "precision": key}, b.data_root
    from edgead.runs import read_run  # torch: only a run folder needs it

    info = read_run(target)
    backend = open_engine(target, "fp32", req.backend or "torch", EngineOptions(threads=req.threads))
    return backend, {**info, "categories": info["data"]["categories"]}, Path(info["data"]["root"])


def per_defect_auroc(samples, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of each defect type against the good images of the same category."""
    kinds = np.array([s.defect for s in samples])
    out = {}
    for d in sorted(set(kinds) - {mvtec.GOOD}):
        pick = (kinds == mvtec.GOOD) | (kinds == d)
        out[d] = auroc(scores[pick], kinds[pick] == d)
    return out


def evaluate(req: EvalRequest) -> dict:
    backend, info, root = open_target(req)
    pre = Preprocess.from_dict(info["preprocess"])
    data = req.data or root
    cats = req.categories or info["categories"]
    samples = mvtec.discover(data, cats, "test")
    per_cat: dict[str, dict] = {}
    precision = info.get("precision", "fp32")
    sub = "overlays" if backend.name == "torch" else f"overlays-{backend.name}-{precision}"
    overlay_dir = Path(req.overlay_dir or Path(req.run) / "eval" / sub)
    written: list[str] = []
    with progress(disable=req.quiet) as prog:
        task = prog.add_task("evaluate", total=len(samples), info="")
        for cat in sorted({s.category for s in samples}):
            cs = [s for s in samples if s.category == cat]
            images = mvtec.load_images(cs, pre)
            out = backend.run_batched(images, lambda k: prog.advance(task, k))
            maps, scores = out["anomaly_map"][:, 0], out["score"]
            masks = mvtec.load_masks(cs, pre)
            labels = np.array([s.label for s in cs])
            norm = Normalization.from_dict(info["normalization"][cat]) if cat in info["normalization"] else None
            m = category_metrics(scores, labels, maps, masks)
            m["n_good"], m["n_defect"] = int((labels == 0).sum()), int((labels == 1).sum())
            m["per_defect_image_auroc"] = per_defect_auroc(cs, scores)
            if norm:
                m.update(decision_stats(scores, labels, norm))
                m["operating_points"] = operating_points(info["normalization"][cat], scores, labels)
                m["score_plot"] = _score_plot(cat, norm, scores, labels, overlay_dir.parent)
            per_cat[cat] = m
            if req.overlays and norm:
                written += _overlays(cs, images, maps, masks, scores, norm, pre, overlay_dir, req.overlays)
    result = {"run": str(req.run), "model": info["model"], "backend": backend.describe(),
              "precision": precision if backend.name != "torch" else "fp32 (torch reference)",
              "data": str(data), "per_category": per_cat, "mean": mean_metrics(per_cat), "overlays": written}
    return result


def _score_plot(cat: str, norm: Normalization, scores: np.ndarray, labels: np.ndarray, folder: Path) -> str:
    """Good and defective test scores in threshold units, the operating point dashed at 1.0 (SVG)."""
    from edgead.verify.report import svg_hist

    ns = norm.score(scores.astype(np.float64))
    svg = svg_hist([("good", ns[labels == 0], "#1565c0"), ("defect", ns[labels == 1], "#c62828")],
                   f"{cat}: test scores at the operating point")
    path = folder / f"scores-{cat}.svg"
    atomic_write_bytes(path, svg.encode())
    return str(path)


def _overlays(cs, images, maps, masks, scores, norm, pre, out_dir: Path, n: int) -> list[str]:
    """A seeded sample: some defects of each type and some good images."""
    rng = random.Random(0)
    by_type: dict[str, list[int]] = {}
    for i, s in enumerate(cs):
        by_type.setdefault(s.defect, []).append(i)
    pick: list[int] = []
    for _, idx in sorted(by_type.items()):
        pick += rng.sample(idx, min(len(idx), max(1, n // len(by_type))))
    paths = []
    for i in pick[:n]:
        s = cs[i]
        nm, ns = norm.pixel(maps[i]), norm.score(scores[i])
        verdict = "DEFECT" if norm.decide(scores[i]) else "good"
        title = f"{s.category}/{s.defect}/{s.path.name}  score {ns:.2f} ({verdict})"
        img = panel(pre.denormalize(images[i]), nm, masks[i] if s.label else None, title)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        p = out_dir / f"{s.category}_{s.defect}_{s.path.stem}.png"
        atomic_write_bytes(p, buf.getvalue())
        paths.append(str(p))
    return paths
