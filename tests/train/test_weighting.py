"""Task weightings: each against a hand computation on small cases, and each training a real (tiny)
multi-task network through `--method mtl --task-weighting NAME`."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import TASKS, fixed_batch, nano_context, run_steps

from mtlkd.errors import ConfigError
from mtlkd.models import create_model, preset_config
from mtlkd.train.methods import create_method
from mtlkd.train.weighting import WEIGHTINGS, create_weighting, last_shared_weight


def losses_of(*values: float, requires_grad: bool = True) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(float(v), requires_grad=requires_grad) for t, v in zip(TASKS, values, strict=True)}


def test_registry_has_all_the_papers_weightings():
    assert {"equal", "dwa", "uw", "gradnorm", "rlw", "otw"} <= set(WEIGHTINGS)
    with pytest.raises(ValueError, match="unknown task weighting"):
        create_weighting("nope", TASKS)


# --------------------------------------------------------------------------------------------------- DWA


def test_dwa_is_one_for_the_first_two_epochs_then_the_softmax_of_loss_ratios():
    dwa = create_weighting("dwa", TASKS)
    losses = losses_of(1.0, 2.0, 3.0)
    for epoch_losses in ({"seg": 2.0, "depth": 1.0, "normal": 0.5}, {"seg": 1.0, "depth": 0.9, "normal": 0.5}):
        total, weights = dwa.combine(losses)  # epochs 0 and 1
        assert weights == dict.fromkeys(TASKS, 1.0)
        assert total.item() == pytest.approx(6.0)
        dwa.epoch_end(epoch_losses)
    # epoch 2: w_k = L_k(1) / L_k(0), lambda_k = K exp(w_k / 2) / sum exp(w_i / 2)
    ratios = [1.0 / 2.0, 0.9 / 1.0, 0.5 / 0.5]
    expected = [3 * math.exp(r / 2) / sum(math.exp(q / 2) for q in ratios) for r in ratios]
    total, weights = dwa.combine(losses)
    assert [weights[t] for t in TASKS] == pytest.approx(expected, rel=1e-6)
    assert sum(weights.values()) == pytest.approx(3.0)
    assert total.item() == pytest.approx(sum(w * v for w, v in zip(expected, [1.0, 2.0, 3.0], strict=True)), rel=1e-6)
    total.backward()
    assert losses["depth"].grad.item() == pytest.approx(expected[1], rel=1e-6)


def test_dwa_uses_the_last_two_epochs_its_temperature_and_skips_empty_epochs():
    dwa = create_weighting("dwa", TASKS, {"dwa_temperature": 0.5})
    dwa.epoch_end({})  # an OKD warm-up epoch: no MTL losses, does not count
    dwa.epoch_end({"seg": 9.0, "depth": 9.0, "normal": 9.0})
    dwa.epoch_end({"seg": 4.0, "depth": 2.0, "normal": 1.0})
    dwa.epoch_end({})
    assert dwa.combine(losses_of(1, 1, 1))[1] != dict.fromkeys(TASKS, 1.0)
    dwa.epoch_end({"seg": 2.0, "depth": 2.0, "normal": 2.0})
    ratios = [2.0 / 4.0, 2.0 / 2.0, 2.0 / 1.0]
    expected = [3 * math.exp(r / 0.5) / sum(math.exp(q / 0.5) for q in ratios) for r in ratios]
    _, weights = dwa.combine(losses_of(1, 1, 1))
    assert [weights[t] for t in TASKS] == pytest.approx(expected, rel=1e-6)

    # its state is in buffers: a resumed run continues with the same weights
    resumed = create_weighting("dwa", TASKS, {"dwa_temperature": 0.5})
    resumed.load_state_dict(dwa.state_dict())
    assert resumed.combine(losses_of(1, 1, 1))[1] == weights


# ---------------------------------------------------------------------------------------------------- UW


def test_uw_total_weights_and_gradients_match_libmtls_form():
    uw = create_weighting("uw", TASKS)
    assert torch.equal(uw.log_vars.detach(), torch.full((3,), -0.5))  # LibMTL's start: weight 0.82
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.5, -1.0, 0.0]))
    losses = losses_of(2.0, 1.0, 4.0)
    total, weights = uw.combine(losses)
    s = [0.5, -1.0, 0.0]
    expected = sum(li / (2 * math.exp(si)) + si / 2 for si, li in zip(s, [2.0, 1.0, 4.0], strict=True))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert [weights[t] for t in TASKS] == pytest.approx([1 / (2 * math.exp(si)) for si in s], rel=1e-6)
    total.backward()
    # d/ds_k (L_k / (2 e^s_k) + s_k / 2) = 1/2 - L_k / (2 e^s_k);  d/dL_k = 1 / (2 e^s_k)
    assert uw.log_vars.grad.tolist() == pytest.approx([0.5 - li / (2 * math.exp(si)) for si, li in
                                                       zip(s, [2.0, 1.0, 4.0], strict=True)], rel=1e-5)
    assert losses["seg"].grad.item() == pytest.approx(1 / (2 * math.exp(0.5)), rel=1e-6)


# ---------------------------------------------------------------------------------------------- GradNorm


def _toy_network(seed: int = 0):
    """Two shared matrices (the last is GradNorm's W) and three task losses of different scales."""
    g = torch.Generator().manual_seed(seed)
    first = torch.nn.Parameter(torch.randn(4, 4, generator=g))
    last = torch.nn.Parameter(torch.randn(3, 4, generator=g))
    bias = torch.nn.Parameter(torch.randn(3, generator=g))  # 1-D: not a candidate for W
    x = torch.randn(5, 4, generator=g)

    def losses(scale=(1.0, 2.0, 0.5)):
        h = torch.tanh(x @ first.T) @ last.T + bias  # 5 x 3
        return {t: scale[i] * (h[:, i] - i).pow(2).mean() for i, t in enumerate(TASKS)}

    return [first, last, bias], losses


def _gradnorm_reference(weights, losses, initial, layer, alpha):
    """dL_grad/dw by the definition: G_k = ||d(w_k L_k)/dW|| with a double-backward graph."""
    w = weights.detach().clone().requires_grad_(True)
    g = torch.stack([
        torch.autograd.grad(w[i] * losses[t], layer, retain_graph=True, create_graph=True)[0].norm()
        for i, t in enumerate(TASKS)
    ])
    ratio = torch.stack([losses[t].detach() for t in TASKS]) / initial
    r = ratio / ratio.mean()
    target = (g.mean() * r**alpha).detach()
    return torch.autograd.grad((g - target).abs().sum(), w)[0]


def test_gradnorm_stashed_gradient_matches_the_definition_and_the_network_sees_sum_w_l():
    shared, make_losses = _toy_network()
    gn = create_weighting("gradnorm", TASKS)
    assert gn.alpha == 1.5
    assert last_shared_weight(shared) is shared[1]
    with torch.no_grad():
        gn.weights.copy_(torch.tensor([0.5, 1.5, 1.0]))

    first = make_losses()
    initial = torch.stack([first[t].detach() for t in TASKS])
    gn.combine(first, shared=shared)  # sets L(0)
    assert torch.allclose(gn.initial_losses, initial)

    losses = make_losses(scale=(0.7, 1.9, 0.2))  # the losses moved: r != 1
    expected = _gradnorm_reference(gn.weights, losses, initial, shared[1], 1.5)
    total, weights = gn.combine(losses, shared=shared)
    assert torch.allclose(gn.last_grad, expected, rtol=1e-5, atol=1e-7)
    assert gn.last_grad.abs().sum() > 0
    assert weights == pytest.approx({"seg": 0.5, "depth": 1.5, "normal": 1.0})
    value = sum(w * losses[t].item() for w, t in zip([0.5, 1.5, 1.0], TASKS, strict=True))
    assert total.item() == pytest.approx(value, rel=1e-6)

    # one backward: w gets exactly dL_grad/dw, the network gets d(sum_k w_k L_k) with w constant
    total.backward()
    assert torch.allclose(gn.weights.grad, expected, rtol=1e-5, atol=1e-7)
    grads = [p.grad.clone() for p in shared]
    for p in shared:
        p.grad = None
    reference = make_losses(scale=(0.7, 1.9, 0.2))
    sum(w * reference[t] for w, t in zip([0.5, 1.5, 1.0], TASKS, strict=True)).backward()
    for p, grad in zip(shared, grads, strict=True):
        assert torch.allclose(grad, p.grad, rtol=1e-5, atol=1e-7)


def test_gradnorm_renormalises_to_k_after_each_step_and_honours_alpha():
    shared, make_losses = _toy_network(1)
    gn = create_weighting("gradnorm", TASKS, {"gradnorm_alpha": 0.5})
    assert gn.alpha == 0.5
    optimizer = torch.optim.SGD(list(gn.parameters()), lr=0.1)
    for _ in range(3):
        total, _ = gn.combine(make_losses(), shared=shared)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        assert gn.weights.sum().item() != pytest.approx(3.0)  # the step moved them...
        gn.after_step()
        assert gn.weights.sum().item() == pytest.approx(3.0)  # ...and the renormalisation restores K
    with pytest.raises(ValueError, match="shared"):
        gn.combine(make_losses())


def test_gradnorm_layer_of_the_vit_is_the_last_blocks_second_mlp_linear():
    net = create_model(preset_config("vit-nano", TASKS, 13))
    assert last_shared_weight(net.shared_parameters()) is net.backbone.vit.blocks[-1].mlp.fc2.weight


# --------------------------------------------------------------------------------------------------- RLW


def test_rlw_is_k_times_a_softmax_of_a_standard_normal_from_the_global_generator():
    rlw = create_weighting("rlw", TASKS)
    torch.manual_seed(123)
    total, weights = rlw.combine(losses_of(1.0, 2.0, 3.0))
    torch.manual_seed(123)
    expected = (3 * torch.softmax(torch.randn(3), dim=0)).tolist()
    assert [weights[t] for t in TASKS] == pytest.approx(expected, rel=1e-6)
    assert sum(weights.values()) == pytest.approx(3.0)
    assert total.item() == pytest.approx(expected[0] + 2 * expected[1] + 3 * expected[2], rel=1e-6)
    assert rlw.combine(losses_of(1, 1, 1))[1] != weights  # a new draw every step


# --------------------------------------------------------------------------------------------------- OTW


def test_otw_is_eq3_sums_to_nt_and_carries_no_gradient():
    otw = create_weighting("otw", TASKS)
    assert otw.temperature == 0.1
    mtl = losses_of(1.0, 0.6, 0.3)
    stl = losses_of(0.8, 0.6, 0.4)
    total, weights = otw.combine(mtl, reference=stl)
    m = [1.0 / 0.8, 0.6 / 0.6, 0.3 / 0.4]
    expected = [3 * math.exp(mi / 0.1) / sum(math.exp(mj / 0.1) for mj in m) for mi in m]
    assert all(isinstance(v, float) for v in weights.values())
    assert [weights[t] for t in TASKS] == pytest.approx(expected, rel=1e-5)
    assert sum(weights.values()) == pytest.approx(3.0)
    assert max(weights, key=weights.get) == "seg"  # the task furthest behind its single-task network
    total.backward()
    # lambda is a constant of the step: d total / d L_MTL^i = lambda_i, and nothing reaches the STL losses
    assert [mtl[t].grad.item() for t in TASKS] == pytest.approx(expected, rel=1e-5)
    assert all(stl[t].grad is None for t in TASKS)


def test_otw_temperature_option_and_without_single_task_losses_a_clear_error():
    otw = create_weighting("otw", ["seg", "depth"], {"otw_temperature": 1.0})
    _, weights = otw.combine({"seg": torch.tensor(2.0), "depth": torch.tensor(1.0)},
                             reference={"seg": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    assert weights["seg"] == pytest.approx(2 * math.exp(2) / (math.exp(2) + math.exp(1)), rel=1e-6)
    with pytest.raises(ValueError, match="otw needs single-task losses: use --method okd"):
        otw.combine({"seg": torch.tensor(2.0), "depth": torch.tensor(1.0)})


# -------------------------------------------------------------------------------- mtl with each weighting


@pytest.mark.parametrize("weighting", ["equal", "dwa", "uw", "gradnorm", "rlw"])
def test_mtl_trains_with_each_weighting(weighting):
    torch.manual_seed(0)
    method = create_method("mtl", nano_context(task_weighting=weighting))
    batch = fixed_batch()
    logs = run_steps(method, batch, steps=8)
    task_sum = [sum(log["mtl_loss"].values()) for log in logs]
    assert task_sum[-1] < task_sum[0], task_sum
    assert set(logs[-1]["task_weights"]) == set(TASKS)
    if weighting != "uw":
        assert sum(logs[-1]["task_weights"].values()) == pytest.approx(3.0, rel=1e-5)
    record = method.on_epoch_end(0, {"mtl_loss": logs[-1]["mtl_loss"], "task_weights": logs[-1]["task_weights"]})
    assert set(record["task_weights"]) == set(TASKS)


def test_mtl_with_otw_fails_at_once_with_the_message():
    with pytest.raises(ConfigError, match="use --method okd"):  # before any network is built or trained
        create_method("mtl", nano_context(task_weighting="otw"))
    with pytest.raises(ConfigError, match="use --method okd"):
        create_weighting("otw", TASKS).combine({t: torch.ones(()) for t in TASKS})
