"""The files each configuration loads: made once by the export pipeline (`mtlkd.export.export_model`,
the call behind mtl-export) into the model's cache folder, under the benchmark's own names, without the
exporter's checks (the benchmark measures accuracy itself) and reused by later runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtlkd.bench.models import Model

# configuration artifact -> (format, precision, int8 source)
KINDS: dict[str, tuple[str, str, str]] = {
    "onnx": ("onnx", "fp32", "qdq"), "fp16.onnx": ("onnx", "fp16", "qdq"), "int8.onnx": ("onnx", "int8", "qdq"),
    "ort.onnx": ("ort", "fp32", "qdq"), "ov-fp16": ("openvino", "fp16", "qdq"), "ov-int8": ("openvino", "int8", "qdq"),
    "ov-int8-nncf": ("openvino", "int8", "nncf"), "trt-fp32": ("tensorrt", "fp32", "qdq"),
    "trt-fp16": ("tensorrt", "fp16", "qdq"), "trt-int8": ("tensorrt", "int8", "qdq"),
}  # fmt: skip


def artifact(model: Model, kind: str, calibration: tuple[np.ndarray, str], calib_tag: str) -> Path:
    """The file a configuration loads, exported into the model's cache folder when missing."""
    from mtlkd.export.pipeline import ExportOptions, artifact_key, export_model

    if kind == "ckpt":
        return model.checkpoint
    fmt, precision, int8_source = KINDS[kind]
    nncf = "_nncf" if int8_source == "nncf" else ""
    names = {"onnx": "model.onnx", "onnx.fp16": "model.fp16.onnx", "onnx.int8": f"model.int8-{calib_tag}.onnx",
             "ort": "model.ort.onnx", "openvino.fp16": "openvino_fp16/model.xml",
             "openvino.int8": f"openvino_int8{nncf}-{calib_tag}/model.xml", "tensorrt": "model.fp32.engine",
             "tensorrt.fp16": "model.fp16.engine", "tensorrt.int8": "model.int8.engine"}  # fmt: skip
    options = ExportOptions(formats=[fmt], precisions=[precision], tasks=model.tasks, validate=False, reuse=True,
                            report=False, names=names, int8_source=int8_source,
                            calibration=calibration if precision == "int8" else None)  # fmt: skip
    result = export_model(model.checkpoint, model.folder, options)
    if result.problems:  # e.g. no TensorRT here: the configuration is skipped with this reason
        raise RuntimeError(result.problems[0])
    return result.path(artifact_key(fmt, precision))
