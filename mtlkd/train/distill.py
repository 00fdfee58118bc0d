"""Distillation losses as pure functions (torch only, no state).

Logit distillation (KDAM, Xu et al.):

* `cs_divergence` - the Cauchy-Schwarz divergence  D_CS(p, q) = -log( sum p q / sqrt(sum p^2 * sum q^2) )
  (eq. 4 of the paper with the standard squared norms in the denominator, which is what makes it 0 iff
  p = q up to scale). It is symmetric, >= 0, scale-invariant in each argument and finite when the
  distributions contain zeros (`eps` sits inside the log and the denominator).
* `kl_kd` - plain KD (Hinton): T^2 * KL(softmax(t/T) || softmax(s/T)) (eq. 1-3).
* `pearson_distance` / `dist_loss` - DIST (Huang et al., NeurIPS 2022): 1 - Pearson correlation, inter
  (per instance, across classes) plus intra (per class, across instances), scaled by T^2.
* `inter_intra` - eq. 5 and 6 of KDAM for any divergence.

The dense layout (`kd_view`): a prediction B x C x H x W is a set of instances, each with a distribution.

* Segmentation (class logits): an instance is a pixel and its distribution is the class distribution,
  softmax over channels at T (dim 1). Inter (eq. 5) averages D over every pixel of every image.
* Depth and normals have no class distribution. Adaptation (not in the paper, which distils NYUD
  depth/normals without saying how): the map of each output channel is flattened to B x C x (H W) and
  its distribution is a softmax over the spatial positions at T - "where is this channel's mass" in the
  image (as in channel-wise distillation). Depth uses its predicted metres, normals their unit-vector
  components, as the logits. Inter averages D over images and channels.
* Intra (eq. 6), dense form: P is the matrix whose rows are the instances above (for segmentation every
  pixel of every image, B x H x W rows; for depth and normals every image-channel pair) and whose
  columns are the distribution's entries (classes; for depth and normals, positions). Eq. 6 compares each
  column P[:, j] across *all* rows, as DIST does for dense prediction: for segmentation, class j's
  probability over every pixel of the batch. It keeps the probabilities of eq. 3 and renormalises each
  column over the rows (for the scale-invariant CS divergence and Pearson this is exactly the column of
  eq. 6; it matters only for a non-scale-invariant divergence). A batch of one image still has intra
  information for segmentation (its pixels); a single instance (one image, one channel) has none: 0.
  Comparing each column across the B images at one pixel position only (B instances per column instead
  of B x H x W) would ignore how a class is spread over an image.
* `regression="channel"` is the alternative reading for depth and normals: like segmentation, each
  pixel is an instance whose distribution is a softmax over the task's channels (normals: the three
  components); depth has one channel, so its softmax is constant 1 and depth gets no distillation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mtlkd.errors import ConfigError
from mtlkd.tasks import LOGITS, get_task

Divergence = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
REGRESSION_VIEWS = ("spatial", "channel")  # how depth and normals become distributions (`kd_view`)


def cs_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Cauchy-Schwarz divergence of non-negative p and q along `dim` (that dimension is reduced).

    -log((sum p q + eps) / (sqrt(sum p^2 * sum q^2) + eps)); 0 iff p and q are proportional, > 0 otherwise.
    Computed in float32 at least.
    """
    p, q = _float(p), _float(q)
    cross = (p * q).sum(dim)
    norms = ((p * p).sum(dim) * (q * q).sum(dim)).clamp_min(eps * eps).sqrt()
    return (torch.log(norms + eps) - torch.log(cross + eps)).clamp_min(0.0)


def pearson_distance(x: torch.Tensor, y: torch.Tensor, dim: int = -1, eps: float = 1e-20) -> torch.Tensor:
    """1 - Pearson correlation of x and y along `dim` (reduced): 0 when y = a x + b with a > 0.

    `eps` only guards a zero variance: softmax over many positions gives values that differ by 1e-6,
    where an additive 1e-8 would already bias the correlation."""
    x, y = _float(x), _float(y)
    x = x - x.mean(dim, keepdim=True)
    y = y - y.mean(dim, keepdim=True)
    corr = (x * y).sum(dim) / ((x * x).sum(dim) * (y * y).sum(dim)).sqrt().clamp_min(eps)
    return 1.0 - corr


def kl_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 3.0, dim: int = 1) -> torch.Tensor:
    """Plain KD (KDAM eq. 2): T^2 * KL(softmax(t / T) || softmax(s / T)) along `dim`, averaged over every
    other position (for B x C x H x W logits: over the pixels)."""
    log_ps = F.log_softmax(_float(student_logits) / T, dim=dim)
    log_pt = F.log_softmax(_float(teacher_logits) / T, dim=dim)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim)
    return T * T * kl.mean()


def inter_distribution(logits: torch.Tensor, T: float, dim: int = 1) -> torch.Tensor:
    """P = softmax(F / T) along the distribution axis (eq. 3): each instance's distribution."""
    return F.softmax(_float(logits) / T, dim=dim)


