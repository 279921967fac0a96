"""The ``edgead`` command line: a thin skin over the Python API, one function per verb."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.rich_utils
from rich.console import Console
from rich.table import Table

from edgead import __version__
from edgead.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EdgeadError, file_error
from edgead.fileio import check_writable
from edgead.progress import console

PIPED_WIDTH = 160  # tables and help written to a pipe or file are this wide, not cut at 80 columns
PIPED = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
if PIPED:
    typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH or PIPED_WIDTH

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Industrial visual anomaly detection from workstation to Jetson.")
# tables go to stdout (to stderr when --json - takes stdout); progress and messages to stderr
stdout = Console(width=PIPED_WIDTH if PIPED else None)


def _version(value: bool) -> None:
    if value:
        print(f"edgead {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Industrial visual anomaly detection from workstation to Jetson."""


def crash_report() -> Path:
    """Save the current exception's traceback where a user can attach it to a bug report."""
    import tempfile
    import time
    import traceback

    text = f"edgead {__version__}\nargv: {sys.argv}\n\n{traceback.format_exc()}"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgead" / "crashes"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (base, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return Path("(not saved: no writable folder)")


def handle_errors(fn):
    """User errors: one line on stderr, exit 2. Anything else is a bug: one line naming the saved
    traceback, exit 3 (never a traceback on the console, never exit 1, which means a failed gate)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        json_out = kwargs.get("json_out")
        global stdout
        saved = stdout
        if json_out is not None and str(json_out) == "-":  # stdout carries the JSON alone
            stdout = Console(stderr=True)
        try:
            for name in ("json_out", "html_out"):  # a report path that cannot be written fails before the work
                if kwargs.get(name) is not None and str(kwargs[name]) != "-":
                    check_writable(kwargs[name])
            return fn(*args, **kwargs)
        except EdgeadError as e:
            console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished epochs are saved; rerun the same command to resume")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # a file-system error the user can fix, else a bug: say where its traceback is
            user = file_error(e) if isinstance(e, OSError) else None
            if user is not None:
                console.print(f"[red]error:[/] {user}", highlight=False, soft_wrap=True)
                raise typer.Exit(EXIT_BAD_INPUT) from None
            path = crash_report()
            first = (str(e).splitlines() or [""])[0][:160]
            console.print(f"[red]internal error:[/] {type(e).__name__}: {first}; traceback saved to {path} "
                          f"(please report it)", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            stdout = saved
    return wrapper


def parse_size(text: str) -> tuple[int, int] | str:
    """'256' -> (256, 256); '256x320' or '256,320' -> (256, 320); 'auto' stays 'auto' (``data.sizing``)."""
    if text.strip().lower() == "auto":
        return "auto"
    parts = [p for p in re.split(r"[x,X ]+", text.strip()) if p]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise EdgeadError(f"--image-size {text!r}: expected H, H W or auto (e.g. 256, 256 320)") from None
    if len(vals) not in (1, 2) or min(vals) <= 0:
        raise EdgeadError(f"--image-size {text!r}: expected H, H W or auto (e.g. 256, 256 320)")
    return (vals[0], vals[-1])


def normalize_argv(argv: list[str]) -> list[str]:
    """Let ``--image-size H W`` (two values) reach Typer as one token ``HxW``."""
    res, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--image-size" and i + 2 < len(argv) and argv[i + 1].isdigit() and argv[i + 2].isdigit():
            res += [a, f"{argv[i + 1]}x{argv[i + 2]}"]
            i += 3
            continue
        res.append(a)
        i += 1
    return res


def _write_json(path: Path | None, obj: dict) -> None:
    if path:
        from edgead.fileio import write_json_out

        write_json_out(path, obj)
        if str(path) != "-":
            console.print(f"wrote {path}")


def _example(w: dict) -> str:
    """What a failed gate's worst case names: a reference file, or a live run's part number."""
    return w.get("file") or (f"part {w['part']}" if "part" in w else "")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _torchrun(nproc: int) -> int:
    """``edgead train ... --nproc N`` -> ``torchrun --standalone --nproc_per_node N -m edgead train ...``."""
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if not a.startswith("--nproc="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "edgead",
           *argv]
    return subprocess.call(cmd)


@app.command()
@handle_errors
def train(
    model: Annotated[str | None, typer.Option(help="Model name; omit to list the registered models.")] = None,
    data: Annotated[Path | None, typer.Option(help="MVTec-style root (<category>/train/good ...).")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Category to include (repeat); default all.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to write (resumes if interrupted).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (model default if omitted).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2)] = None,
    lr_step: Annotated[int | None, typer.Option(min=1, help="Epochs per learning-rate step (x0.1).")] = None,
    image_size: Annotated[str, typer.Option(help="H or 'H W' (multiples of 32), e.g. 256 or 256 320; auto: "
                                                        "256x256, or the parts' aspect ratio at about as many pixels "
                                                        "when they are longer than 1.5:1.")] = "auto",
    size: Annotated[str | None, typer.Option(help="Model size preset, e.g. edge or paper.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Model config override key=value (repeat).")] = None,
    seed: int = 0,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.5, help="Share of normals held out for thresholds.")] = 0.1,
    holdout_max: Annotated[int, typer.Option(min=1, help="At most N held-out normals per category (a 1 % "
                                             "false-reject budget needs about 300).")] = 64,
    max_per_category: Annotated[int | None, typer.Option(min=2, help="At most N training images per category.")] = None,
    shots: Annotated[int | None, typer.Option(min=1, help="Few-shot: N normal images per category (seeded "
                                              "choice, recorded in the run).")] = None,
    false_reject: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Threshold policy: false-reject "
                                                       "budget on held-out normals, e.g. 0.01 (default: their "
                                                       "q0.99); change it later with edgead threshold.")] = None,
    validate: Annotated[bool, typer.Option(help="Score every epoch on the held-out normals + synthetic anomalies "
                                           "(recorded in the curve; never test images).")] = True,
    val_normals: Annotated[int, typer.Option(min=2, help="Validation: at most N held-out normals per category "
                                             "(each with synthetic twins).")] = 32,
    val_twins: Annotated[int, typer.Option(min=1, max=8, help="Validation: synthetic anomalies per held-out normal; "
                                           "more makes choices on validation less noisy, each epoch slower.")] = 1,
    select: Annotated[str, typer.Option(help="Weights kept: 'last' epoch, or the 'best' epoch on validation.")
                      ] = "last",
    patience: Annotated[int | None, typer.Option(min=1, help="With --select best: stop after N epochs without a "
                                                 "better validation score (early stopping).")] = None,
    post: Annotated[str, typer.Option(help="Post-processing (map smoothing, score window): fixed, as configured; "
                                      "auto, chosen on the held-out normals + synthetic anomalies when it beats the "
                                      "configured one beyond their noise (CRAD, CCAD).")
                    ] = "auto",
    variant: Annotated[str, typer.Option(help="Model variant (CCAD: shortcut or bottleneck): fixed, as configured; a "
                                         "name; auto, each trained briefly and the better on the held-out normals + "
                                         "synthetic anomalies kept when it wins beyond their noise (opt-in: see "
                                         "README, CCAD).")] = "fixed",
    amp: Annotated[str, typer.Option(help="Precision of the training steps: auto, bf16 autocast where the device runs "
                                      "it natively (AVX512-BF16 or AMX CPUs, GPUs from Ampere) and FP32 elsewhere; "
                                      "bf16; off (FP32). Weights, validation and thresholds stay FP32.")] = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing run folder.")] = False,
    nproc: Annotated[int, typer.Option(min=1, help="Train in N processes (torchrun, DistributedDataParallel; "
                                       "--batch-size stays the global batch).")] = 1,
    device: Annotated[str, typer.Option(help="auto: a GPU per process when CUDA is there (NCCL between them), "
                                        "else the CPU (gloo); cpu; cuda.")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the run summary as JSON.")] = None,
) -> None:
    """Train a model on normal images; writes a run folder (weights, config, curve, thresholds)."""
    from edgead.models import available_models

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # launch torchrun with this same command, minus --nproc
        if model is None or data is None or out is None:
            raise EdgeadError("edgead train --nproc N needs --model, --data ROOT and --out RUN")
        from edgead.distributed import World, local_batch
        from edgead.models import model_class

        local_batch(World(0, nproc), batch_size or model_class(model).train_defaults()["batch_size"])
        raise typer.Exit(_torchrun(nproc))
    if model is None:
        table = Table(title="registered models")
        table.add_column("model")
        table.add_column("idea")
        for name, summary in available_models().items():
            table.add_row(name, summary)
        stdout.print(table)
        return
    if data is None or out is None:
        raise EdgeadError("edgead train needs --data ROOT and --out RUN (e.g. --data datasets --out runs/crad)")
    from edgead.train import TrainRequest
    from edgead.train import train as run_train

    cfg = dict(_parse_set(s) for s in (set_ or []))
    if size:
        cfg["size"] = size
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) != nproc:
        raise EdgeadError(f"--nproc {nproc} under a torchrun of {os.environ['WORLD_SIZE']} processes; drop --nproc")
    info = run_train(TrainRequest(model=model, data=data, out=out, categories=category or None,
                                  image_size=parse_size(image_size), epochs=epochs, batch_size=batch_size,
                                  seed=seed, holdout=holdout, holdout_max=holdout_max, model_config=cfg,
                                  val_normals=val_normals, val_twins=val_twins,
                                  max_per_category=max_per_category,
                                  shots=shots, false_reject=false_reject,
                                  train_overrides={"lr_step": lr_step} if lr_step else {}, force=force,
                                  validate=validate, select=select, patience=patience, amp=amp, post=post,
                                  variant=variant, device=device))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports and writes
    for w in info.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    table = Table(title=f"{out} ({info['model']})")
    for col in ("category", "threshold", "center", "held-out normals"):
        table.add_column(col)
    for cat, n in info["normalization"].items():
        table.add_row(cat, _fmt(n["threshold"]), _fmt(n["center"]), str(n["n_images"]))
    stdout.print(table)
    curve = info["curve"]
    prof = info.get("profile", {})
    stdout.print(f"epochs {len(curve)}  final loss {curve[-1]['loss']:.4f}  train {info['timing']['train_seconds']} s  "
                      f"head params {prof.get('params_head', 0) / 1e6:.3f} M  "
                      f"total {prof.get('gmacs_total', 0):.3f} GMACs")
    vs = info.get("variant_selection")
    if vs and vs["by"] == "validation":
        boot = vs["bootstrap"]
        why = "" if boot is None else f", better in {boot['p_better']:.0%} of {boot['resamples']} resamples"
        scores = ", ".join(f"{n} {v:.4f}" for n, v in vs["val_score"].items())
        stdout.print(f"variant (validation after {vs['probe_epochs']} epochs each): {vs['chosen']} ({scores}; "
                     f"best {vs['candidate']}{why})", highlight=False)
    ps = info.get("post_selection")
    if ps:
        def named(setting: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in setting.items())

        boot = ps.get("bootstrap")
        why = "" if boot is None else (f"; best {named(ps['candidate'])}: {ps['val_score_candidate']:.4f}, better in "
                                       f"{boot['p_better']:.0%} of {boot['resamples']} resamples")
        stdout.print(f"post-processing (validation): {named(ps['chosen'])} (val {ps['val_score_chosen']:.4f}; "
                     f"configured {named(ps['default'])}: {ps['val_score_default']:.4f}{why})", highlight=False)
    sel = info.get("selection")
    if sel:
        stdout.print(f"validation (held-out normals + synthetic anomalies): best epoch {sel['best_epoch']} "
                     f"({sel['best_val_score']:.4f}), kept epoch {sel['kept_epoch']} ({sel['select']})")
    _write_json(json_out, {k: v for k, v in info.items() if k != "fingerprint"})


def _parse_set(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise EdgeadError(f"--set {text!r}: expected key=value (e.g. --set use_global=false)")
    k, v = text.split("=", 1)
    low = v.strip().lower()
    if low in ("true", "false"):
        return k.strip(), low == "true"
    try:
        return k.strip(), json.loads(v)
    except json.JSONDecodeError:
        return k.strip(), v


@app.command("eval")
@handle_errors
def eval_(
    run: Annotated[Path, typer.Argument(help="Run folder (torch reference) or bundle folder.")],
    backend: Annotated[str | None, typer.Option(help="torch, onnxruntime or tensorrt (default by target).")] = None,
    precision: Annotated[str, typer.Option(help="Bundle graph: fp32, fp16, int8-cpu, int8-tensorrt.")] = "fp32",
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads.")] = None,
    data: Annotated[Path | None, typer.Option(help="MVTec-style root; default: the run's training root.")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Category (repeat); default the run's.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics as JSON.")] = None,
    overlays: Annotated[int, typer.Option(min=0, help="Overlay PNGs per category.")] = 8,
    overlay_dir: Annotated[Path | None, typer.Option(help="Where overlays go (default RUN/eval/overlays).")] = None,
) -> None:
    """Evaluate a run on the labelled test split: image/pixel AUROC, AUPRO, F1-max per category."""
    from edgead.evaluate import EvalRequest, evaluate

    res = evaluate(EvalRequest(run=run, backend=backend, precision=precision, threads=threads, data=data,
                               categories=category or None, overlays=overlays,
                               overlay_dir=overlay_dir))
    cols = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "f1_max": "F1-max",
            "defect_recall": "recall@thr", "false_reject_rate": "false rej@thr"}
    table = Table(title=f"{run} ({res['model']}, {res['backend']['backend']}, {res['precision']})")
    table.add_column("category")
    for c in cols.values():
        table.add_column(c)
    for cat, m in res["per_category"].items():
        table.add_row(cat, *[_fmt(m.get(c, "")) for c in cols])
    table.add_row("[bold]mean", *[_fmt(res["mean"].get(c, "")) for c in cols])
    stdout.print(table)
    for cat, m in res["per_category"].items():
        ops = m.get("operating_points")
        if not ops:
            continue
        t = Table(title=f"{cat}: false-reject budgets set on held-out normals ({ops['n_normals']}), realised on "
                        f"the test split")
        for c in ("budget", "threshold", "held-out normals flagged (95 % CI)", "test false rej (95 % CI)",
                  "test recall", "note"):
            t.add_column(c)
        for r in ops["rows"]:
            lo, hi = r["frr_interval"]
            test = r["test"]
            frr = (f"{test['false_reject_rate']:.2%} ({test['false_reject_interval'][0]:.2%}-"
                   f"{test['false_reject_interval'][1]:.2%})" if test["false_reject_rate"] is not None else "no good")
            rec = f"{test['recall']:.1%}" if test["recall"] is not None else "no defect"
            t.add_row(r["label"], f"{r['threshold']:.4g}", f"{r['frr_estimate']:.2%} ({lo:.2%}-{hi:.2%})", frr, rec,
                      "too few normals" if r["warning"] else "")
        stdout.print(t)
    _write_json(json_out, res)


@app.command()
@handle_errors
def threshold(
    target: Annotated[Path, typer.Argument(help="Run or bundle folder.")],
    false_reject: Annotated[float | None, typer.Option(help="False-reject budget, e.g. 0.01: the highest threshold "
                                                       "whose false-reject rate is at most that, at --confidence.")
                            ] = None,
    recall: Annotated[float | None, typer.Option(help="Recall target on --labelled defects, e.g. 0.95.")] = None,
    quantile: Annotated[float | None, typer.Option(help="Quantile of the held-out normal scores (0.99 was the "
                                                   "default rule).")] = None,
    labelled: Annotated[Path | None, typer.Option(help="Your labelled images, MVTec layout (<cat>/test/<type>/...), "
                                                  "for --recall.")] = None,
    normals: Annotated[Path | None, typer.Option(help="More good images never used in training (a folder).")
                       ] = None,
    category: Annotated[str | None, typer.Option(help="Only this category (needed with --normals on multi-class).")
                        ] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence of the false-reject bound.")
                          ] = 0.95,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write what changed as JSON.")] = None,
) -> None:
    """Re-set thresholds (operating points) without retraining or re-exporting; says what changed."""
    from edgead.threshold import ThresholdRequest, set_thresholds

    res = set_thresholds(ThresholdRequest(target=target, false_reject=false_reject, recall=recall, quantile=quantile,
                                          labelled=labelled, normals=normals, category=category,
                                          confidence=confidence))
    t = Table(title=f"{target} ({res['kind']}): new operating points; the ONNX graphs are unchanged")
    for c in ("category", "threshold (old -> new)", "rule", "normals flagged", "false-reject rate 95 % CI"):
        t.add_column(c)
    for cat, ch in res["categories"].items():
        lo, hi = ch["frr_interval"]
        t.add_row(cat, f"{ch['old_threshold']:.4g} -> {ch['new_threshold']:.4g}", ch["rule"].split("; ")[0],
                  f"{ch['flagged_normals']} of {ch['n_normals']}", f"{lo:.2%}-{hi:.2%}")
    stdout.print(t)
    for cat, ch in res["categories"].items():
        if ch["recall"] is not None:
            stdout.print(f"{cat}: recall on the labelled defects {ch['recall']:.1%}", highlight=False)
        if ch["warning"]:
            console.print(f"[yellow]warning:[/] {cat}: {ch['warning']}", highlight=False, soft_wrap=True)
    _write_json(json_out, res)


@app.command()
@handle_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by edgead train.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write.")],
    batch: Annotated[int, typer.Option(min=1, help="Fixed batch size of the graph.")] = 1,
    data: Annotated[Path | None, typer.Option(help="Data root for the parity images (default: the run's).")] = None,
    parity_images: Annotated[int, typer.Option(min=1, help="Real images in the parity check.")] = 8,
    tolerance: Annotated[float, typer.Option(help="Max relative error ONNX vs PyTorch.")] = 1e-3,
    force: Annotated[bool, typer.Option(help="Overwrite an existing bundle.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write meta.json's content here too.")] = None,
) -> None:
    """Export a run to a bundle: model.fp32.onnx (post-processing inside) + meta.json, parity-checked."""
    from edgead.export import ExportRequest, export_bundle

    meta = export_bundle(ExportRequest(run=run, out=out, batch=batch, data=data, parity_images=parity_images,
                                       tolerance=tolerance, force=force))
    p = meta["export"]["parity"]
    table = Table(title=f"{out} ({meta['model']}, opset {meta['export']['opset']})")
    for col in ("output", "max abs error", "max rel error", "images"):
        table.add_column(col)
    for k in ("anomaly_map", "score"):
        table.add_row(k, f"{p[k + '_max_abs']:.3g}", f"{p[k + '_max_rel']:.3g}", str(p["n_images"]))
    stdout.print(table)
    _write_json(json_out, meta)


@app.command()
@handle_errors
def build(
    target: Annotated[Path | None, typer.Argument(help="Bundle or run folder (a run is exported first).")] = None,
    model: Annotated[str | None, typer.Option(help="Use the newest trained run of this model in --workspace.")] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8.")] = "fp32",
    backend: Annotated[str, typer.Option(help="onnxruntime (here) or tensorrt (on the Jetson).")] = "onnxruntime",
    recipe: Annotated[str | None, typer.Option(help="INT8 recipe: tensorrt or cpu (default: by --backend).")] = None,
    calib_method: Annotated[str | None, typer.Option(help="minmax, entropy, percentile or mse.")] = None,
    calib_count: Annotated[int | None, typer.Option(min=1, help="Calibration images (class-balanced).")] = None,
    calib_seed: Annotated[int | None, typer.Option(help="Seed of the calibration choice.")] = None,
    calib_synthetic: Annotated[float | None, typer.Option(help="Share of calibration normals also used with a "
                                                          "synthetic anomaly (0-1, default 0.5).")] = None,
    calib_relit: Annotated[float | None, typer.Option(help="Share of calibration normals also used under "
                                                      "another light: gain, gradient, gamma (0-1, default 0.5).")
                           ] = None,
    data: Annotated[Path | None, typer.Option(help="Data root (default: the run's).")] = None,
    recipes: Annotated[Path | None, typer.Option(help="Calibration recipes YAML (default: the packaged "
                                                 "edgead/precision/recipes.yaml).")
                       ] = None,
    workspace: Annotated[Path, typer.Option(help="Where runs live (for --model).")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(help="Bundle folder when TARGET is a run (default RUN/bundle).")] = None,
    qad: Annotated[str | None, typer.Option(help="INT8 quantization-aware distillation: auto (when PTQ fails "
                                              "the build split; default), always or never.")] = None,
    qad_steps: Annotated[int | None, typer.Option(min=1, help="INT8: QAD optimiser steps (default 240).")] = None,
    fallback: Annotated[bool, typer.Option(help="INT8: leave the activations that move the maps most in FP16 "
                                                "when PTQ and QAD do not pass the build split.")] = True,
    gates: Annotated[Path | None, typer.Option(help="INT8: gate overrides for the build split (the YAML "
                                                    "edgead verify --gates reads).")] = None,
    bias_correction: Annotated[bool, typer.Option(help="INT8: take each quantized conv's mean output error "
                                                       "(measured on calibration normals) off its bias when PTQ "
                                                       "fails the build split.")] = True,
    learned_rounding: Annotated[bool, typer.Option(help="INT8: also try each quantized conv's weights rounded up "
                                                        "or down (and its bias) to fit its FP32 output (AdaRound, "
                                                        "on calibration images; ~5 min) when PTQ fails the build "
                                                        "split.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the build report as JSON.")] = None,
) -> None:
    """Make a precision graph in a bundle (and a TensorRT engine with --backend tensorrt)."""
    from edgead.build import build_command, precision_key

    bundle, entry = build_command(target, model, workspace, out, log=console.print, precision=precision,
                                  backend=backend, recipe=recipe, method=calib_method, count=calib_count,
                                  seed=calib_seed, synthetic_fraction=calib_synthetic, relit_fraction=calib_relit,
                                  data=data,
                                  recipes_file=recipes, force=force, qad=qad, qad_steps=qad_steps,
                                  fallback=fallback, gates_file=gates, bias_correction=bias_correction,
                                  learned_rounding=learned_rounding)
    key = precision_key(precision, recipe, backend)
    table = Table(title=f"{bundle}: {key} ({backend})")
    table.add_column("field")
    table.add_column("value")
    table.add_row("file", entry["path"])
    table.add_row("size MB", f"{(bundle / entry['path']).stat().st_size / 1e6:.2f}")
    rep = entry.get("report", {})
    for k, v in rep.items():
        if k == "search":
            v = "; ".join(f"{s['step']}: {'PASS' if s['passed'] else 'fail'} (score error {s['score_abs_max']:.3f}, "
                          f"{100 * s['int8_share']:.0f} % MACs INT8)" for s in v)
        elif k == "build_split":
            v = f"{'PASS' if v['passed'] else 'FAIL'} on {v['n_images']} images ({v['what']})"
        elif k in ("kept_float", "fp32_scopes") and isinstance(v, list) and len(v) > 6:
            v = f"{len(v)}: {', '.join(v[:6])}, ..."
        table.add_row(k, str(v))
    chosen = next((s for s in rep.get("search", []) if s["step"] == rep.get("chosen")), None)
    if chosen and chosen.get("by_kind"):
        table.add_row("score error by split image (engine - FP32, threshold units: mean ± spread, largest)",
                      _error_groups(chosen["by_kind"]))
    ready = entry.get("tensorrt_readiness", {})
    if ready:
        table.add_row("TensorRT 10.3 ready", "yes" if ready["ok"] else f"no: {ready['n_findings']} findings, "
                      f"e.g. {ready['findings'][0]}")
    stdout.print(table)
    _write_json(json_out, {"bundle": str(bundle), "precision": key, **entry})
    failed = _split_failure(bundle, key, entry.get("report", {}))
    if failed:
        console.print(f"[red]error:[/] {failed}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)


def _split_failure(bundle: Path, key: str, report: dict) -> str | None:
    """What to say when the graph kept fails its build split's gates (the build then exits 1, as verify would)."""
    split = report.get("build_split")
    if not split or split.get("passed", True):
        return None
    chosen = next((s for s in report.get("search", []) if s["step"] == report.get("chosen")), None)
    why = (f"{', '.join(chosen['failed'])}; score error {chosen['score_abs_max']:.3f}" if chosen and chosen["failed"]
           else "see meta.json")
    gates = "its gates file" if split.get("gates") not in (None, "default") else "the default gates"
    return (f"{bundle}: the {key} graph is written but fails {gates} on the build split ({why}); it is not "
            f"trusted for deployment (inspect --require-verified refuses it): deploy fp16 or fp32, or see every "
            f"candidate in meta.json")


