"""The generic training loop. A model supplies its own step, parameter groups and defaults.

Resumable: a checkpoint is written atomically after every epoch; running the same command
again continues from the last finished epoch. After training, per-category score normalisation
and thresholds are derived from held-out normal images (never from defects).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.models import AnomalyModel, build_model, model_class
from edgead.models.base import config_from_dict
from edgead.profile import count_gmacs, count_params
from edgead.progress import console, progress
from edgead.runs import (
    CHECKPOINT,
    RUN_JSON,
    WEIGHTS,
    load_checkpoint,
    load_weights,
    model_config_dict,
    read_run,
    save_checkpoint,
    save_weights,
    versions,
    write_run_json,
)
from edgead.validation import CRITERION, PER_CATEGORY, VAL_SEED, ValidationSet, strengths_of

THRESHOLD_QUANTILE = 0.99
FEW_NORMALS = 20  # fewer held-out normals per category than this: the threshold gets a warning
PIXEL_QUANTILE = 0.999
HOLDOUT_MAX = 64  # default cap on held-out normals per category (a 1 % false-reject budget needs ~300)
SELECT = ("last", "best")
POST = ("auto", "fixed")  # post-processing chosen on validation (models with post_choices), or as configured
# mixed precision of the training steps (weights, features, validation and thresholds stay FP32); auto: bf16 where
# the device runs it natively (edgead.device.native_bf16), FP32 elsewhere, and a resumed run keeps its own
AMP = ("auto", "off", "bf16")
BEST = "best.safetensors"  # the best epoch's weights so far (--select best), kept across a resume


@dataclass
class TrainRequest:
    model: str
    data: Path
    out: Path
    categories: list[str] | None = None
    image_size: tuple[int, int] | str = "auto"  # (H, W), or 'auto': the parts' shape (edgead.data.sizing)
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    holdout: float = 0.1
    holdout_max: int = HOLDOUT_MAX  # at most this many held-out normals per category
    model_config: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    max_per_category: int | None = None
    shots: int | None = None  # few-shot: N normal images per category, a seeded random choice
    false_reject: float | None = None  # threshold policy: a false-reject budget (default: q0.99 of held-out normals)
    threads: int | None = None
    force: bool = False
    quiet: bool = False
    validate: bool = True  # score every epoch on held-out normals + synthetic anomalies (edgead.validation)
    val_normals: int = PER_CATEGORY  # validation: at most this many held-out normals per category
    val_twins: int = 1  # validation: synthetic anomalies per held-out normal
    select: str = "last"  # the weights kept: 'last' epoch, or the 'best' epoch on validation
    patience: int | None = None  # with 'best': stop after this many epochs without a better validation score
    post: str = "auto"  # 'auto': post-processing chosen on the validation split (edgead.post_select); 'fixed'
    variant: str = "fixed"  # 'auto': the model's variant chosen on validation (edgead.variant_select); 'fixed'; a name
    amp: str = "auto"  # 'bf16': the training steps under bfloat16 autocast; 'off': FP32; 'auto': see AMP
    device: str = "auto"  # auto: this process's GPU (by local rank) when CUDA is there, else the CPU; cpu; cuda
    # called after every epoch with (epoch, model); may return a dict stored in that epoch's curve row
    # (e.g. a convergence probe); not part of the run's identity
    on_epoch: Callable | None = None


def _fingerprint(req: TrainRequest, train_cfg: dict, model_cfg: dict, categories: list[str]) -> dict:
    """What makes two trainings the same run, in its JSON form (tuples become lists)."""
    fp = {"model": req.model, "model_config": model_cfg, "train": train_cfg, "categories": categories,
          "image_size": list(req.image_size), "seed": req.seed, "holdout": req.holdout,
          "max_per_category": req.max_per_category, "shots": req.shots, "data": str(Path(req.data).resolve())}
    if req.holdout_max != HOLDOUT_MAX:  # only when set: runs made before the option keep their identity
        fp["holdout_max"] = req.holdout_max
    if (req.val_normals, req.val_twins) != (PER_CATEGORY, 1):  # the validation set's size, only when set
        fp["validation_size"] = [req.val_normals, req.val_twins]
    if req.select != "last":
        fp["select"] = req.select
    if req.patience:
        fp["patience"] = req.patience
    if req.amp != "off":
        fp["amp"] = req.amp
    # --post is not part of it: the choice is made after training and does not change the weights (a run's
    # post_selection records it).
    return json.loads(json.dumps(fp))


def resolve_amp(requested: str, device: str | torch.device, resumed: dict | None) -> tuple[str, str]:
    """(the training steps' precision, why): what was asked for; for ``auto``, the run's own when its folder holds
    one already (its fingerprint ``resumed``), else bf16 where the device runs it natively."""
    if requested != "auto":
        return requested, "--amp " + requested
    if resumed is not None:
        return resumed.get("amp", "off"), "as the run in its folder was started"
    from edgead.device import native_bf16

    why = native_bf16(device)
    return ("bf16", why) if why else ("off", f"no native bf16 on {device}")


def same_run(stored: dict | None, fp: dict) -> bool:
    """Whether a run folder's fingerprint is this training's (runs of the last version recorded --post auto)."""
    return {k: v for k, v in (stored or {}).items() if k != "post"} == fp


@torch.no_grad()
def infer(model: AnomalyModel, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Run the full inference path -> (maps (N, H, W) float32, scores (N,))."""
    device = next(model.parameters()).device
    maps, scores = [], []
    for i in range(0, len(images), batch):
        m, s = model(torch.from_numpy(images[i:i + batch]).to(device))
        maps.append(m[:, 0].cpu().numpy())
        scores.append(s.cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


def normalization(maps: np.ndarray, scores: np.ndarray, false_reject: float | None = None) -> dict:
    """Per-category score normalisation from normal images: 0 = typical normal, 1 = threshold.

    The threshold follows a policy (``edgead.operating``): a false-reject budget, else the legacy
    q0.99; the normals' scores are kept so ``edgead threshold`` can move it without retraining."""
    from edgead.operating import apply, for_budget, for_quantile

    center = float(np.median(scores))
    px_center = float(np.median(maps))
    px_thr = float(np.quantile(maps, PIXEL_QUANTILE))
    # Scale floor: 1 % of the centre, for runs with too few held-out normals to have a spread (one image).
    base = {"center": center, "pixel_threshold": px_thr, "pixel_center": px_center,
            "pixel_scale": max(px_thr - px_center, 0.01 * abs(px_center), 1e-12),
            "n_images": int(len(scores)), "normal_scores": [float(v) for v in scores],
            "rule": f"pixel_threshold = q{PIXEL_QUANTILE} of their map pixels"}
    op = for_budget(scores, false_reject) if false_reject else for_quantile(scores, THRESHOLD_QUANTILE)
    return apply(base, op)


def train(req: TrainRequest) -> dict:
    """Train (or resume) a run; returns the run info written to ``RUN/run.json``. Under ``torchrun`` every
    process calls this; they train together (``edgead.distributed``) and rank 0 writes the run."""
    from edgead import distributed, variant_select

    world = distributed.join(req.device)
    try:
        req, variant = variant_select.resolve(req, model_class(req.model), world, _train)
        info = _train(req, world)
        if variant is not None and world.main and info.get("status") == "trained":
            info["variant_selection"] = variant
            write_run_json(Path(req.out), info)
        return info
    finally:
        distributed.leave(world)


def _train(req: TrainRequest, world) -> dict:
    from edgead import distributed

    out = Path(req.out)
    say = console.print if world.main else (lambda *a, **k: None)
    cls = model_class(req.model)
    defaults = cls.train_defaults()
    unknown = sorted(set(req.train_overrides) - set(defaults))
    if unknown:
        raise EdgeadError(f"model {req.model!r}: unknown training setting {unknown[0]!r}; known: {', '.join(defaults)}")
    for k, v in req.train_overrides.items():
        if isinstance(defaults[k], (int, float)) and not isinstance(defaults[k], bool) and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise EdgeadError(f"model {req.model!r}: training setting {k}={v!r} must be a number >= 0")
    if req.amp not in AMP:
        raise EdgeadError(f"--amp {req.amp!r}: choose {' or '.join(AMP)}")
    if req.post not in POST:
        raise EdgeadError(f"--post {req.post!r}: choose {' or '.join(POST)}")
    if req.select not in SELECT:
        raise EdgeadError(f"--select {req.select!r}: choose {' or '.join(SELECT)}")
    if req.select == "best" and not (req.validate and req.holdout > 0 and not req.shots):
        raise EdgeadError("--select best chooses the epoch on held-out normals: keep --validate and --holdout > 0 "
                          "(and no --shots), or use --select last")
    if req.patience and req.select != "best":
        raise EdgeadError(f"--patience {req.patience} stops at the best epoch on validation: add --select best")
    if req.false_reject is not None and not 0 < req.false_reject < 1:
        raise EdgeadError(f"--false-reject {req.false_reject}: a share of good parts, 0 < budget < 1 (e.g. 0.01)")
    train_cfg = {**defaults, **req.train_overrides}
    if req.epochs is not None:
        train_cfg["epochs"] = req.epochs
    if req.batch_size is not None:
        train_cfg["batch_size"] = req.batch_size
    torch.set_num_threads(req.threads or max(1, (os.cpu_count() or 1) // world.size))
    local_bs = distributed.local_batch(world, train_cfg["batch_size"])

    samples = mvtec.discover(req.data, req.categories, "train")
    categories = sorted({s.category for s in samples})
    if req.max_per_category:
        by_cat: dict[str, list] = {}
        for s in samples:
            by_cat.setdefault(s.category, []).append(s)
        samples = [s for c in categories for s in by_cat[c][: req.max_per_category]]
    shots_note = None
    if req.shots:
        rng = random.Random(req.seed)
        by_cat = {}
        for s in samples:
            by_cat.setdefault(s.category, []).append(s)
        samples = [s for c in categories for s in sorted(rng.sample(by_cat[c], min(req.shots, len(by_cat[c]))),
                                                         key=lambda x: x.path)]
        fit, held = samples, []  # every shot is a training image; thresholds come from them (noted)
        shots_note = {"shots": req.shots, "seed": req.seed, "files": [str(s.path.resolve()) for s in samples]}
    else:
        fit, held = mvtec.split_holdout(samples, req.holdout, req.seed, req.holdout_max)

    model_cfg = {**req.model_config, **cls.data_config(categories, len(fit))}
    config_from_dict(cls, model_cfg)  # a bad --set is named before the images are read for their size
    prior = read_run(out) if (out / RUN_JSON).exists() else None  # the run its folder holds already
    sizing = None
    if req.image_size == "auto" and prior and "preprocess" in prior and not req.force:  # a run keeps its own size
        size = (int(prior["preprocess"]["height"]), int(prior["preprocess"]["width"]))
        sizing = prior["data"].get("image_size")
        req = replace(req, image_size=size)
    elif req.image_size == "auto":  # the shape of the parts it trains on
        from edgead.data.sizing import auto_size

        size, sizing = auto_size([s.path for s in fit], categories=[s.category for s in fit])
        req = replace(req, image_size=size)
        if size[0] != size[1]:
            say(f"image size {size[0]}x{size[1]} (H x W) for the parts' median width/height "
                f"{sizing['median_aspect_w_over_h']:.2f} over {sizing['n_images']} training images; --image-size "
                f"256 trains square")
        if sizing.get("shapes_differ"):
            shapes = ", ".join(f"{c} {a:.2f}" for c, a in sizing["per_category"].items())
            say(f"the categories' parts differ in shape (median width/height: {shapes}); one model has one input "
                f"shape, {size[0]}x{size[1]}: train them as separate runs to give each its own")
    elif isinstance(req.image_size, str):
        raise EdgeadError(f"--image-size {req.image_size!r}: expected H, H W or auto")
    torch.manual_seed(req.seed)
    model = build_model(req.model, req.image_size, model_cfg)
    pre = Preprocess(req.image_size[0], req.image_size[1], mean=model.backbone.mean, std=model.backbone.std)
    amp, amp_why = resolve_amp(req.amp, world.device, prior.get("fingerprint") if prior and not req.force else None)
    if req.amp == "auto":
        say(f"training steps in {'bf16 autocast' if amp == 'bf16' else 'FP32'} ({amp_why}; --amp off or bf16 "
            f"to choose)")
    req = replace(req, amp=amp)
    fp = _fingerprint(req, train_cfg, model_config_dict(model), categories)

    # a run keeps the validation set its curve was scored on (a run made before graded anomalies: full strength)
    strengths = strengths_of(prior if prior is not None and not req.force else None)

    def validation_set() -> ValidationSet | None:
        """The run's validation set: its held-out normals, at the run's strengths and size."""
        return ValidationSet.from_holdout([str(s.path) for s in held], categories, pre, req.val_normals,
                                          strengths=strengths, twins=req.val_twins)
    start_epoch, curve, ckpt = 0, [], None
    if prior is not None:
        info = prior
        distributed.barrier(world)  # every process has read the folder before rank 0 changes it
        if req.force:
            if world.main:
                for name in (CHECKPOINT, WEIGHTS, RUN_JSON, BEST):
                    (out / name).unlink(missing_ok=True)
                shutil.rmtree(out / "eval", ignore_errors=True)
        elif not same_run(info.get("fingerprint"), fp):
            raise EdgeadError(f"{out}: holds a different run (model, data or settings differ); "
                              f"choose another --out or pass --force to overwrite")
        elif info.get("status") == "trained":
            say(f"[green]{out}: already trained[/] ({info['model']}, {info['train']['epochs']} epochs)")
            if req.post == "auto" and cls.post_choices and "post_selection" not in info:
                say(f"{out}: its post-processing is the configured one (trained with --post fixed or before --post "
                    f"auto was the default); --force retrains and chooses it on validation")
            return info
        elif (out / CHECKPOINT).exists():
            ckpt = load_checkpoint(out / CHECKPOINT)
            model.load_state_dict(ckpt["model"], strict=False)
            start_epoch, curve = int(ckpt["epoch"]), list(info.get("curve", []))
            say(f"resuming {out} at epoch {start_epoch + 1}/{train_cfg['epochs']}")
    distributed.barrier(world)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    model.to(world.device)  # before the optimiser holds its parameters

    info = {"status": "training", "model": req.model, "model_config": model_config_dict(model),
            "preprocess": pre.to_dict(), "train": train_cfg, "seed": req.seed,
            "data": {"root": str(Path(req.data).resolve()), "categories": categories,
                     "n_train": len(fit), "n_holdout": len(held), "holdout_fraction": req.holdout,
                     "holdout_files": [str(s.path.resolve()) for s in held]},
            "fingerprint": fp, "curve": curve, "versions": versions(),
            "amp": {"used": amp, "why": amp_why},
            "validation": {"strengths": strengths, "per_category": req.val_normals, "seed": VAL_SEED,
                           "twins": req.val_twins}}
    if shots_note:
        info["data"]["few_shot"] = shots_note
    if sizing:
        info["data"]["image_size"] = sizing
    if world.active:
        info["distributed"] = {"processes": world.size, "backend": world.backend,
                               "global_batch": train_cfg["batch_size"], "batch_per_process": local_bs}
    if world.main:
        write_run_json(out, info)

    model.configure_training(train_cfg)
    groups = model.param_groups(train_cfg)
    opt = torch.optim.AdamW(groups, weight_decay=train_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=train_cfg["lr_step"], gamma=train_cfg["lr_gamma"])
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        ranks = ckpt.get("rng_per_process") or [ckpt["rng"]]  # one-process checkpoints before GPUs: "rng" only
        distributed.set_rng_state(world, ranks[world.rank] if len(ranks) == world.size else ranks[0])
        model.load_training_state(ckpt.get("training_state", {}))

    t0 = time.time()
    with progress(disable=req.quiet or not world.main) as prog:
        images = None
        if start_epoch < train_cfg["epochs"]:
            task = prog.add_task("load images", total=len(fit), info="")
            images = mvtec.load_images(fit, pre)
            prog.update(task, completed=len(fit))
            data = _features(model, images, prog) if cls.cache_features else torch.from_numpy(images)
            prep = model.prepare(data, [s.category for s in fit])
            if prep is not None:
                info["prepare"] = prep
        t_feat = time.time() - t0
        val = None
        if req.validate and held and start_epoch < train_cfg["epochs"] and world.main:  # rank 0 validates
            task = prog.add_task("validation set", total=1, info="held-out normals + synthetic anomalies")
            val = validation_set()
            if val is not None and cls.cache_features and cls.from_features is not AnomalyModel.from_features:
                val = val.with_features(model, pre)  # the frozen backbone runs on it once, not every epoch
            prog.update(task, completed=1)
        bs = local_bs
        step_fn = distributed.wrap(world, model) if images is not None else None
        if world.active and ckpt is None:  # each process draws its own synthetic anomalies and masks
            torch.manual_seed(req.seed + 1_000_003 * world.rank)
        task = prog.add_task("train", total=train_cfg["epochs"], completed=start_epoch, info="")
        for epoch in range(start_epoch, train_cfg["epochs"]):
            # rank 0 holds the validation scores; every process stops with it
            if req.patience and distributed.gather(world, world.main and stalled(curve, req.patience))[0]:
                best = selection(curve, "best")["best_epoch"] if world.main else None
                info["early_stop"] = {"after_epoch": epoch, "patience": req.patience, "best_epoch": best}
                say(f"early stop after epoch {epoch}: no better validation score in {req.patience} epochs "
                    f"(best: epoch {best})")
                break
            model.train()
            model.on_epoch_start(epoch)
            order = _order(world, len(data), req.seed, epoch)
            losses, te = [], time.time()
            starts = [i for i in range(0, len(order), bs) if len(order) - i >= min(2, len(order))]
            for step, i in enumerate(starts):  # a last batch of one is dropped (BatchNorm)
                batch = data[order[i:i + bs]].to(world.device, non_blocking=True)  # images stay on the host
                with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=req.amp == "bf16"):
                    out_d = step_fn(batch, step)
                opt.zero_grad(set_to_none=True)
                out_d["loss"].backward()
                if train_cfg.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
                opt.step()
                losses.append({k: float(v.detach()) for k, v in out_d.items()})
            sched.step()
            means = {k: float(np.mean([x[k] for x in losses])) for k in losses[0]}
            row = {"epoch": epoch + 1, "seconds": round(time.time() - te, 2), **means}
            if world.active:  # the mean over processes, and what each one trained on
                every = distributed.gather(world, {"means": means, "images": len(order)})
                row.update({k: float(np.mean([e["means"][k] for e in every])) for k in means})
                row["images_per_process"] = [e["images"] for e in every]
                row["loss_per_process"] = [e["means"]["loss"] for e in every]
            curve.append(row)
            info["curve"] = curve
            rng = distributed.gather(world, distributed.rng_state(world))
            if not world.main:
                distributed.barrier(world)  # rank 0 validates and writes the checkpoint
                prog.update(task, advance=1)
                continue
            if val is not None:  # before the checkpoint: an interrupt never leaves a finished epoch unscored
                model.eval()
                tv = time.time()
                row.update(val.evaluate(model, pre))
                row["val_seconds"] = round(time.time() - tv, 2)
                if req.select == "best" and row["val_score"] > max((r.get("val_score", -1.0) for r in curve[:-1]),
                                                                  default=-1.0):
                    save_weights(out / BEST, model.trainable_state())
            save_checkpoint(out / CHECKPOINT, {"model": model.trainable_state(), "optimizer": opt.state_dict(),
                                               "scheduler": sched.state_dict(), "epoch": epoch + 1,
                                               "training_state": model.training_state(),
                                               "rng_per_process": rng})
            write_run_json(out, info)
            if req.on_epoch is not None:
                model.eval()
                row.update(req.on_epoch(epoch + 1, model) or {})
                write_run_json(out, info)
            distributed.barrier(world)
            prog.update(task, advance=1, info=f"loss {row['loss']:.4f}")
        train_seconds = time.time() - t0
        if not world.main:
            return info  # rank 0 picks the epoch, sets the thresholds and writes the run
        model.to("cpu")  # the choices, thresholds and profile after training run where export and eval do
        if any("val_score" in r for r in curve):
            info["selection"] = selection(curve, req.select)
            if req.select == "best" and (out / BEST).is_file():
                model.load_state_dict(load_weights(out / BEST), strict=False)
        model.eval()
        if req.post == "auto" and model.post_choices and req.validate and held:  # before the thresholds
            from edgead import post_select

            task = prog.add_task("post-processing", total=1, info="chosen on held-out normals + synthetic anomalies")
            val = val or validation_set()
            if val is not None:
                info["post_selection"] = post_select.choose(model, val, pre)
                post_select.apply(model, info, info["post_selection"]["chosen"])
            prog.update(task, completed=1)
        norm_task = prog.add_task("thresholds", total=len(categories), info="")
        info["normalization"] = {}
        info.pop("warnings", None)
        ref = held or fit
        for cat in categories:
            cat_samples = [s for s in ref if s.category == cat]
            maps, scores = infer(model, mvtec.load_images(cat_samples, pre))
            info["normalization"][cat] = normalization(maps, scores, req.false_reject)
            if info["normalization"][cat]["operating_point"]["warning"]:
                info.setdefault("warnings", []).append(
                    f"category {cat!r}: {info['normalization'][cat]['operating_point']['warning']}")
            if len(scores) < FEW_NORMALS:
                info.setdefault("warnings", []).append(
                    f"category {cat!r}: threshold from {len(scores)} held-out normal image(s); the "
                    f"q{THRESHOLD_QUANTILE} of so few is about their maximum and the false-reject rate it gives is "
                    f"unknown: hold out more (--holdout) or add normal images (about 100 make it stable)")
            prog.advance(norm_task)
    if not held:
        info["normalization_warning"] = "no held-out normals (holdout=0): thresholds come from training images"
    save_weights(out / WEIGHTS, model.trainable_state())
    info.update({"status": "trained", "timing": {"train_seconds": round(train_seconds, 1),
                                                 "feature_seconds": round(t_feat, 1) if images is not None else 0},
                 **{"profile": {**count_params(model), **count_gmacs(model)}}})
    write_run_json(out, info)
    (out / CHECKPOINT).unlink(missing_ok=True)
    (out / BEST).unlink(missing_ok=True)
    return info


def _order(world, n: int, seed: int, epoch: int) -> torch.Tensor:
    """This process's image order for an epoch: a seeded permutation, or its DistributedSampler share
    (equal shares, so every process runs the same number of steps)."""
    if not world.active:
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def stalled(curve: list[dict], patience: int) -> bool:
    """Whether the last ``patience`` validated epochs brought no better validation score than the best before."""
    rows = [r for r in curve if "val_score" in r]
    return len(rows) > patience and rows[-1]["epoch"] - selection(rows, "best")["best_epoch"] >= patience


def selection(curve: list[dict], select: str) -> dict:
    """Which epoch's weights the run keeps, and the validation numbers behind the choice."""
    rows = [r for r in curve if "val_score" in r]
    best = max(rows, key=lambda r: r["val_score"])  # the first of equals: the earlier epoch
    kept = best if select == "best" else curve[-1]
    return {"select": select, "criterion": CRITERION, "kept_epoch": kept["epoch"], "best_epoch": best["epoch"],
            "best_val_score": best["val_score"], "kept_val_score": kept.get("val_score"),
            "last_val_score": curve[-1].get("val_score")}


@torch.no_grad()
def _features(model: AnomalyModel, images: np.ndarray, prog, batch: int = 16) -> torch.Tensor:
    task = prog.add_task("backbone features", total=len(images), info="cached once (frozen backbone)")
    model.eval()
    device = next(model.parameters()).device  # the cache lives where the model trains
    feats = []
    for i in range(0, len(images), batch):
        feats.append(model.encode(torch.from_numpy(images[i:i + batch]).to(device)))
        prog.advance(task, len(feats[-1]))
    return torch.cat(feats)
