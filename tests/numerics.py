"""Tolerances for comparing float32 results that different kernels computed: an error model, not a figure.

Two correct float32 implementations of one network (another CPU's kernels, another graph optimisation,
the same weights exported to ONNX) differ by rounding alone. A dot product of `reduction` terms summed in
another order changes by about sqrt(reduction) unit roundoffs (2**-24) of the terms' magnitude (rounding
errors walk at random); each of `layers` such steps adds its own, and normalisations and softmax amplify
what reaches them by up to `amplification`. `fp32_kernel_bound` is four times that product, a bound
rather than a typical value, *relative to the output's scale* (its largest magnitude): an absolute
tolerance of 1e-6 on values of 0.2 is four ulps, less than another kernel changes.

Anything outside that bound is a real difference (wrong weights, a missing layer, another resize), which
changes outputs by percent, not by parts per million.
"""

from __future__ import annotations

import math
import os

import numpy as np

FP32_UNIT_ROUNDOFF = 2.0**-24


def fp32_kernel_bound(layers: int, reduction: int, amplification: float = 10.0) -> float:
    """How far (relative to the output's scale) two correct float32 evaluations may differ: four times
    amplification x layers x sqrt(reduction) unit roundoffs."""
    return 4.0 * amplification * layers * math.sqrt(reduction) * FP32_UNIT_ROUNDOFF


def scaled_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the difference relative to the output's scale."""
    a = np.asarray(actual, np.float64)
    b = np.asarray(expected, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max()) / max(scale, 1e-30) if b.size else 0.0


MEASURED: list[tuple[str, str, float, float]] = []  # (test, what, error, bound): tests/conftest.py prints them


def assert_kernel_close(actual, expected, bound: float, what: str = "output") -> None:
    """Fail when `actual` differs from `expected` by more than `bound` of the expected output's scale."""
    err = scaled_error(actual, expected)
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    MEASURED.append((test, what, err, bound))
    assert err <= bound, f"{what}: differs by {err:.2e} of its scale, beyond the float32 kernel bound {bound:.2e}"


# vit-nano / vit-micro test networks: a few transformer blocks and heads, about 12 reductions deep, the widest
# reduction 4 x the embedding width (the MLP) or one attention row: a few hundred terms.
SMALL_VIT = fp32_kernel_bound(layers=12, reduction=512)
