"""bf16 autocast training (``--amp bf16``) learns like FP32 on real images."""

import pytest
import torch

from edgead.errors import EdgeadError
from edgead.train import TrainRequest, train


def _run(tiny_real, out, amp, model="crad"):
    return train(TrainRequest(model=model, data=tiny_real, out=out, categories=["magnetic_tile"],
                              image_size=(128, 160), epochs=4, batch_size=8, quiet=True, validate=False, amp=amp))


@pytest.mark.parametrize("model", ["crad", "crr"])  # crr: its hard-mining gradient hook under autocast
def test_bf16_training_lowers_the_loss_like_fp32(tiny_real, tmp_path, model):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN, so CPU bf16 autocast would be emulated")
    f32, b16 = _run(tiny_real, tmp_path / "f32", "off", model), _run(tiny_real, tmp_path / "b16", "bf16", model)
    lf, lb = [r["loss"] for r in f32["curve"]], [r["loss"] for r in b16["curve"]]
    print("fp32", lf, "bf16", lb)
    assert lb[-1] < 0.8 * lb[0] and lf[-1] < 0.8 * lf[0]  # both learn
    assert abs(lb[-1] - lf[-1]) < 0.15 * lf[-1]  # to about the same loss
    assert lb != lf  # bf16 really ran (its losses differ in the last digits at least)
    assert b16["fingerprint"]["amp"] == "bf16" and "amp" not in f32["fingerprint"]
    with pytest.raises(EdgeadError, match="--amp"):
        train(TrainRequest(model="crad", data=tiny_real, out=tmp_path / "x", amp="fp8"))


def test_auto_uses_bf16_where_native_and_a_resumed_run_keeps_its_own(tiny_real, tmp_path):
    from edgead.device import native_bf16

    auto = _run(tiny_real, tmp_path / "auto", "auto")
    native = native_bf16(torch.device("cpu"))
    assert auto["amp"]["used"] == ("bf16" if native else "off")
    assert auto["fingerprint"].get("amp", "off") == auto["amp"]["used"]
    # A run trained in FP32 (before auto was the default, or with --amp off) is the same run to auto: no
    # "different run" error, and it stays FP32.
    f32 = _run(tiny_real, tmp_path / "f32", "off")
    again = _run(tiny_real, tmp_path / "f32", "auto")
    assert again["fingerprint"] == f32["fingerprint"] and "amp" not in again["fingerprint"]
    if native:  # asking for the other precision explicitly is another run
        with pytest.raises(EdgeadError, match="different run"):
            _run(tiny_real, tmp_path / "f32", "bf16")
