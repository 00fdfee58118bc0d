"""DeepLabV3: dilated ResNet backbone (four stage maps), ASPP head, presets, local pretrained weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.models import BACKBONES, HEADS, PRESETS, create_model, input_size, load_model, preset_config
from mtlkd.models.config import ResNetConfig
from mtlkd.models.resnet import ASPPHead, ResNetBackbone

TASKS = ["seg", "depth", "normal"]


def test_registered():
    assert BACKBONES["resnet"] is ResNetBackbone and HEADS["aspp"] is ASPPHead
    assert PRESETS["deeplabv3-r50"].backbone.variant == "resnet50"
    assert input_size(preset_config("deeplabv3-r50", TASKS, 13)) == (288, 384)


def test_backbone_returns_four_dilated_stage_maps():
    backbone = ResNetBackbone(ResNetConfig("resnet18", img_size=(64, 96), output_stride=8)).eval()
    blocks, out = backbone(torch.rand(2, 3, 64, 96))
    assert [tuple(b.shape) for b in blocks] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 8, 12), (2, 512, 8, 12)]
    assert out is blocks[-1]
    assert backbone.feature_dims == [64, 128, 256, 512] and backbone.out_dim == 512


def test_resnet50_feature_dims():
    backbone = ResNetBackbone(ResNetConfig("resnet50", img_size=(32, 32)))
    assert backbone.feature_dims == [256, 512, 1024, 2048] and backbone.out_dim == 2048


def test_aspp_head_shapes_and_batch_of_one():
    head = ASPPHead(in_channels=32, out_channels=5, channels=16)
    assert head(torch.randn(2, 32, 6, 8), (48, 64)).shape == (2, 5, 48, 64)
    head.train()
    out = head(torch.randn(1, 32, 6, 8), (24, 32))  # image pooling has no batch norm: fine for one image
    out.sum().backward()
    assert out.shape == (1, 5, 24, 32)
    assert len(head.aspp.branches) == 4  # 1x1 + three atrous rates (12, 24, 36)
    assert [b[0].dilation for b in head.aspp.branches[1:]] == [(12, 12), (24, 24), (36, 36)]


def test_deeplabv3_r18_multi_task_forward_backward():
    config = preset_config("deeplabv3-r18", TASKS, 5, img_size=(32, 48))
    net = create_model(config).train()
    x = torch.rand(2, 3, 32, 48)
    out = net(x, return_features=True)
    assert out["seg"].shape == (2, 5, 32, 48) and out["depth"].shape == (2, 1, 32, 48)
    assert out["normal"].shape == (2, 3, 32, 48)
    assert (out["depth"] > 0).all()
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, 32, 48), atol=1e-4)
    assert len(out["features"]) == 4 and out["features"][-1].shape == (2, 512, 4, 6)
    loss = out["seg"].square().mean() + out["depth"].mean() + out["normal"].sum() * 0.01
    loss.backward()
    assert net.backbone.net.conv1.weight.grad is not None
    assert all(net.heads[t].classifier.weight.grad is not None for t in TASKS)


def test_checkpoint_round_trip(tmp_path):
    config = preset_config("deeplabv3-r18", ["seg", "depth"], 5, img_size=(32, 32))
    net = create_model(config).eval()
    save_checkpoint(tmp_path / "model.safetensors", net.state_dict(), model_metadata(config))
    loaded, meta = load_model(str(tmp_path / "model.safetensors"))
    assert meta["input_size"] == [32, 32]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x)["seg"], loaded(x)["seg"], atol=1e-5)


def test_load_pretrained_timm_weights(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    config = preset_config("deeplabv3-r18", ["seg"], 5, img_size=(32, 32))
    net = create_model(config, backbone_weights=str(tmp_path / "r18.safetensors"))
    assert torch.equal(net.backbone.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    missing, unexpected = ResNetBackbone(ResNetConfig("resnet18")).load_pretrained(tmp_path / "r18.safetensors")
    assert missing == [] and unexpected == []
    with pytest.raises(ValueError, match="resnet50"):
        ResNetBackbone(ResNetConfig("resnet50")).load_pretrained(tmp_path / "r18.safetensors")
