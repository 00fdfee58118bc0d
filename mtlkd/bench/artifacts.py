"""The files each configuration loads, exported once into the model's cache folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mtlkd.bench.models import Model


def artifact(model: Model, kind: str, calibration: tuple[np.ndarray, str], calib_tag: str) -> Path:
    """The file a configuration loads, exported into the model's cache folder when missing."""
    from mtlkd.export import openvino as ov_export
    from mtlkd.export import precision as prec
    from mtlkd.export.onnx import export_onnx, optimize_for_ort

    folder = model.folder
    onnx_path = folder / "model.onnx"
    if kind == "ckpt":
        return model.checkpoint
    if kind != "onnx":
        artifact(model, "onnx", calibration, calib_tag)
    paths = {"onnx": onnx_path, "fp16.onnx": folder / "model.fp16.onnx", "ort.onnx": folder / "model.ort.onnx",
             "int8.onnx": folder / f"model.int8-{calib_tag}.onnx", "ov-fp16": folder / "openvino_fp16" / "model.xml",
             "ov-int8": folder / f"openvino_int8-{calib_tag}" / "model.xml",
             "ov-int8-nncf": folder / f"openvino_int8_nncf-{calib_tag}" / "model.xml"}  # fmt: skip
    if kind.startswith("trt-"):
        precision = kind[4:]
        source = {"fp32": "onnx", "fp16": "fp16.onnx", "int8": "int8.onnx"}[precision]
        graph = artifact(model, source, calibration, calib_tag)
        engine = folder / f"model.{precision}.engine"
        if not engine.is_file():
            from mtlkd.export.tensorrt import build_engine

            build_engine(graph, engine)
        return engine
    path = paths[kind]
    if path.is_file():
        return path
    if kind == "onnx":
        export_onnx(model.net, model.metadata, path, model.tasks)
    elif kind == "fp16.onnx":
        prec.convert_fp16(onnx_path, path)
    elif kind == "int8.onnx":
        prec.quantize_int8(onnx_path, path, calibration[0], calibration[1])
    elif kind == "ort.onnx":
        optimize_for_ort(onnx_path, path)
    else:  # OpenVINO IR, written into a temporary folder and renamed, so an interrupted export is redone
        tmp = path.parent.with_name(path.parent.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if kind == "ov-fp16":
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="fp16")
        elif kind == "ov-int8":
            qdq = artifact(model, "int8.onnx", calibration, calib_tag)
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="int8", int8_source="qdq", qdq_path=qdq)
        else:
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="int8", int8_source="nncf",
                                      calibration=calibration[0])  # fmt: skip
        shutil.rmtree(path.parent, ignore_errors=True)
        tmp.replace(path.parent)
    return path
