"""Losses against a teacher's predictions instead of labels (mtl-distill's student).

- segmentation: Hinton et al.'s soft targets, T^2 * KL(p_T || q_T) per pixel at temperature T, with the
  teacher's distribution p_T = softmax(log p / T) (so a teacher that gives probabilities and one that gives
  logits are treated alike); or cross-entropy on the teacher's classes (its argmax);
- metric depth: L1 in metres (`mtlkd.tasks.depth_loss`);
- relative and inverse depth, known only up to scale and shift: MiDaS's scale-and-shift-invariant loss
  (Ranftl et al., TPAMI 2022): each map normalised by its median and mean absolute deviation (eq. 5-6), the
  trimmed mean absolute residual over the 80% smallest residuals (L_ssitrim, eq. 7), plus alpha = 0.5 times
  the gradient-matching term on the residual at four scales (eq. 11);
- normals: 1 - cos (`mtlkd.tasks.normal_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkd.tasks import depth_loss, normal_loss

TRIM = 0.2  # MiDaS: the largest 20% of residuals per image are left out
SSI_ALPHA = 0.5  # MiDaS: weight of the gradient-matching term
SSI_SCALES = 4  # MiDaS: scales of the gradient-matching term


def soft_seg_loss(logits: torch.Tensor, probs: torch.Tensor, temperature: float = 1.0,
                  kind: str = "kl") -> torch.Tensor:
    """Student logits B x C x H x W against teacher probabilities of the same shape."""
    if kind == "ce":
        return F.cross_entropy(logits, probs.argmax(dim=1))
    log_teacher = torch.log(probs.float().clamp_min(1e-8)) / temperature
    log_teacher = log_teacher - torch.logsumexp(log_teacher, dim=1, keepdim=True)
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return kl.mean() * temperature**2


def normalise_affine(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(d - median(d)) / mean|d - median(d)| per image over valid pixels (MiDaS eq. 5-6); B x H x W."""
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        values = depth[i][valid[i]]
        if values.numel() == 0:
            continue
        shift = values.median()
        scale = (values - shift).abs().mean().clamp_min(1e-6)
        out[i] = (depth[i] - shift) / scale
    return out


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
             alpha: float = SSI_ALPHA, scales: int = SSI_SCALES) -> torch.Tensor:
    """MiDaS's L_ssitrim + alpha * L_reg for B x 1 x H x W maps; unchanged when `target` is scaled by a
    positive factor and shifted (both are normalised away)."""
    pred, target = pred[:, 0].float(), target[:, 0].float()
    valid = torch.isfinite(target) if valid is None else valid[:, 0]
    p, t = normalise_affine(pred, valid), normalise_affine(target.nan_to_num(), valid)
    residual = (p - t) * valid
    total = pred.new_zeros(())
    for i in range(pred.shape[0]):
        r = residual[i][valid[i]].abs()
        if r.numel() == 0:
            continue
        kept = torch.sort(r).values[: max(1, int(round((1 - TRIM) * r.numel())))]
        total = total + kept.sum() / (2 * r.numel())
    loss = total / pred.shape[0]
    if alpha > 0:
        loss = loss + alpha * gradient_matching(residual, valid.float(), scales)
    return loss


def gradient_matching(residual: torch.Tensor, valid: torch.Tensor, scales: int) -> torch.Tensor:
    """MiDaS eq. 11: sum over scales of |grad_x R| + |grad_y R| on valid neighbours, per valid pixel."""
    total = residual.new_zeros(())
    r, m = residual, valid
    for _ in range(scales):
        dx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        dy = (r[:, 1:, :] - r[:, :-1, :]).abs() * m[:, 1:, :] * m[:, :-1, :]
        total = total + (dx.sum() + dy.sum()) / m.sum().clamp_min(1.0)
        if min(r.shape[1:]) < 4:
            break
        r, m = r[:, ::2, ::2], m[:, ::2, ::2]
    return total


def target_loss(task: str, pred: torch.Tensor, target: torch.Tensor, depth_meaning: str | None = None,
                seg_kind: str = "kl", temperature: float = 1.0) -> torch.Tensor:
    """The loss of one task's prediction against the teacher's target (same H x W)."""
    if task == "seg":
        return soft_seg_loss(pred, target, temperature, seg_kind)
    if task == "depth":
        if depth_meaning in ("relative", "relative-inverse"):
            return ssi_loss(pred, target)
        return depth_loss(pred, target)
    if task == "normal":
        return normal_loss(pred, target)
    raise ValueError(f"no soft-target loss for task {task!r}")  # a bug: the task registry grew


def resize_target(task: str, target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A teacher's target at the student's prediction size (bilinear; probabilities stay a distribution,
    normals are re-normalised)."""
    target = target.float()
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    target = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
    return F.normalize(target, dim=1) if task == "normal" else target