def intra_distribution(logits: torch.Tensor, T: float, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """The columns P[:, j] of eq. 6 in dense form, as a C x N matrix: P = softmax(F / T) along `dim`, with
    every other axis (batch and positions) flattened into the N instances, each row renormalised to sum
    to 1 over them."""
    p = inter_distribution(logits, T, dim).movedim(dim, 0).reshape(logits.shape[dim], -1)
    return p / p.sum(1, keepdim=True).clamp_min(eps)


def inter_intra(
    student: torch.Tensor,
    teacher: torch.Tensor,
    T: float = 3.0,
    divergence: Divergence = cs_divergence,
    dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KDAM eq. 5 and 6 for one task: (L_inter, L_intra), both scalars.

    `student`, `teacher`: logits with the distribution on `dim` and instances on every other axis (B x C for
    classification, B x C x H x W for segmentation, B x C x HW with dim=2 for regression maps; see
    `kd_view`). L_inter = mean over instances of D(P_S[i, :], P_T[i, :]); L_intra = mean over the entries j
    of the distribution of D(P_S[:, j], P_T[:, j]) across every instance (the dense form, module doc).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ in shape")
    inter = divergence(inter_distribution(student, T, dim), inter_distribution(teacher, T, dim), dim).mean()
    if student.numel() // student.shape[dim] < 2:
        return inter, inter.new_zeros(())
    intra = divergence(intra_distribution(student, T, dim), intra_distribution(teacher, T, dim), 1).mean()
    return inter, intra


def dist_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    T: float = 1.0,
    dim: int = 1,
    inter_weight: float = 1.0,
    intra_weight: float = 1.0,
) -> torch.Tensor:
    """DIST: T^2 * (inter_weight * (1 - Pearson) per instance across classes
    + intra_weight * (1 - Pearson) per class across instances); its paper's defaults are T = 1 and
    both weights 1."""
    inter, intra = dist_terms(student, teacher, T, dim)
    return T * T * (inter_weight * inter + intra_weight * intra)


def dist_terms(student: torch.Tensor, teacher: torch.Tensor, T: float = 1.0, dim: int = 1):
    """DIST's (inter, intra) before the T^2 scaling (Pearson is affine-invariant, so renormalising the
    columns across the batch does not change the intra term)."""
    return inter_intra(student, teacher, T, pearson_distance, dim)


def normalized_feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, dim: int | None = None,
                            eps: float = 1e-6) -> torch.Tensor:
    """KD-MTL eq. 4: || a / ||a||_2 - b / ||b||_2 ||_2^2 with the L2 norm taken per token / pixel over the
    channels, summed over channels and averaged over tokens/pixels and images (as the authors' reference
    implementation does). `dim` is the channel axis: default -1 for B x N x E tokens, 1 for B x C x h x w
    maps. Each per-position term lies in [0, 4]."""
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"student feature {tuple(student_feat.shape)} and teacher feature {tuple(teacher_feat.shape)} differ"
        )
    if dim is None:
        dim = 1 if student_feat.dim() == 4 else -1
    a = _float(student_feat)
    b = _float(teacher_feat)
    a = a / (a.pow(2).sum(dim, keepdim=True) + eps).sqrt()
    b = b / (b.pow(2).sum(dim, keepdim=True) + eps).sqrt()
    return (a - b).pow(2).sum(dim).mean()




def kd_view(task: str, pred: torch.Tensor, regression: str = "spatial") -> tuple[torch.Tensor, int]:
    """(logits, distribution axis) of a task's B x C x H x W prediction for the logit losses above:
    class logits with the classes on axis 1; for depth and normals (no class distribution) by default each
    channel's map flattened to B x C x HW with the spatial positions as the distribution axis, or with
    `regression="channel"` the channels at each pixel, like classes (see the module doc)."""
    if regression not in REGRESSION_VIEWS:
        raise ConfigError(f"regression KD view {regression!r}: expected spatial or channel")
    if get_task(task).output == LOGITS or regression == "channel":
        return pred, 1
    return pred.flatten(2), 2


def task_kd_loss(task: str, student_pred: torch.Tensor, teacher_pred: torch.Tensor, kind: str = "cs",
                 T: float = 3.0, regression: str = "spatial") -> tuple[torch.Tensor, dict[str, float]]:
    """One task's distillation loss for KDAM and its baselines, and its parts for the logs.

    cs: L_inter + L_intra with the CS divergence (eq. 5-7). kl: plain KD, T^2 KL on the instance
    distributions only (Hinton's KD has no intra term). dist: DIST's T^2 (inter + intra) with Pearson."""
    s, dim = kd_view(task, student_pred, regression)
    t, _ = kd_view(task, teacher_pred.detach(), regression)
    if kind == "cs":
        inter, intra = inter_intra(s, t, T, cs_divergence, dim)
        return inter + intra, {"inter": inter.item(), "intra": intra.item()}
    if kind == "kl":
        loss = kl_kd(s, t, T, dim)
        return loss, {"inter": loss.item(), "intra": 0.0}
    if kind == "dist":
        inter, intra = dist_terms(s, t, T, dim)
        return T * T * (inter + intra), {"inter": T * T * inter.item(), "intra": T * T * intra.item()}
    raise ConfigError(f"unknown distillation loss {kind!r}; known: cs, kl, dist")


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
