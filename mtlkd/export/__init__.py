"""Export: PyTorch checkpoint -> ONNX (always) -> fp16/int8 graphs, TensorRT engine, OpenVINO IR, Triton.

`export_model(source, out, options)` (`mtlkd.export.pipeline`) is the whole chain in one call, with the
checks and the safe writes of `mtl-export`; the modules below are its steps.

Every artifact carries the same metadata (`export_metadata`): the checkpoint's config, tasks, class
names, input size, normalisation and output conventions plus source hash, opset and precision, so that
the torch-free runtime needs no side file. Every artifact is validated against PyTorch (or the fp32 graph)
on synthetic scenes before it is reported as written (`mtlkd.export.validate`).

Modules import their heavy dependencies (torch, onnx, onnxruntime, openvino, tensorrt) inside functions.
"""

from mtlkd.errors import ValidationError
from mtlkd.export.onnx import (
    DEFAULT_OPSET,
    INPUT_NAME,
    METADATA_KEY,
    export_metadata,
    export_onnx,
    graph_stats,
    optimize_for_ort,
    read_onnx_metadata,
)
from mtlkd.export.openvino import export_openvino, read_openvino_metadata
from mtlkd.export.options import parse_batch_profile
from mtlkd.export.pipeline import DEFAULT_NAMES, FORMATS, Artifact, ExportOptions, ExportResult, export_model
from mtlkd.export.precision import PRECISIONS, convert_fp16, load_calibration_images, quantize_int8
from mtlkd.export.tensorrt import (
    BackendUnavailable,
    EngineBuildError,
    build_engine,
    profile_shapes,
)
from mtlkd.export.triton import write_triton_repo
from mtlkd.export.validate import validation_images

__all__ = [
    "DEFAULT_NAMES", "FORMATS", "Artifact", "ExportOptions", "ExportResult", "export_model",
    "DEFAULT_OPSET", "INPUT_NAME", "METADATA_KEY", "PRECISIONS", "EngineBuildError",
    "BackendUnavailable", "ValidationError", "build_engine", "convert_fp16", "export_metadata", "export_onnx",
    "export_openvino", "graph_stats", "load_calibration_images", "optimize_for_ort", "parse_batch_profile",
    "profile_shapes", "quantize_int8", "read_onnx_metadata", "read_openvino_metadata", "validation_images",
    "write_triton_repo",
]
