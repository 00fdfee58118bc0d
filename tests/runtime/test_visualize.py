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


def test_overlay_blends_the_classes_over_the_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    seg = _result(40, 50)["seg"]
    for alpha in (0.3, 0.7):
        picture = visualize.overlay_image(image, seg, NAMES, alpha=alpha)
        expected = alpha * palette(5)[seg].astype(float) + (1 - alpha) * image.astype(float)
        assert np.abs(picture[:40, :50].astype(float) - expected).max() <= 1.0
        assert picture.shape[1] > 50  # the legend beside it
    strip = picture[:, 50:].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    assert tuple(palette(5)[0]) in colours and tuple(palette(5)[3]) in colours  # present classes only
    assert tuple(palette(5)[2]) not in colours


def _nearest(picture: np.ndarray, colour: np.ndarray) -> tuple[int, int]:
    distance = np.abs(picture.astype(int) - colour.astype(int)).sum(axis=-1)
    y, x = np.unravel_index(distance.argmin(), distance.shape)
    assert distance[y, x] <= 12, "the colour does not appear in the key"
    return int(y), int(x)


def test_normal_key_places_each_direction_where_its_label_says():
    from mtlkd.tasks import colourise_normal

    normals = visualize.hemisphere_normals(41)
    inside = np.abs(normals).sum(axis=-1) > 0
    np.testing.assert_allclose(np.linalg.norm(normals[inside], axis=-1), 1.0, atol=1e-5)
    assert (normals[inside][:, 2] <= 0).all()  # every shown surface faces the camera (z forward)
    key = visualize.normal_key(240)

    def where(direction):
        return _nearest(key, colourise_normal(np.float32([[direction]]))[0, 0])

    right, left = where([0.98, 0, -0.2]), where([-0.98, 0, -0.2])
    up, down = where([0, -0.98, -0.2]), where([0, 0.98, -0.2])
    facing = where([0, 0, -1])
    assert left[1] < facing[1] < right[1] and up[0] < facing[0] < down[0]
    picture = visualize.normal_image(_result(40, 50)["normal"])
    assert picture.shape[1] > 50 + 40  # the key beside the map


def test_fixed_depth_range_gives_the_same_colour_to_the_same_depth():
    near = np.full((30, 30), 2.0, np.float32)
    near[:, 15:] = 1.0
    far = np.full((30, 30), 2.0, np.float32)
    far[:, 15:] = 8.0
    fixed = [visualize.depth_image(d, value_range=(0.5, 10.0))[:30, :30] for d in (near, far)]
    np.testing.assert_array_equal(fixed[0][:, :15], fixed[1][:, :15])
    own = [visualize.depth_image(d)[:30, :30] for d in (near, far)]
    assert not np.array_equal(own[0][:, :15], own[1][:, :15])  # per-image ranges would not


def test_run_depth_range_covers_the_first_map_in_round_numbers():
    for lo, hi in ((2.21, 3.56), (0.4, 0.9), (12.0, 70.0)):
        depth = np.linspace(lo, hi, 1000, dtype=np.float32).reshape(20, 50)
        near, far = visualize.run_depth_range(depth)
        p_lo, p_hi = visualize.depth_range(depth)
        assert 0 <= near <= p_lo and far >= p_hi
        step = 10.0 ** np.floor(np.log10(far)) / 2
        assert abs(near / step - round(near / step)) < 1e-6 and abs(far / step - round(far / step)) < 1e-6
