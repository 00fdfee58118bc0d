"""Predictor: outputs at the image's own resolution, input types, task subsets, batches, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mtlkd.errors import BackendError
from mtlkd.runtime import Predictor
from mtlkd.runtime.media import read_image

SIZES = [(45, 61), (31, 17), (96, 128), (1, 1)]


@pytest.fixture(scope="module")
def torch_predictor(nano_checkpoint):
    return Predictor.load(nano_checkpoint, backend="torch")


@pytest.fixture(scope="module")
def ort_predictor(nano_onnx):
    pytest.importorskip("onnxruntime")
    return Predictor.load(nano_onnx, backend="onnxruntime")


@pytest.mark.parametrize("which", ["torch_predictor", "ort_predictor"])
@pytest.mark.parametrize("size", SIZES)
def test_outputs_at_original_resolution(request, which, size, image_factory):
    predictor = request.getfixturevalue(which)
    h, w = size
    result = predictor.predict(image_factory(h, w))
    assert set(result) == {"seg", "depth", "normal"}
    assert result["seg"].shape == (h, w) and result["seg"].dtype == np.int32
    assert result["seg"].min() >= 0 and result["seg"].max() < len(predictor.class_names)
    assert result["depth"].shape == (h, w) and result["depth"].dtype == np.float32
    assert (result["depth"] > 0).all() and np.isfinite(result["depth"]).all()
    assert result["normal"].shape == (h, w, 3) and result["normal"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result["normal"], axis=-1), 1.0, atol=1e-4)


def test_properties(torch_predictor, nano_model):
    _, metadata = nano_model
    p = torch_predictor
    assert p.tasks == ["seg", "depth", "normal"]
    assert p.class_names == metadata["class_names"] and p.num_classes == 5
    assert p.backend_name == "torch" and p.device == "cpu" and p.input_size == (32, 32)
    assert p.metadata["input_size"] == [32, 32]
    assert "torch" in repr(p)


def test_uint8_and_float_inputs_agree(ort_predictor, image_factory):
    image = image_factory(50, 70, seed=3)
    a = ort_predictor.predict(image)
    b = ort_predictor.predict(image.astype(np.float32) / 255.0)
    c = ort_predictor.predict(image.astype(np.uint16) * 257)  # 16-bit with the same values
    for other in (b, c):
        assert (a["seg"] == other["seg"]).mean() >= 0.999
        np.testing.assert_allclose(a["depth"], other["depth"], atol=1e-4)
        np.testing.assert_allclose(a["normal"], other["normal"], atol=1e-4)


def test_float_input_out_of_range_is_refused(ort_predictor):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ort_predictor.predict(np.full((8, 8, 3), 200.0, dtype=np.float32))


def test_grey_and_rgba_arrays(ort_predictor, image_factory):
    rgb = image_factory(20, 24)
    grey = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((20, 24, 1), 7, np.uint8)], axis=2)
    assert ort_predictor.predict(grey)["seg"].shape == (20, 24)
    np.testing.assert_array_equal(ort_predictor.predict(rgba)["seg"], ort_predictor.predict(rgb)["seg"])
    with pytest.raises(ValueError, match="H x W x 3"):
        ort_predictor.predict(np.zeros((4, 4, 2), np.uint8))


def test_files_of_every_mode(ort_predictor, image_factory, tmp_path):
    rgb = image_factory(30, 40)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "grey.png")
    Image.fromarray(np.concatenate([rgb, np.full((30, 40, 1), 128, np.uint8)], axis=2)).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 2].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    for name, shape in [("grey.png", (30, 40)), ("rgba.png", (30, 40)), ("grey16.png", (30, 40)),
                        ("rotated.jpg", (40, 30))]:
        image = read_image(tmp_path / name)
        assert image.shape == (*shape, 3) and image.dtype == np.uint8, name
        result = ort_predictor.predict(image)
        assert result["seg"].shape == shape and result["normal"].shape == (*shape, 3), name
        as_float = read_image(tmp_path / name, as_float=True)
        assert as_float.dtype == np.float32 and as_float.min() >= 0 and as_float.max() <= 1


def test_task_subset(torch_predictor, ort_predictor, image_factory):
    image = image_factory(40, 44)
    for predictor in (torch_predictor, ort_predictor):
        full = predictor.predict(image)
        only = predictor.predict(image, tasks=["depth"])
        assert set(only) == {"depth"}
        np.testing.assert_allclose(only["depth"], full["depth"], atol=1e-5)
        assert set(predictor.predict(image, tasks="seg,normal")) == {"seg", "normal"}
    with pytest.raises(ValueError, match="unknown task"):
        torch_predictor.predict(image, tasks=["edges"])


def test_batch_of_mixed_sizes_matches_single(ort_predictor, image_factory):
    images = [image_factory(h, w, seed=i) for i, (h, w) in enumerate([(20, 30), (33, 33), (64, 48)])]
    batch = ort_predictor.predict_batch(images)
    assert ort_predictor.timings["images"] == 3
    for image, result in zip(images, batch, strict=True):
        single = ort_predictor.predict(image)
        assert result["seg"].shape == image.shape[:2]
        np.testing.assert_array_equal(result["seg"], single["seg"])
        np.testing.assert_allclose(result["depth"], single["depth"], atol=1e-5)


def test_empty_batch(ort_predictor):
    assert ort_predictor.predict_batch([]) == [] and ort_predictor.timings["images"] == 0


def test_timings_split(ort_predictor, image_factory):
    ort_predictor.predict(image_factory(100, 120))
    t = ort_predictor.timings
    assert set(t) == {"preprocess", "network", "postprocess", "images"}
    assert all(t[k] > 0 for k in ("preprocess", "network", "postprocess")) and t["images"] == 1


def test_run_raw(ort_predictor, image_factory):
    batch = np.stack([image_factory(48, 40, seed=s) for s in range(2)]).transpose(0, 3, 1, 2) / 255.0
    raw = ort_predictor.run_raw(batch, ["seg", "normal"])
    grid = 32 // ort_predictor.metadata["output_stride"]  # the heads' own grid: one resize, by the runtime
    assert raw["seg"].shape == (2, 5, grid, grid) and raw["normal"].shape == (2, 3, grid, grid)
    full = ort_predictor.run_raw(batch, ["seg", "depth", "normal"], data_size=True)
    assert full["seg"].shape == (2, 5, 48, 40) and full["depth"].shape == (2, 1, 48, 40)
    np.testing.assert_allclose(np.linalg.norm(full["normal"], axis=1), 1.0, atol=1e-4)
    single = ort_predictor.predict((batch[0].transpose(1, 2, 0)).astype(np.float32))
    np.testing.assert_allclose(full["depth"][0, 0], single["depth"], atol=1e-4)


def test_load_errors(tmp_path, nano_checkpoint):
    with pytest.raises(BackendError, match="no such model file"):
        Predictor.load(tmp_path / "missing.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(BackendError, match="unknown model file type"):
        Predictor.load(tmp_path / "model.pt")
    with pytest.raises(BackendError, match="cannot open .safetensors"):
        Predictor.load(nano_checkpoint, backend="onnxruntime")
    with pytest.raises(BackendError, match="unknown backend"):
        Predictor.load(nano_checkpoint, backend="tflite")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(BackendError, match="broken.onnx"):
        Predictor.load(tmp_path / "broken.onnx", backend="onnxruntime")


def test_predict_takes_a_path_a_pil_image_or_an_array_alike(ort_predictor, image_factory, tmp_path):
    array = image_factory(40, 56)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    from_array = ort_predictor.predict(array)
    for image in (path, str(path), Image.open(path), Image.open(path).convert("RGBA")):
        result = ort_predictor.predict(image)
        assert result["seg"].shape == (40, 56)
        assert np.array_equal(result["seg"], from_array["seg"])
        assert np.allclose(result["depth"], from_array["depth"], atol=1e-5)


def test_wrong_batch_layout_is_a_user_error(nano_onnx):
    from mtlkd.errors import MediaError, UserError

    predictor = Predictor.load(nano_onnx, backend="onnxruntime")
    with pytest.raises(MediaError, match="N x 3 x H x W"):
        predictor.run_raw(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(UserError, match="N x 3 x 32 x 32"):
        predictor.backend.run(np.zeros((1, 3, 16, 16), np.float32), ["seg"])
