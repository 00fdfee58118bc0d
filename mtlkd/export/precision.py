"""Reduced precision written into the ONNX graph itself, as TensorRT 11 requires.

TensorRT 11 networks are always strongly typed: the FP16/INT8 builder flags and INT8 calibrators are
gone, so the precision of every tensor must already be in the graph.

- fp16: a mixed-precision graph. Inputs and outputs stay float32; the input normalisation (Sub/Div),
  LayerNorm, Softmax, the L2 normalisation of normals (ReduceL2/Clip/Div), Softplus and the final
  upsampling stay float32 (`FP32_OPS`); matrix products, GELU and the rest run in float16. Converter:
  NVIDIA ModelOpt AutoCast (`modelopt.onnx.autocast`, what the TensorRT 11 migration guide names) when it
  is importable, else onnxconverter-common's `convert_float_to_float16` with the same block list.
  `nvidia-modelopt[onnx]` runs on the CPU, but on Linux x86 its extra pins `onnxruntime-gpu~=1.24` and
  `onnx~=1.21`, which replace the CPU `onnxruntime` wheel this project installs, so it is optional.
- int8: an explicitly quantised Q/DQ graph from ONNX Runtime's `quantize_static` (QuantFormat.QDQ):
  symmetric int8 activations (TensorRT supports only symmetric, zero-point 0), symmetric per-channel
  int8 weights in a 7-bit range (`reduce_range`), on the inputs of the MatMuls and Convs with weights;
  biases are left float (TensorRT has no int32 DequantizeLinear). Why 7 bits: a CPU without VNNI (AVX2,
  e.g. AMD Zen 3) multiplies int8 with VPMADDUBSW, which adds two u8 x s8 products into a saturating
  int16; with 8-bit weights that sum overflows (255 * 127 * 2 > 32767), and on such a CPU a trained
  model's depth came out tens of percent off and its normals several degrees, in ONNX Runtime and
  OpenVINO alike. With weights in [-64, 64] the sum fits on every CPU, so a file exported on one machine
  keeps its accuracy on all. Calibration: min/max over `--calib-data` images (default 32 synthetic
  scenes). The attention products (Q K^T and A V: both inputs are activations) stay in floating point by
  default (`keep_float=("attention",)`): quantising them too multiplies a trained model's output error
  several times over in every task, because softmax probabilities in [0, 1] get 127 symmetric levels and
  the keys' outliers set the scale of Q K^T. `int8_sensitivity` measures each group's cost on a model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError, ExportError
from mtlkd.export.onnx import save_onnx, set_metadata
from mtlkd.metadata import PRECISIONS, read_onnx_metadata

__all__ = ["FP32_OPS", "PRECISIONS", "QUANTIZED_OPS", "convert_fp16", "count_qdq", "fp16_converter",
           "load_calibration_images", "quantize_int8"]
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceL2", "ReduceMean", "ReduceSum", "Clip", "Sub", "Div",
            "Softplus", "Resize", "Exp", "Log", "Pow", "Sqrt")  # fmt: skip
QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------- fp16


def fp16_converter() -> str:
    """'modelopt' when NVIDIA ModelOpt's AutoCast can be imported, else 'onnxconverter-common'."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from modelopt.onnx.autocast import convert_to_mixed_precision  # noqa: F401
    except Exception:  # ImportError, or its own missing optional dependencies
        return "onnxconverter-common"
    return "modelopt"


def convert_fp16(src: str | Path, dst: str | Path, converter: str = "auto") -> Path:
    """Write the mixed-precision (float16 with float32 islands, float32 I/O) version of an fp32 graph."""
    import onnx

    meta = read_onnx_metadata(src)
    converter = fp16_converter() if converter == "auto" else converter
    if converter == "modelopt":
        from modelopt.onnx.autocast import convert_to_mixed_precision

        logging.getLogger("modelopt").setLevel(logging.ERROR)
        proto = convert_to_mixed_precision(
            onnx_path=str(src), low_precision_type="fp16", keep_io_types=True, op_types_to_exclude=list(FP32_OPS)
        )
    elif converter == "onnxconverter-common":
        from onnxconverter_common import float16

        block = sorted(set(FP32_OPS) | set(float16.DEFAULT_OP_BLOCK_LIST))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one warning per initializer value clamped to the fp16 range
            proto = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=block)
        _float32_outputs(proto)
    else:
        raise ConfigError(f"unknown fp16 converter {converter!r}; use auto, modelopt or onnxconverter-common")
    set_metadata(proto, {**meta, "precision": "fp16", "fp16_converter": converter, "fp32_ops": list(FP32_OPS)})
    onnx.checker.check_model(proto)
    return save_onnx(proto, dst)


def _float32_outputs(proto) -> None:
    """onnxconverter-common casts the output of a blocked node that is also a graph output to float16
    even with keep_io_types; turn that final Cast back into float32 so every output is float32."""
    from onnx import TensorProto

    producers = {out: node for node in proto.graph.node for out in node.output}
    for output in proto.graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        node = producers.get(output.name)
        if node is None or node.op_type != "Cast":
            raise ExportError(f"fp16 conversion left output {output.name!r} in float16")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = TensorProto.FLOAT
        output.type.tensor_type.elem_type = TensorProto.FLOAT


# ----------------------------------------------------------------------------------------------- int8


INT8_GROUPS = ("attention", "convolutions", "weights")  # what `keep_float` may name
DEFAULT_KEEP_FLOAT = ("attention",)


