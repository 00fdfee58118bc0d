"""Shared fixtures: a random-weight vit-nano (32x32) checkpoint and its ONNX and OpenVINO IR exports.

The exports come from mtlkd.export when it is importable; otherwise a minimal local export with the same
contract (input `image`, one output per task, metadata JSON under `mtlkd`) stands in, so the runtime
tests do not depend on the exporter being finished.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CLASS_NAMES = ["wall", "floor", "chair", "table", "window"]
TASKS = ["seg", "depth", "normal"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's ~/.cache from a test."""
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path_factory.getbasetemp() / "mtlkd-cache"))


@pytest.fixture(scope="session")
def nano_model():
    torch = pytest.importorskip("torch")
    from mtlkd.checkpoint import model_metadata
    from mtlkd.models import create_model, preset_config

    config = preset_config("vit-nano", TASKS, class_names=CLASS_NAMES)
    torch.manual_seed(0)
    model = create_model(config).eval()
    return model, model_metadata(config)


@pytest.fixture(scope="session")
def nano_checkpoint(tmp_path_factory, nano_model) -> Path:
    from mtlkd.checkpoint import save_checkpoint

    model, metadata = nano_model
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors", model.state_dict(), metadata)


def _local_onnx(model, metadata, path: Path) -> Path:
    import warnings

    import onnx
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return tuple(out[t] for t in TASKS)

    h, w = metadata["input_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Outputs(model), torch.rand(1, 3, h, w), str(path), input_names=["image"],
                          output_names=TASKS, dynamic_axes={"image": {0: "batch"}}, opset_version=18, dynamo=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "mtlkd", json.dumps({**metadata, "input_name": "image", "precision": "fp32"})
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def nano_onnx(tmp_path_factory, nano_model) -> Path:
    model, metadata = nano_model
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    try:
        from mtlkd.export.onnx import export_onnx
    except ImportError:
        return _local_onnx(model, metadata, path)
    return Path(export_onnx(model, metadata, path))


@pytest.fixture(scope="session")
def nano_ir(tmp_path_factory, nano_model, nano_onnx) -> Path:
    pytest.importorskip("openvino")
    model, metadata = nano_model
    folder = tmp_path_factory.mktemp("ir")
    try:
        from mtlkd.export.openvino import export_openvino
    except ImportError:
        export_openvino = None
    if export_openvino is not None:
        return Path(export_openvino(nano_onnx, folder / "model.xml"))
    import openvino as ov

    ir = ov.Core().read_model(str(nano_onnx))
    ir.set_rt_info(json.dumps(metadata), ["mtlkd"])
    ov.save_model(ir, str(folder / "model.xml"), compress_to_fp16=False)
    return folder / "model.xml"


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish RGB uint8 image (random noise would make every backend's argmax a coin toss)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = (rng.random((max(2, height // 6), max(2, width // 6), 3)) * 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.fixture
def image_factory():
    return random_image
