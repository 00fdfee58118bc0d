"""What `export_model` is asked to do (`ExportOptions`), the names of the files it writes, and the checks of
those options before anything is built: a mistake is one ConfigError line naming the option (`option_error`),
which the command line reports under its flag's name (`flag_message`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError
from mtlkd.export.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from mtlkd.metadata import PRECISIONS

DEFAULT_BATCH = (1, 4, 8)
DEFAULT_WORKSPACE_MB = 4096

FORMATS = ("onnx", "ort", "openvino", "tensorrt")  # ort: the ONNX Runtime-only fused graph (fp32)
INT8_SOURCES = ("qdq", "nncf")
REPORT_NAME = "export.json"
# Artifact key -> file name under `out`: "<format>" for fp32, "<format>.<precision>" otherwise.
DEFAULT_NAMES: dict[str, str] = {
    "onnx": "model.onnx", "onnx.fp16": "model.fp16.onnx", "onnx.int8": "model.int8.onnx", "ort": "model.ort.onnx",
    "openvino": "openvino/model.xml", "openvino.fp16": "openvino/model.fp16.xml",
    "openvino.int8": "openvino/model.int8.xml",
    "tensorrt": "model.engine", "tensorrt.fp16": "model.fp16.engine", "tensorrt.int8": "model.int8.engine",
}  # fmt: skip


def artifact_key(fmt: str, precision: str = "fp32") -> str:
    """("openvino", "int8") -> "openvino.int8"; fp32 files are keyed by their format alone."""
    return fmt if precision == "fp32" else f"{fmt}.{precision}"


def option_error(field: str, value: Any, why: str) -> ConfigError:
    """A ConfigError about the ExportOptions field `field`; it keeps `option`, `value` and `why`, so a command
    line can say it with its own flag's name (`flag_message`)."""
    if isinstance(value, tuple | list):
        value = ",".join(str(v) for v in value)
    error = ConfigError(f"{field} {value}: {why}")
    error.option, error.value, error.why = field, value, why  # type: ignore[attr-defined]
    return error


def flag_message(error: Exception, flags: Mapping[str, str]) -> str:
    """The message of an option error with the option named as `flags` spells it (field -> flag)."""
    option = getattr(error, "option", None)
    if option is None:
        return str(error)
    return f"{flags.get(option, option)} {error.value}: {error.why}"  # type: ignore[attr-defined]


@dataclass
class ExportOptions:
    """What to export and how. `formats`: any of FORMATS (the fp32 ONNX graph is always written: every other
    file starts from it). `precisions`: the precisions of every requested format (fp16/int8 graphs come
    with them whenever ONNX or TensorRT is asked for, or OpenVINO int8 from the Q/DQ graph)."""

    formats: Sequence[str] = ("onnx",)
    precisions: Sequence[str] = ("fp32",)
    tasks: Sequence[str] | None = None  # default: every task of the model
    validate: bool = True  # run every file and compare it with its reference; False: build only (benchmarks)
    opset: int = DEFAULT_OPSET
    # False (the default): outputs at the heads' own grid, `output_stride` in the metadata; the runtime
    # resizes them once, straight to each image's own size. True: the graph upsamples to its input size.
    full_resolution: bool = False
    device: str = "cpu"  # where the network runs while exporting and validating (cpu, cuda)
    calib_data: Path | None = None  # int8 calibration: a dataset folder or a folder of images
    calib_size: int = 32
    calibration: tuple[np.ndarray, str] | None = None  # preloaded (images N x 3 x H x W, description)
    int8_source: str = "qdq"  # OpenVINO int8 IR from the Q/DQ graph, or "nncf" post-training quantisation
    batch_profile: tuple[int, int, int] | str = DEFAULT_BATCH  # TensorRT min,opt,max; max is Triton's max batch
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None  # default: out/timing.cache
    triton: Path | None = None  # also write a Triton model repository here
    triton_backend: str = "native"  # its models on Triton's own backends, or "python": model.py runs the Predictor
    names: Mapping[str, str] = field(default_factory=dict)  # artifact key -> path under out (DEFAULT_NAMES)
    reuse: bool = False  # keep a file already at its name in out instead of rebuilding it
    report: bool = True  # write out/export.json


