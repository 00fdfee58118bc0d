"""A model file without mtlkd metadata (a network someone else exported), run with the user's settings.

mtlkd's own graphs normalise inside and name their outputs after tasks; a foreign graph does neither, so
this backend applies the given mean/std in numpy, feeds the graph's first input, and maps its outputs to
tasks (by `output=` names, by task name, or the only output of a one-task teacher). ONNX files run on ONNX
Runtime (as `mtlkd.runtime.backends.onnxruntime_backend` sets it up), OpenVINO IRs on OpenVINO's CPU plugin.
TensorRT engines carry their metadata in a sidecar only mtlkd writes, so a foreign engine is not taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable, ConfigError
from mtlkd.runtime.backends import Backend


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


FOREIGN_BACKENDS = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}


def load_foreign(path: str | Path, spec: Any, device: str = "cpu", threads: int | None = None) -> ForeignBackend:
    """Open a foreign .onnx (ONNX Runtime, or OpenVINO with backend=openvino) or .xml (OpenVINO) with the
    settings in `spec` (a TeacherSpec)."""
    path = Path(path)
    suffix = path.suffix.lower()
    names = FOREIGN_BACKENDS.get(suffix, ())
    backend = names[0] if names and spec.backend == "auto" else spec.backend
    if names and backend not in names:
        raise BackendError(f"{path}: the {backend} backend cannot run a foreign {suffix} file; use "
                           f"{' or '.join(names)}")
    if backend == "onnxruntime":
        return _onnx(path, spec, device, threads)
    if backend == "openvino":
        return _openvino(path, spec, device, threads)
    raise BackendError(f"{path}: a model without mtlkd metadata must be an .onnx file or an OpenVINO .xml "
                       f"(a TensorRT engine needs the sidecar mtl-export writes)")


def _onnx(path: Path, spec: Any, device: str, threads: int | None) -> ForeignBackend:
    from mtlkd.runtime.backends.onnxruntime_backend import check_cuda_session, session_options

    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("a foreign ONNX teacher needs onnxruntime (pip install onnxruntime)") from None
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    except Exception as exc:  # ORT raises its own types for unreadable files
        raise BackendError(f"{path}: onnxruntime cannot open it ({str(exc).splitlines()[0]})") from None
    if device == "cuda":
        check_cuda_session(session, path)
    first = session.get_inputs()[0]

    def run_graph(batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        return session.run(outputs, {first.name: batch})

    backend = ForeignBackend(path, device, spec, run_graph, list(first.shape), [o.name for o in session.get_outputs()])
    backend.name = "onnxruntime"
    return backend


def _openvino(path: Path, spec: Any, device: str, threads: int | None) -> ForeignBackend:
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailable("a foreign OpenVINO teacher needs openvino (pip install openvino)") from None
    if device == "cuda":
        raise BackendUnavailable("OpenVINO does not run on CUDA GPUs; use --device cpu")
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise BackendError(f"{path}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200]})") from None
    # f32 as mtlkd's OpenVINO backend: the CPU plugin otherwise computes in bf16 where the CPU has it
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
              **({"INFERENCE_NUM_THREADS": str(threads)} if threads else {})}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.outputs]
    shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]

    def run_graph(batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        results = request.infer({0: batch})
        return [results[compiled.output(name)] for name in outputs]

    backend = ForeignBackend(path, device, spec, run_graph, shape, names)
    backend.name = "openvino"
    return backend
