"""A task is one registry entry: a toy task registered by a fixture, and nothing else edited, is built into
a network, augmented, trained, scored, saved, exported and checked, run by the runtime from the
checkpoint and the ONNX file, and drawn.

The one other place that names a task is a dataset's file layout (`data.mtan.SPECS`: which folder holds
which task's targets); the fixture gives the synthetic set a folder for the toy task there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlkd.tasks import POSITIVE, TASKS, Task, register_task

TOY = "brightness"


def brightness_loss(pred, target):
    """L1 between the predicted and the true brightness."""
    return (pred - target).abs().mean()


def decode_brightness(raw: np.ndarray) -> np.ndarray:
    """1 x H x W -> H x W brightness."""
    return np.ascontiguousarray(raw[0], dtype=np.float32)


def colourise_brightness(values: np.ndarray, **_) -> np.ndarray:
    """Brightness 0..1 as grey."""
    grey = (np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


class BrightnessMetrics:
    """Mean absolute error over every pixel."""

    def __init__(self, **_):
        self.total, self.count = 0.0, 0

    def update(self, pred, target) -> None:
        diff = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64))
        self.total, self.count = self.total + float(diff.sum()), self.count + diff.size

    def compute(self) -> dict[str, float]:
        return {"abs_err": self.total / max(self.count, 1)}


BRIGHTNESS = Task(name=TOY, title="Brightness", output=POSITIVE, fixed_channels=1, target_channels=1,
                  loss=brightness_loss, metrics={"abs_err": False}, decode=decode_brightness,
                  colourise=colourise_brightness, metric=BrightnessMetrics, progress="brightness abs {abs_err:.3f}")


@pytest.fixture
def toy_task():
    """The toy task in the registry for one test, and out of it afterwards."""
    register_task(BRIGHTNESS)
    try:
        yield BRIGHTNESS
    finally:
        TASKS.pop(TOY)


@pytest.fixture(scope="module")
def synthetic_with_brightness(tmp_path_factory) -> Path:
    """A tiny synthetic set plus a brightness folder: each image's channel mean, H x W x 1."""
    from mtlkd.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path_factory.mktemp("data") / "syn", 8, 4, size=(32, 32), seed=3, progress=False)
    for split in ("train", "val"):
        (root / split / TOY).mkdir()
        for image_file in (root / split / "image").glob("*.npy"):
            image = np.load(image_file)
            image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
            np.save(root / split / TOY / image_file.name, image.mean(axis=-1, keepdims=True))
    return root


@pytest.fixture
def dataset_has_brightness(toy_task, monkeypatch):
    from mtlkd.data.mtan import SPECS

    monkeypatch.setitem(SPECS["synthetic"].folders, TOY, TOY)


def test_a_network_for_the_toy_task_has_its_output(toy_task):
    from mtlkd.models import create_model

    torch.manual_seed(0)
    net = create_model("vit-nano", tasks=["seg", TOY]).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32))
    assert set(out) == {"seg", TOY}
    assert out[TOY].shape == (2, 1, 32, 32) and bool((out[TOY] > 0).all())  # POSITIVE: softplus


def test_augmentation_moves_the_toy_target_with_the_image(toy_task):
    from mtlkd.data.augment import flip, random_scale_crop

    image = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(0))
    sample = {"image": image, TOY: image.mean(0, keepdim=True)}
    mirrored = flip(sample)
    assert torch.equal(mirrored[TOY], sample[TOY].flip(-1))  # no channel of it changes sign
    cropped = random_scale_crop(sample, torch.Generator().manual_seed(1), scales=(1.5,))
    assert cropped[TOY].shape == (1, 16, 24)
    assert set(cropped[TOY].unique().tolist()) <= set(sample[TOY].unique().tolist())  # nearest: values kept


def test_the_toy_task_trains_runs_and_is_drawn(toy_task, dataset_has_brightness, synthetic_with_brightness,
                                               tmp_path, capsys):
    from mtlkd.runtime import Predictor, visualize
    from mtlkd.runtime.infer import InferOptions, infer
    from mtlkd.train.trainer import TrainOptions, train

    options = TrainOptions(dataset="synthetic", data_dir=str(synthetic_with_brightness), out=str(tmp_path / "run"),
                           preset="vit-nano", tasks=["seg", TOY], epochs=1, batch_size=4, max_steps_per_epoch=2,
                           seed=1, device="cpu")
    run = train(options)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"seg", TOY} and set(metrics[TOY]) == {"abs_err"}
    assert 0.0 <= metrics[TOY]["abs_err"] < 10.0
    captured = capsys.readouterr()
    assert "brightness abs" in captured.out + captured.err  # its part of the epoch line

    predictor = Predictor.load(run / "model.safetensors", backend="torch")
    image = np.random.default_rng(0).random((240, 300, 3)).astype(np.float32)
    result = predictor.predict(image)
    assert set(result) == {"seg", TOY}
    assert result[TOY].shape == (240, 300) and result[TOY].dtype == np.float32 and bool((result[TOY] > 0).all())

    # exported: validated against the checkpoint (raw error: the toy task compares nothing more), and run
    from mtlkd.export.options import ExportOptions
    from mtlkd.export.pipeline import export_model

    exported = export_model(run / "model.safetensors", tmp_path / "export", ExportOptions())
    assert exported.ok and {c.task for c in exported.checks} == {"seg", TOY}
    from_onnx = Predictor.load(tmp_path / "export" / "model.onnx", backend="onnxruntime").predict(image)
    np.testing.assert_allclose(from_onnx[TOY], result[TOY], rtol=1e-3, atol=1e-4)

    # the panel: input | segmentation | brightness, the last tile the toy task's own colours
    with_toy = visualize.panel(image, result, predictor.class_names)
    without = visualize.panel(image, {"seg": result["seg"]}, predictor.class_names)
    assert with_toy.shape[1] == without.shape[1] + 4 + 300  # a gap and the brightness tile
    tile = with_toy[-240:, -300:]
    np.testing.assert_array_equal(tile, colourise_brightness(result[TOY]))

    # mtl-infer's loop writes its picture and its array
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "in").mkdir()
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "in" / "room.png")
    written = infer(predictor, [tmp_path / "in"], tmp_path / "out",
                    InferOptions(save_raw=True, progress=False, report_failures=False)).written
    names = {path.name for path in written}
    assert {"room_brightness.png", "room_brightness.npy", "room_seg.png", "room_panel.png"} <= names
    assert np.load(tmp_path / "out" / "room_brightness.npy").shape == (240, 300)


def test_the_registry_is_as_before_after_the_fixture():
    assert TOY not in TASKS and list(TASKS) == ["seg", "depth", "normal"]
