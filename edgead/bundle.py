"""Bundles: the unit of deployment. A folder with one ONNX graph per precision and ``meta.json``.

``meta.json`` holds everything a backend needs to run the bundle the same way everywhere:
preprocessing, input/output names and shapes, per-category normalisation and thresholds, model
name and config, the source run and its hash, the export settings and parity, and versions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgead.data.preprocess import RESAMPLE, Preprocess
from edgead.decision import Normalization
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_json, json_text, read_json, sha256_file
from edgead.precision.keys import PrecisionKey

META = "meta.json"
FORMAT_VERSION = 1


def onnx_name(precision: str) -> str:
    return f"model.{precision}.onnx"


def build_hint(bundle: Path, key: str) -> str:
    """The command that makes the graph of a precision key (``int8-tensorrt`` -> ``--recipe tensorrt``)."""
    if key == "fp32":
        return "edgead export RUN --out " + str(bundle)
    base, _, recipe = key.partition("-")
    return f"edgead build {bundle} --precision {base}" + (f" --recipe {recipe}" if recipe else "")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v, lo: int = 1, hi: int = 1 << 16) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _plain_name(v) -> bool:
    """A file name inside the bundle folder: no folders, no way out of it."""
    return isinstance(v, str) and bool(v) and "/" not in v and "\\" not in v and v not in (".", "..")


# (dotted field, check, what it must be): meta.json is data from disk, validated before anything reads it.
_SCHEMA = (
    ("model", lambda v: isinstance(v, str) and bool(v), "a model name"),
    ("model_config", lambda v: isinstance(v, dict), "a mapping"),
    ("preprocess", lambda v: isinstance(v, dict), "a mapping"),
    ("preprocess.height", lambda v: _whole(v, 16, 8192), "a whole number of pixels, 16-8192"),
    ("preprocess.width", lambda v: _whole(v, 16, 8192), "a whole number of pixels, 16-8192"),
    ("preprocess.mean", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_number, v)), "3 numbers"),
    ("preprocess.std", lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) and x > 0 for x in v),
     "3 positive numbers"),
    ("preprocess.color", lambda v: v == "RGB", "RGB"),
    ("preprocess.resize", lambda v: v in RESAMPLE, "one of " + ", ".join(RESAMPLE)),
    ("preprocess.layout", lambda v: v == "NCHW", "NCHW"),
    ("preprocess.dtype", lambda v: v == "float32", "float32"),
    ("preprocess.extra", lambda v: isinstance(v, dict), "a mapping"),
    ("input.name", lambda v: isinstance(v, str) and bool(v), "the graph's input name"),
    ("input.shape", lambda v: isinstance(v, list) and len(v) == 4 and all(_whole(x) for x in v) and v[1] == 3,
     "[batch, 3, height, width]"),
    ("categories", lambda v: isinstance(v, list) and bool(v) and all(isinstance(c, str) and c for c in v),
     "a list of category names"),
    ("normalization", lambda v: isinstance(v, dict) and bool(v), "a mapping category -> normalisation"),
    ("precision_scopes", lambda v: isinstance(v, dict), "a mapping"),
    ("data.root", lambda v: isinstance(v, str), "a folder path"),
    ("data.holdout_files", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of paths"),
    ("source.run", lambda v: isinstance(v, str), "the run folder"),
    ("source.weights_sha256", lambda v: isinstance(v, str) and len(v) == 64, "a SHA-256"),
    ("files", lambda v: isinstance(v, dict) and "fp32" in v, "a mapping precision -> graph file (with fp32)"),
)
_NORM = ("center", "threshold", "pixel_center", "pixel_threshold")


def _get(meta: dict, dotted: str):
    cur = meta
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def validate_meta(meta: dict) -> str | None:
    """The first problem in a bundle's metadata as a short phrase naming the field, or None."""
    for dotted, ok, what in _SCHEMA:
        try:
            v = _get(meta, dotted)
        except KeyError:
            return f"field {dotted} is missing"
        if not ok(v):
            return f"field {dotted} = {str(v)[:60]!r} is not {what}"
    h, w = meta["preprocess"]["height"], meta["preprocess"]["width"]
    if meta["input"]["shape"][2:] != [h, w]:
        return f"field input.shape {meta['input']['shape']} does not match preprocess {h}x{w}"
    for cat in meta["categories"]:
        n = meta["normalization"].get(cat)
        if not isinstance(n, dict):
            return f"field normalization.{cat} is missing"
        for k in (*_NORM, "scale", "pixel_scale"):
            if not _number(n.get(k)):
                return f"field normalization.{cat}.{k} = {str(n.get(k))[:40]!r} is not a number"
        if n["scale"] <= 0 or n["pixel_scale"] <= 0:
            return f"field normalization.{cat}: scale and pixel_scale must be > 0"
    for key, entry in meta["files"].items():
        if not isinstance(entry, dict) or not _plain_name(entry.get("path")) or not isinstance(entry.get("sha256"),
                                                                                                 str):
            return f"field files.{key} is not {{path: a file name in the bundle, sha256: ...}}"
        if entry["path"] != onnx_name(key):
            return f"field files.{key}.path = {entry['path']!r} is not {onnx_name(key)!r}"
    ref = meta.get("reference")
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("sha256"), str)
                                and isinstance(ref.get("weights_sha256"), str)):
        return "field reference is not {sha256, weights_sha256, ...}"
    return None


