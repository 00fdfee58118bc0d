"""Backends: one small module per inference engine, all with the same contract.

`load(path, device="cpu", **options) -> Backend` opens a model file; the backend then has

* `metadata`: the mtlkd metadata dict, read from the file itself (safetensors header, ONNX
  `metadata_props`, OpenVINO `rt_info`, TensorRT `.engine.json` sidecar),
* `tasks`, `input_size` (H, W), `name`, `device`,
* `run(batch, tasks) -> {task: array}`: `batch` is float32 N x 3 x H x W RGB in [0, 1] at `input_size`;
  the result holds the raw network outputs (N x C x H x W float32) for exactly the requested tasks.

A backend module also has `available(device)` (could it run here; the engine may be imported), and, when
its spec says `foreign`, `load_foreign(path, teacher, device, threads)` for files without mtlkd metadata.

What each backend is (suffixes, packages, install hint, devices, GPU rank, benchmark paths) is its
`BackendSpec` in `registry.py`, the one place a backend is named; a new backend is its module here plus one
`register_backend` entry there. Engine modules are imported only when their backend is asked for, so that
nothing here imports torch, onnxruntime, openvino or tensorrt at import time. `available(name, device)`
answers "could this backend run here" from installed packages and the spec's devices (it imports the
engine only when both allow it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime.backends.registry import (  # noqa: F401  (the backends' public vocabulary)
    BACKENDS,
    BackendSpec,
    BenchPrecision,
    BenchVariant,
    backend_names,
    backend_spec,
    backends_for,
    default_device,
    file_types,
    gpu_order,
    install_hint,
    installed,
    register_backend,
    suffixes,
    unregister_backend,
    version_distributions,
)
from mtlkd.runtime.cpu import physical_cores  # noqa: F401  (the backends' default thread count)


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


def module(name: str):
    """The backend's module (imported now: the engine package itself only inside its functions)."""
    return importlib.import_module(backend_spec(name).module)


def available(name: str, device: str = "cpu") -> bool:
    """Whether `name` can run on `device` here: its packages are installed and it supports the device.
    Imports the engine package (not torch, unless `name` is torch) when it is installed."""
    return device in backend_spec(name).devices and installed(name) and module(name).available(device)


def load_backend(name: str, path: str | Path, device: str = "cpu", **options: Any) -> Backend:
    """Open `path` with backend `name`; raises BackendUnavailable with an install hint when it cannot run."""
    able = backends_for(path)
    if name not in able:
        backend_spec(name)  # an unknown name says so
        raise BackendError(f"{path}: the {name} backend cannot open {Path(path).suffix} files; use {' or '.join(able)}")
    if not Path(path).is_file():
        raise BackendError(f"{path}: no such model file")
    if not installed(name):
        raise BackendUnavailable(f"the {name} backend is not installed ({install_hint(name)})")
    return module(name).load(path, device=device, **options)
