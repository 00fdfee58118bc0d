"""Cross-stitch networks: the units' initialisation and mixing, the forward contract, checkpoint and
export round trips, and training through `--method cross-stitch`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import SMALL_VIT, assert_kernel_close
from train_helpers import TASKS, fixed_batch

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.models import ARCHS, create_model, load_model, preset_config
from mtlkd.models.cross_stitch import CrossStitchNet, cross_stitch_init
from mtlkd.train.methods import create_method
from mtlkd.train.methods.base import MethodContext
from mtlkd.train.weighting import last_shared_weight


def nano_config(tasks=TASKS):
    return preset_config("vit-nano", tasks, 13 if "seg" in tasks else None, arch="cross_stitch")


def net(tasks=TASKS, seed: int = 0) -> CrossStitchNet:
    torch.manual_seed(seed)
    return create_model(nano_config(tasks)).eval()


def test_units_start_as_misra_et_al():
    assert torch.allclose(cross_stitch_init(2), torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    three = cross_stitch_init(3)
    assert torch.allclose(three.diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(three.sum(dim=1), torch.ones(3))
    assert torch.equal(cross_stitch_init(1), torch.ones(1, 1))
    model = net()
    assert ARCHS["cross_stitch"] is CrossStitchNet
    assert len(model.backbone.units) == model.backbone.depth == 2
    assert all(torch.equal(u.detach(), three) for u in model.backbone.units)
    seg, depth = (model.backbone.streams[t].state_dict() for t in ("seg", "depth"))
    assert all(torch.equal(seg[k], depth[k]) for k in seg)  # one initialisation for every stream


def test_forward_contract_like_multitasknet():
    model = net()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert set(out) == set(TASKS)
    assert out["seg"].shape == (2, 13, 32, 32) and out["depth"].shape == (2, 1, 32, 32)
    assert (out["depth"] > 0).all()
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, 32, 32), atol=1e-5)
    some = model(x, tasks=["depth"], return_features=True)
    assert set(some) == {"depth", "features"}
    assert torch.allclose(some["depth"], out["depth"], atol=1e-6)
    assert [f.shape for f in some["features"]] == [(2, 16, 32)] * 2


def test_mixing_is_the_alpha_combination_after_every_block():
    model = net(["seg", "depth"])
    with torch.no_grad():
        model.backbone.units[0].copy_(torch.tensor([[0.7, 0.3], [-0.2, 1.1]]))
        model.backbone.units[1].copy_(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    x = torch.rand(2, 3, 32, 32)
    vits = [model.backbone.streams[t].vit for t in ("seg", "depth")]
    h = [model.backbone.streams[t].tokens(model.normalize(x)) for t in ("seg", "depth")]
    means = []
    for layer in range(2):
        a = model.backbone.units[layer].detach()
        y = [vits[0].blocks[layer](h[0]), vits[1].blocks[layer](h[1])]
        h = [a[0, 0] * y[0] + a[0, 1] * y[1], a[1, 0] * y[0] + a[1, 1] * y[1]]
        means.append((h[0] + h[1])[:, 1:] / 2)
    with torch.no_grad():
        out = model(x, return_features=True)
        depth = F.softplus(model.heads["depth"](vits[1].norm(h[1])[:, 1:], (32, 32)))
    assert torch.allclose(out["depth"], depth, atol=1e-5)
    for got, want in zip(out["features"], means, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_identity_units_make_independent_single_task_networks():
    model = net(["seg", "depth"])
    with torch.no_grad():
        for unit in model.backbone.units:
            unit.copy_(torch.eye(2))
    stl = create_model({**nano_config(["seg", "depth"]), "arch": "stl", "tasks": ["depth"]}).eval()
    stl.backbone.load_state_dict(model.backbone.streams["depth"].state_dict())
    stl.heads["depth"].load_state_dict(model.heads["depth"].state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x, ["depth"])["depth"], stl(x)["depth"], atol=1e-5)


def test_units_are_the_shared_parameters_and_learn():
    model = net()
    assert last_shared_weight(model.shared_parameters()) is model.backbone.units[-1]
    model.train()
    out = model(fixed_batch()["image"])
    (out["seg"].mean() + out["depth"].mean()).backward()
    assert all(u.grad is not None and u.grad.abs().sum() > 0 for u in model.backbone.units)


def test_checkpoint_round_trip_through_load_model(tmp_path):
    model = net()
    path = save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), model_metadata(model.config.to_dict()))
    loaded, meta = load_model(str(path))
    assert isinstance(loaded, CrossStitchNet) and meta["config"]["arch"] == "cross_stitch"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(a[t], b[t]) for t in TASKS)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.numerics
def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = net()

    class Outputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return tuple(out[t] for t in TASKS)

    x = torch.rand(1, 3, 32, 32)
    torch.onnx.export(Outputs(model), (x,), str(tmp_path / "cs.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=TASKS)
    got = ort.InferenceSession(str(tmp_path / "cs.onnx")).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = Outputs(model)(x)
    for g, w in zip(got, want, strict=True):  # ONNX Runtime's kernels against torch's
        assert_kernel_close(g, w.numpy(), SMALL_VIT)


@pytest.mark.parametrize("weighting", [None, "gradnorm"])
def test_cross_stitch_method_trains(weighting):
    torch.manual_seed(0)
    config = preset_config("vit-nano", TASKS, 13)
    options = {"task_weighting": weighting} if weighting else {}
    ctx = MethodContext(config=config, tasks=TASKS, num_classes=13, class_names=None, device=torch.device("cpu"),
                        options=options, epochs=1, steps_per_epoch=8)
    method = create_method("cross-stitch", ctx)
    assert method.nets["mtl"].config.arch == "cross_stitch"
    networks = method.networks()
    assert list(networks) == ["mtl"] and networks["mtl"].stem == "model" and networks["mtl"].headline
    optimizer = torch.optim.AdamW(method.parameter_groups(2e-3), weight_decay=0.0)
    batch = fixed_batch()
    method.train(True)
    sums = []
    for step in range(8):
        loss, logs = method.training_step(batch, step, 0)
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()
        sums.append(sum(logs["mtl_loss"].values()))
    assert sums[-1] < sums[0], sums
    record = method.on_epoch_end(0, logs)
    assert set(record["task_weights"]) == set(TASKS)
    stitched = record["cross_stitch"]
    assert len(stitched) == 2 and len(stitched[0]) == 3
    assert stitched[-1] != cross_stitch_init(3).tolist()  # the units trained