@app.command()
@handle_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8 (or int8-cpu / int8-tensorrt).")] = "fp32",
    backend: Annotated[str, typer.Option(help="onnxruntime (here) or tensorrt (on the Jetson).")] = "onnxruntime",
    data: Annotated[Path | None, typer.Option(help="Labelled data root (to make the reference or check inputs).")
                    ] = None,
    gates: Annotated[Path | None, typer.Option(help="YAML overriding gate limits (see edgead.verify.gates).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result as JSON.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report.")] = None,
    per_category: Annotated[int, typer.Option(min=2, help="Reference images per category (half good).")] = 48,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads.")] = None,
    remake_reference: Annotated[bool, typer.Option(help="Recompute the PyTorch reference outputs.")] = False,
    live: Annotated[str | None, typer.Option(help="Also check the live path: images://DIR or file://VIDEO (with its "
                                             "manifest) through edgead inspect, scored as offline.")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Frame -> source file list of a --live video (default: "
                                                  "VIDEO.json).")] = None,
    category: Annotated[str | None, typer.Option(help="Product a --live source shows (multi-class bundles).")] = None,
    source_size: Annotated[list[str] | None, typer.Option(help="Also prove the camera path at this frame size "
                                                          "(WxH, repeatable): the reference parts framed at that "
                                                          "size, through edgead inspect, gated as --live.")] = None,
    scale: Annotated[str, typer.Option(help="How inspect scales frames for --live/--source-size: bundle or "
                                       "pipeline (see edgead inspect --scale).")] = "bundle",
) -> None:
    """Layered parity (L0 structure .. L4 task) of a bundle graph against the PyTorch reference; exit 1 on a fail."""
    from edgead.live.pipelines import SCALES
    from edgead.verify import VerifyRequest
    from edgead.verify import verify as run_verify
    from edgead.verify.live import parse_size

    sizes = tuple(parse_size(s) for s in source_size or ())
    if scale not in SCALES:
        raise EdgeadError(f"--scale {scale!r}: choose {' or '.join(SCALES)}")

    res = run_verify(VerifyRequest(bundle=bundle, precision=precision, backend=backend, data=data, gates_file=gates,
                                   html_out=html_out, per_category=per_category, threads=threads,
                                   remake_reference=remake_reference, live=live, manifest=manifest,
                                   category=category, source_sizes=sizes, scale=scale))
    _write_json(json_out, res)
    table = Table(title=f"{bundle}: {res['precision']} on {backend} vs PyTorch FP32 "
                        f"({res['n_images']} images: {res['n_good']} good, {res['n_defect']} defective)")
    for col in ("level", "gate", "category", "value", "limit", "status"):
        table.add_column(col)
    for r in res["gates"]:
        status = {True: "[green]pass", False: "[red]FAIL", None: "[dim]report"}[r["passed"]]
        lim = "" if r["limit"] is None else ("<= " if r.get("op") == "max" else ">= ") + _fmt(r["limit"])
        table.add_row(r["level"], r["gate"], r["category"], _fmt(r["value"]), lim, status)
    stdout.print(table)
    for r in res["failed"]:
        w = r.get("worst") or {}
        where = _example(w) or ", ".join(filter(None, (_example(f) for f in w.get("flipped", [])[:3])))
        console.print(f"[red]failed[/] {r['level']} {r['gate']} \\[{r['category']}]: {_fmt(r['value'])} vs limit "
                      f"{_fmt(r['limit'])}" + (f"; worst: {where}" if where else ""), highlight=False, soft_wrap=True)
    for cat, m in res["per_category"].items():
        e = m.get("score_error")
        if e and res["precision"] != "fp32":
            console.print(f"score error \\[{cat}] (engine - reference, threshold units: mean ± spread, largest): "
                          + _error_groups(e), highlight=False, soft_wrap=True)
    c = res.get("culprits", {})
    for row in c.get("top", [])[:3]:
        console.print(f"culprit: {row['tensor']} (from {row['producer']}): left in float it removes "
                      f"{100 * row['share_of_error']:.0f} % of the map error", highlight=False, soft_wrap=True)
    console.print(f"{'[green]PASS' if res['passed'] else '[red]FAIL'}[/] report {res['report_json']}"
                  + (f", {html_out}" if html_out else ""))
    if not res["passed"]:
        raise typer.Exit(EXIT_FAILED)


