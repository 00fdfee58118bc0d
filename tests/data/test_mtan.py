"""MTAN-layout datasets: one-line validation errors, and loading that keeps ignore labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlkd.data import DATASET_NAMES, get_spec, open_dataset
from mtlkd.data.mtan import MTANDataset, validate_dataset
from mtlkd.errors import DatasetError

torch = pytest.importorskip("torch")


def make_nyu(root: Path, n: int = 2, size: tuple[int, int] = (288, 384), split: str = "train") -> Path:
    """A tiny fake NYUv2 at native size, with ignore labels and missing depth/normals in one corner."""
    h, w = size
    rng = np.random.default_rng(0)
    for i in range(n):
        label = rng.integers(0, 13, (h, w)).astype(np.float32)
        label[:4, :4] = -1
        depth = rng.uniform(0.5, 8, (h, w, 1)).astype(np.float32)
        depth[:4, :4] = 0
        normal = rng.normal(size=(h, w, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[:4, :4] = 0
        arrays = {"image": rng.uniform(0, 1, (h, w, 3)).astype(np.float32), "label": label}
        for folder, array in {**arrays, "depth": depth, "normal": normal}.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / split / folder / f"{i}.npy", array)
    return root


def test_specs():
    assert set(DATASET_NAMES) >= {"nyuv2", "cityscapes", "cityscapes19", "synthetic"}
    assert get_spec("nyuv2").num_classes == 13 and get_spec("nyuv2").size == (288, 384)
    assert get_spec("cityscapes").folders == {"seg": "label_7", "depth": "depth"}
    assert len(get_spec("cityscapes19").class_names) == 19
    with pytest.raises(DatasetError, match="unknown dataset"):
        get_spec("imagenet")


def test_missing_root_says_what_to_get_and_where(tmp_path):
    root = tmp_path / "nope"
    with pytest.raises(DatasetError) as err:
        validate_dataset(root, "nyuv2")
    message = str(err.value)
    assert "\n" not in message
    assert str(root / "train" / "image" / "0.npy") in message and "lorenmt/mtan" in message


def test_no_data_dir_for_real_datasets():
    with pytest.raises(DatasetError, match="--data-dir"):
        open_dataset("cityscapes")


def test_missing_folder(tmp_path):
    root = make_nyu(tmp_path / "nyu")
    for path in (root / "train" / "normal").iterdir():
        path.unlink()
    (root / "train" / "normal").rmdir()
    with pytest.raises(DatasetError, match=r"missing folder .*normal"):
        validate_dataset(root, "nyuv2", "train")
    with pytest.raises(DatasetError, match="no val split"):
        validate_dataset(root, "nyuv2", "val")


def test_count_mismatch(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=2)
    (root / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(DatasetError, match=r"mismatched file counts \(image: 2, label: 2, depth: 1"):
        validate_dataset(root, "nyuv2")


def test_gap_in_numbering(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=3)
    for folder in ("image", "label", "depth", "normal"):
        (root / "train" / folder / "1.npy").unlink()
    with pytest.raises(DatasetError, match=r"1\.npy is missing"):
        validate_dataset(root, "nyuv2")


def test_bad_shape_names_file_and_shapes(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=1)
    np.save(root / "train" / "normal" / "0.npy", np.zeros((288, 384), np.float32))
    with pytest.raises(DatasetError) as err:
        validate_dataset(root, "nyuv2")
    message = str(err.value)
    assert str(root / "train" / "normal" / "0.npy") in message
    assert "(288, 384)" in message and "(288, 384, 3)" in message


def test_bad_dtype(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=1)
    np.save(root / "train" / "depth" / "0.npy", np.ones((288, 384, 1), np.int16))
    with pytest.raises(DatasetError, match=r"depth/0\.npy has dtype int16, expected float"):
        validate_dataset(root, "nyuv2")


def test_wrong_image_size_and_pickled_file(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=1, size=(64, 64))
    with pytest.raises(DatasetError, match=r"image/0\.npy has shape \(64, 64, 3\), expected \(288, 384, 3\)"):
        validate_dataset(root, "nyuv2")
    root = make_nyu(tmp_path / "nyu2", n=1)
    np.save(root / "train" / "label" / "0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="label/0.npy"):
        validate_dataset(root, "nyuv2")


def test_loading_tensors_and_ignore_labels(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=2)
    ds = MTANDataset(root, "nyuv2", "train")
    assert len(ds) == 2 and ds.num_classes == 13 and ds.tasks == ["seg", "depth", "normal"]
    sample = ds[1]
    assert sample["image"].shape == (3, 288, 384) and sample["image"].dtype == torch.float32
    assert sample["seg"].shape == (288, 384) and sample["seg"].dtype == torch.int64
    assert sample["depth"].shape == (1, 288, 384) and sample["normal"].shape == (3, 288, 384)
    assert (sample["seg"][:4, :4] == -1).all() and sample["seg"].max() <= 12
    assert (sample["depth"][:, :4, :4] == 0).all() and (sample["normal"][:, :4, :4] == 0).all()
    expected = np.moveaxis(np.load(root / "train" / "image" / "1.npy"), -1, 0)
    np.testing.assert_array_equal(sample["image"].numpy(), expected)


def test_task_selection(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=1)
    assert set(MTANDataset(root, "nyuv2", tasks="depth")[0]) == {"image", "depth"}
    with pytest.raises(DatasetError, match="unknown task"):
        MTANDataset(root, "nyuv2", tasks=["edges"])


def test_cityscapes_layout_drops_normal(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cs"
    for folder, array in {
        "image": rng.uniform(0, 1, (128, 256, 3)).astype(np.float32),
        "label_19": rng.integers(-1, 19, (128, 256)).astype(np.float32),
        "depth": rng.uniform(0, 1, (128, 256, 1)).astype(np.float32),
    }.items():
        (root / "val" / folder).mkdir(parents=True)
        np.save(root / "val" / folder / "0.npy", array)
    ds = open_dataset("cityscapes19", root, split="val", tasks=["seg", "depth", "normal"])
    assert ds.tasks == ["seg", "depth"] and ds.num_classes == 19
    assert int(ds[0]["seg"].min()) == -1
    with pytest.raises(DatasetError, match="label_7"):
        open_dataset("cityscapes", root, split="val")


def test_synthetic_cache_is_built_once_atomically(tmp_path, monkeypatch):
    import mtlkd.data as data

    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYNTHETIC_DEFAULTS", {"n_train": 3, "n_val": 2, "size": (16, 24), "seed": 0})
    ds = open_dataset("synthetic", split="val", progress=False)
    assert len(ds) == 2 and ds.root.name == "synthetic-16x24-s0-n3-2"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["synthetic-16x24-s0-n3-2"]
    stamp = (ds.root / "meta.json").stat().st_mtime_ns
    assert open_dataset("synthetic", split="train", progress=False).root == ds.root
    assert (ds.root / "meta.json").stat().st_mtime_ns == stamp  # not regenerated


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    import mtlkd.data.synthetic as synthetic
    from mtlkd.data import ensure_synthetic

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "render_scene", explode)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(n_train=2, n_val=1, size=(16, 16), progress=False, cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
