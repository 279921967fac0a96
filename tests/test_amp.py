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
