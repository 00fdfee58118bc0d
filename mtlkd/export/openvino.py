"""ONNX -> OpenVINO IR (model.xml + model.bin) with the mtlkd metadata in the IR's rt_info.

- fp32: `openvino.convert_model` of the fp32 ONNX graph, saved with `compress_to_fp16=False`.
- fp16: the same model saved with `compress_to_fp16=True` (weights stored as float16; the CPU plugin
  still computes in float32, or bf16 where the CPU has it, while a GPU plugin computes in float16).
  The mixed-precision ONNX graph is not used: its Casts only pin the CPU to extra conversions.
- int8: the Q/DQ ONNX graph of `mtlkd.export.precision` (the one TensorRT gets), converted by OpenVINO
  (Q/DQ pairs become FakeQuantize, executed as int8 kernels). NNCF post-training quantisation of the fp32
  IR (`nncf.quantize`, transformer preset, SmoothQuant off) is the alternative (`int8_source="nncf"`).
  The Q/DQ graph is the default (`INT8_SOURCE`): one calibration serves TensorRT and OpenVINO alike, its
  IR runs about as fast as NNCF's on a CPU with int8 kernels (both about twice the fp32 IR's speed), and
  it keeps segmentation closer to the fp32 model (depth and normals about alike). `mtl-bench` compares
  them on a given model and machine.

The metadata JSON is stored in the IR's rt_info at ["mtlkd", "metadata"] and read back with
`read_openvino_metadata(xml)` (both in `mtlkd.metadata`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendUnavailable, ConfigError
from mtlkd.metadata import (
    OPENVINO_RT_INFO,
    mark_openvino_weights,
    read_openvino_metadata,
    seal_openvino_weights,
    set_openvino_metadata,
)

__all__ = ["INT8_SOURCE", "OPENVINO_RT_INFO", "export_openvino", "nncf_quantize",
           "read_openvino_metadata", "require_openvino"]


def require_openvino():
    """The `openvino` module, or BackendUnavailable in one line (not a ModuleNotFoundError traceback)."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("--openvino needs OpenVINO, which is not installed (pip install openvino, or "
                                  "pip install 'mtlkd[cpu]')") from None
    return openvino
INT8_SOURCE = "qdq"  # as fast as NNCF's IR and closer to fp32 on segmentation: see the module docstring


def export_openvino(
    onnx_path: str | Path,
    xml_path: str | Path,
    metadata: dict[str, Any] | None = None,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
    int8_source: str = INT8_SOURCE,
    qdq_path: str | Path | None = None,
) -> Path:
    """Write an OpenVINO IR for the fp32 ONNX graph `onnx_path` at `xml_path` (plus the .bin beside it).

    int8 needs `qdq_path` (the Q/DQ ONNX graph, default `int8_source="qdq"`) or, with
    `int8_source="nncf"`, `calibration` images (N x 3 x H x W). Returns the .xml path.
    """
    from mtlkd.export.onnx import read_onnx_metadata

    ov = require_openvino()
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    meta = dict(metadata or read_onnx_metadata(onnx_path))
    extra: dict[str, Any] = {}
    if precision == "int8" and int8_source == "qdq":
        if qdq_path is None:
            raise ValueError("int8 OpenVINO IR from the Q/DQ graph needs qdq_path")
        model = ov.convert_model(str(qdq_path))
        extra = {"int8": "Q/DQ ONNX graph converted by OpenVINO"}
    else:
        model = ov.convert_model(str(onnx_path))
        if precision == "int8":
            if calibration is None:
                raise ValueError("int8 OpenVINO IR with NNCF needs calibration images")
            model = nncf_quantize(model, calibration, meta.get("input_name", "image"))
            extra = {"int8": f"NNCF post-training quantisation ({len(calibration)} calibration images)"}
        elif precision not in ("fp32", "fp16"):
            raise ConfigError(f"unknown precision {precision!r}")
    # The CPU plugin picks bf16 compute on CPUs with avx512_bf16/AMX unless told otherwise; the runtime
    # should pass this hint to keep the accuracy the export was validated with.
    meta.update(precision=precision, format="openvino-ir", openvino_version=ov.get_version(),
                openvino_config={"INFERENCE_PRECISION_HINT": "f32"}, **extra)  # fmt: skip
    set_openvino_metadata(model, meta)
    mark_openvino_weights(model)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=(precision == "fp16"))
    seal_openvino_weights(xml_path)  # the .bin's hash in the .xml: a .bin of another model is refused on load
    return xml_path


def nncf_quantize(model, calibration: np.ndarray, input_name: str = "image"):
    """NNCF post-training int8 quantisation of an OpenVINO model on calibration images."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on import
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    logging.getLogger("nncf").setLevel(logging.ERROR)
    nncf.set_log_level(logging.ERROR)
    items = [np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32) for i in range(len(calibration))]
    dataset = nncf.Dataset(items)
    return nncf.quantize(
        model, dataset, subset_size=len(items), model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        # SmoothQuant (on by default for transformers) is off: it wrecks these networks' depth and normal
        # heads (tens of percent of depth error, tens of degrees), where plain min/max stays near 1%.
        # overflow_fix on every layer (NNCF's default is the first only): weights in a 7-bit range, so no CPU
        # without VNNI saturates its int16 sums (see mtlkd.export.precision); the IR runs on any CPU.
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE, smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)),
    )  # fmt: skip
