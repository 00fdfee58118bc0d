"""OKD: the AFD loss and its variants, OTW inside the method, the warm-up, what is validated and saved,
and short training runs of every variant."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import TASKS, fixed_batch, nano_context, run_steps

from mtlkd.train.methods import create_method
from mtlkd.train.methods.base import forward, task_losses
from mtlkd.train.methods.okd import AFD_VARIANTS, AdaptiveFeatureDistillation


def okd(epochs: int = 10, **options):
    torch.manual_seed(0)
    options.setdefault("warmup", 0)
    return create_method("okd", nano_context(epochs=epochs, **options))


def random_features(layers: int = 3, tasks: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mtl = [torch.randn(2, 4, 8, generator=g, requires_grad=True) for _ in range(layers)]
    stl = [[torch.randn(2, 4, 8, generator=g, requires_grad=True) for _ in range(layers)] for _ in range(tasks)]
    return mtl, stl


# ----------------------------------------------------------------------------------------------------- AFD


def test_afd_is_eq2_as_a_per_layer_mean_squared_error_summed_over_layers():
    afd = AdaptiveFeatureDistillation("learned", TASKS, 3)
    mtl, stl = random_features()
    omega = afd.omega.detach()
    expected = sum(
        ((mtl[k] - sum(omega[k, i] * stl[i][k] for i in range(3))) ** 2).mean() for k in range(3)
    )
    assert afd(mtl, stl).item() == pytest.approx(expected.item(), rel=1e-5)


def test_afd_is_zero_when_the_mtl_features_are_the_omega_combination():
    afd = AdaptiveFeatureDistillation("learned", TASKS, 3)
    _, stl = random_features()
    omega = afd.omega.detach()
    mtl = [sum(omega[k, i] * stl[i][k].detach() for i in range(3)) for k in range(3)]
    assert afd(mtl, stl).item() == pytest.approx(0.0, abs=1e-10)


def test_omega_is_randomly_initialised_in_0_to_2_over_nt():
    torch.manual_seed(1)
    a = AdaptiveFeatureDistillation("learned", TASKS, 12).omega.detach()
    b = AdaptiveFeatureDistillation("learned", TASKS, 12).omega.detach()
    assert a.shape == (12, 3)
    assert not torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 2 / 3


def test_afd_sends_no_gradient_into_the_single_task_features_but_into_omega_and_the_mtl_features():
    afd = AdaptiveFeatureDistillation("learned", TASKS, 3)
    mtl, stl = random_features()
    afd(mtl, stl).backward()
    assert all(f.grad is None for per_task in stl for f in per_task)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in mtl)
    assert afd.omega.grad is not None and afd.omega.grad.abs().sum() > 0


def test_afd_alone_reaches_the_mtl_backbone_and_omega_but_not_the_stl_networks():
    method = okd()
    batch = fixed_batch()
    mtl = forward(method.nets["mtl"], batch["image"], TASKS, return_features=True)
    stl = [forward(method.nets[f"stl_{t}"], batch["image"], [t], return_features=True)["features"] for t in TASKS]
    method.afd(mtl["features"], stl).backward()
    for t in TASKS:
        assert all(p.grad is None for p in method.nets[f"stl_{t}"].parameters())
    assert method.afd.omega.grad.abs().sum() > 0
    backbone_grads = [p.grad for p in method.nets["mtl"].backbone.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in backbone_grads)
    assert all(p.grad is None for p in method.nets["mtl"].heads.parameters())  # features come before the heads


def test_the_stl_networks_learn_from_their_own_loss_only():
    """The full OKD loss gives each single-task network exactly the gradient of its own task loss: no
    leak through AFD (detached features) nor through OTW (weights without gradient)."""
    method = okd()
    batch = fixed_batch()
    method.train(True)
    loss, logs = method.training_step(batch, 0, 0)
    assert logs["afd_loss"] > 0
    loss.backward()
    full = {n: p.grad.clone() for t in TASKS for n, p in method.nets[f"stl_{t}"].named_parameters(prefix=t)}
    for t in TASKS:
        net = method.nets[f"stl_{t}"]
        net.zero_grad(set_to_none=True)
        task_losses(forward(net, batch["image"], [t]), batch, [t])[t].backward()
        for name, p in net.named_parameters(prefix=t):
            assert torch.allclose(full[name], p.grad, rtol=1e-5, atol=1e-8), name


@pytest.mark.parametrize("variant", AFD_VARIANTS)
def test_each_variants_omega(variant):
    torch.manual_seed(0)
    afd = AdaptiveFeatureDistillation(variant, TASKS, 4)
    omega = afd.effective_omega()
    if variant == "none":
        assert not afd.enabled and afd.report() == [] and list(afd.parameters()) == []
        return
    rows = 1 if variant == "last" else 4
    assert omega.shape == (rows, 3)
    assert len(afd.report()) == rows and set(afd.report()[0]) == set(TASKS)
    if variant == "equal":
        assert torch.equal(omega, torch.ones(4, 3))
        assert list(afd.parameters()) == []  # fixed, not trained
    elif variant == "softmax":
        assert torch.allclose(omega.sum(dim=1), torch.ones(4))
        assert torch.allclose(omega, torch.softmax(afd.omega, dim=1))
    elif variant == "select":
        assert torch.equal(omega.detach().sum(dim=1), torch.ones(4))
        assert set(omega.detach().unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(omega.detach().argmax(dim=1), afd.omega.detach().argmax(dim=1))
    elif variant in ("learned", "last"):
        assert torch.equal(omega, afd.omega)


def test_select_is_one_hot_forward_and_still_trains_omega():
    afd = AdaptiveFeatureDistillation("select", TASKS, 3)
    mtl, stl = random_features()
    chosen = afd.effective_omega().detach().argmax(dim=1)
    expected = sum(((mtl[k] - stl[int(chosen[k])][k]) ** 2).mean() for k in range(3))
    loss = afd(mtl, stl)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert afd.omega.grad is not None and afd.omega.grad.abs().sum() > 0  # straight-through


def test_last_distils_only_the_penultimate_block():
    afd = AdaptiveFeatureDistillation("last", TASKS, 3)
    assert afd.layers == [1]
    mtl, stl = random_features()
    before = afd(mtl, stl).item()
    mtl[0] = mtl[0] + 100.0
    mtl[2] = mtl[2] + 100.0  # the last block is not distilled (the paper: "the penultimate layer only")
    stl[1][2] = stl[1][2] - 50.0
    assert afd(mtl, stl).item() == pytest.approx(before, rel=1e-6)
    mtl[1] = mtl[1] + 1.0
    assert afd(mtl, stl).item() != pytest.approx(before, rel=1e-3)


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="--afd everything: expected one of learned, equal"):
        okd(afd="everything")


# ------------------------------------------------------------------------------------------- the method


def test_default_weighting_is_otw_and_an_explicit_choice_wins():
    assert okd().weighting_name == "otw"
    assert okd(task_weighting=None).weighting_name == "otw"
    assert okd(task_weighting="equal").weighting_name == "equal"
    assert okd().afd.variant == "learned"
    assert create_method("okd", nano_context()).warmup_steps == 1  # the paper's 2.5% of 10 epochs of 4 steps


def test_step_logs_and_otw_weights_follow_eq3_from_the_logged_losses():
    method = okd()
    loss, logs = method.training_step(fixed_batch(), 0, 0)
    assert set(logs) == {"stl_loss", "mtl_loss", "task_weights", "afd_loss"}
    weights = logs["task_weights"]
    assert sum(weights.values()) == pytest.approx(3.0, rel=1e-5)
    m = {t: logs["mtl_loss"][t] / logs["stl_loss"][t] for t in TASKS}
    z = sum(math.exp(v / 0.1) for v in m.values())
    assert weights == pytest.approx({t: 3 * math.exp(m[t] / 0.1) / z for t in TASKS}, rel=1e-4)
    # eq. 1
    expected = logs["afd_loss"] + sum(logs["stl_loss"].values()) + sum(
        weights[t] * logs["mtl_loss"][t] for t in TASKS)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_warmup_is_counted_in_steps_of_the_schedule():
    from mtlkd.errors import ConfigError
    from mtlkd.train.methods.okd import OKDOptions

    paper = OKDOptions()
    assert paper.warmup == 5 / 200
    assert paper.warmup_steps(200 * 50) == 5 * 50  # the paper's 5 of 200 epochs, whatever an epoch's steps
    assert paper.warmup_steps(8 * 16) == 4  # 3.2 steps rounded up: a fraction above 0 warms up at least a step
    assert OKDOptions(warmup=0).warmup_steps(128) == 0
    assert OKDOptions(warmup=16).warmup_steps(128) == 16  # a whole number: steps (here one epoch of 16)
    assert OKDOptions(warmup=0.5).warmup_steps(10) == 5
    for bad in (-0.1, 1.5, 20.25):
        with pytest.raises(ConfigError, match="--warmup"):
            OKDOptions(warmup=bad)


def test_warmup_trains_only_the_single_task_networks_until_its_last_step():
    method = okd(warmup=6)  # one epoch (4 steps) and half of the next
    assert method.warmup_steps == 6
    method.train(True)
    loss, logs = method.training_step(fixed_batch(), 5, 1)  # the warm-up's last step, in epoch 1
    assert set(logs) == {"stl_loss"}
    loss.backward()
    assert all(p.grad is None for p in method.nets["mtl"].parameters())
    assert method.afd.omega.grad is None
    assert all(p.grad is not None for t in TASKS for p in method.nets[f"stl_{t}"].parameters())
    _, logs = method.training_step(fixed_batch(), 6, 1)  # the next step: joint
    assert "mtl_loss" in logs and "task_weights" in logs
    assert method.on_epoch_end(0, {"stl_loss": logs["stl_loss"]})["okd_phase"] == "stl_warmup"
    assert "mtl" not in method.trained_networks(0) and "mtl" in method.trained_networks(1)
    assert method.on_epoch_end(1, logs)["okd_phase"] == "joint"  # partly warm-up, partly joint


def test_warmup_longer_than_the_run_is_clamped_with_a_warning(capsys):
    method = okd(epochs=3, warmup=12)  # every step of 3 epochs of 4
    assert method.warmup_steps == 8  # the multi-task network keeps the last epoch
    assert "warm-up" in capsys.readouterr().err
    assert okd(epochs=1, warmup=0.5).warmup_steps == 0


def test_validated_and_saved_networks():
    method = okd()
    networks = method.networks()
    assert list(networks) == ["mtl", "stl_seg", "stl_depth", "stl_normal"]
    assert networks["mtl"].tasks == TASKS and networks["stl_depth"].tasks == ["depth"]
    stems = {n.stem: n.net for n in networks.values()}
    assert set(stems) == {"model", "stl_seg", "stl_depth", "stl_normal"}
    assert [n for n, t in networks.items() if t.headline] == ["mtl"]
    assert stems["model"].config.arch == "mtl" and stems["stl_seg"].config.arch == "stl"
    assert stems["stl_seg"].tasks == ["seg"]


def test_epoch_record_has_task_weights_and_omega_per_layer():
    method = okd(afd="softmax")
    _, logs = method.training_step(fixed_batch(), 0, 0)
    record = method.on_epoch_end(0, logs)
    assert set(record["task_weights"]) == set(TASKS)
    assert len(record["omega"]) == 2  # vit-nano has two blocks
    assert all(sum(row.values()) == pytest.approx(1.0) for row in record["omega"])
    assert "omega" not in okd(afd="none").on_epoch_end(0, logs)


@pytest.mark.parametrize("variant", AFD_VARIANTS)
def test_okd_trains_with_each_afd_variant(variant):
    method = okd(afd=variant)
    logs = run_steps(method, fixed_batch(), steps=6, epoch=0)
    mtl = [sum(log["mtl_loss"].values()) for log in logs]
    stl = [sum(log["stl_loss"].values()) for log in logs]
    assert mtl[-1] < mtl[0] and stl[-1] < stl[0], (mtl, stl)
    if variant != "none":
        assert logs[-1]["afd_loss"] > 0


@pytest.mark.parametrize("weighting", ["equal", "dwa", "uw", "gradnorm", "rlw"])
def test_okd_with_another_weighting(weighting):
    method = okd(task_weighting=weighting)
    logs = run_steps(method, fixed_batch(), steps=2, epoch=0)
    assert set(logs[-1]["task_weights"]) == set(TASKS)
    method.on_epoch_end(0, logs[-1])


def test_okd_end_to_end_with_the_trainer(tmp_path):
    """Two epochs (one warm-up) through the real trainer: history, plots, and every network saved."""
    from mtlkd.data.synthetic import write_synthetic
    from mtlkd.models import load_model
    from mtlkd.train.trainer import TrainOptions, train

    data = write_synthetic(tmp_path / "data", n_train=4, n_val=2, size=(32, 32), progress=False)
    run = train(TrainOptions(
        dataset="synthetic", data_dir=str(data), out=str(tmp_path / "run"), method="okd", preset="vit-nano",
        epochs=2, batch_size=2, device="cpu", augment=False,
        method_options={"warmup": 2},  # one epoch: 4 images, batches of 2
    ))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["okd_phase"] for r in history] == ["stl_warmup", "joint"]
    assert "mtl_loss" not in history[0]["train"] and "mtl_loss" in history[1]["train"]
    assert set(history[1]["task_weights"]) == set(TASKS)
    assert len(history[1]["omega"]) == 2
    assert set(history[1]["val"]) == {"mtl", "stl_seg", "stl_depth", "stl_normal"}
    for name in ("curves.png", "task_weights.png", "mtl_vs_stl.png", "omega.png"):
        assert (run / name).is_file(), name
    model, meta = load_model(str(run / "model.safetensors"))
    assert meta["tasks"] == TASKS
    for t in TASKS:
        stl, meta = load_model(str(run / f"stl_{t}.safetensors"))
        assert meta["tasks"] == [t]


def test_every_backbone_starts_from_the_same_weights_unless_switched_off():
    method = okd()
    mtl = method.nets["mtl"].backbone.state_dict()
    for task in TASKS:
        stl = method.nets[f"stl_{task}"].backbone.state_dict()
        assert all(torch.equal(mtl[k], stl[k]) for k in mtl)
    method = okd(same_init=False)
    stl = method.nets["stl_seg"].backbone.state_dict()
    assert not all(torch.equal(v, stl[k]) for k, v in method.nets["mtl"].backbone.state_dict().items())