def check_options(options: ExportOptions, meta: dict[str, Any], out: Path) -> list[str]:
    """Refuse options that cannot work, in one line each, before anything is built; returns the task list."""
    from mtlkd.tasks import parse_tasks

    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown:
        raise option_error("formats", unknown[0], f"choose from {', '.join(FORMATS)}")
    bad = [p for p in options.precisions if p not in PRECISIONS]
    if bad or not options.precisions:
        raise option_error("precisions", ",".join(bad) or "(none)", f"choose one or more of {', '.join(PRECISIONS)}")
    if len(set(options.precisions)) != len(options.precisions):
        raise option_error("precisions", ",".join(options.precisions), "a precision is named twice")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise option_error("opset", options.opset, f"the exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")
    if options.int8_source not in INT8_SOURCES:
        raise option_error("int8_source", options.int8_source, f"choose {' or '.join(INT8_SOURCES)}")
    parse_batch_profile(options.batch_profile)
    for name in ("calib_size", "workspace_mb"):
        if getattr(options, name) < 1:
            raise option_error(name, getattr(options, name), "must be 1 or more")
    if options.device not in ("cpu", "cuda") and not str(options.device).startswith("cuda:"):
        raise option_error("device", options.device, "choose cpu or cuda")
    if options.calib_data is not None:
        if not Path(options.calib_data).is_dir():
            raise option_error("calib_data", options.calib_data, "no such folder")
        if "int8" not in options.precisions:
            raise option_error("calib_data", options.calib_data, "calibration images are only used for int8")
    if options.triton is not None and len(options.precisions) > 1:
        raise option_error("triton", options.triton, f"a Triton repository serves one precision, not "
                                                    f"{', '.join(options.precisions)}; export them separately")
    from mtlkd.export.triton import TRITON_BACKENDS

    if options.triton_backend not in TRITON_BACKENDS:
        raise option_error("triton_backend", options.triton_backend, f"choose {' or '.join(TRITON_BACKENDS)}")
    for key, name in options.names.items():
        if key not in DEFAULT_NAMES:
            raise option_error("names", key, f"not an artifact (known: {', '.join(DEFAULT_NAMES)})")
        if Path(name).is_absolute() or ".." in Path(name).parts or not Path(name).suffix:
            raise option_error("names", name, "give a relative file name with a suffix, inside the output folder")
    if options.triton is not None:  # checked now, not after the export is built
        from mtlkd.files import cannot_write

        why = cannot_write(Path(options.triton) / "README.md")
        if why or (Path(options.triton).exists() and not Path(options.triton).is_dir()):
            raise option_error("triton", options.triton, why or "exists and is not a folder")
    if out.exists() and not out.is_dir():
        raise option_error("out", out, "exists and is not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise option_error("out", out, f"{existing} is not writable; choose another output folder")
    if options.tasks is None:
        return list(meta["tasks"])
    try:
        return parse_tasks(list(options.tasks), available=list(meta["tasks"]))
    except ValueError as err:  # the task registry's own message says which name and why
        raise option_error("tasks", ",".join(options.tasks), str(err)) from None


MAX_PROFILE_BATCH = 2**31 - 1  # int32: Triton's model_config max_batch_size, a TensorRT dimension


def parse_batch_profile(text: str | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """'1,4,8' -> (1, 4, 8): the min, opt and max batch of the optimisation profile (1 = min <= opt <= max).
    A single number N means 1,N,N.

    The minimum must be 1: the Predictor sends the remainder of a folder (or one image) as a smaller batch,
    and Triton's dynamic batcher sends whatever has queued, so an engine whose profile starts above 1 would
    refuse them. The runtime pads the batch for engines built elsewhere with a larger minimum."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise option_error("batch_profile", text, "expected MIN,OPT,MAX integers, e.g. 1,4,8") from None
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = [1, values[0], values[0]]
    if len(values) != 3:
        raise option_error("batch_profile", text, "expected three numbers MIN,OPT,MAX, e.g. 1,4,8")
    low, opt, high = values
    if not low <= opt <= high:
        raise option_error("batch_profile", text, "need MIN <= OPT <= MAX")
    if high > MAX_PROFILE_BATCH:
        raise option_error("batch_profile", text, f"MAX must be at most {MAX_PROFILE_BATCH} (Triton's "
                                                 f"max_batch_size and TensorRT's dimensions are 32-bit integers)")
    if low != 1:
        raise option_error("batch_profile", text, f"MIN must be 1 (one image, or the last part of a batch, is sent as "
                                                 f"a smaller batch by the Predictor and by Triton); use 1,{opt},{high}")
    return low, opt, high
