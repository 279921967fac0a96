"""``edgead threshold``: re-set a run's or bundle's operating point without retraining or re-exporting.

The graphs output raw scores; thresholds and the score normalisation live in ``run.json`` /
``meta.json``, so verify, inspect, eval and the HTML report use a new operating point at once and the
ONNX files are never touched. Normal scores come from the file (kept since policies exist), else the
run's held-out normals are scored again with the target's FP32 engine; ``--normals DIR`` adds good
images never used in training. ``--labelled DIR`` (MVTec layout) is what a recall target is set on;
it is the user's own labelled set, never edgead's test split in our reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.bundle import META, update_meta
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.operating import CONFIDENCE, apply, for_budget, for_quantile, for_recall


@dataclass
class ThresholdRequest:
    target: Path  # a run or a bundle folder
    false_reject: float | None = None
    recall: float | None = None
    quantile: float | None = None
    labelled: Path | None = None  # MVTec layout: <category>/test/<type>/... (recall targets)
    normals: Path | None = None  # extra good images, never used in training (a flat folder)
    category: str | None = None
    confidence: float = CONFIDENCE


def _policy_count(req: ThresholdRequest) -> None:
    chosen = [x is not None for x in (req.false_reject, req.recall, req.quantile)]
    if sum(chosen) != 1:
        raise EdgeadError("say one policy: --false-reject R, --recall T (with --labelled DIR) or --quantile Q")
    if req.recall is not None and req.labelled is None:
        raise EdgeadError("--recall needs --labelled DIR: labelled defect images (MVTec layout) to count recall on")
    if req.quantile is not None and not 0 < req.quantile < 1:
        raise EdgeadError(f"--quantile {req.quantile}: use 0 < q < 1")


def _score(engine, pre: Preprocess, samples: list[mvtec.Sample]) -> np.ndarray:
    if not samples:
        return np.zeros(0)
    return engine.run_batched(mvtec.load_images(samples, pre))["score"].astype(np.float64)


def set_thresholds(req: ThresholdRequest) -> dict:
    """New operating points for the target's categories; returns what changed, per category."""
    from edgead.evaluate import EvalRequest, open_target

    _policy_count(req)
    target = Path(req.target)
    is_bundle = (target / META).is_file()
    engine, info, _ = open_target(EvalRequest(run=target))
    pre = Preprocess.from_dict(info["preprocess"])
    cats = info["categories"]
    if req.category is not None and req.category not in cats:
        raise EdgeadError(f"--category {req.category}: not in {target} ({', '.join(cats)})")
    if req.normals is not None and req.category is None and len(cats) > 1:
        raise EdgeadError(f"--normals on a multi-class target: say which product they show with --category "
                          f"({', '.join(cats)})")
    if req.normals is not None and not Path(req.normals).is_dir():
        raise EdgeadError(f"--normals {req.normals}: no such folder of good images")
    held_files = info["data"].get("holdout_files", [])
    changes, new_norms = {}, {}
    try:
        for cat in [req.category] if req.category else cats:
            old = info["normalization"][cat]
            scores = list(old.get("normal_scores", []))
            source = "stored held-out normal scores"
            if not scores:
                held = [s for s in mvtec.holdout_samples(held_files, cat) if s.path.is_file()]
                scores = list(_score(engine, pre, held))
                source = f"{len(held)} held-out normals scored again"
            if req.normals is not None:
                extra = [mvtec.Sample(f, cat, mvtec.GOOD) for f in mvtec.image_files(Path(req.normals))]
                if not extra:
                    raise EdgeadError(f"--normals {req.normals}: no images in it")
                scores += list(_score(engine, pre, extra))
                source += f" + {len(extra)} from {req.normals}"
            if not scores:
                raise EdgeadError(f"{target}: category {cat!r} has no stored normal scores and its held-out normals "
                                  f"are not on this machine; pass --normals DIR (good images never used in training)")
            if req.false_reject is not None:
                op = for_budget(scores, req.false_reject, req.confidence)
            elif req.quantile is not None:
                op = for_quantile(scores, req.quantile)
            else:
                labelled = _labelled(req.labelled, cat)
                defects = [s for s in labelled if s.label == 1]
                if not defects:
                    raise EdgeadError(f"--labelled {req.labelled}: no defect images of {cat!r} "
                                      f"({cat}/test/<defect type>/...); a recall target needs some")
                scores += list(_score(engine, pre, [s for s in labelled if s.label == 0]))
                op = for_recall(scores, _score(engine, pre, defects), req.recall)
            new = apply({**old, "normal_scores": [float(v) for v in scores]}, op)
            new_norms[cat] = new
            changes[cat] = {"old_threshold": old["threshold"], "new_threshold": new["threshold"],
                            "old_rule": old.get("rule"), "rule": new["rule"], "policy": new["policy"],
                            "normals": source,
                            **new["operating_point"]}
    finally:
        engine.close()
    if is_bundle:
        update_meta(target, lambda m: m["normalization"].update(new_norms))
    else:
        from edgead.runs import read_run, write_run_json

        run = read_run(target)
        run["normalization"].update(new_norms)
        write_run_json(target, run)
    return {"target": str(target), "kind": "bundle" if is_bundle else "run", "categories": changes}


def _labelled(root: Path, cat: str) -> list[mvtec.Sample]:
    """``ROOT/<cat>/test/<good|defect type>/*`` (or ``ROOT/test/...`` for one category): labelled images."""
    root = Path(root)
    base = next((b for b in (root / cat / "test", root / "test") if b.is_dir()), None)
    if base is None:
        raise EdgeadError(f"--labelled {root}: expected {root}/{cat}/test/<good or defect type>/<images>")
    return [mvtec.Sample(f, cat, d.name) for d in sorted(base.iterdir()) if d.is_dir()
            for f in mvtec.image_files(d)]
