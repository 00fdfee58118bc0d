"""Pre- and postprocessing: sizes, dtypes, and the fused resize-then-argmax."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkd.runtime import processing
from mtlkd.tasks import decode_normal, decode_seg


def test_preprocess_layout_and_scale():
    images = [np.full((10, 20, 3), 255, np.uint8), np.zeros((7, 7), np.uint16), np.ones((5, 6, 4), np.float32)]
    batch, sizes = processing.preprocess(images, (8, 12))
    assert batch.shape == (3, 3, 8, 12) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert sizes == [(10, 20), (7, 7), (5, 6)]
    np.testing.assert_allclose(batch[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(batch[1], 0.0)
    np.testing.assert_allclose(batch[2], 1.0, atol=1e-6)


def test_preprocess_keeps_channel_order():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255  # pure red
    batch, _ = processing.preprocess([image], (4, 4))
    assert batch[0, 0].min() == 1.0 and batch[0, 1:].max() == 0.0


def test_upsampled_argmax_equals_decode_of_resized_logits():
    logits = np.random.default_rng(0).normal(size=(7, 16, 12)).astype(np.float32)
    for size in [(33, 29), (16, 12), (5, 40)]:
        expected = decode_seg(processing.resize_maps(logits, size))
        np.testing.assert_array_equal(processing.upsampled_argmax(logits, size), expected)
        np.testing.assert_array_equal(processing.decode_one("seg", logits, size), expected)
    ties = np.zeros((3, 4, 4), dtype=np.float32)  # all classes equal: argmax's lowest class, 0
    assert not processing.upsampled_argmax(ties, (8, 8)).any()
    many = np.random.default_rng(1).normal(size=(300, 6, 5)).astype(np.float32)  # a uint16 label plane
    np.testing.assert_array_equal(processing.upsampled_argmax(many, (9, 7)),
                                  decode_seg(processing.resize_maps(many, (9, 7))))  # fmt: skip


def test_postprocess_conventions():
    rng = np.random.default_rng(1)
    raw = {"seg": rng.normal(size=(4, 8, 8)).astype(np.float32),
           "depth": rng.uniform(0.5, 5.0, size=(1, 8, 8)).astype(np.float32),
           "normal": decode_normal(rng.normal(size=(3, 8, 8))).transpose(2, 0, 1).copy()}
    out = processing.postprocess(raw, ["seg", "depth", "normal"], (19, 23))
    assert out["seg"].shape == (19, 23) and out["seg"].dtype == np.int32
    assert out["depth"].shape == (19, 23) and out["depth"].min() >= 0.5 and out["depth"].max() <= 5.0
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=-1), 1.0, atol=1e-5)
    same = processing.postprocess(raw, ["depth"], (8, 8))
    np.testing.assert_array_equal(same["depth"], raw["depth"][0])


def test_postprocess_batch_sizes():
    raw = {"depth": np.ones((2, 1, 4, 4), np.float32)}
    out = processing.postprocess_batch(raw, ["depth"], [(3, 5), (9, 2)])
    assert [o["depth"].shape for o in out] == [(3, 5), (9, 2)]


def test_to_float_errors():
    with pytest.raises(ValueError, match="dtype"):
        processing.to_float(np.zeros((2, 2, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        processing.to_float(np.full((2, 2, 3), 3.0))
