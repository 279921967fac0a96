"""Run folders: the config, weights, training curve and per-category score normalisation.

Layout::

    RUN/run.json            model name + config, preprocessing, training settings, data, curve,
                            per-category normalisation, timings, params/GMACs, versions
    RUN/weights.safetensors trainable weights (the frozen backbone is rebuilt from its registry)
    RUN/checkpoint.pt       resume state (weights, optimiser, scheduler, epoch, RNG); plain tensors
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path

import torch

from edgead import __version__
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_bytes, atomic_write_json, read_json
from edgead.models import AnomalyModel, build_model, model_class

RUN_JSON = "run.json"
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.pt"


def versions() -> dict[str, str]:
    out = {"edgead": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for mod in ("numpy", "onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise EdgeadError(f"{path}: weights missing; the run did not finish training (rerun edgead train)") from None
    except Exception as e:  # safetensors raises its own error types
        raise EdgeadError(f"{path}: cannot read weights ({type(e).__name__}); retrain the run") from None


def save_checkpoint(path: Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EdgeadError(f"{path}: cannot read checkpoint ({type(e).__name__}); delete it to restart") from None


def write_run_json(run_dir: Path, info: dict) -> None:
    atomic_write_json(run_dir / RUN_JSON, info)


def read_run(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / RUN_JSON).is_file():
        raise EdgeadError(f"{run_dir}: not a run folder (no {RUN_JSON}); train one with edgead train --out {run_dir}")
    return read_json(run_dir / RUN_JSON)


def load_model(run_dir: str | Path) -> tuple[AnomalyModel, dict]:
    """Rebuild a trained model (eval mode) and return it with the run's info."""
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.get("status") != "trained":
        raise EdgeadError(f"{run_dir}: training has not finished; rerun edgead train --out {run_dir} to resume")
    pre = Preprocess.from_dict(info["preprocess"])
    model = build_model(info["model"], pre.size, model_class(info["model"]).upgrade_config(info["model_config"]))
    state = load_weights(run_dir / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise EdgeadError(f"{run_dir / WEIGHTS}: weights do not match model {info['model']!r} "
                          f"(missing {missing[:2]}, unexpected {unexpected[:2]}); retrain the run")
    return model.eval(), info


def model_config_dict(model: AnomalyModel) -> dict:
    return asdict(model.cfg)


def find_latest_run(workspace: str | Path, model_name: str) -> Path:
    """Newest finished run of ``model_name`` below ``workspace`` (by run.json modification time)."""
    workspace = Path(workspace)
    runs = []
    for p in workspace.glob(f"*/{RUN_JSON}"):
        try:
            info = read_json(p)
        except EdgeadError:
            continue
        if info.get("model") == model_name and info.get("status") == "trained":
            runs.append((p.stat().st_mtime, p.parent))
    if not runs:
        raise EdgeadError(f"{workspace}: no trained {model_name!r} run; train one with "
                          f"edgead train --model {model_name} --out {workspace}/{model_name}")
    return max(runs)[1]
