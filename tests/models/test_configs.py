"""Typed network configs: JSON round trip, strict keys, preset overrides, checkpoints of the earlier format;
the public features/position-embedding path; the output-resolution switch."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numerics import SMALL_VIT, assert_kernel_close

from mtlkd.errors import ConfigError
from mtlkd.models import ModelConfig, create_model, load_model, model_config, preset_config
from mtlkd.models.config import ASPPConfig, MaskTransformerConfig, QueryRegressionConfig

DATA = Path(__file__).with_name("data")
TASKS = ["seg", "depth", "normal"]


@pytest.mark.parametrize("preset", ["vit-nano", "vit-tiny", "deeplabv3-r18"])
def test_config_round_trips_through_json(preset):
    config = model_config(preset, TASKS, 13, img_size=(64, 96))
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.img_size == (64, 96)


def test_each_head_gets_only_its_own_fields():
    config = model_config("vit-tiny", TASKS, 13)
    assert isinstance(config.heads["seg"], MaskTransformerConfig)
    assert isinstance(config.heads["depth"], QueryRegressionConfig) and config.heads["depth"].num_queries == 128
    assert not hasattr(config.heads["seg"], "num_queries")
    assert all(isinstance(h, ASPPConfig) for h in model_config("deeplabv3-r50", TASKS, 13).heads.values())


def test_misspelt_keys_fail_naming_the_known_ones():
    config = preset_config("vit-nano", TASKS, 13)
    config["backbone"]["embed_dims"] = 64
    with pytest.raises(ConfigError, match="unknown key 'embed_dims'.*embed_dim"):
        create_model(config)
    config = preset_config("vit-nano", TASKS, 13)
    config["head"]["depth"]["num_querys"] = 4
    with pytest.raises(ConfigError, match="num_querys.*num_queries"):
        ModelConfig.from_dict(config)
    with pytest.raises(ConfigError, match="unknown override 'depht'.*depth"):
        preset_config("vit-nano", ["depth"], depht=3)


def test_preset_overrides_reach_backbone_and_heads():
    config = model_config("vit-nano", TASKS, 13, depth=3, layers=2, num_queries=16, arch="cross_stitch")
    assert config.backbone.depth == 3 and config.arch == "cross_stitch"
    assert {h.layers for h in config.heads.values()} == {2}
    assert config.heads["depth"].num_queries == 16
    net = create_model(config)
    assert len(net.backbone.units) == 3


def test_a_task_subset_of_a_config_is_a_config():
    full = preset_config("vit-nano", TASKS, 13)
    stl = create_model({**full, "arch": "stl", "tasks": ["depth"]})
    assert list(stl.heads) == ["depth"]
    assert model_config("vit-nano", TASKS, 13).with_tasks(["seg"], "stl").heads.keys() == {"seg"}


@pytest.mark.numerics
def test_checkpoint_of_the_earlier_format_loads_with_the_same_outputs():
    """legacy_mtl.safetensors was written by mtlkd before typed configs (one head spec shared by every
    head, `_pos_embed` inside the backbone); its outputs on a fixed image were saved beside it."""
    from mtlkd.checkpoint import read_metadata

    meta = read_metadata(DATA / "legacy_mtl.safetensors")
    assert "kinds" not in meta["config"]["head"] and "num_queries" in meta["config"]["head"]  # the old form
    net, _ = load_model(str(DATA / "legacy_mtl.safetensors"))
    saved = np.load(DATA / "legacy_mtl_outputs.npz")
    with torch.no_grad():
        out = net(torch.from_numpy(saved["image"]), return_features=True)
    for task in TASKS:  # saved by another machine's kernels: equal up to float32 re-association
        assert_kernel_close(out[task].numpy(), saved[task], SMALL_VIT, task)
    assert_kernel_close(out["features"][-1].numpy(), saved["last_block"], SMALL_VIT, "last block")
    assert net.config.heads["seg"] == MaskTransformerConfig(layers=1)
    assert net.config.heads["normal"] == QueryRegressionConfig(layers=1, num_queries=8)


def test_position_embedding_written_out_equals_timms(monkeypatch):
    """The explicit class token + position embedding gives what timm's own (private) path gives."""
    torch.manual_seed(0)
    for arch in ("mtl", "cross_stitch"):
        net = create_model(preset_config("vit-nano", TASKS, 13, arch=arch)).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            ours = net(x)
            vits = [m for m in net.modules() if m.__class__.__name__ == "ViTBackbone"]
            for backbone in vits:  # reference: timm's own path, as the backbone called it before
                vit = backbone.vit
                monkeypatch.setattr(backbone, "tokens", lambda im, vit=vit: vit.norm_pre(
                    vit.patch_drop(vit._pos_embed(vit.patch_embed(im)))))
            reference = net(x)
        for task in TASKS:
            assert torch.allclose(ours[task], reference[task], atol=1e-6), (arch, task)


def test_empty_task_list_means_no_task_and_features_are_public():
    net = create_model(preset_config("vit-nano", TASKS, 13)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert net(x, tasks=[]) == {}
        feats = net.features(x)
        full = net(x, return_features=True)["features"]
    assert len(feats) == 2 and all(torch.equal(a, b) for a, b in zip(feats, full, strict=True))
    with pytest.raises(ConfigError, match="not edges"):
        net(x, tasks=["edges"])


@pytest.mark.parametrize(("preset", "arch", "size"), [
    ("vit-nano", "mtl", (32, 48)), ("vit-nano", "cross_stitch", (32, 32)), ("deeplabv3-r18", "mtl", (64, 96))])
def test_grid_resolution_outputs_upsample_to_the_full_ones(preset, arch, size):
    torch.manual_seed(0)
    net = create_model(preset_config(preset, TASKS, 5, img_size=size, arch=arch)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        full = net(x)
        net.full_resolution = False
        low = net(x)
    stride = net.output_stride
    assert stride == 8  # vit-nano's 8x8 patches; deeplabv3-r18's dilated output stride
    for task in TASKS:
        assert low[task].shape[-2:] == (size[0] // stride, size[1] // stride)
    up = F.interpolate(low["seg"], size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(up, full["seg"], atol=1e-5)  # class logits: exactly the full-resolution path
    # depth and normals are activated (softplus, unit length) at the grid, before upsampling: close, not equal
    depth = F.interpolate(low["depth"], size=size, mode="bilinear", align_corners=False)
    assert (depth > 0).all() and torch.allclose(depth, full["depth"], rtol=0.05, atol=0.02)
    assert torch.allclose(low["normal"].norm(dim=1), torch.ones(()), atol=1e-5)


def test_configs_are_immutable_values():
    config = model_config("vit-nano", ["depth"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.arch = "stl"  # type: ignore[misc]
