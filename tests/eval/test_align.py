"""Scale-and-shift alignment: what relative and inverse depth are scored with."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkd.eval.align import align_batch, aligned_depth, fit_scale_shift


def depth_maps(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 8.0, (3, 1, 24, 32)).astype(np.float32)
    depth[:, :, :4] = 0  # pixels without a measurement
    return depth


def test_an_affine_copy_of_depth_is_recovered_exactly():
    depth = depth_maps()
    scales, shifts = np.array([0.3, 2.0, 7.5]), np.array([-1.0, 0.4, 3.0])
    relative = (scales[:, None, None, None] * depth + shifts[:, None, None, None]).astype(np.float32)
    # float32 values up to ~60 and a fit over ~2,000 pixels: errors of a few float32 ulps of the depth
    np.testing.assert_allclose(aligned_depth(relative, depth, "relative")[depth > 0], depth[depth > 0], rtol=1e-4)


def test_an_affine_copy_of_inverse_depth_is_recovered_as_depth():
    depth = depth_maps(1)
    inverse = np.where(depth > 0, 2.5 / np.where(depth > 0, depth, 1) + 0.1, 0).astype(np.float32)
    recovered = aligned_depth(inverse, depth, "relative-inverse")
    # the fit is in disparity (1/8 .. 2 per metre); inverting multiplies the relative error by at most 1
    np.testing.assert_allclose(recovered[depth > 0], depth[depth > 0], rtol=1e-3)
    assert aligned_depth(inverse, depth, "metric") is inverse  # metric depth is compared as it is


def test_the_fit_is_least_squares_and_degenerate_inputs_are_safe():
    rng = np.random.default_rng(2)
    pred, target = rng.random(500), rng.random(500)
    valid = np.ones(500, bool)
    s, t = fit_scale_shift(pred, target, valid)
    expected = np.polyfit(pred, target, 1)
    assert (s, t) == pytest.approx(tuple(expected), rel=1e-9)
    assert fit_scale_shift(np.full(10, 3.0), np.arange(10.0), np.ones(10, bool)) == pytest.approx((0.0, 4.5))
    assert fit_scale_shift(pred, target, np.zeros(500, bool)) == (1.0, 0.0)
    assert align_batch(pred[None], target[None]).shape == (1, 500)
