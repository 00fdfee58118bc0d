"""Every backend, through the same Predictor, gives the same answer as the torch network."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkd.runtime import Predictor
from mtlkd.runtime.backends import load_backend


@pytest.fixture(scope="module")
def images():
    import cv2

    rng = np.random.default_rng(0)
    out = []
    for h, w in [(48, 64), (37, 29), (120, 90), (32, 32)]:
        small = (rng.random((max(2, h // 6), max(2, w // 6), 3)) * 255).astype(np.uint8)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


@pytest.fixture(scope="module")
def reference(nano_checkpoint, images):
    return Predictor.load(nano_checkpoint, backend="torch").predict_batch(images)


def _compare(results, reference):
    for got, want in zip(results, reference, strict=True):
        assert set(got) == set(want)
        assert (got["seg"] == want["seg"]).mean() >= 0.999
        assert np.abs(got["depth"] - want["depth"]).max() < 1e-3
        assert np.abs(got["normal"] - want["normal"]).max() < 1e-3


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_parity(backend, nano_onnx, images, reference):
    pytest.importorskip(backend)
    predictor = Predictor.load(nano_onnx, backend=backend)
    assert predictor.backend_name == backend
    _compare(predictor.predict_batch(images), reference)
    _compare([predictor.predict(image) for image in images], reference)


def test_openvino_ir_parity(nano_ir, images, reference):
    predictor = Predictor.load(nano_ir)  # .xml -> openvino
    assert predictor.backend_name == "openvino"
    _compare(predictor.predict_batch(images), reference)


def test_metadata_is_read_from_each_file(nano_checkpoint, nano_onnx, nano_ir, nano_model):
    _, metadata = nano_model
    for path, backend in [(nano_checkpoint, "torch"), (nano_onnx, "onnxruntime"), (nano_onnx, "openvino"),
                          (nano_ir, "openvino")]:
        loaded = load_backend(backend, path)
        assert loaded.tasks == ["seg", "depth", "normal"], backend
        assert loaded.input_size == (32, 32)
        assert loaded.metadata["class_names"] == metadata["class_names"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_raw_subsets_match_full_graph(backend, nano_onnx):
    """Requesting fewer outputs (ORT output_names; OpenVINO compiles a sub-model) changes nothing."""
    pytest.importorskip(backend)
    loaded = load_backend(backend, nano_onnx)
    batch = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    full = loaded.run(batch, ["seg", "depth", "normal"])
    for subset in (["depth"], ["normal", "seg"]):
        part = loaded.run(batch, subset)
        assert list(part) == subset
        for task in subset:
            np.testing.assert_allclose(part[task], full[task], atol=1e-5)
    grid = 32 // loaded.metadata["output_stride"]
    assert loaded.run(batch[:1], ["seg"])["seg"].shape == (1, 5, grid, grid)


def test_openvino_hint_is_configurable(nano_onnx):
    pytest.importorskip("openvino")
    from mtlkd.errors import BackendError

    loaded = load_backend("openvino", nano_onnx, hint="throughput")
    assert loaded.config["PERFORMANCE_HINT"] == "THROUGHPUT"
    compiled, _ = loaded.compiled(["seg"], 1)
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    with pytest.raises(BackendError, match="performance hint"):
        load_backend("openvino", nano_onnx, hint="fastest")
