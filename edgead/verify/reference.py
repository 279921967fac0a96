"""Reference outputs: the PyTorch FP32 model on a fixed verification set, saved once per bundle.

``BUNDLE/reference.npz`` holds the verification images at model size (uint8 RGB, the exact
input of the shared normalisation), their ground-truth masks and labels, the SHA-256 of each source
file and of each preprocessed tensor, and the reference anomaly maps and scores. Every later check
(here, or on a Jetson without the dataset) compares against the same truth and the same inputs.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgead.bundle import Bundle, update_meta
from edgead.data import mvtec
from edgead.data.image import read_image
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_bytes, sha256_file
from edgead.progress import progress

REFERENCE = "reference.npz"


@dataclass
class Reference:
    images: np.ndarray  # (N, H, W, 3) uint8, model size
    masks: np.ndarray  # (N, H, W) uint8 ground truth
    labels: np.ndarray  # (N,) 0 good / 1 defect
    categories: np.ndarray  # (N,) str
    defects: np.ndarray  # (N,) str defect type ("good" for normals)
    files: np.ndarray  # (N,) str, relative to the data root
    file_sha256: np.ndarray
    input_sha256: np.ndarray
    maps: np.ndarray  # (N, H, W) float32, PyTorch FP32
    scores: np.ndarray  # (N,) float32

    def inputs(self, bundle: Bundle) -> np.ndarray:
        pre = bundle.preprocess
        return np.stack([pre.normalize(x) for x in self.images])

    def __len__(self) -> int:
        return len(self.labels)


def tensor_sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


def choose(samples: list[mvtec.Sample], per_category: int, seed: int) -> list[mvtec.Sample]:
    """Half good, half defective per category, the defects spread evenly over defect types (seeded)."""
    rng = random.Random(seed)
    out: list[mvtec.Sample] = []
    for cat in sorted({s.category for s in samples}):
        cs = [s for s in samples if s.category == cat]
        good = [s for s in cs if s.label == 0]
        by_type: dict[str, list] = {}
        for s in cs:
            if s.label:
                by_type.setdefault(s.defect, []).append(s)
        n_good = min(len(good), per_category // 2)
        pick = rng.sample(good, n_good)
        want_bad = per_category - n_good
        pools = [rng.sample(v, len(v)) for _, v in sorted(by_type.items())]
        while want_bad > 0 and any(pools):
            for pool in pools:
                if pool and want_bad > 0:
                    pick.append(pool.pop())
                    want_bad -= 1
        out += sorted(pick, key=lambda s: (s.label, s.defect, s.path.name))
    return out


def make_reference(bundle: Bundle, data: Path | None = None, per_category: int = 48, seed: int = 0,
                   quiet: bool = False) -> dict:
    """Run the source run's PyTorch model on the verification set and save ``reference.npz``."""
    from edgead.backends.torch import TorchBackend
    from edgead.runs import WEIGHTS

    run = bundle.source_run
    weights = run / WEIGHTS
    if not weights.is_file():
        raise EdgeadError(f"{bundle.path}: no {REFERENCE} and the PyTorch run {run} is not here; make the reference "
                          f"where the run is (edgead verify {bundle.path} --precision fp32) and copy the bundle")
    if sha256_file(weights) != bundle.weights_sha256:
        raise EdgeadError(f"{weights}: weights changed since {bundle.path} was exported; re-export the bundle")
    root = Path(data or bundle.data_root)
    try:
        samples = mvtec.discover(root, bundle.categories, "test")
    except EdgeadError as e:
        raise EdgeadError(f"{e}; pass --data ROOT (the labelled test split) to make the reference outputs") from None
    chosen = choose(samples, per_category, seed)
    pre = bundle.preprocess
    torch_be = TorchBackend.load(run)
    batch = 8
    arrays: dict[str, list] = {k: [] for k in ("images", "masks", "maps", "scores", "input_sha256", "file_sha256")}
    with progress(disable=quiet) as prog:
        task = prog.add_task("reference (PyTorch FP32)", total=len(chosen), info="")
        for i in range(0, len(chosen), batch):
            part = chosen[i:i + batch]
            rgb = np.stack([np.asarray(pre.resize_image(read_image(s.path))) for s in part])
            x = np.stack([pre.normalize(r) for r in rgb])
            out = torch_be.infer(x)
            arrays["images"].append(rgb)
            arrays["masks"].append(mvtec.load_masks(part, pre))
            arrays["maps"].append(out["anomaly_map"][:, 0].astype(np.float32))
            arrays["scores"].append(out["score"].astype(np.float32))
            arrays["input_sha256"] += [tensor_sha256(t) for t in x]
            arrays["file_sha256"] += [sha256_file(s.path) for s in part]
            prog.advance(task, len(part))
    np_arrays = {k: (np.concatenate(v) if k in ("images", "masks", "maps", "scores") else np.array(v))
                 for k, v in arrays.items()}
    np_arrays.update(labels=np.array([s.label for s in chosen], np.int8),
                     categories=np.array([s.category for s in chosen]),
                     defects=np.array([s.defect for s in chosen]),
                     files=np.array([str(s.path.relative_to(root)) for s in chosen]))
    buf = io.BytesIO()
    np.savez_compressed(buf, **np_arrays)
    atomic_write_bytes(bundle.path / REFERENCE, buf.getvalue())
    entry = {"file": REFERENCE, "sha256": sha256_file(bundle.path / REFERENCE), "n_images": len(chosen),
             "n_good": int((np_arrays["labels"] == 0).sum()), "n_defect": int((np_arrays["labels"] == 1).sum()),
             "per_category": {c: int((np_arrays["categories"] == c).sum()) for c in bundle.categories},
             "seed": seed, "per_category_requested": per_category, "data_root": str(root.resolve()),
             "weights_sha256": bundle.weights_sha256, "backend": torch_be.describe(),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    update_meta(bundle.path, lambda m: m.__setitem__("reference", entry))
    bundle.meta["reference"] = entry
    return entry


def load_reference(bundle: Bundle) -> Reference:
    entry = bundle.meta.get("reference")
    path = bundle.path / REFERENCE
    if not entry or not path.is_file():
        raise EdgeadError(f"{bundle.path}: no reference outputs; make them with edgead verify {bundle.path} "
                          f"--precision fp32 where the run and data are")
    if sha256_file(path) != entry["sha256"]:
        raise EdgeadError(f"{path}: SHA-256 differs from meta.json (file damaged or replaced); remake it with "
                          f"edgead verify {bundle.path} --remake-reference")
    if entry["weights_sha256"] != bundle.weights_sha256:
        raise EdgeadError(f"{path}: made for other weights than this bundle's; remake it with --remake-reference")
    try:
        with np.load(path, allow_pickle=False) as z:
            ref = Reference(**{k: z[k] for k in Reference.__dataclass_fields__})
    except Exception as e:  # damaged zip, object arrays (never unpickled), missing arrays
        raise EdgeadError(f"{path}: not a readable reference ({str(e).splitlines()[0][:100]}); remake it with "
                          f"edgead verify {bundle.path} --remake-reference") from None
    problem = _check_arrays(ref, bundle.preprocess.height, bundle.preprocess.width)
    if problem:
        raise EdgeadError(f"{path}: {problem}; remake it with edgead verify {bundle.path} --remake-reference")
    return ref


def _check_arrays(ref: Reference, h: int, w: int) -> str | None:
    n = len(ref.labels)
    want = {"images": ((n, h, w, 3), "u"), "masks": ((n, h, w), "u"), "maps": ((n, h, w), "f"),
            "scores": ((n,), "f"), "labels": ((n,), "i"), "categories": ((n,), "U"), "defects": ((n,), "U"),
            "files": ((n,), "U"), "file_sha256": ((n,), "U"), "input_sha256": ((n,), "U")}
    for name, (shape, kind) in want.items():
        a = getattr(ref, name)
        if a.shape != shape or a.dtype.kind != kind:
            return f"array {name} is {a.dtype}{list(a.shape)}, expected {kind}-kind {list(shape)}"
    if n == 0:
        return "no images"
    return None


def check_inputs(bundle: Bundle, ref: Reference, data: Path | None, inputs: np.ndarray | None = None) -> dict:
    """Re-run the shared preprocessing on the source files (when present) and compare tensor hashes;
    ``inputs``: the stored images already normalised (``ref.inputs``), if the caller has them."""
    root = Path(data or bundle.meta["reference"]["data_root"])
    pre = bundle.preprocess
    checked = same = changed_files = 0
    mismatched: list[str] = []
    for rel, fsha, xsha in zip(ref.files, ref.file_sha256, ref.input_sha256, strict=True):
        p = root / str(rel)
        if not p.is_file():
            continue
        if sha256_file(p) != fsha:
            changed_files += 1
            continue
        checked += 1
        if tensor_sha256(pre(read_image(p))) == xsha:
            same += 1
        else:
            mismatched.append(str(rel))
    inputs = ref.inputs(bundle) if inputs is None else inputs
    stored = sum(tensor_sha256(x) == h for x, h in zip(inputs, ref.input_sha256, strict=True))
    return {"stored_inputs_match": int(stored), "n_images": len(ref), "source_files_checked": checked,
            "source_files_identical_tensor": same, "source_files_changed": changed_files,
            "preprocessing_mismatch": mismatched[:10], "root": str(root)}
