"""OpenVINO backend for IR files (`.xml` + `.bin`) and, since OpenVINO reads ONNX directly, `.onnx` files.

The model is read once; it is compiled lazily for each (set of requested tasks, batch size):

* only the requested heads are compiled: a sub-model whose results are the requested outputs, so the
  other heads are not computed at all (OpenVINO otherwise runs every result of a compiled model);
* the batch dimension is made static, which lets the CPU plugin pick static-shape kernels (a few % faster
  than the dynamic-batch graph). A compile takes far longer than a call, so it is cached per shape; a
  video or a folder of images uses one shape, so that happens once.

Each compiled model keeps one infer request that is reused for every call. Compile options: the
performance hint (`hint`, default LATENCY: one stream, all cores on one request; THROUGHPUT suits many
parallel requests), optional `threads`, `precision` and `cache_dir` (OpenVINO's compiled-blob cache).

Precision: f32 by default. On CPUs with bf16 support (AVX512-BF16, AMX) OpenVINO would otherwise silently
compute in bfloat16, which changes results (about 1% of segmentation pixels flip on a random-weight
model) in exchange for speed; pass precision="bf16" (or MTLKD_OV_PRECISION=bf16) to opt into that.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime.backends import Backend

MAX_COMPILED = 6


def available(device: str = "cpu") -> bool:
    return device != "cuda"


def read_metadata(model: Any, path: str | Path) -> dict[str, Any]:
    """The mtlkd metadata from the model's rt_info (`mtlkd.metadata.read_openvino_metadata`: the first
    location holding it), checked against the graph's input and outputs."""
    from mtlkd.metadata import check_graph, read_openvino_metadata

    meta = read_openvino_metadata(model, error=BackendError, where=path)
    shape = model.inputs[0].get_partial_shape() if model.inputs else None
    dims = None if shape is None or shape.rank.is_dynamic else \
        [d.get_length() if d.is_static else None for d in shape]
    outputs = {}
    for port in model.outputs:
        pshape = port.get_partial_shape()
        out_dims = None if pshape.rank.is_dynamic else [d.get_length() if d.is_static else None for d in pshape]
        for name in port.get_names():
            outputs[name] = out_dims
    check_graph(meta, str(path), dims, outputs, error=BackendError)
    return meta


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | Path, device: str, core: Any, model: Any, metadata: dict[str, Any],
                 config: dict[str, str], ov_device: str):
        super().__init__(path, device, metadata)
        self.core, self.model, self.config, self.ov_device = core, model, config, ov_device
        self.outputs: dict[str, int] = {}
        for index, port in enumerate(model.outputs):
            for name in port.get_names():
                self.outputs.setdefault(name, index)
        missing = [t for t in self.tasks if t not in self.outputs]
        if missing:
            raise BackendError(f"{path}: the model has no output named {', '.join(missing)}; re-export it")
        self._compiled: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()

    def compiled(self, tasks: list[str], batch: int) -> tuple[Any, Any]:
        """(compiled model, its reusable infer request) for these tasks at this batch size."""
        key = (tuple(tasks), batch)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        import openvino as ov

        model = self.model.clone()
        results = model.get_results()
        wanted = [results[self.outputs[t]] for t in tasks]
        if len(wanted) < len(results):
            model = ov.Model(wanted, model.get_parameters(), f"{model.get_friendly_name()}_{'_'.join(tasks)}")
        model.reshape({model.inputs[0]: ov.PartialShape([batch, 3, *self.input_size])})
        compiled = self.core.compile_model(model, self.ov_device, self.config)
        entry = (compiled, compiled.create_infer_request())
        self._compiled[key] = entry
        if len(self._compiled) > MAX_COMPILED:
            self._compiled.popitem(last=False)
        return entry

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        tasks = self.check_tasks(tasks)
        batch = self.check_batch(batch)
        compiled, request = self.compiled(tasks, batch.shape[0])
        results = request.infer({0: batch}, share_inputs=True)
        out = {}
        for port in compiled.outputs:
            name = next(n for n in port.get_names() if n in tasks)
            out[name] = np.asarray(results[port], dtype=np.float32)
        return out


def load(path: str | Path, device: str = "cpu", hint: str | None = None, threads: int | None = None,
         precision: str | None = None, cache_dir: str | None = None, **_: Any) -> OpenVinoBackend:
    """Read an IR `.xml` (with its `.bin`) or an `.onnx`; `device` cpu (or an OpenVINO device name such as
    GPU or NPU; cuda is not an OpenVINO device). `hint` defaults to $MTLKD_OV_HINT or LATENCY, `precision`
    to $MTLKD_OV_PRECISION or f32."""
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailable("the openvino backend needs openvino (pip install openvino)") from None
    if device == "cuda":
        raise BackendUnavailable("OpenVINO does not run on CUDA GPUs; use --device cpu, or onnxruntime/tensorrt")
    ov_device = "CPU" if device == "cpu" else device.upper()
    hint = (hint or os.environ.get("MTLKD_OV_HINT") or "LATENCY").upper()
    if hint not in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
        raise BackendError(f"unknown OpenVINO performance hint {hint!r}; use LATENCY or THROUGHPUT")
    precision = (precision or os.environ.get("MTLKD_OV_PRECISION") or "f32").lower()
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    core = ov.Core()
    if cache_dir:
        core.set_property({"CACHE_DIR": str(cache_dir)})
    if ov_device not in core.available_devices and ov_device not in ("AUTO", "MULTI", "HETERO"):
        raise BackendUnavailable(f"OpenVINO device {ov_device} not found (available: "
                                 f"{', '.join(core.available_devices)})")
    path = Path(path)
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise BackendError(f"{path}: its weights {path.with_suffix('.bin').name} are missing next to it")
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise BackendError(f"{path}: OpenVINO cannot read it ({openvino_cause(exc)})") from None
    if path.suffix.lower() == ".xml":
        from mtlkd.metadata import check_openvino_weights

        check_openvino_weights(model, path, error=BackendError)
    return OpenVinoBackend(path, device, core, model, read_metadata(model, path), config, ov_device)


def openvino_cause(exc: BaseException) -> str:
    """The informative part of an OpenVINO exception: its messages start with a source location line
    ("Exception from src/inference/src/cpp/core.cpp:84:") and put the cause on the following lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not (ln.startswith("Exception from ") or ln.startswith("Check '"))
              or ln == lines[-1]]
    text = "; ".join(useful or lines) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def load_foreign(path: Path, spec: Any, device: str, threads: int | None) -> Any:
    """A foreign .onnx or .xml (no mtlkd metadata) with the TeacherSpec's settings (`mtlkd.runtime.foreign`)."""
    from mtlkd.runtime.foreign import ForeignBackend

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
    backend.name = OpenVinoBackend.name
    return backend
