"""A model variant chosen on the validation split: probes trained on the run's data, scored on its held-out normals
+ synthetic anomalies, the choice recorded and kept on a rerun; a named variant or a --set key skips the probes."""

import json

import pytest

from edgead.errors import EdgeadError
from edgead.models import model_class
from edgead.post_select import CONFIDENCE
from edgead.runs import load_model
from edgead.train import TrainRequest, train
from edgead.variant_select import PROBES


def _request(data, out, **kw) -> TrainRequest:
    kw = {"epochs": 2, **kw}
    return TrainRequest(model="ccad", data=data, out=out, categories=["magnetic_tile"], image_size=(64, 96),
                        batch_size=4, holdout=0.25, quiet=True, **kw)


def test_probes_choose_on_validation_and_a_rerun_keeps_the_choice(tiny_real, tmp_path):
    variants = model_class("ccad").variants
    out = tmp_path / "run"
    info = train(_request(tiny_real, out, variant="auto"))
    vs = info["variant_selection"]
    assert vs["by"] == "validation" and set(vs["val_score"]) == set(variants) and vs["default"] == "shortcut"
    for name in variants:  # each probe is a finished run of the same data and seed, with the variant's config
        probe = json.loads((out / PROBES / name / "run.json").read_text())
        assert probe["status"] == "trained" and probe["train"]["epochs"] == 2 == vs["probe_epochs"]
        assert probe["data"]["holdout_files"] == info["data"]["holdout_files"]
        assert {k: probe["model_config"][k] for k in variants[name]} == variants[name]
        # the selection scored the probe's final weights on the same validation set as its training curve did
        assert vs["val_score"][name] == pytest.approx(probe["curve"][-1]["val_score"], abs=2e-3)
    best = max(vs["val_score"], key=vs["val_score"].get)
    assert vs["candidate"] == best or vs["val_score"][best] == vs["val_score"]["shortcut"]
    if vs["chosen"] != "shortcut":  # replacing the configured variant takes a win beyond the validation noise
        assert vs["bootstrap"]["p_better"] >= CONFIDENCE
    elif vs["bootstrap"] is not None:
        assert vs["bootstrap"]["p_better"] < CONFIDENCE
    model, run = load_model(out)
    assert {k: run["model_config"][k] for k in vs["config"]} == vs["config"] == variants[vs["chosen"]]
    assert model.up.in_channels == (2 if vs["config"]["skip"] else 1) * model.cfg.dim
    assert json.loads((out / "run.json").read_text())["variant_selection"] == vs

    stamps = {p: p.stat().st_mtime_ns for p in (out / PROBES).rglob("weights.safetensors")}
    again = train(_request(tiny_real, out, variant="auto"))  # the same command: probes and run reused, the same choice
    assert again["variant_selection"]["chosen"] == vs["chosen"] and len(stamps) == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / PROBES).rglob("weights.safetensors")}


def test_a_named_variant_or_a_set_key_trains_without_probes(tiny_real, tmp_path):
    info = train(_request(tiny_real, tmp_path / "named", variant="bottleneck", epochs=1))
    assert info["variant_selection"] == {"chosen": "bottleneck", "by": "--variant",
                                         "config": {"skip": False, "drop": 0.3}}
    assert info["model_config"]["skip"] is False and not (tmp_path / "named" / PROBES).exists()
    info = train(_request(tiny_real, tmp_path / "set", model_config={"skip": False}, variant="auto", epochs=1))
    assert "variant_selection" not in info and info["model_config"]["drop"] == 0.0
    assert not (tmp_path / "set" / PROBES).exists()
    info = train(_request(tiny_real, tmp_path / "default", epochs=1))  # the default: as configured, no probes
    assert "variant_selection" not in info and info["model_config"]["skip"] is True
    assert not (tmp_path / "default" / PROBES).exists()
    with pytest.raises(EdgeadError, match="--variant 'wide'.*shortcut, bottleneck"):
        train(_request(tiny_real, tmp_path / "bad", variant="wide"))
    with pytest.raises(EdgeadError, match="has no variants"):
        train(TrainRequest(model="crad", data=tiny_real, out=tmp_path / "crad", variant="bottleneck", quiet=True))
