"""Backends: one small module per inference engine, all with the same contract.

`load(path, device="cpu", **options) -> Backend` opens a model file; the backend then has

* `metadata`: the mtlkd metadata dict, read from the file itself (safetensors header, ONNX
  `metadata_props`, OpenVINO `rt_info`, TensorRT `.engine.json` sidecar),
* `tasks`, `input_size` (H, W), `name`, `device`,
* `run(batch, tasks) -> {task: array}`: `batch` is float32 N x 3 x H x W RGB in [0, 1] at `input_size`;
  the result holds the raw network outputs (N x C x H x W float32) for exactly the requested tasks.

Engine modules are imported only when their backend is asked for, so that nothing here imports torch,
onnxruntime, openvino or tensorrt at import time. `available(name, device)` answers "could this backend
run here" from installed packages alone (it never imports them).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime.cpu import physical_cores  # noqa: F401  (the backends' default thread count)

MODULES = {
    "torch": "mtlkd.runtime.backends.torch_backend",
    "onnxruntime": "mtlkd.runtime.backends.onnxruntime_backend",
    "openvino": "mtlkd.runtime.backends.openvino_backend",
    "tensorrt": "mtlkd.runtime.backends.tensorrt_backend",
}
BACKEND_NAMES = tuple(MODULES)

# Which backends can open which file, in order of preference when nothing has been measured.
SUFFIXES: dict[str, tuple[str, ...]] = {
    ".safetensors": ("torch",),
    ".onnx": ("onnxruntime", "openvino"),
    ".xml": ("openvino",),
    ".engine": ("tensorrt",),
    ".plan": ("tensorrt",),
}

# The Python package each backend needs (checked with find_spec, i.e. without importing it).
PACKAGES = {"torch": ("torch", "timm"), "onnxruntime": ("onnxruntime",), "openvino": ("openvino",),
            "tensorrt": ("tensorrt",)}


class Backend:
    """What every backend shares; subclasses set `name` and implement `run`."""

    name = "base"
    max_batch: int | None = None  # largest batch `run` accepts (TensorRT profiles); None: any
    min_batch: int = 1  # smallest batch the engine takes; `run` pads smaller ones (TensorRT built elsewhere)

    def __init__(self, path: str | Path, device: str, metadata: dict[str, Any]):
        self.path = Path(path)
        self.device = device
        self.metadata = metadata
        self.tasks: list[str] = list(metadata["tasks"])
        size = metadata["input_size"]
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_tasks(self, tasks: list[str] | None) -> list[str]:
        tasks = list(self.tasks if tasks is None else tasks)
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise BackendError(f"{self.path.name} predicts {', '.join(self.tasks)}; it has no {', '.join(missing)}")
        if not tasks:
            raise BackendError("no task requested")
        if len(set(tasks)) != len(tasks):  # OpenVINO crashes the process on a repeated result
            raise BackendError(f"task list {','.join(tasks)!r} names a task twice; name each task once")
        return tasks

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.input_size:
            raise BackendError(f"expected a float32 N x 3 x {self.input_size[0]} x {self.input_size[1]} batch, "
                             f"got {batch.dtype} {tuple(batch.shape)}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} on {self.device}: {', '.join(self.tasks)}>"


def backends_for(path: str | Path) -> tuple[str, ...]:
    """The backends able to open this file, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise BackendError(
            f"{path}: unknown model file type {suffix or '(none)'}; pass a .safetensors checkpoint, an .onnx "
            f"file, an OpenVINO .xml or a TensorRT .engine"
        )
    return SUFFIXES[suffix]


def installed(name: str) -> bool:
    """Whether the backend's packages are installed (without importing them)."""
    if name not in PACKAGES:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
    return all(importlib.util.find_spec(pkg) is not None for pkg in PACKAGES[name])


def module(name: str):
    if name not in MODULES:
        raise BackendError(f"unknown backend {name!r}; known: auto, {', '.join(BACKEND_NAMES)}")
    return importlib.import_module(MODULES[name])


def available(name: str, device: str = "cpu") -> bool:
    """Whether `name` can run on `device` here: its packages are installed and it supports the device.
    Imports the engine package (not torch, unless `name` is torch) when it is installed."""
    return installed(name) and module(name).available(device)


def load_backend(name: str, path: str | Path, device: str = "cpu", **options: Any) -> Backend:
    """Open `path` with backend `name`; raises BackendUnavailable with an install hint when it cannot run."""
    if name not in backends_for(path):
        raise BackendError(f"{path}: the {name} backend cannot open {Path(path).suffix} files; "
                           f"use {' or '.join(backends_for(path))}")
    if not Path(path).is_file():
        raise BackendError(f"{path}: no such model file")
    if not installed(name):
        raise BackendUnavailable(f"the {name} backend is not installed ({INSTALL_HINTS[name]})")
    return module(name).load(path, device=device, **options)


INSTALL_HINTS = {
    "torch": "pip install 'mtlkd[train]'",
    "onnxruntime": "pip install onnxruntime, or onnxruntime-gpu for CUDA",
    "openvino": "pip install openvino",
    "tensorrt": "pip install 'mtlkd[gpu]' (tensorrt and cuda-python); needs an NVIDIA GPU",
}