def int8_groups(model: str | Path | Any) -> dict[str, list[str]]:
    """The quantisable nodes of a graph by role: `attention` (MatMuls whose inputs are both activations:
    Q K^T and A V in every block, and the heads' products of patches with their queries), `convolutions`
    (the patch embedding, CNN layers) and `weights` (every MatMul or Gemm with a constant operand: qkv,
    projections, MLPs, heads)."""
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    constants = {i.name for i in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}

    def constant(name: str) -> bool:  # an initializer, maybe through shape-only ops
        if name in constants:
            return True
        node = producers.get(name)
        return node is not None and node.op_type in ("Constant", "Transpose", "Reshape", "Cast", "Identity") and \
            all(constant(i) for i in node.input if i)  # fmt: skip

    groups: dict[str, list[str]] = {g: [] for g in INT8_GROUPS}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            groups["convolutions"].append(node.name)
        elif node.op_type in ("MatMul", "Gemm"):
            groups["weights" if any(constant(i) for i in node.input[:2]) else "attention"].append(node.name)
    return groups


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray, source: str = "synthetic",
                  keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT) -> Path:  # fmt: skip
    """Write a Q/DQ int8 graph of an fp32 graph, calibrated on `calibration` (N x 3 x H x W float32); the
    node groups named in `keep_float` (see `int8_groups`) stay in floating point."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    unknown = [g for g in keep_float if g not in INT8_GROUPS]
    if unknown:
        raise ConfigError(f"int8 keep_float {', '.join(unknown)}: unknown; known groups: {', '.join(INT8_GROUPS)}")
    import onnx as onnx_module

    graph = onnx_module.load(str(src))  # read once for its metadata and its node groups
    meta = read_onnx_metadata(graph)
    input_name = meta.get("input_name", "image")
    groups = int8_groups(graph)
    excluded = [name for group in keep_float for name in groups[group]]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True, reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )  # fmt: skip
        proto = onnx.load(str(out))
    set_metadata(proto, {**meta, "precision": "int8",
                         "quantization": {"format": "QDQ", "activations": "int8 symmetric per-tensor",
                                          "weights": "int8 symmetric per-channel, 7-bit range",
                                          "ops": list(QUANTIZED_OPS),
                                          "float_groups": list(keep_float), "float_nodes": len(excluded),
                                          "calibration": {"method": "minmax", "images": int(len(calibration)),
                                                          "source": source}}})  # fmt: skip
    return save_onnx(proto, dst)


def int8_sensitivity(src: str | Path, calibration: np.ndarray, images: np.ndarray,
                     reference: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """What each node group costs in int8: the output errors (mtlkd.accuracy) of the graph with every
    group quantised ("none" kept float) and with each group kept in floating point in turn. Each entry
    also says how many nodes the group has; a group whose float copy removes most of the error is the one
    to keep float."""
    from mtlkd.accuracy import compare_outputs
    from mtlkd.export.validate import run_onnxruntime

    groups = int8_groups(src)
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mtl-int8-") as tmp:
        for kept in ("none", *(g for g in INT8_GROUPS if groups[g])):
            path = quantize_int8(src, Path(tmp) / f"{kept}.onnx", calibration, keep_float=() if kept == "none"
                                 else (kept,))  # fmt: skip
            errors = compare_outputs(reference, run_onnxruntime(path, images, list(reference)))
            out[kept] = {"nodes": len(groups.get(kept, [])),
                         "errors": {t: e.to_dict() for t, e in errors.items()}}  # fmt: skip
    return out


@contextlib.contextmanager
def _quiet_root_logger():
    """quantize_static logs 'Please consider pre-processing' on the root logger: not for our users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def count_qdq(model: str | Path | Any) -> dict[str, int]:
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    ops = [n.op_type for n in proto.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


# ---------------------------------------------------------------------------------------- calibration


def load_calibration_images(
    source: str | Path | None, input_size: Sequence[int], n: int = 32, seed: int = 2024
) -> tuple[np.ndarray, str]:
    """Up to n calibration images (N x 3 x H x W float32 in [0, 1]) and a description of where from.

    `source`: None for n synthetic scenes; a dataset folder (`DIR/{train,val}/image/*.npy`, H x W x 3
    float32, train preferred) or a folder of .npy arrays or image files (png, jpg, ...). Images of another
    size are resized to the model's input size.
    """
    from mtlkd.errors import UserError

    height, width = (int(v) for v in input_size)
    if source is None:
        from mtlkd.export.validate import validation_images

        return validation_images((height, width), n=n, seed=seed), f"{n} synthetic scenes"
    root = Path(source)
    if not root.is_dir():
        raise UserError(f"{root}: calibration data must be a folder (a dataset or a folder of images)")
    folder = next((d for d in (root / "train" / "image", root / "val" / "image", root / "image") if d.is_dir()), root)
    files = sorted((f for f in folder.iterdir() if f.suffix.lower() in (".npy", *IMAGE_SUFFIXES)), key=_natural)
    if not files:
        raise UserError(f"{folder}: no .npy arrays or images (png, jpg, ...) to calibrate on")
    if len(files) > n:
        files = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    images = np.stack([_read_image(f, height, width) for f in files])
    return images.transpose(0, 3, 1, 2).copy(), f"{len(files)} images from {folder}"


def _natural(path: Path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.name)


def _read_image(path: Path, height: int, width: int) -> np.ndarray:
    """One image as H x W x 3 float32 RGB in [0, 1] at the model's input size."""
    import cv2

    from mtlkd.errors import UserError

    if path.suffix.lower() == ".npy":
        image = np.load(path, allow_pickle=False).astype(np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise UserError(f"{path}: expected an H x W x 3 image array, got shape {image.shape}")
        if image.max() > 1.5:
            image = image / 255.0
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except OSError as exc:
            raise UserError(f"{path}: cannot read image ({exc})") from None
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
