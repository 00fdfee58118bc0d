"""`mtl-data check` reads every sample and names each bad file; training runs the same checks on what it
reads, so a label outside the classes is one line, not an IndexError deep in the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtlkd.cli.main import app
from mtlkd.data.mtan import MTANDataset
from mtlkd.data.synthetic import write_synthetic
from mtlkd.errors import DatasetError

runner = CliRunner()


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    write_synthetic(root, 6, 3, size=(16, 16), seed=0, progress=False)
    return root


def _corrupt(root: Path, split: str, folder: str, index: int, change) -> Path:
    path = root / split / folder / f"{index}.npy"
    np.save(path, change(np.load(path)))
    return path


def _as_255_floats(image: np.ndarray) -> np.ndarray:
    """An image stored as 0-255 floats (the silent mistake: it trained to a worse model)."""
    return image.astype(np.float32) * (255.0 if image.dtype.kind == "f" else 1.0)


def test_clean_dataset_passes_with_every_sample_checked(data):
    result = runner.invoke(app, ["data", "check", "synthetic", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "every sample checked" in result.stdout and "train: 6 samples of 16x16" in result.stdout


def test_every_bad_file_is_named_once(data):
    bad = [
        (_corrupt(data, "train", "label", 4, lambda a: np.where(a >= 0, 40, a).astype(a.dtype)), "outside"),
        (_corrupt(data, "val", "image", 2, _as_255_floats), "divide by 255"),
        (_corrupt(data, "train", "depth", 5, lambda a: np.where(a > 0, np.nan, a)), "finite"),
        (_corrupt(data, "train", "normal", 3, lambda a: a * 2), "unit length"),
        (_corrupt(data, "train", "depth", 1, lambda a: -a), "finite and >= 0"),
    ]
    result = runner.invoke(app, ["data", "check", "synthetic", "--data-dir", str(data)])
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    for path, words in bad:
        named = [ln for ln in errors if str(path) in ln]
        assert len(named) == 1 and words in named[0], (path, errors)
    assert "5 bad sample(s)" in errors[-1]
    assert "Traceback" not in result.output


def test_reading_a_bad_sample_is_one_line_not_an_index_error(data):
    path = _corrupt(data, "train", "label", 2, lambda a: np.full_like(a, 13))
    ds = MTANDataset(data, "synthetic", "train")
    ds.read(1)
    with pytest.raises(DatasetError, match=r"2\.npy: label 13 outside the 13 classes"):
        ds.read(2)
    assert str(path) in str(pytest.raises(DatasetError, ds.read, 2).value)


def test_training_on_a_bad_label_is_one_line(data):
    for i in range(6):
        _corrupt(data, "train", "label", i, lambda a: np.full_like(a, 99))
    result = runner.invoke(app, ["train", "synthetic", "--data-dir", str(data), "--out", str(data.parent / "run"),
                                 "--preset", "vit-nano", "--epochs", "1", "--batch-size", "2", "--max-steps", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "label 99 outside" in lines[0] and "train/label/" in lines[0]
    assert "Traceback" not in result.output and "IndexError" not in result.output


def test_synthetic_into_a_file_is_one_line(tmp_path):
    a_file = tmp_path / "data"
    a_file.write_text("keep")
    for out in (a_file, a_file / "sub"):
        result = runner.invoke(app, ["data", "synthetic", "--out", str(out), "--train", "1", "--val", "1",
                                     "--img-size", "16x16", "--quiet"])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: --out {out}")
    assert a_file.read_text() == "keep"
