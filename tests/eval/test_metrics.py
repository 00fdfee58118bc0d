"""Streaming metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkd.eval.metrics import DepthMetrics, NormalMetrics, SegMetrics
from mtlkd.tasks import TASKS


def test_seg_confusion_by_hand() -> None:
    # (gt, pred) over valid pixels: (0,0) (0,1) (1,1) (1,1) (2,0); the -1 pixel (pred 2) is ignored.
    target = np.array([[0, 0, 1], [1, 2, -1]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    m = SegMetrics(num_classes=4)  # class 3 never occurs: left out of the mean
    m.update(pred, target)
    out = m.compute()
    # IoU: class 0 = 1 / (2 + 2 - 1), class 1 = 2 / (3 + 2 - 2), class 2 = 0 / 1.
    assert out["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)
    assert out["pixel_acc"] == pytest.approx(100 * 3 / 5)


def test_depth_by_hand_zeros_excluded() -> None:
    target = np.array([0.0, 2.0, 4.0, 1.0])
    pred = np.array([5.0, 1.0, 5.0, 1.0])  # the first pixel has no ground truth
    m = DepthMetrics()
    m.update(pred, target)
    out = m.compute()
    assert out["abs_err"] == pytest.approx((1 + 1 + 0) / 3)
    assert out["rel_err"] == pytest.approx((1 / 2 + 1 / 4 + 0) / 3)


def unit(deg: float) -> list[float]:
    """A vector `deg` degrees away from +z, deliberately not unit length (metrics must normalise)."""
    rad = np.radians(deg)
    return [2 * np.sin(rad), 0.0, 2 * np.cos(rad)]


def test_normals_by_hand() -> None:
    angles = [0, 5, 20, 25, 45, 90, 100]
    pred = np.array([unit(a) for a in angles] + [[1.0, 0.0, 0.0]])
    target = np.array([[0.0, 0.0, 1.0]] * len(angles) + [[0.0, 0.0, 0.0]])  # last pixel invalid
    m = NormalMetrics()
    m.update(pred.reshape(1, 2, 4, 3), target.reshape(1, 2, 4, 3))
    out = m.compute()
    assert out["mean"] == pytest.approx(sum(angles) / 7)
    assert out["median"] == pytest.approx(25.0, abs=0.011)
    assert out["within_11.25"] == pytest.approx(100 * 2 / 7)
    assert out["within_22.5"] == pytest.approx(100 * 3 / 7)
    assert out["within_30"] == pytest.approx(100 * 4 / 7)


def test_normals_exact_angles() -> None:
    pred = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    target = np.array([[0.0, 0.0, 1.0]] * 3)
    m = NormalMetrics()
    m.update(pred, target)
    out = m.compute()
    assert out["mean"] == pytest.approx((0 + 90 + 45) / 3)
    assert out["median"] == pytest.approx(45.0, abs=0.011)
    assert out["within_30"] == pytest.approx(100 / 3)


def random_batch(rng: np.random.Generator, task: str) -> tuple[np.ndarray, np.ndarray]:
    if task == "seg":
        return rng.integers(0, 5, (2, 8, 8)), rng.integers(-1, 5, (2, 8, 8))
    if task == "depth":
        target = rng.uniform(0.5, 10, (2, 8, 8)) * (rng.random((2, 8, 8)) > 0.2)
        return rng.uniform(0.5, 10, (2, 8, 8)), target
    target = rng.normal(size=(2, 8, 8, 3)) * (rng.random((2, 8, 8, 1)) > 0.2)
    return rng.normal(size=(2, 8, 8, 3)), target


@pytest.mark.parametrize(
    ("task", "make"),
    [("seg", lambda: SegMetrics(5)), ("depth", DepthMetrics), ("normal", NormalMetrics)],
)
def test_two_batches_equal_one(task: str, make) -> None:
    pred, target = random_batch(np.random.default_rng(0), task)
    whole, split = make(), make()
    whole.update(pred, target)
    split.update(pred[:1], target[:1])
    split.update(pred[1:], target[1:])
    assert split.compute() == pytest.approx(whole.compute())


@pytest.mark.parametrize(
    ("task", "make"),
    [("seg", lambda: SegMetrics(5)), ("depth", DepthMetrics), ("normal", NormalMetrics)],
)
def test_keys_match_the_registry(task: str, make) -> None:
    # Delta and the report read these names from the registry: the accumulators must produce exactly them.
    pred, target = random_batch(np.random.default_rng(1), task)
    m = make()
    m.update(pred, target)
    assert list(m.compute()) == list(TASKS[task].metrics)
