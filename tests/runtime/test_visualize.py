"""Pictures: legend lists only present classes, colour bar, panel layout."""

from __future__ import annotations

import numpy as np

from mtlkd.runtime import visualize
from mtlkd.tasks import palette

NAMES = ["wall", "floor", "chair", "table", "window"]


def _result(h, w):
    seg = np.zeros((h, w), np.int32)
    seg[:, w // 2 :] = 3
    depth = np.linspace(0.5, 4.0, h * w, dtype=np.float32).reshape(h, w)
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = 1
    return {"seg": seg, "depth": depth, "normal": normal}


def test_legend_shows_present_classes_only():
    seg = _result(100, 80)["seg"]
    strip = visualize.legend(seg, NAMES, 100)
    colours = {tuple(c) for c in strip.reshape(-1, 3)}
    assert tuple(palette(5)[0]) in colours and tuple(palette(5)[3]) in colours
    assert tuple(palette(5)[1]) not in colours and tuple(palette(5)[4]) not in colours
    wide = visualize.legend(seg, NAMES, 100, all_classes_width=True)
    assert wide.shape[1] >= strip.shape[1]


def test_seg_and_depth_images():
    result = _result(40, 50)
    seg = visualize.seg_image(result["seg"], NAMES)
    assert seg.dtype == np.uint8 and seg.shape[1] > 50 and seg.shape[0] >= 40
    np.testing.assert_array_equal(seg[:40, :25], np.broadcast_to(palette(5)[0], (40, 25, 3)))
    depth = visualize.depth_image(result["depth"])
    assert depth.shape[0] >= 40 and depth.shape[1] > 50
    assert visualize.depth_range(result["depth"])[0] < visualize.depth_range(result["depth"])[1]
    bar = visualize.colour_bar(0.5, 4.0, 200)
    assert bar.shape[0] == 200 and bar.dtype == np.uint8


def test_panel_layout():
    image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    full = visualize.panel(image, _result(300, 200), NAMES)
    assert full.dtype == np.uint8 and full.shape[0] > 300 and full.shape[1] > 4 * 200
    only_depth = visualize.panel(image, {"depth": _result(300, 200)["depth"]}, NAMES)
    assert only_depth.shape[1] < full.shape[1]
    small = visualize.panel(image[:20, :30], _result(20, 30), NAMES)
    assert small.shape[0] >= 240  # small images are enlarged so the titles stay legible
    a = visualize.panel(image, _result(300, 200), NAMES, fixed_layout=True)
    other = _result(300, 200)
    other["seg"][:] = 1
    b = visualize.panel(image, other, NAMES, fixed_layout=True)
    assert a.shape == b.shape  # video frames keep one size whatever classes appear
