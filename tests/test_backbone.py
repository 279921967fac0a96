import pytest
import torch

from edgead.backbones import available_backbones, build_backbone, register_backbone
from edgead.backbones.lite0 import weights_path
from edgead.errors import EdgeadError


def test_lite0_loads_real_weights_and_is_frozen():
    bb = build_backbone("lite0", (256, 256), (8, 16))
    ref = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(bb.stem[0].weight, ref["_conv_stem.weight"])
    assert torch.equal(bb.blocks[10]._project_conv.weight, ref["_blocks.10._project_conv.weight"])
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training  # BatchNorm never leaves inference mode
    assert (bb.mean, bb.std) == ((0.5,) * 3, (0.5,) * 3)


@pytest.mark.parametrize("size", [(256, 256), (256, 320), (128, 384)])
def test_multiscale_shapes_including_non_square(size):
    bb = build_backbone("lite0", size, (8, 16))
    with torch.no_grad():
        f8, f16 = bb(torch.zeros(1, 3, *size))
    assert f8.shape == (1, 40, size[0] // 8, size[1] // 8)
    assert f16.shape == (1, 112, size[0] // 16, size[1] // 16)
    assert bb.channels == [40, 112]


def test_size_must_be_multiple_of_32():
    with pytest.raises(EdgeadError, match="multiples of 32"):
        build_backbone("lite0", (250, 256))


def test_registry_accepts_user_backbones():
    @register_backbone("test_identity")
    def _build(image_size, strides):
        return torch.nn.Identity()

    assert "test_identity" in available_backbones()
    with pytest.raises(EdgeadError, match="unknown backbone"):
        build_backbone("no_such_net", (256, 256))
