"""Validation during training, on what the run held out, never on test images: its held-out normals
and the same normals with synthetic anomalies (``data.heldout``). Users have no labelled defects when
they train, so this is what a choice made during training (the epoch kept, post-processing) can rest on.
The synthetic anomalies are the synthesizer's, which CRR also trains on: its numbers here are a
ranking of epochs, not an estimate of test accuracy. They are faded to strengths spread evenly over
(0, 1] (``graded``, since 2026-12-06): at full strength every model's validation image AUROC sat at
0.98-1.00 (CRAD 0.990, CCAD 0.982-1.000, CRR 1.000) while real defects gave 0.66-0.96, so the image
half of the criterion could not rank candidates and the pixel half alone chose; graded, the same runs
give 0.85-0.98 (``scripts/validation_strengths.py``). A run keeps the strengths it was validated with
(``run.json`` ``validation``), so a run made before resumes, selects and chooses on the set its curve
was scored on."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from edgead.data.preprocess import Preprocess
from edgead.metrics import auroc

VAL_SEED = 2  # synthetic anomalies of the validation set (the INT8 build split uses its own seed)
PER_CATEGORY = 32  # held-out normals per category (each also gets a synthetic twin)
CRITERION = "mean of validation image AUROC and pixel AUROC (held-out normals + synthetic anomalies)"
DEFAULT_STRENGTHS = "graded"  # synthetic anomalies of a new run's validation set (one of ``heldout.STRENGTHS``)


def strengths_of(info: dict | None) -> str:
    """The strengths a run's validation set has: its record, else 'full' for a run that validated epochs before
    the record existed, else ``DEFAULT_STRENGTHS`` (a new run, or one interrupted before any was scored)."""
    info = info or {}
    if "validation" in info:
        return info["validation"]["strengths"]
    return "full" if any("val_score" in r for r in info.get("curve", [])) else DEFAULT_STRENGTHS


@dataclass(frozen=True)
class ValidationSet:
    images: np.ndarray  # (N, H, W, 3) uint8 at model size
    masks: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) 0 good, 1 synthetic anomaly
    categories: np.ndarray
    files: np.ndarray
    strengths: np.ndarray | None = None  # (N,) each anomaly's strength (1 = full), 0 for normals
    features: torch.Tensor | None = None  # the images' frozen-backbone features, on the host (``with_features``)

    @classmethod
    def from_holdout(cls, holdout_files: list[str], categories: list[str], pre: Preprocess,
                     per_category: int = PER_CATEGORY, seed: int = VAL_SEED, strengths: str = DEFAULT_STRENGTHS,
                     twins: int = 1) -> ValidationSet | None:
        from edgead.data.heldout import labelled_set

        arr = labelled_set(holdout_files, categories, pre, seed, per_category, strengths=strengths, twins=twins)
        if arr is None:
            return None
        return cls(arr["images"], arr["masks"], arr["labels"], arr["categories"], arr["files"], arr["strengths"])

    @classmethod
    def of_run(cls, info: dict, pre: Preprocess | None = None, strengths: str | None = None) -> ValidationSet | None:
        """The validation set a run (``run.json``) was scored on: its held-out normals, categories, size and
        strengths (``strengths``: other ones, to compare)."""
        pre = pre or Preprocess.from_dict(info["preprocess"])
        size = info.get("validation", {})
        return cls.from_holdout(info["data"]["holdout_files"], info["data"]["categories"], pre,
                                size.get("per_category", PER_CATEGORY), strengths=strengths or strengths_of(info),
                                twins=size.get("twins", 1))

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, pre: Preprocess, batch: int = 16):
        """The images as model inputs, ``batch`` at a time."""
        for i in range(0, len(self), batch):
            yield np.stack([pre.normalize(r) for r in self.images[i:i + batch]])

    @torch.no_grad()
    def with_features(self, model, pre: Preprocess, batch: int = 16) -> ValidationSet:
        """The set with its images' backbone features computed once, for a model with ``cache_features`` (the
        backbone is frozen): each epoch then runs only what trains (``model.from_features``), the same numbers."""
        device, mode = next(model.parameters()).device, model.training
        model.eval()
        try:
            feats = [model.encode(torch.from_numpy(x).to(device)).cpu() for x in self.inputs(pre, batch)]
        finally:
            model.train(mode)
        return dataclasses.replace(self, features=torch.cat(feats))

    def outputs(self, model, pre: Preprocess, batch: int = 16) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The model's (map, score) batches on the set: from the cached features when the set has them."""
        device = next(model.parameters()).device
        if self.features is not None:
            for i in range(0, len(self), batch):
                yield model.from_features(self.features[i:i + batch].to(device))
        else:
            for x in self.inputs(pre, batch):
                yield model(torch.from_numpy(x).to(device))

    @torch.no_grad()
    def predict(self, model, pre: Preprocess, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """The model's maps (N, H, W) and scores (N,) on the set, on the host."""
        maps, scores = [], []
        for m, s in self.outputs(model, pre, batch):
            maps.append(m[:, 0].cpu().numpy())
            scores.append(s.cpu().numpy())
        return np.concatenate(maps), np.concatenate(scores)

    def evaluate(self, model, pre: Preprocess, batch: int = 16) -> dict[str, float]:
        """Image and pixel AUROC per category, averaged; ``val_score`` (their mean) ranks epochs."""
        return self.metrics(*self.predict(model, pre, batch))

    def metrics(self, maps: np.ndarray, scores: np.ndarray, pixel_cache: dict | None = None) -> dict[str, float]:
        """The numbers of ``evaluate`` for given maps (N, H, W) and scores (N,); ``pixel_cache`` reuses the
        pixel AUROC of maps already scored (post-processing candidates that differ only in the score)."""
        image, pixel = [], []
        key = hashlib.sha1(np.ascontiguousarray(maps).tobytes()).hexdigest() if pixel_cache is not None else None
        for c in np.unique(self.categories):
            m = self.categories == c
            image.append(auroc(scores[m], self.labels[m]))
            if key is not None and (key, c) in pixel_cache:
                pixel.append(pixel_cache[(key, c)])
                continue
            pixel.append(auroc(maps[m].ravel(), self.masks[m].ravel()))
            if key is not None:
                pixel_cache[(key, c)] = pixel[-1]
        out = {"val_image_auroc": round(float(np.mean(image)), 5), "val_pixel_auroc": round(float(np.mean(pixel)), 5)}
        out["val_score"] = round((out["val_image_auroc"] + out["val_pixel_auroc"]) / 2, 5)  # of the numbers shown
        return out
