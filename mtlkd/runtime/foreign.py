"""A model file without mtlkd metadata (a network someone else exported), run with the user's settings.

mtlkd's own graphs normalise inside and name their outputs after tasks; a foreign graph does neither, so
this backend applies the given mean/std in numpy, feeds the graph's first input, and maps its outputs to
tasks (by `output=` names, by task name, or the only output of a one-task teacher). A backend whose spec
says `foreign` opens such files with its module's `load_foreign` (ONNX Runtime and OpenVINO); TensorRT
engines carry their metadata in a sidecar only mtlkd writes, so a foreign engine is not taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable, ConfigError
from mtlkd.runtime.backends import BACKENDS, Backend, backend_spec, install_hint, installed, module, suffixes


class ForeignBackend(Backend):
    """The same `run(batch, tasks)` contract as every backend, for a graph with the user's conventions."""

    def __init__(self, path: Path, device: str, spec: Any, run_graph: Any, input_shape: list[Any],
                 output_names: list[str]):
        meta = {"tasks": list(spec.tasks), "input_size": list(spec.size), "foreign": True}
        if spec.classes:
            meta.update(num_classes=len(spec.classes), class_names=list(spec.classes))
        super().__init__(path, device, meta)
        self.run_graph = run_graph
        self.mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        where = f"teacher {spec.label}"
        static = [d for d in input_shape[2:] if isinstance(d, int)] if len(input_shape) == 4 else []
        if len(static) == 2 and tuple(static) != tuple(spec.size):
            raise ConfigError(f"{where}: size={spec.size[0]}x{spec.size[1]}, but the graph's input is "
                              f"{static[0]}x{static[1]}; give size={static[0]}x{static[1]}")
        if len(input_shape) == 4 and isinstance(input_shape[1], int) and input_shape[1] != 3:
            raise ConfigError(f"{where}: the graph's input has {input_shape[1]} channels; a teacher takes RGB")
        self.outputs = _task_outputs(spec, output_names, where)

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        tasks = self.check_tasks(tasks)
        batch = (self.check_batch(batch) - self.mean) / self.std
        results = self.run_graph(np.ascontiguousarray(batch, dtype=np.float32), [self.outputs[t] for t in tasks])
        return {t: np.asarray(r, dtype=np.float32) for t, r in zip(tasks, results, strict=True)}


def _task_outputs(spec: Any, names: list[str], where: str) -> dict[str, str]:
    if spec.output:
        unknown = [n for n in spec.output if n not in names]
        if unknown:
            raise ConfigError(f"{where}: output={unknown[0]} is not an output of the graph "
                              f"(outputs: {', '.join(names)})")
        return dict(zip(spec.tasks, spec.output, strict=True))
    if all(t in names for t in spec.tasks):
        return {t: t for t in spec.tasks}
    if len(spec.tasks) == 1 and len(names) == 1:
        return {spec.tasks[0]: names[0]}
    raise ConfigError(f"{where}: cannot tell which of the outputs {', '.join(names)} is "
                      f"{', '.join(spec.tasks)}; give output=NAME (one per task, in order, separated by /)")


def foreign_backends(path: str | Path) -> tuple[str, ...]:
    """The backends that open this file without mtlkd metadata (their spec's `foreign`), best first."""
    return tuple(n for n in suffixes().get(Path(path).suffix.lower(), ()) if backend_spec(n).foreign)


def load_foreign(path: str | Path, spec: Any, device: str = "cpu", threads: int | None = None) -> ForeignBackend:
    """Open a foreign file with the settings in `spec` (a TeacherSpec): with the first backend whose spec
    says it opens foreign files of this suffix (.onnx: ONNX Runtime, or OpenVINO with backend=openvino;
    .xml: OpenVINO), through its module's `load_foreign(path, spec, device, threads)`."""
    path = Path(path)
    names = foreign_backends(path)
    if not names:
        kinds = sorted({s for other in BACKENDS.values() if other.foreign for s in other.suffixes})
        raise BackendError(f"{path}: a model without mtlkd metadata must be a {' or '.join(kinds)} file (others, "
                           f"like a TensorRT engine, need the metadata mtl-export writes)")
    backend = names[0] if spec.backend == "auto" else spec.backend
    if backend not in names:
        raise BackendError(f"{path}: the {backend} backend cannot run a foreign {path.suffix.lower()} file; use "
                           f"{' or '.join(names)}")
    if not installed(backend):
        raise BackendUnavailable(f"a foreign {path.suffix.lower()} teacher needs {backend} ({install_hint(backend)})")
    return module(backend).load_foreign(path, spec, device, threads)
