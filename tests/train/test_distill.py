"""The distillation losses: CS divergence, plain KD, DIST, KDAM's inter/intra terms, KD-MTL's feature loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtlkd.train.distill import (
    cs_divergence,
    dist_loss,
    inter_distribution,
    inter_intra,
    intra_distribution,
    kd_view,
    kl_kd,
    normalized_feature_loss,
    pearson_distance,
    task_kd_loss,
)


def _probs(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.softmax(torch.randn(*shape, generator=g), dim=-1)


# ------------------------------------------------------------------------------------- CS divergence


def test_cs_is_zero_for_equal_and_positive_otherwise():
    p, q = _probs(6, 5, seed=1), _probs(6, 5, seed=2)
    assert torch.allclose(cs_divergence(p, p), torch.zeros(6), atol=1e-6)
    assert (cs_divergence(p, q) > 1e-4).all()


def test_cs_is_symmetric_and_scale_invariant():
    p, q = _probs(4, 7, seed=3), _probs(4, 7, seed=4)
    assert torch.allclose(cs_divergence(p, q), cs_divergence(q, p), atol=1e-7)
    assert torch.allclose(cs_divergence(3 * p, q), cs_divergence(p, q), atol=1e-6)


def test_cs_matches_a_hand_computation():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    # sum pq = 0.25; sum p^2 = 0.5; sum q^2 = 0.375 -> -ln(0.25 / sqrt(0.1875)) = ln(sqrt(3))
    assert cs_divergence(p, q, dim=0).item() == pytest.approx(0.5 * math.log(3.0), abs=1e-6)


def test_cs_is_finite_with_zeros_in_the_distributions():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    d = cs_divergence(p, q)
    assert torch.isfinite(d).all() and (d > 5).all()  # disjoint supports: large but finite
    d.sum().backward()
    assert torch.isfinite(p.grad).all()


def test_cs_reduces_along_the_given_dim():
    p, q = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    assert cs_divergence(p, q, dim=1).shape == (2, 4, 5)
    assert torch.allclose(cs_divergence(p, q, dim=1), cs_divergence(p.movedim(1, -1), q.movedim(1, -1), dim=-1))


# ------------------------------------------------------------------------------------- plain KD, DIST


def test_kl_kd_matches_the_manual_formula():
    s, t, T = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), 3.0
    manual = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                ps = torch.exp(s[b, :, i, j] / T) / torch.exp(s[b, :, i, j] / T).sum()
                pt = torch.exp(t[b, :, i, j] / T) / torch.exp(t[b, :, i, j] / T).sum()
                manual += (pt * torch.log(pt / ps)).sum().item()
    manual = T * T * manual / 18
    assert kl_kd(s, t, T, dim=1).item() == pytest.approx(manual, rel=1e-5)
    assert kl_kd(s, s, T, dim=1).item() == pytest.approx(0.0, abs=1e-6)


def test_pearson_distance_is_zero_for_affine_copies():
    x = torch.randn(5, 8)
    assert torch.allclose(pearson_distance(x, 2.5 * x + 1.0), torch.zeros(5), atol=1e-6)
    assert torch.allclose(pearson_distance(x, -x), 2 * torch.ones(5), atol=1e-6)


def test_dist_loss_zero_for_identical_and_positive_otherwise():
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    assert dist_loss(s, s).item() == pytest.approx(0.0, abs=1e-6)
    assert dist_loss(s, t).item() > 0.1
    # T^2 scaling of DIST
    inter, intra = inter_intra(s, t, 2.0, pearson_distance)
    assert dist_loss(s, t, T=2.0).item() == pytest.approx(4 * (inter + intra).item(), rel=1e-6)


# --------------------------------------------------------------------------------- KDAM eq. 5 and 6


def test_inter_intra_return_scalars_and_match_their_definitions():
    s, t, T = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4), 2.0
    inter, intra = inter_intra(s, t, T)
    assert inter.shape == () and intra.shape == ()
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    # eq. 5: every pixel of every image is an instance with a class distribution
    assert inter.item() == pytest.approx(cs_divergence(ps, pt, dim=1).mean().item(), rel=1e-6)
    # eq. 6, dense: each class's column across every pixel of every image (3 x 4 x 4 = 48 instances)
    manual = torch.stack([cs_divergence(ps[:, c].flatten(), pt[:, c].flatten(), dim=0) for c in range(5)]).mean()
    assert intra.item() == pytest.approx(manual.item(), rel=1e-5)


def test_dense_intra_on_a_hand_case():
    """Two classes, one image of two pixels: P_S = [[.5, .5], [.5, .5]], P_T = [[1, 0], [0, 1]] (rows are
    pixels). Class 0's column is (.5, .5) for the student and (1, 0) for the teacher, so
    D_CS = -ln(.5 / sqrt(.5 * 1)) = ln(sqrt 2); class 1 the same: L_intra = ln(2) / 2."""
    student = torch.zeros(1, 2, 1, 2)  # uniform over the two classes at both pixels
    big = 60.0  # softmax of (+big, -big) is (1, 0) to float precision
    teacher = torch.tensor([[[[big, -big]], [[-big, big]]]])  # pixel 0 -> class 0, pixel 1 -> class 1
    inter, intra = inter_intra(student, teacher, T=1.0)
    assert intra.item() == pytest.approx(math.log(2) / 2, rel=1e-5)
    # the old per-position form saw one instance per column (one image) and gave 0 here
    assert inter.item() == pytest.approx(math.log(2) / 2, rel=1e-5)  # each pixel: (.5, .5) vs one-hot


def test_distributions_normalise_over_classes_and_across_the_batch():
    z = torch.randn(4, 6, 3, 3)
    assert torch.allclose(inter_distribution(z, 3.0).sum(1), torch.ones(4, 3, 3), atol=1e-6)
    columns = intra_distribution(z, 3.0)  # classes x (images x positions)
    assert columns.shape == (6, 4 * 3 * 3)
    assert torch.allclose(columns.sum(1), torch.ones(6), atol=1e-6)


def test_inter_intra_zero_for_equal_positive_otherwise_and_intra_zero_for_one_image():
    s, t = torch.randn(4, 5, 3, 3), torch.randn(4, 5, 3, 3)
    inter, intra = inter_intra(s, s.clone())
    assert inter.item() == pytest.approx(0, abs=1e-6) and intra.item() == pytest.approx(0, abs=1e-6)
    inter, intra = inter_intra(s, t)
    assert inter.item() > 0 and intra.item() > 0
    inter, intra = inter_intra(s[:1, :, :1, :1], t[:1, :, :1, :1])  # one instance: no intra information
    assert inter.item() > 0 and intra.item() == 0
    inter, intra = inter_intra(s[:1], t[:1])  # one image still has 9 pixels: dense intra is informative
    assert intra.item() > 0


def test_inter_intra_rejects_different_shapes():
    with pytest.raises(ValueError, match="differ"):
        inter_intra(torch.randn(2, 3), torch.randn(2, 4))


# --------------------------------------------------------------------- depth and normal adaptation


def test_kd_view_uses_classes_for_seg_and_positions_for_regression():
    seg, dim = kd_view("seg", torch.randn(2, 5, 4, 6))
    assert seg.shape == (2, 5, 4, 6) and dim == 1
    depth, dim = kd_view("depth", torch.rand(2, 1, 4, 6))
    assert depth.shape == (2, 1, 24) and dim == 2
    normal, dim = kd_view("normal", torch.randn(2, 3, 4, 6))
    assert normal.shape == (2, 3, 24) and dim == 2
    normal, dim = kd_view("normal", torch.randn(2, 3, 4, 6), regression="channel")
    assert normal.shape == (2, 3, 4, 6) and dim == 1


def test_channel_view_gives_depth_no_distillation():
    """One channel: the per-pixel softmax is 1 everywhere, so student and teacher never differ."""
    s, t = torch.rand(2, 1, 4, 6) * 5, torch.rand(2, 1, 4, 6) * 5
    loss, _ = task_kd_loss("depth", s, t, "cs", T=3.0, regression="channel")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss, _ = task_kd_loss("depth", s, t, "cs", T=3.0)
    assert loss.item() > 0


@pytest.mark.parametrize("kind", ["cs", "kl", "dist"])
@pytest.mark.parametrize("task", ["seg", "depth", "normal"])
def test_task_kd_loss_zero_when_equal_positive_otherwise(task, kind):
    channels = {"seg": 5, "depth": 1, "normal": 3}[task]
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, channels, 6, 8, generator=g)
    t = torch.randn(3, channels, 6, 8, generator=g)
    if task == "depth":
        s, t = F.softplus(s) * 3, F.softplus(t) * 3
    if task == "normal":
        s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
    s.requires_grad_(True)
    same, parts = task_kd_loss(task, s, s.detach().clone(), kind, T=1.0)
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    differ, parts = task_kd_loss(task, s, t, kind, T=1.0)
    assert differ.item() > 1e-3 and set(parts) == {"inter", "intra"}
    differ.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_task_kd_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="cs, kl, dist"):
        task_kd_loss("seg", torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2), "mse")


# -------------------------------------------------------------------------------- KD-MTL eq. 3-5


def test_normalized_feature_loss_on_maps_matches_the_formula():
    a, b = torch.randn(2, 8, 3, 4), torch.randn(2, 8, 3, 4)
    an = a / a.norm(dim=1, keepdim=True)
    bn = b / b.norm(dim=1, keepdim=True)
    manual = ((an - bn) ** 2).sum(1).mean()
    assert normalized_feature_loss(a, b).item() == pytest.approx(manual.item(), rel=1e-4)


def test_normalized_feature_loss_on_tokens_ignores_per_token_scale():
    a = torch.randn(2, 12, 16)
    scale = torch.rand(2, 12, 1) + 0.5
    assert normalized_feature_loss(a, a * scale).item() == pytest.approx(0.0, abs=1e-6)
    loss = normalized_feature_loss(a, -a)
    assert loss.item() == pytest.approx(4.0, rel=1e-4)  # opposite unit vectors: ||2u||^2 = 4
    with pytest.raises(ValueError, match="differ"):
        normalized_feature_loss(a, a[:, :6])


def test_dist_is_exact_for_nearly_uniform_spatial_distributions():
    # a depth map varying by millimetres: softmax over 1024 positions differs by ~1e-6 between positions
    depth = 2.0 + 1e-3 * torch.rand(3, 1, 32, 32)
    loss, _ = task_kd_loss("depth", depth, depth.clone(), "dist", T=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
