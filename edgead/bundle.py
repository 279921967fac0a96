"""Bundles: the unit of deployment. A folder with one ONNX graph per precision and ``meta.json``.

``meta.json`` holds everything a backend needs to run the bundle the same way everywhere:
preprocessing, input/output names and shapes, per-category normalisation and thresholds, model
name and config, the source run and its hash, the export settings and parity, and versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.fileio import read_json

META = "meta.json"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")


def onnx_name(precision: str) -> str:
    return f"model.{precision}.onnx"


@dataclass
class Bundle:
    path: Path
    meta: dict

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if not (path / META).is_file():
            raise EdgeadError(f"{path}: not a bundle (no {META}); create one with edgead export RUN --out {path}")
        meta = read_json(path / META)
        if meta.get("format_version") != FORMAT_VERSION:
            raise EdgeadError(f"{path / META}: bundle format {meta.get('format_version')} is not "
                              f"{FORMAT_VERSION}; re-export it with this edgead")
        return cls(path, meta)

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.meta["preprocess"])

    @property
    def input_name(self) -> str:
        return self.meta["input"]["name"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["input"]["shape"])

    def onnx(self, precision: str = "fp32") -> Path:
        p = self.path / onnx_name(precision)
        if not p.is_file():
            hint = "edgead export" if precision == "fp32" else f"edgead build {self.path} --precision {precision}"
            raise EdgeadError(f"{p}: no {precision} graph in this bundle; create it with {hint}")
        return p

    def normalize_score(self, score: float, category: str) -> float:
        n = self.category_norm(category)
        return (score - n["center"]) / n["scale"]

    def category_norm(self, category: str) -> dict:
        norms = self.meta["normalization"]
        if category not in norms:
            raise EdgeadError(f"{self.path / META}: no category {category!r}; available: {', '.join(norms)}")
        return norms[category]