# format version -> the function that lifts such metadata one version up (in memory; the file is rewritten by
# the next edgead command that writes the bundle). Version 1 is the first.
UPGRADES: dict[int, Callable[[dict], dict]] = {}


def upgrade_meta(meta, where: Path) -> dict:
    """Metadata of any supported format version, lifted to ``FORMAT_VERSION``; a newer or unknown
    version is a one-line error saying which edgead to use."""
    if not isinstance(meta, dict):
        raise EdgeadError(f"{where}: expected a JSON object; restore the file or re-export the bundle")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise EdgeadError(f"{where}: bundle format {version} is newer than this edgead reads ({FORMAT_VERSION}); "
                          f"upgrade edgead (pip install -U edgead)")
    while version != FORMAT_VERSION:
        if version not in UPGRADES:
            raise EdgeadError(f"{where}: bundle format {version!r} is not one this edgead reads ({FORMAT_VERSION}); "
                              f"re-export the bundle with this edgead")
        meta = UPGRADES[version](meta)
        version = meta.get("format_version")
    return meta


def write_meta(path: str | Path, meta: dict) -> dict:
    """The one writer of ``meta.json``: validated as it will be read back, then written atomically."""
    meta = json.loads(json_text(meta))  # tuples become lists, NaN becomes null: check what is stored
    problem = validate_meta(meta)
    if problem:
        raise EdgeadError(f"{Path(path) / META}: refusing to write invalid metadata ({problem})")
    atomic_write_json(Path(path) / META, meta)
    return meta


def update_meta(path: str | Path, change: Callable[[dict], object]) -> dict:
    """Read ``meta.json`` from disk, apply ``change`` to it, validate and write it back."""
    meta = read_json(Path(path) / META)
    change(meta)
    return write_meta(path, meta)


def record_graph(path: str | Path, key: str, **fields) -> dict:
    """Record (or re-record) the graph file of ``key`` with its SHA-256 and any extra fields."""
    f = Path(path) / onnx_name(key)
    entry = {"path": f.name, "sha256": sha256_file(f), **fields}
    update_meta(path, lambda m: m["files"].__setitem__(key, {**m["files"].get(key, {}), **entry}))
    return entry


@dataclass
class Bundle:
    path: Path
    meta: dict

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if not (path / META).is_file():
            raise EdgeadError(f"{path}: not a bundle (no {META}); create one with edgead export RUN --out {path}")
        meta = upgrade_meta(read_json(path / META), path / META)
        problem = validate_meta(meta)
        if problem:
            raise EdgeadError(f"{path / META}: {problem}; restore the file or re-export the bundle (edgead export)")
        return cls(path, meta)

    # -- typed views of meta.json (validated on load) --------------------------------------------
    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    @property
    def files(self) -> dict[str, dict]:
        """Precision key -> {path, sha256, ...} of every graph made for this bundle."""
        return self.meta["files"]

    @property
    def source_run(self) -> Path:
        return Path(self.meta["source"]["run"])

    @property
    def weights_sha256(self) -> str:
        return self.meta["source"]["weights_sha256"]

    @property
    def data_root(self) -> Path:
        return Path(self.meta["data"]["root"])

    @property
    def holdout_files(self) -> list[str]:
        return list(self.meta["data"].get("holdout_files", []))

    @property
    def precision_scopes(self) -> dict[str, list[str]]:
        return self.meta["precision_scopes"]

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
        """The graph file of a precision key, checked against the SHA-256 recorded when it was made."""
        p = self.path / onnx_name(precision)
        if not p.is_file():
            raise EdgeadError(f"{p}: no {precision} graph in this bundle; create it with "
                              f"{build_hint(self.path, precision)}")
        entry = self.meta["files"].get(precision)
        if entry and sha256_file(p) != entry["sha256"]:
            hint = build_hint(self.path, precision)
            fix = "re-export the bundle" if precision == "fp32" else f"rebuild it: {hint} --force"
            raise EdgeadError(f"{p}: SHA-256 differs from meta.json (damaged, truncated or replaced); {fix}")
        return p

    def resolve(self, precision: str, backend: str = "onnxruntime") -> str:
        """A ``--precision`` value -> the graph key in this bundle, the same for every verb: ``int8`` is the
        TensorRT recipe on TensorRT, else the cpu recipe if built, else the TensorRT recipe."""
        key = PrecisionKey.parse(precision)
        if key.resolved:
            return str(key)
        order = ["int8-tensorrt"] if backend == "tensorrt" else ["int8-cpu", "int8-tensorrt"]
        for key in order:
            if (self.path / onnx_name(key)).is_file():
                return key
        raise EdgeadError(f"{self.path}: no INT8 graph for {backend}; create it with "
                          f"{build_hint(self.path, order[0])}")

    def category_norm(self, category: str) -> Normalization:
        """The category's decision rule (normalised scores, threshold 1.0)."""
        norms = self.meta["normalization"]
        if category not in norms:
            raise EdgeadError(f"{self.path / META}: no category {category!r}; available: {', '.join(norms)}")
        return Normalization.from_dict(norms[category])
