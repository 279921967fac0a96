"""A model variant chosen on the validation split before the full training, never on test images.

A model that declares ``variants`` (name -> config overrides; the first is its configured form) gets
each trained for a few epochs (``PROBE_EPOCHS``, the same seed, split and data as the run) into
``RUN/probes/<name>``; each probe is scored on the run's validation set (held-out normals + synthetic
anomalies) and the full run trains the winner. As with post-processing (``edgead.post_select``), the
best probe replaces the configured variant only when a paired bootstrap over the validation images
finds it better in at least ``post_select.CONFIDENCE`` of the resamples. The probes are run folders
of their own, so running the command again reuses them (the same choice, no retraining).

Why it exists: CCAD copies anomalies through its stride-8 shortcut on some sets (the validation score
falls epoch after epoch) and needs that shortcut for defects of a few pixels on others; which one a
line's parts are is a property of the data, so it is measured on the data. It is opt-in (``--variant
auto``): on magnetic_tile the validation set with full-strength anomalies chose CCAD's bottleneck and the
real defects preferred the shortcut; on the graded validation set (the default since) the same probes
keep the shortcut on both sets measured (``scripts/variant_choice.py``), so probing costs 10 epochs there
for the configured variant (README, CCAD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError

PROBE_EPOCHS = 5
PROBES = "probes"
MODES = ("auto", "fixed")


def resolve(req, cls, world, train_fn: Callable) -> tuple[object, dict | None]:
    """(the request the full run trains, the record of the choice or None): ``req.variant`` is ``auto`` (probe and
    choose), ``fixed`` (as configured) or a variant's name."""
    if req.variant == "fixed" or not cls.variants:
        if req.variant not in MODES:
            raise EdgeadError(f"--variant {req.variant!r}: model {req.model!r} has no variants; use auto or fixed")
        return req, None
    names = list(cls.variants)
    if req.variant != "auto":
        if req.variant not in cls.variants:
            raise EdgeadError(f"--variant {req.variant!r}: model {req.model!r} has {', '.join(names)} "
                              f"(or auto, fixed)")
        return _with(req, cls.variants[req.variant]), {"chosen": req.variant, "by": "--variant",
                                                       "config": cls.variants[req.variant]}
    if {k for v in cls.variants.values() for k in v} & set(req.model_config):
        return req, None  # the user set the variant's keys (--set): theirs, not probed
    if not (req.validate and req.holdout > 0 and not req.shots):
        return req, None  # nothing held out to choose on: the configured variant
    epochs = min(PROBE_EPOCHS, req.epochs or cls.train_defaults()["epochs"])
    runs = {}
    for name in names:
        probe = replace(_with(req, cls.variants[name]), out=Path(req.out) / PROBES / name, epochs=epochs,
                        post="fixed", select="last", patience=None, on_epoch=None, variant="fixed")
        runs[name] = train_fn(probe, world)
    from edgead import distributed

    record = decide(req, names, runs, cls) if world.main else None
    record = distributed.gather(world, record)[0]  # rank 0's choice, for every process
    return _with(req, cls.variants[record["chosen"]]), record


def _with(req, overrides: dict):
    """The request with a variant's config; keys the user set (--set) stay theirs."""
    return replace(req, model_config={**overrides, **req.model_config})


def decide(req, names: list[str], runs: dict[str, dict], cls) -> dict:
    """The probes' validation numbers, the best one and whether it beats the configured variant beyond noise."""
    from edgead.post_select import BOOTSTRAP, CONFIDENCE, paired_bootstrap
    from edgead.runs import load_model
    from edgead.validation import ValidationSet

    first = runs[names[0]]
    pre = Preprocess.from_dict(first["preprocess"])
    val = ValidationSet.of_run(first, pre)
    if val is None:
        raise EdgeadError(f"{req.out}: no validation set from its held-out normals; use --variant fixed")
    outputs = {n: val.predict(load_model(Path(req.out) / PROBES / n)[0], pre) for n in names}
    scores = {n: val.metrics(*outputs[n])["val_score"] for n in names}
    default = names[0]
    best = max(names, key=lambda n: (scores[n], n == default))  # a tie keeps the configured variant
    test = paired_bootstrap(val, outputs[best], outputs[default]) if best != default else None
    chosen = best if test is not None and test["p_better"] >= CONFIDENCE else default
    epochs = first["train"]["epochs"]
    return {"chosen": chosen, "by": "validation", "config": cls.variants[chosen], "default": default,
            "candidate": best, "probe_epochs": epochs, "val_score": scores,
            "curves": {n: [r.get("val_score") for r in runs[n]["curve"]] for n in names}, "bootstrap": test,
            "rule": f"each variant trained {epochs} epochs on the run's data and seed; the best on validation "
                    f"replaces the configured one only when it beats it in >= {CONFIDENCE:.0%} of {BOOTSTRAP} "
                    f"paired bootstrap resamples of the validation images"}

