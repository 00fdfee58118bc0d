"""ONNX Runtime backend for `.onnx` files exported by mtlkd (input `image`, one output per task).

CPU: all graph optimisations (`$MTLKD_ORT_OPTIMIZATION` = disable, basic, extended or all picks another level:
the fusions change which kernels run, so a test suite run at another level sees other rounding, as on another
CPU), one intra-op thread per physical core, sequential execution (the graph is a
chain; inter-op parallelism only adds contention). CUDA: the CUDA execution provider, checked after the
session is created (a session that fell back to the CPU is refused), with IO binding, so the input is
copied to the GPU once and only the requested outputs come back. Only the requested outputs are fetched
(`output_names`), but ONNX Runtime still executes the whole graph: on the 3-task vit-micro and vit-tiny
graphs one output costs as much as three (see the runtime report); export a graph with fewer heads
(mtl-export --tasks) when only some tasks are needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.metadata import METADATA_KEY
from mtlkd.runtime.backends import Backend, physical_cores


def available(device: str = "cpu") -> bool:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    return "CPUExecutionProvider" in providers if device == "cpu" else "CUDAExecutionProvider" in providers


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str, session: Any, metadata: dict[str, Any]):
        super().__init__(path, device, metadata)
        self.session = session
        self.input_name = session.get_inputs()[0].name
        outputs = {o.name for o in session.get_outputs()}
        missing = [t for t in self.tasks if t not in outputs]
        if missing:
            raise BackendError(f"{path}: the graph has no output named {', '.join(missing)} (outputs: "
                               f"{', '.join(sorted(outputs))}); re-export it with mtl-export")
        self.providers = session.get_providers()

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        tasks = self.check_tasks(tasks)
        batch = self.check_batch(batch)
        if self.device == "cuda":
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, batch)
            for task in tasks:
                binding.bind_output(task, "cpu")  # the provider copies straight into host memory
            self.session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        else:
            outputs = self.session.run(tasks, {self.input_name: batch})
        return {t: np.asarray(o, dtype=np.float32) for t, o in zip(tasks, outputs, strict=True)}


def session_options(threads: int | None = None, spinning: bool = False) -> Any:
    """Session options; `spinning=False` stops the intra-op threads busy-waiting after each run, which
    otherwise steal the cores from the pre/postprocessing that follows (on a machine with few cores a
    spinning session can make each predict about twice as slow)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = optimization_level()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only; the exporter's shape warnings are noise here
    return options


OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}  # fmt: skip


def optimization_level() -> Any:
    """ONNX Runtime's graph optimisation level: all, unless $MTLKD_ORT_OPTIMIZATION names another."""
    import onnxruntime as ort

    name = os.environ.get("MTLKD_ORT_OPTIMIZATION", "all").strip().lower() or "all"
    if name not in OPTIMIZATION_LEVELS:
        raise BackendError(f"MTLKD_ORT_OPTIMIZATION={name!r} is not a level; use one of "
                           f"{', '.join(OPTIMIZATION_LEVELS)}")
    return getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[name])


def read_metadata(session: Any, path: str | Path) -> dict[str, Any]:
    from mtlkd.metadata import check_graph, parse_metadata

    custom = session.get_modelmeta().custom_metadata_map or {}
    meta = parse_metadata(custom.get(METADATA_KEY), str(path), error=BackendError)
    inputs = session.get_inputs()
    check_graph(meta, str(path), inputs[0].shape if inputs else None,
                {o.name: o.shape for o in session.get_outputs()}, error=BackendError)
    return meta


def load(path: str | Path, device: str = "cpu", threads: int | None = None, spinning: bool = False,
         **_: Any) -> OnnxRuntimeBackend:
    """Open an mtlkd .onnx file on cpu (CPUExecutionProvider) or cuda (CUDAExecutionProvider, falling back to
    the CPU for unsupported nodes); `threads` defaults to the physical core count."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("the onnxruntime backend needs onnxruntime (pip install onnxruntime)") from None
    if device == "cpu":
        providers = ["CPUExecutionProvider"]
    elif device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu, "
                                     "and a CUDA GPU); use --device cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        raise BackendError(f"the onnxruntime backend runs on cpu or cuda, not {device!r}")
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads, spinning),
                                       providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types for unreadable files
        raise BackendError(f"{path}: onnxruntime cannot open it ({str(exc).splitlines()[0]})") from None
    if device == "cuda":
        check_cuda_session(session, path)
    return OnnxRuntimeBackend(path, device, session, read_metadata(session, path))


def check_cuda_session(session: Any, path: str | Path) -> None:
    """`get_available_providers()` lists CUDA whenever onnxruntime-gpu is installed, but when the CUDA or
    cuDNN libraries cannot load, the session quietly registers only the CPU provider. Asking for cuda and
    getting the CPU is an error here, so that nothing reports `cuda` while computing on the CPU (and `auto`
    measures what it really got)."""
    used = list(session.get_providers())
    if "CUDAExecutionProvider" not in used:
        raise BackendUnavailable(
            f"{Path(path).name}: onnxruntime was asked for CUDA but runs on {', '.join(used) or 'nothing'}: the "
            f"CUDA or cuDNN libraries did not load (see onnxruntime's log; onnxruntime-gpu needs the CUDA and "
            f"cuDNN versions it was built for); use --device cpu"
        )


def load_foreign(path: Path, spec: Any, device: str, threads: int | None) -> Any:
    """A foreign .onnx (no mtlkd metadata) with the TeacherSpec's settings (`mtlkd.runtime.foreign`)."""
    from mtlkd.runtime.foreign import ForeignBackend

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
    backend.name = OnnxRuntimeBackend.name
    return backend
