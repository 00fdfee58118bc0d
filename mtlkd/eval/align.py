"""Scale-and-shift alignment of depth known only up to an affine map (numpy only).

Relative depth (and inverse depth) from monocular models is correct up to an unknown scale and shift per
image, so it is compared after the least-squares fit `s * pred + t ~ target` over valid pixels (Ranftl et
al., MiDaS, TPAMI 2022, eq. 2-3). Inverse depth is aligned where it lives, against 1 / depth, and turned
into depth afterwards, as MiDaS evaluates; the disparity is clamped at the smallest valid target
disparity's tenth so that a fit crossing zero cannot make depth infinite.
"""

from __future__ import annotations

import numpy as np

RELATIVE_MEANINGS = ("relative", "relative-inverse")


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(s, t) minimising sum over valid pixels of (s * pred + t - target)^2; (1, 0) with under two pixels."""
    p = pred[valid].astype(np.float64)
    q = target[valid].astype(np.float64)
    if p.size < 2:
        return 1.0, 0.0
    a00, a01, a11 = float((p * p).sum()), float(p.sum()), float(p.size)
    b0, b1 = float((p * q).sum()), float(q.sum())
    det = a00 * a11 - a01 * a01
    if det <= 1e-12 * max(a00 * a11, 1e-300):  # constant prediction: only the shift is defined
        return 0.0, float(q.mean())
    return (a11 * b0 - a01 * b1) / det, (a00 * b1 - a01 * b0) / det


def align_batch(pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each image of an N x ... batch of predictions aligned to its target (valid: target != 0 by default)."""
    valid = target != 0 if valid is None else valid
    out = np.empty(pred.shape, dtype=np.float32)
    for i in range(pred.shape[0]):
        s, t = fit_scale_shift(pred[i], target[i], valid[i])
        out[i] = s * pred[i] + t
    return out


def aligned_depth(pred: np.ndarray, depth: np.ndarray, meaning: str) -> np.ndarray:
    """A relative prediction as metric depth against ground-truth `depth` (0: no measurement): aligned to
    it (`relative`) or to its inverse and inverted (`relative-inverse`); metric predictions unchanged."""
    if meaning not in RELATIVE_MEANINGS:
        return pred
    valid = depth > 0
    if meaning == "relative":
        return align_batch(pred, depth, valid)
    disparity = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    aligned = align_batch(pred, disparity, valid)
    floor = np.float32(0.1 / max(float(depth[valid].max()), 1e-6)) if valid.any() else np.float32(1e-6)
    return (1.0 / np.maximum(aligned, floor)).astype(np.float32)
