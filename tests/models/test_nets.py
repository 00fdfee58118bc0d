"""Networks: output shapes and value ranges, per-block features, task subsets, configs as data."""

import json

import pytest
import torch

from mtlkd.models import count_parameters, create_model, load_model, preset_config
from mtlkd.models.heads import MaskTransformerHead, QueryRegressionHead

TASKS = ["seg", "depth", "normal"]


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return create_model(preset_config("vit-nano", TASKS, num_classes=5)).eval()


def test_outputs_have_input_size_and_conventions(nano):
    x = torch.rand(2, 3, 32, 32)
    out = nano(x)
    assert set(out) == set(TASKS)
    assert out["seg"].shape == (2, 5, 32, 32)
    assert out["depth"].shape == (2, 1, 32, 32)
    assert out["normal"].shape == (2, 3, 32, 32)
    assert (out["depth"] > 0).all()
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)


def test_requested_tasks_only_and_features(nano):
    out = nano(torch.rand(1, 3, 32, 32), tasks=["depth"], return_features=True)
    assert set(out) == {"depth", "features"}
    depth = nano.config.backbone.depth
    assert len(out["features"]) == depth
    grid = 32 // 8
    assert all(f.shape == (1, grid * grid, 32) for f in out["features"])


def test_unrequested_heads_do_not_run(nano, monkeypatch):
    called = []
    monkeypatch.setattr(nano.heads["seg"], "forward", lambda *a, **k: called.append(1))
    nano(torch.rand(1, 3, 32, 32), tasks=["depth", "normal"])
    assert not called


def test_config_is_json_and_rebuilds_the_same_network(nano, tmp_path):
    from mtlkd.checkpoint import model_metadata, save_checkpoint

    config = json.loads(json.dumps(nano.config.to_dict()))
    path = save_checkpoint(tmp_path / "m.safetensors", nano.state_dict(), model_metadata(config))
    loaded, meta = load_model(str(path))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = nano(x), loaded(x)
    for task in TASKS:
        assert torch.equal(a[task], b[task])
    assert meta["tasks"] == TASKS and meta["input_size"] == [32, 32]


def test_single_task_net_has_one_head_and_mtl_shares_backbone():
    cfg = preset_config("vit-tiny", TASKS, num_classes=13)
    mtl = count_parameters(create_model(cfg))
    stl = sum(count_parameters(create_model({**cfg, "arch": "stl", "tasks": [t]})) for t in TASKS)
    backbone = count_parameters(create_model(cfg).backbone)
    assert stl - mtl == pytest.approx(2 * backbone, rel=1e-6)
    with pytest.raises(ValueError):
        create_model({**cfg, "arch": "stl"})


def test_heads_match_the_paper_design():
    seg = MaskTransformerHead(embed_dim=32, out_channels=7, grid=(2, 3), layers=2, num_heads=2)
    assert seg.decoder.queries.shape == (1, 7, 32)  # one learned query per class
    assert len(seg.decoder.blocks) == 2
    reg = QueryRegressionHead(embed_dim=32, out_channels=3, grid=(2, 3), layers=2, num_heads=2)
    assert reg.decoder.queries.shape == (1, 128, 32)  # N_reg = 128
    out = reg(torch.rand(2, 6, 32), size=(16, 24))
    assert out.shape == (2, 3, 16, 24)


def test_pretrained_backbone_loads_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    cfg = preset_config("vit-nano", ["depth"])
    donor = create_model(cfg).backbone.vit
    state = {k: v.clone() for k, v in donor.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 32)  # a classifier head is dropped
    save_file(state, str(tmp_path / "vit.safetensors"))
    model = create_model(cfg, backbone_weights=str(tmp_path / "vit.safetensors"))
    assert torch.equal(model.backbone.vit.blocks[0].attn.qkv.weight, donor.blocks[0].attn.qkv.weight)


def test_pretrained_position_embedding_is_resampled(tmp_path):
    from safetensors.torch import save_file

    small = create_model(preset_config("vit-nano", ["depth"])).backbone.vit
    save_file({k: v.clone() for k, v in small.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    bigger = create_model(preset_config("vit-nano", ["depth"], img_size=(48, 64)),
                          backbone_weights=str(tmp_path / "vit.safetensors"))
    assert bigger.backbone.vit.pos_embed.shape[1] == 1 + 6 * 8


def test_create_model_by_name_as_timm_users_expect():
    from mtlkd.models import list_models

    assert {"vit-tiny", "vit-micro", "vit-nano", "deeplabv3-r50"} <= set(list_models())
    net = create_model("vit-nano")
    assert net.tasks == ["seg", "depth", "normal"] and net.config.num_classes == 13
    depth_only = create_model("vit-nano", tasks=["depth"])
    assert list(depth_only.heads) == ["depth"] and depth_only.config.num_classes is None
    five = create_model("vit-nano", tasks=["seg"], class_names=["a", "b", "c", "d", "e"])
    assert five(torch.rand(1, 3, 32, 32))["seg"].shape == (1, 5, 32, 32)
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("vit-huge")


def test_preset_config_without_classes_for_segmentation_fails_at_once():
    with pytest.raises(ValueError, match="num_classes"):
        preset_config("vit-nano", ["seg", "depth"])


def test_create_model_pretrained_starts_from_the_bundled_backbone():
    from safetensors.torch import load_file

    from mtlkd.models.pretrained import pretrained_backbone

    net = create_model("vit-micro", tasks=["depth"], pretrained=True)
    bundled = load_file(str(pretrained_backbone("vit-micro")))
    own = net.backbone.vit.state_dict()
    assert all(torch.equal(own[k], v) for k, v in bundled.items())


def test_regression_heads_normalise_their_query_products_in_every_vit_preset():
    from mtlkd.models.presets import PRESETS

    for name, preset in PRESETS.items():
        if preset.regression_head.kind == "query_regression":
            assert preset.regression_head.product_norm, name
    torch.manual_seed(0)
    net = create_model(preset_config("vit-nano", ["depth", "normal"]))
    head = net.heads["normal"]
    seen = {}
    head.decoder.register_forward_hook(lambda module, args, out: seen.update(products=out))
    head.mlp.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    net(torch.rand(2, 3, 32, 32))
    # what the MLP reads: each patch's N_reg products at zero mean and unit spread (LayerNorm at its init:
    # spread sqrt(var / (var + eps)), eps = 1e-5, which the products' small variance makes visibly below 1)
    var = seen["products"].var(dim=-1, unbiased=False)
    assert seen["x"].mean(dim=-1).abs().max() < 1e-5
    torch.testing.assert_close(seen["x"].std(dim=-1, unbiased=False), (var / (var + 1e-5)).sqrt(), rtol=1e-4, atol=0)
    # a file written before the option existed keeps its head as it was (no norm, the same weight names)
    legacy = QueryRegressionHead(net.backbone.out_dim, 3, net.backbone.grid, 1, 2, 8)
    assert isinstance(legacy.product_norm, torch.nn.Identity)
    assert not any(k.startswith("product_norm") for k in legacy.state_dict())
