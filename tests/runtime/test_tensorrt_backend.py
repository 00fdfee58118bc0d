"""TensorRT: a clear error where it cannot run; a real engine run where it can (never faked)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.metadata import read_engine_metadata
from mtlkd.runtime import Predictor
from mtlkd.runtime.backends import available


def test_engine_on_cpu_is_refused_clearly(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(BackendUnavailable, match="GPU"):
        Predictor.load(engine, device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_is_reported(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 16)
    assert not available("tensorrt", "cuda")
    with pytest.raises(BackendUnavailable, match="(?i)tensorrt"):
        Predictor.load(engine)  # engines default to device cuda
    with pytest.raises(BackendUnavailable):
        Predictor.load(engine, backend="tensorrt", device="cuda")


def test_sidecar_formats(tmp_path, nano_model):
    _, metadata = nano_model
    engine = tmp_path / "model.engine"
    with pytest.raises(BackendError, match="sidecar"):
        read_engine_metadata(engine, error=BackendError)
    (tmp_path / "model.engine.json").write_text(json.dumps(metadata))
    assert read_engine_metadata(engine, error=BackendError)["tasks"] == metadata["tasks"]
    (tmp_path / "model.engine.json").write_text(json.dumps({"mtlkd": metadata, "trt_version": "11"}))
    assert read_engine_metadata(engine, error=BackendError)["input_size"] == [32, 32]


def test_engine_parity(tmp_path, nano_checkpoint, nano_onnx):
    """Build an engine from the ONNX export and compare it with torch (needs TensorRT and a GPU)."""
    trt = pytest.importorskip("tensorrt")
    if not available("tensorrt", "cuda"):
        pytest.skip("no CUDA GPU")
    try:
        from mtlkd.export.tensorrt import build_engine
    except ImportError:
        pytest.skip("mtlkd.export.tensorrt is not available")
    engine = build_engine(nano_onnx, tmp_path / "model.engine")
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    got = Predictor.load(engine).predict(image)
    want = Predictor.load(nano_checkpoint, backend="torch").predict(image)
    assert (got["seg"] == want["seg"]).mean() >= 0.99
    assert np.abs(got["depth"] - want["depth"]).max() < 1e-2
    assert trt is not None
