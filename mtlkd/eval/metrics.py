"""Dataset-level metrics, accumulated batch by batch (numpy only, so exported models can be evaluated too).

Every metric is computed over all pixels of the split, never averaged per batch: segmentation from one
confusion matrix, depth errors from pixel sums, normal angles from a fine histogram (exact mean, median
to 0.01 degree).
"""

from __future__ import annotations

import numpy as np


class SegMetrics:
    """mIoU (classes present in prediction or ground truth) and pixel accuracy; label -1 ignored."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        target = np.asarray(target).reshape(-1).astype(np.int64)
        keep = (target >= 0) & (target < self.num_classes)
        index = target[keep] * self.num_classes + np.clip(pred[keep], 0, self.num_classes - 1)
        self.confusion += np.bincount(index, minlength=self.num_classes**2).reshape(self.confusion.shape)

    def compute(self) -> dict[str, float]:
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
        total = self.confusion.sum()
        return {"miou": 100.0 * miou, "pixel_acc": 100.0 * float(tp.sum() / total) if total else 0.0}


class DepthMetrics:
    """Absolute error (metres) and relative error |d - d*| / d* over pixels whose ground truth is not 0."""

    def __init__(self, **_: object):
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.count = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred = np.asarray(pred, dtype=np.float64).reshape(-1)
        target = np.asarray(target, dtype=np.float64).reshape(-1)
        valid = target != 0
        diff = np.abs(pred[valid] - target[valid])
        self.abs_sum += float(diff.sum())
        self.rel_sum += float((diff / np.abs(target[valid])).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"abs_err": self.abs_sum / n, "rel_err": self.rel_sum / n}


class NormalMetrics:
    """Angular error in degrees over pixels whose ground-truth vector is not all zero.

    Inputs are ... x 3 arrays (channel last). Mean is exact; the median comes from a 0.01-degree histogram.
    """

    BINS = 18000

    def __init__(self, **_: object):
        self.hist = np.zeros(self.BINS, dtype=np.int64)
        self.angle_sum = 0.0
        self.count = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
        target = np.asarray(target, dtype=np.float64).reshape(-1, 3)
        valid = np.abs(target).sum(axis=1) != 0
        p, t = pred[valid], target[valid]
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        angle = np.degrees(np.arccos(np.clip((p * t).sum(axis=1), -1.0, 1.0)))
        self.angle_sum += float(angle.sum())
        self.count += angle.size
        idx = np.minimum((angle * (self.BINS / 180.0)).astype(np.int64), self.BINS - 1)
        self.hist += np.bincount(idx, minlength=self.BINS)

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        cum = np.cumsum(self.hist)
        median_bin = int(np.searchsorted(cum, (self.count + 1) / 2.0)) if self.count else 0
        width = 180.0 / self.BINS

        def within(deg: float) -> float:
            return 100.0 * float(self.hist[: int(round(deg / width))].sum()) / n

        return {
            "mean": self.angle_sum / n,
            "median": (median_bin + 0.5) * width,
            "within_11.25": within(11.25),
            "within_22.5": within(22.5),
            "within_30": within(30.0),
        }
