"""The synthetic room generator: determinism, output contract, and geometry that a wrong ray-caster breaks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtlkd.data import synthetic
from mtlkd.data.synthetic import CLASS_NAMES, render_scene, scene_rng, write_synthetic

H, W = 48, 64
FLOOR, WALL = CLASS_NAMES.index("floor"), CLASS_NAMES.index("wall")


@pytest.fixture(scope="module")
def scenes() -> list[dict]:
    return [render_scene(scene_rng(0, "train", i), H, W) for i in range(8)]


def camera_rays(scene: dict) -> np.ndarray:
    """H x W x 3 camera-frame rays with z = 1, from the documented pixel convention."""
    fx, fy, cx, cy = scene["intrinsics"]
    u = (np.arange(W) + 0.5 - cx) / fx
    v = (np.arange(H) + 0.5 - cy) / fy
    return np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((H, W))), axis=-1)


def test_same_seed_same_bytes_and_different_seed_differs():
    a = render_scene(scene_rng(3, "train", 5), H, W)
    b = render_scene(scene_rng(3, "train", 5), H, W)
    c = render_scene(scene_rng(4, "train", 5), H, W)
    d = render_scene(scene_rng(3, "val", 5), H, W)
    for key in ("image", "label", "depth", "normal"):
        assert a[key].tobytes() == b[key].tobytes()
    assert a["image"].tobytes() != c["image"].tobytes()
    assert a["image"].tobytes() != d["image"].tobytes()


def test_shapes_dtypes_and_ranges(scenes):
    for s in scenes:
        assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.float32
        assert s["label"].shape == (H, W) and s["label"].dtype == np.int64
        assert s["depth"].shape == (H, W, 1) and s["depth"].dtype == np.float32
        assert s["normal"].shape == (H, W, 3) and s["normal"].dtype == np.float32
        assert s["image"].min() >= 0.0 and s["image"].max() <= 1.0
        assert s["image"].std() > 0.05  # not a flat picture
        assert s["label"].min() >= 0 and s["label"].max() < len(CLASS_NAMES)
        assert (s["depth"] > 0).all() and np.isfinite(s["depth"]).all() and s["depth"].max() < 20
        np.testing.assert_allclose(np.linalg.norm(s["normal"], axis=-1), 1.0, atol=1e-5)
    present = set(np.unique(np.concatenate([s["label"].ravel() for s in scenes])))
    assert {FLOOR, WALL} <= present and len(present) >= 6


def test_normals_face_the_camera(scenes):
    for s in scenes:
        assert ((s["normal"] * camera_rays(s)).sum(axis=-1) < 0).all()


def test_floor_geometry_matches_camera_height(scenes):
    """Floor points back-projected from depth lie on one plane at camera height, with the up normal."""
    checked = 0
    for s in scenes:
        floor = s["label"] == FLOOR
        if floor.sum() < 20:
            continue
        up = s["cam_to_world"][2]  # world z axis expressed in the camera frame
        points = camera_rays(s)[floor] * s["depth"][floor]
        np.testing.assert_allclose(s["normal"][floor], np.broadcast_to(up, (floor.sum(), 3)), atol=1e-5)
        np.testing.assert_allclose(-(points @ up), s["camera_height"], rtol=1e-4)
        # the depth of each floor pixel follows from the ray alone: z = h / -(ray . up)
        expected = s["camera_height"] / -(camera_rays(s)[floor] @ up)
        np.testing.assert_allclose(s["depth"][floor][:, 0], expected, rtol=1e-4)
        checked += 1
    assert checked >= 4


def test_each_surface_pixel_lies_on_the_plane_its_normal_describes(scenes):
    """For flat classes (walls), neighbouring pixels with equal normals share one plane offset."""
    s = scenes[0]
    wall = s["label"] == WALL
    points = camera_rays(s) * s["depth"]
    offsets = (points * s["normal"]).sum(axis=-1)[wall]
    normals = np.round(s["normal"][wall], 4)
    for n in np.unique(normals, axis=0):
        same = (normals == n).all(axis=1)
        if same.sum() > 10:
            assert np.ptp(offsets[same]) < 1e-3 * np.abs(offsets[same]).max() + 1e-4


def test_write_synthetic_layout_and_loading(tmp_path):
    from mtlkd.data.mtan import MTANDataset, validate_dataset

    out = write_synthetic(tmp_path / "syn", n_train=3, n_val=2, size=(24, 32), seed=7, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta == {
        "dataset": "synthetic",
        "classes": list(CLASS_NAMES),
        "size": [24, 32],
        "seed": 7,
        "train": 3,
        "val": 2,
        "generator_version": synthetic.GENERATOR_VERSION,
    }
    for split, n in (("train", 3), ("val", 2)):
        for folder in ("image", "label", "depth", "normal"):
            assert sorted(p.name for p in (out / split / folder).iterdir()) == [f"{i}.npy" for i in range(n)]
    assert np.load(out / "train" / "depth" / "0.npy").shape == (24, 32, 1)
    # order-independent: image 1 of train is the same whichever else was generated
    again = render_scene(scene_rng(7, "train", 1), 24, 32)
    assert np.load(out / "train" / "image" / "1.npy").tobytes() == again["image"].tobytes()
    assert validate_dataset(out, "synthetic", "val") == 2
    sample = MTANDataset(out, "synthetic", "train")[2]
    assert sample["image"].shape == (3, 24, 32) and sample["seg"].shape == (24, 32)
    assert sample["depth"].shape == (1, 24, 32) and sample["normal"].shape == (3, 24, 32)


def test_screen_space_culling_changes_nothing(monkeypatch):
    """Primitives are only ray-cast inside their projected box; casting every ray must agree exactly."""
    culled = [render_scene(scene_rng(1, "val", i), H, W) for i in range(6)]
    monkeypatch.setattr(synthetic, "pixel_window", lambda bounds, eye, rot, focal, shape: (slice(None), slice(None)))
    for i, expected in enumerate(culled):
        full = render_scene(scene_rng(1, "val", i), H, W)
        for key in ("image", "label", "depth", "normal"):
            assert full[key].tobytes() == expected[key].tobytes(), (i, key)


def test_cli_writes_and_checks(tmp_path):
    from typer.testing import CliRunner

    from mtlkd.cli.data import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["synthetic", "--out", str(out), "--train", "2", "--val", "1", "--img-size",
                                 "16x24", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "images/minute" in result.output and (out / "val" / "normal" / "0.npy").is_file()
    result = runner.invoke(app, ["check", "synthetic", "--data-dir", str(out)])
    assert result.exit_code == 0 and "train: 2 samples of 16x24" in result.output
    result = runner.invoke(app, ["check", "nyuv2", "--data-dir", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "error: NYUv2 not found" in result.output and "Traceback" not in result.output
