"""Operating points: a category's threshold from a policy, and what that threshold promises.

Policies (recorded with the threshold in the run and the bundle, ``normalization.CAT.policy``):

- ``false_reject``: the highest threshold whose false-reject rate is at most the budget with the
  stated confidence, from held-out normal scores (exact one-sided Clopper-Pearson bound: the share of
  new good parts scoring at or above it). Too few normals for the budget gives a warning with the
  number needed, and the threshold above every normal seen.
- ``recall``: the highest threshold that flags at least the target share of a labelled defect folder.
- ``quantile``: the q-quantile of the held-out normal scores (edgead's rule before policies).

Whatever the policy, the false-reject rate it implies is stated as a two-sided Clopper-Pearson
interval from the normals it was set on: ``j`` of ``n`` held-out normals at or above the threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgead.errors import EdgeadError

BUDGETS = (0.001, 0.005, 0.01, 0.02, 0.05)  # false-reject budgets listed by eval
CONFIDENCE = 0.95


def interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a rate with ``k`` events in ``n`` trials."""
    from scipy.stats import beta

    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate with ``k`` events in ``n`` trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def needed_normals(budget: float, confidence: float = CONFIDENCE) -> int:
    """Held-out normals needed before even the threshold above all of them supports ``budget``."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - budget))


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    policy: dict
    n_normals: int
    flagged_normals: int  # held-out normals at or above the threshold
    frr_interval: tuple[float, float]  # two-sided, at ``policy['confidence']`` (or CONFIDENCE)
    warning: str | None = None
    recall: float | None = None  # on the labelled defects, for a recall policy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frr_interval"] = [round(v, 6) for v in self.frr_interval]
        d["frr_estimate"] = round(self.flagged_normals / self.n_normals, 6) if self.n_normals else None
        return d


def _sorted(scores) -> np.ndarray:
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(s) or not np.isfinite(s).all():
        raise EdgeadError("no usable held-out normal scores to set a threshold from")
    return s


def cut(s: np.ndarray, j: int) -> float:
    """A threshold that flags the top ``j`` of the ascending scores ``s`` (decisions are ``>=``)."""
    n = len(s)
    if j <= 0:
        return float(np.nextafter(np.float32(s[-1]), np.float32(np.inf)))  # just above every normal (float32 graph)
    if j >= n:
        return float(s[0])
    return float((s[n - j - 1] + s[n - j]) / 2)


def _point(s: np.ndarray, thr: float, policy: dict, warning: str | None = None, recall=None) -> OperatingPoint:
    j = int((s >= thr).sum())
    conf = policy.get("confidence", CONFIDENCE)
    return OperatingPoint(thr, policy, len(s), j, interval(j, len(s), conf), warning, recall)


def for_budget(normal_scores, budget: float, confidence: float = CONFIDENCE) -> OperatingPoint:
    """The highest threshold whose false-reject rate is <= ``budget`` at ``confidence`` (one-sided)."""
    if not 0 < budget < 1 or not 0.5 <= confidence < 1:
        raise EdgeadError(f"--false-reject {budget} at confidence {confidence}: use 0 < budget < 1, "
                          f"0.5 <= confidence < 1")
    s = _sorted(normal_scores)
    n = len(s)
    policy = {"kind": "false_reject", "budget": budget, "confidence": confidence}
    j = 0
    while j + 1 < n and upper(j + 1, n, confidence) <= budget:
        j += 1
    warning = None
    if upper(0, n, confidence) > budget:
        warning = (f"{n} held-out normals cannot support a {budget:.2%} false-reject budget at {confidence:.0%} "
                   f"confidence (even above all of them the bound is {upper(0, n, confidence):.2%}); needs "
                   f"{needed_normals(budget, confidence)}: hold out more at training (--holdout 0.5 --holdout-max "
                   f"{needed_normals(budget, confidence)}) or add good images never used in training "
                   f"(edgead threshold --normals DIR)")
    return _point(s, cut(s, j), policy, warning)


def for_quantile(normal_scores, q: float) -> OperatingPoint:
    s = _sorted(normal_scores)
    return _point(s, float(np.quantile(s, q)), {"kind": "quantile", "q": q, "confidence": CONFIDENCE})


def for_recall(normal_scores, defect_scores, recall: float) -> OperatingPoint:
    """The highest threshold that flags at least ``recall`` of the labelled defects."""
    if not 0 < recall <= 1:
        raise EdgeadError(f"--recall {recall}: use a share in (0, 1]")
    d = np.sort(np.asarray(defect_scores, dtype=np.float64))
    if not len(d):
        raise EdgeadError("no labelled defect images to set a recall target on")
    s = _sorted(normal_scores)
    k = math.ceil(recall * len(d) - 1e-9)  # defects that must be flagged
    thr = float(d[len(d) - k])
    got = float((d >= thr).mean())
    return _point(s, thr, {"kind": "recall", "target": recall, "n_defects": len(d), "confidence": CONFIDENCE},
                  recall=got)


def apply(norm: dict, op: OperatingPoint) -> dict:
    """A category's normalisation with the new threshold (0 = median normal stays; 1.0 = the new threshold)."""
    center = norm["center"]
    out = dict(norm)
    out.update({"threshold": op.threshold, "scale": max(op.threshold - center, 0.01 * abs(center), 1e-12),
                "policy": op.policy, "operating_point": {k: v for k, v in op.to_dict().items()
                                                         if k not in ("threshold", "policy")}})
    out["rule"] = describe(op.policy) + "; " + norm.get("rule", "").split("; ")[-1]
    return out


def describe(policy: dict) -> str:
    kind = policy["kind"]
    if kind == "false_reject":
        return f"threshold: false rejects <= {policy['budget']:.2%} at {policy['confidence']:.0%} confidence"
    if kind == "recall":
        return f"threshold: flags >= {policy['target']:.1%} of {policy['n_defects']} labelled defects"
    return f"threshold = q{policy['q']} of held-out normal scores"


def realised_rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Realised false-reject rate (with its interval) and recall of a threshold on labelled images."""
    good, bad = scores[labels == 0], scores[labels == 1]
    k = int((good >= threshold).sum())
    return {"false_reject_rate": k / len(good) if len(good) else None,
            "false_reject_interval": list(interval(k, len(good))) if len(good) else None,
            "recall": float((bad >= threshold).mean()) if len(bad) else None,
            "n_good": int(len(good)), "n_defect": int(len(bad))}