def _error_groups(groups: dict) -> str:
    """``compare.error_groups`` as one line: 'good +0.035 ± 0.028 (0.109); ...'."""
    return "; ".join(f"{k} {v['mean']:+.3f} ± {v['std']:.3f} ({v['max_abs']:.3f})" for k, v in groups.items())


@app.command("bench")
@handle_errors
def bench_(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    precision: Annotated[list[str] | None, typer.Option(help="fp32, fp16, int8-cpu, int8-tensorrt (repeat).")
                         ] = None,
    backend: Annotated[str, typer.Option(help="onnxruntime or tensorrt.")] = "onnxruntime",
    threads: Annotated[list[int] | None, typer.Option(min=1, help="Inference threads (repeat for a table per "
                                                     "thread count).")] = None,
    iters: Annotated[int, typer.Option(min=5, help="Timed calls after warm-up.")] = 50,
    budget_ms: Annotated[float | None, typer.Option(help="Fail (exit 1) when an engine's p50 exceeds this.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
) -> None:
    """Latency of bundle graphs (fresh process each, warm-up, p50/p90/p99) next to the torch reference."""
    from edgead.bench import bench

    counts = threads or [1]
    res = bench(bundle, precision or ["fp32"], backend, counts, iters)
    cells = res.get("by_threads") or {str(counts[0]): res}
    for t, cell in cells.items():
        stdout.print(_bench_table(f"{bundle} ({backend}, {t} thread(s), batch {res['batch']})", res, cell))
    _write_json(json_out, res)
    slow = {f"{k} ({t} threads)": e["p50_ms"] for t, cell in cells.items() for k, e in cell["engines"].items()
            if budget_ms is not None and e["p50_ms"] > budget_ms}
    for k, v in slow.items():
        console.print(f"[red]budget missed:[/] {k} p50 {v:.2f} ms > {budget_ms:g} ms")
    if slow:
        raise typer.Exit(EXIT_FAILED)


def _bench_table(title: str, res: dict, cell: dict) -> Table:
    table = Table(title=title)
    for col in ("stage", "p50 ms", "p90 ms", "p99 ms", "throughput img/s", "peak RSS MB", "graph MB",
                "speed-up vs torch"):
        table.add_column(col)

    def row(name: str, p: dict, extra: bool = False, ratio: str = "", mb: float | None = None) -> None:
        table.add_row(name, f"{p['p50_ms']:.2f}", f"{p['p90_ms']:.2f}", f"{p['p99_ms']:.2f}",
                      f"{p['throughput_ips']:.1f}" if extra else "", f"{p['peak_rss_mb']:.0f}" if extra else "",
                      f"{mb:.1f}" if mb is not None else "", ratio)

    if "preprocess" in res:
        row("host preprocessing (1 image)", res["preprocess"])
    ref = cell.get("torch_reference")
    for name, e in cell["engines"].items():
        row(f"{name} (graph incl. post-processing)", e, True,
            f"{cell['speedup_vs_torch'][name]:.2f}x" if ref else "", res["graph_mb"].get(name))
    row("host post-processing (decision, mask)", res["postprocess"])
    if ref:
        row("torch eager reference", ref, True, "1.00x")
    return table


@app.command("inspect")
@handle_errors
def inspect_(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    source: Annotated[list[str] | None, typer.Option(help="csi://0, v4l2:///dev/video0, rtsp://..., file://clip.mp4, "
                                                     "images://DIR or test:// (repeat: several cameras, one engine)."
                                                     )] = None,
    output: Annotated[str, typer.Option(help="display://, file://out.mp4, rtsp://:8554/edgead, images://DIR "
                                        "or none")] = "none",
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8 (int8-cpu / int8-tensorrt).")] = "fp32",
    backend: Annotated[str, typer.Option(help="onnxruntime (here) or tensorrt (on the Jetson).")] = "onnxruntime",
    policy: Annotated[str | None, typer.Option(help="latest (live: newest frame, drops counted) or every "
                                               "(audit: no drops). Default by source.")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Product each camera sees (multi-class bundles): once "
                                                       "for all, or once per --source.")] = None,
    alerts: Annotated[Path, typer.Option(help="Folder for flagged frames, heatmaps and events.jsonl.")] = Path(
        "alerts"),
    alerts_min_free_mb: Annotated[float, typer.Option(min=0.0, help="With less free disk than this in the alerts "
                                                      "folder, alerts keep their line but save no images.")] = 256.0,
    alerts_max_mb: Annotated[float | None, typer.Option(min=0.1, help="Keep the alerts folder's images under this "
                                                        "size: the oldest frame/heatmap pairs are deleted (their "
                                                        "lines stay).")] = None,
    events_max_mb: Annotated[float, typer.Option(min=1.0, help="Keep events.jsonl and its rotated files "
                                                 "(events.000001.jsonl, ...) under this size: the oldest rotated "
                                                 "file is deleted.")] = 1024.0,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Stop after N frames.")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after S seconds.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads per frame (default: one fewer than "
                                                "the CPUs, leaving one for capture, preprocessing and alerts; 1 with "
                                                "--workers).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Frames inferred at once by the one engine, decided in "
                                         "order (onnxruntime).")] = 1,
    platform: Annotated[str, typer.Option(help="auto, jetson or desktop (pipeline elements).")] = "auto",
    fps: Annotated[int, typer.Option(min=1, help="Output stream rate (and images:// timestamps).")] = 10,
    first_frame_timeout: Annotated[float, typer.Option(min=0.5, help="Exit 2 when the source gives no frame in "
                                                       "this many seconds.")] = 30.0,
    latency_budget_ms: Annotated[float | None, typer.Option(min=0.001, help="Capture-to-decision budget: frames "
                                                            "over it are counted; exit 1 when the p99 misses it.")
                                 ] = None,
    scale: Annotated[str, typer.Option(help="bundle: full frames resized by the bundle's preprocessing (what verify "
                                       "saw); pipeline: GStreamer/VIC scales (cheaper; check it with verify "
                                       "--source-size).")] = "bundle",
    notify: Annotated[list[str] | None, typer.Option(help="Also send each alert to mqtt://HOST:1883/TOPIC, "
                                                     "mqtts://HOST:8883/TOPIC or opcua://HOST:4840/NODEID (repeat "
                                                     "for several); events.jsonl stays the record.")] = None,
    notify_env: Annotated[Path | None, typer.Option(help="KEY=VALUE file with the notifiers' credentials "
                                                    "(EDGEAD_MQTT_USERNAME, ..._PASSWORD, ..._CA_FILE, "
                                                    "EDGEAD_OPCUA_USERNAME, ...); never on the command line.")
                          ] = None,
    metrics: Annotated[str | None, typer.Option(help="Serve Prometheus metrics at [ADDRESS]:PORT, e.g. :9108.")
                       ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the run summary as JSON.")] = None,
    require_verified: Annotated[bool, typer.Option(help="Refuse (exit 2) a graph without a passing edgead verify "
                                                  "report under the default gates; without it a warning.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the pipeline strings and exit.")] = False,
) -> None:
    """Live inspection: camera -> bundle -> decision, overlay, alerts, per-stage latency."""
    from edgead.live.inspect import InspectRequest, inspect

    source = source or ["test://"]
    res = inspect(InspectRequest(bundle=bundle, source=source[0] if len(source) == 1 else source, output=output,
                                 precision=precision, backend=backend, policy=policy,
                                 category=category[0] if category and len(category) == 1 else category,
                                 alerts_dir=alerts, alerts_min_free_mb=alerts_min_free_mb,
                                 alerts_max_mb=alerts_max_mb, events_max_mb=events_max_mb, max_frames=max_frames,
                                 duration=duration, threads=threads, workers=workers, platform=platform,
                                 fps=fps, dry_run=dry_run, first_frame_timeout_s=first_frame_timeout,
                                 latency_budget_ms=latency_budget_ms, scale=scale, notify=notify or [],
                                 notify_env=notify_env, metrics=metrics, require_verified=require_verified))
    if dry_run:
        stdout.print(f"# platform {res['platform']} (NVENC {'yes' if res['nvenc'] else 'no'}), policy {res['policy']}, "
                     f"model input {res['model_input'][0]}x{res['model_input'][1]}, scaled {res['scale']}",
                     highlight=False)
        stdout.print(f"source: {res['source_pipeline']}", highlight=False, soft_wrap=True)
        stdout.print(f"output: {res['output_pipeline']}", highlight=False, soft_wrap=True)
        for n in res["notify"]:
            stdout.print(f"notify: {n} (fed from events.jsonl)", highlight=False, soft_wrap=True)
        if res["metrics"]:
            stdout.print(f"metrics: http://{res['metrics']}/metrics", highlight=False)
        _write_json(json_out, res)
        return
    _write_json(json_out, res)
    table = Table(title=f"{', '.join(source)} -> {bundle} ({res['precision']}, {res['backend']['backend']}): "
                        f"{res['frames']} frames, {res['flagged']} flagged, {res['fps']:.1f} fps, "
                        f"ended by {res['end']}")
    for col in ("stage", "p50 ms", "p90 ms", "p99 ms", "mean ms"):
        table.add_column(col)
    for k, v in res["stages"].items():
        table.add_row(k, f"{v['p50_ms']:.2f}", f"{v['p90_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['mean_ms']:.2f}")
    stdout.print(table)
    share = res["pipeline_overhead_share"]
    stdout.print(f"dropped {res['dropped']} of {res['produced']}, reconnects {res['reconnects']}, pipeline overhead "
                 f"(all but inference) {share * 100 if share is not None else 0:.1f} % of frame time; "
                 f"events in {res['events_file']}", highlight=False)
    op = res["operating_point"] or {}
    if op.get("expected_false_reject_interval"):
        lo, hi = op["expected_false_reject_interval"]
        stdout.print(f"flag rate {op['flag_rate']:.2%}; the threshold ({op['rule'].split('; ')[0]}) expects "
                     f"{lo:.2%}-{hi:.2%} false rejects on good parts", highlight=False, soft_wrap=True)
    a = res["alerts"]
    if a["queue_full_waits"]:
        console.print(f"[yellow]note:[/] the alert writer fell behind {a['queue_full_waits']} time(s); the loop waited "
                      f"(no alert lost)", highlight=False)
    if a["images_skipped"]:
        console.print(f"[yellow]warning:[/] {a['images_skipped']} alert(s) saved without images: the disk under "
                      f"{alerts} is nearly full (under --alerts-min-free-mb {alerts_min_free_mb:g}); free space or "
                      f"cap the folder with --alerts-max-mb", highlight=False, soft_wrap=True)
    if a["images_pruned"]:
        console.print(f"note: {a['images_pruned']} oldest alert image pair(s) deleted to keep {alerts} under "
                      f"{alerts_max_mb:g} MB (their lines stay in events.jsonl)", highlight=False, soft_wrap=True)
    if a["folder_recreated"] or a["events_reopened"]:
        console.print(f"[yellow]warning:[/] {alerts} or its events file was deleted or moved while the run went on "
                      f"(folder made again {a['folder_recreated']} time(s), events file started again "
                      f"{a['events_reopened']} time(s)); later alerts were kept, earlier ones are where they were "
                      f"moved; to rotate the log use --events-max-mb", highlight=False, soft_wrap=True)
    if a["errors"]:
        console.print(f"[red]error:[/] {a['errors']} alert(s) could not be written to {alerts} ({a['last_error']}); "
                      f"free disk space or fix the folder's permissions", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    for n in res["notify"]:
        if n["files_gone"]:
            why = ("the events file was moved or deleted while the run went on; rotate it with --events-max-mb "
                   "instead" if a["events_reopened"] else "the notifier was down for longer than --events-max-mb "
                   "holds; raise --events-max-mb or keep the notifier reachable")
            console.print(f"[yellow]warning:[/] notify {n['notify']}: {n['files_gone']} events file(s) were gone "
                          f"before their alerts were delivered ({why})", highlight=False, soft_wrap=True)
        line = (f"notify {n['notify']}: delivered {n['delivered']} (retries {n['retried']}"
                + (f", expired {n['expired']}" if n["expired"] else "") + f"), pending {n['pending']}")
        if n["pending"]:
            console.print(f"[yellow]note:[/] {line} ({n['last_error'] or 'not confirmed in time'}); they stay in "
                          f"{res['events_file']} and go out when it is reachable again (the next run)",
                          highlight=False, soft_wrap=True)
        else:
            stdout.print(line, highlight=False, soft_wrap=True)
    if res["skipped"]:
        names = "; ".join(f"{s['file']}: {s['reason']}" for s in res["skipped"][:5])
        more = f" (+{len(res['skipped']) - 5} more in the summary)" if len(res["skipped"]) > 5 else ""
        console.print(f"[red]error:[/] skipped {len(res['skipped'])} unreadable image(s): {names}{more}; replace or "
                      f"remove them and inspect those parts again", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    lat = res["latency"]
    if lat["budget_ms"] is not None:
        stdout.print(f"capture-to-decision p99 {lat['capture_to_decision_p99_ms']:.1f} ms, budget "
                     f"{lat['budget_ms']:g} ms: {lat['over_budget']} of {res['frames']} frames over", highlight=False)
        if not lat["met"]:
            console.print(f"[red]failed:[/] capture-to-decision p99 {lat['capture_to_decision_p99_ms']:.1f} ms "
                          f"is over the {lat['budget_ms']:g} ms budget; the line is slower than it must be "
                          f"(the stage table above says where the time goes)", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FAILED)


@app.command()
@handle_errors
def doctor(
    platform: Annotated[str, typer.Option(help="auto, jetson or desktop.")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the findings as JSON.")] = None,
) -> None:
    """What is present (TensorRT, CUDA, GStreamer elements per URI, cameras, Jetson) and how to fix what is not."""
    from edgead.doctor import doctor as run_doctor

    res = run_doctor(platform)
    table = Table(title="edgead doctor" + (" (Jetson)" if res["jetson"] else " (desktop)"))
    for col in ("area", "item", "status", "detail", "fix"):
        table.add_column(col)
    for r in res["rows"]:
        style = {"ok": "green", "missing": "red", "n/a": "dim"}[r["status"]]
        table.add_row(r["area"], r["item"], f"[{style}]{r['status']}", r["detail"], r["fix"])
    stdout.print(table)
    _write_json(json_out, res)
    if res["missing"]:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    sys.argv[1:] = normalize_argv(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
