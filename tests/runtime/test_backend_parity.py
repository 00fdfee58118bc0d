"""Every backend, through the same Predictor, gives the same answer as the torch network.

The network has random weights, so its class logits are near-ties: which argmax another kernel flips says
nothing about the backend. The comparison is therefore on what the backends compute, the raw outputs (equal
up to float32 re-association, tests/numerics.py), and on depth after the runtime's resize (linear, so it
keeps that bound); the decoding after that is the same numpy code for every backend."""

from __future__ import annotations

import numpy as np
import pytest
from numerics import SMALL_VIT, assert_kernel_close

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


pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def torch_predictor(nano_checkpoint):
    return Predictor.load(nano_checkpoint, backend="torch")


@pytest.fixture(scope="module")
def reference(torch_predictor, images):
    return torch_predictor.predict_batch(images)


def _batch(images):
    return np.stack([cv2_resize(i, (32, 32)) for i in images]).transpose(0, 3, 1, 2).astype(np.float32) / 255


def cv2_resize(image, size):
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _compare(predictor, results, reference, torch_predictor, images):
    batch = _batch(images)
    raw, want_raw = predictor.run_raw(batch), torch_predictor.run_raw(batch)
    for task in want_raw:
        assert_kernel_close(raw[task], want_raw[task], SMALL_VIT, f"raw {task}")
    for got, want in zip(results, reference, strict=True):
        assert set(got) == set(want) and got["seg"].shape == want["seg"].shape
        assert_kernel_close(got["depth"], want["depth"], SMALL_VIT, "depth")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_parity(backend, nano_onnx, images, reference, torch_predictor):
    pytest.importorskip(backend)
    predictor = Predictor.load(nano_onnx, backend=backend)
    assert predictor.backend_name == backend
    _compare(predictor, predictor.predict_batch(images), reference, torch_predictor, images)
    _compare(predictor, [predictor.predict(image) for image in images], reference, torch_predictor, images)


def test_openvino_ir_parity(nano_ir, images, reference, torch_predictor):
    predictor = Predictor.load(nano_ir)  # .xml -> openvino
    assert predictor.backend_name == "openvino"
    _compare(predictor, predictor.predict_batch(images), reference, torch_predictor, images)


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
            assert_kernel_close(part[task], full[task], SMALL_VIT, task)
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
