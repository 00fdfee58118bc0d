"""What `export_model` is asked to do (`ExportOptions`), the names of the files it writes, and the checks of
those options: each field records the `mtl-export` flag that sets it, so a mistake is one ConfigError line
naming that flag (`--precision int4: choose ...`), raised when the options are made, before anything is built.
Fields no flag sets (the benchmark's `names`, `reuse`...) are named as `ExportOptions.<field>`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError
from mtlkd.export.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from mtlkd.export.triton import TRITON_BACKENDS
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


def option(default: Any = None, flag: str | None = None, *, factory: Any = None) -> Any:
    """A field of ExportOptions with the `mtl-export` flag that sets it (None: set from Python only)."""
    metadata = {"flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    """How an error names the ExportOptions field `name`: its flag, or `ExportOptions.name` without one."""
    fields = {f.name: f for f in dataclasses.fields(ExportOptions)}
    return fields[name].metadata.get("flag") or f"ExportOptions.{name}"


def refuse(name: str, value: Any, why: str) -> ConfigError:
    """The one line for a bad value of field `name`: its flag, the value, what is wrong and what to do."""
    if isinstance(value, tuple | list):
        value = ",".join(str(v) for v in value)
    return ConfigError(f"{flag_of(name)} {value}: {why}")


@dataclass
class ExportOptions:
    """What to export and how, checked when made (`__post_init__`; the output folder and the model's tasks
    when the export starts: `check_out`, `export_tasks`). `formats`: any of FORMATS (the fp32 ONNX graph is
    always written: every other file starts from it). `precisions`: the precisions of every requested format
    (fp16/int8 graphs come with them whenever ONNX or TensorRT is asked for, or OpenVINO int8 from the Q/DQ
    graph)."""

    formats: Sequence[str] = option(("onnx",))  # set by --onnx, --ort-optimize, --openvino, --trt
    precisions: Sequence[str] = option(("fp32",), "--precision")
    tasks: Sequence[str] | None = option(None, "--tasks")  # default: every task of the model
    validate: bool = option(True)  # run every file and compare it with its reference; False: build only (bench)
    opset: int = option(DEFAULT_OPSET, "--opset")
    # False (the default): outputs at the heads' own grid, `output_stride` in the metadata; the runtime
    # resizes them once, straight to each image's own size. True: the graph upsamples to its input size.
    full_resolution: bool = option(False, "--full-resolution")
    device: str = option("cpu", "--device")  # where the network runs while exporting and validating
    calib_data: Path | None = option(None, "--calib-data")  # int8 calibration: a dataset or a folder of images
    calib_size: int = option(32, "--calib-size")
    calibration: tuple[np.ndarray, str] | None = option(None)  # preloaded (images N x 3 x H x W, description)
    int8_source: str = option("qdq")  # OpenVINO int8 IR from the Q/DQ graph, or "nncf" post-training quantisation
    # TensorRT min,opt,max (a string or three numbers; held as the checked tuple); max is Triton's max batch
    batch_profile: tuple[int, int, int] | str = option(DEFAULT_BATCH, "--batch-size")
    workspace_mb: int = option(DEFAULT_WORKSPACE_MB, "--workspace")
    timing_cache: Path | None = option(None)  # default: out/timing.cache
    triton: Path | None = option(None, "--triton")  # also write a Triton model repository here
    triton_backend: str = option("native", "--triton-backend")  # Triton's own backends, or "python": the Predictor
    names: Mapping[str, str] = option(factory=dict)  # artifact key -> path under out (DEFAULT_NAMES)
    reuse: bool = option(False)  # keep a file already at its name in out instead of rebuilding it
    report: bool = option(True)  # write out/export.json

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise refuse("formats", unknown[0], f"choose from {', '.join(FORMATS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise refuse("precisions", ",".join(bad) or "(none)", f"choose one or more of {', '.join(PRECISIONS)}")
        if len(set(self.precisions)) != len(self.precisions):
            raise refuse("precisions", self.precisions, "a precision is named twice; name each once")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise refuse("opset", self.opset, f"the exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")
        if self.int8_source not in INT8_SOURCES:
            raise refuse("int8_source", self.int8_source, f"choose {' or '.join(INT8_SOURCES)}")
        self.batch_profile = parse_batch_profile(self.batch_profile)
        for name in ("calib_size", "workspace_mb"):
            if getattr(self, name) < 1:
                raise refuse(name, getattr(self, name), "must be 1 or more")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise refuse("device", self.device, "choose cpu or cuda")
        if self.calib_data is not None and "int8" not in self.precisions:
            raise refuse("calib_data", self.calib_data, "calibration images are only used for int8; add "
                                                        "--precision int8 or drop it")
        if self.triton is not None and len(self.precisions) > 1:
            raise refuse("triton", self.triton, f"a Triton repository serves one precision, not "
                                                f"{', '.join(self.precisions)}; export them separately")
        if self.triton_backend not in TRITON_BACKENDS:
            raise refuse("triton_backend", self.triton_backend, f"choose {' or '.join(TRITON_BACKENDS)}")
        for key, name in self.names.items():
            if key not in DEFAULT_NAMES:
                raise refuse("names", key, f"not an artifact (known: {', '.join(DEFAULT_NAMES)})")
            if Path(name).is_absolute() or ".." in Path(name).parts or not Path(name).suffix:
                raise refuse("names", name, "give a relative file name with a suffix, inside the output folder")

    def check_out(self, out: Path) -> None:
        """What is on disk, checked when the export starts: the calibration folder exists, and the output
        folder and the Triton repository can be written."""
        if self.calib_data is not None and not Path(self.calib_data).is_dir():
            raise refuse("calib_data", self.calib_data, "no such folder; pass a dataset or a folder of images")
        if self.triton is not None:
            from mtlkd.files import cannot_write

            why = cannot_write(Path(self.triton) / "README.md")
            if why or (Path(self.triton).exists() and not Path(self.triton).is_dir()):
                raise refuse("triton", self.triton, why or "exists and is not a folder; pass a folder")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder; pass a folder")
        existing = out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: {existing} is not writable; choose another output folder")

    def export_tasks(self, meta: Mapping[str, Any]) -> list[str]:
        """The tasks to export: `tasks`, checked against the model's (metadata `meta`), or all of them."""
        from mtlkd.tasks import parse_tasks

        if self.tasks is None:
            return list(meta["tasks"])
        try:
            return parse_tasks(list(self.tasks), available=list(meta["tasks"]))
        except ValueError as err:  # the task registry's own message says which name and why
            raise refuse("tasks", self.tasks, str(err)) from None


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
            raise refuse("batch_profile", text, "expected MIN,OPT,MAX integers, e.g. 1,4,8") from None
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = [1, values[0], values[0]]
    if len(values) != 3:
        raise refuse("batch_profile", text, "expected three numbers MIN,OPT,MAX, e.g. 1,4,8")
    low, opt, high = values
    if not low <= opt <= high:
        raise refuse("batch_profile", text, "need MIN <= OPT <= MAX")
    if high > MAX_PROFILE_BATCH:
        raise refuse("batch_profile", text, f"MAX must be at most {MAX_PROFILE_BATCH} (Triton's "
                                                 f"max_batch_size and TensorRT's dimensions are 32-bit integers)")
    if low != 1:
        raise refuse("batch_profile", text, f"MIN must be 1 (one image, or the last part of a batch, is sent as "
                                                 f"a smaller batch by the Predictor and by Triton); use 1,{opt},{high}")
    return low, opt, high
