"""TensorRT backend for serialized engines (`model.engine` / `.plan`) with their `model.engine.json` sidecar.

Uses the name-based TensorRT 10/11 runtime API: `Runtime.deserialize_cuda_engine`, one execution context,
`set_input_shape` for the batch, `set_tensor_address` for every I/O tensor, `execute_async_v3` on a CUDA
stream.

CUDA memory and streams come from cuda-python (`cuda.bindings.runtime`, NVIDIA's official CUDA runtime
bindings) rather than torch.cuda: the exported-model runtime must not import torch, and cuda-python is a
few MB against torch's few GB. Device buffers are allocated once per tensor and grown when a larger batch
arrives; host copies use pageable numpy memory and one stream synchronisation per call.

A failed CUDA call raises CudaError with CUDA's own error name; a driver too old for the installed
cuda-bindings says so with both CUDA versions instead of "no GPU". An engine whose profile starts above
batch 1 (built by another tool: mtl-export refuses such profiles) gets smaller batches padded with copies
of their last image, and only the real rows come back.

An engine computes every output it was built with, so asking for fewer tasks only saves their
device-to-host copies; build an engine with fewer heads (mtl-export --tasks) to save their compute.
An engine is specific to the GPU model and the TensorRT version that built it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable, CudaError
from mtlkd.metadata import read_engine_metadata
from mtlkd.runtime.backends import Backend


def _modules() -> tuple[Any, Any]:
    """(tensorrt, cudart), or BackendUnavailable saying what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("the tensorrt backend needs TensorRT (pip install tensorrt) and an NVIDIA "
                                 "GPU; on a CPU run the .onnx with onnxruntime or openvino") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError:
            raise BackendUnavailable("the tensorrt backend needs cuda-python (pip install cuda-python)") from None
    return trt, cudart


def _version(number: int) -> str:
    """12020 -> '12.2' (CUDA's encoding: 1000 x major + 10 x minor)."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def error_name(cudart: Any, error: Any) -> str:
    """CUDA's name for an error code ('cudaErrorInsufficientDriver'), falling back to its repr."""
    try:
        status, name = cudart.cudaGetErrorName(error)
        if int(status) == 0:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # an unknown code or an old binding: the number still says something
        pass
    return str(error)


def driver_problem(cudart: Any, error: Any) -> str | None:
    """For cudaErrorInsufficientDriver / cudaErrorNoDevice, what is wrong in words (which CUDA the driver
    supports, which one cuda-bindings needs); None for other errors."""
    name = error_name(cudart, error)
    if name == "cudaErrorNoDevice":
        return "no NVIDIA GPU found (cudaErrorNoDevice)"
    if name != "cudaErrorInsufficientDriver":
        return None
    driver = _safe_int(cudart.cudaDriverGetVersion())
    runtime = _safe_int(cudart.cudaRuntimeGetVersion())
    needed = f"CUDA {_version(runtime)}" if runtime else "its CUDA version"
    if not driver:
        return f"no NVIDIA driver is loaded (cudaErrorInsufficientDriver; cuda-bindings needs a driver for {needed})"
    return (f"the NVIDIA driver is too old (cudaErrorInsufficientDriver): it supports CUDA {_version(driver)}, "
            f"cuda-bindings needs {needed}; update the driver, or install the cuda-python release matching "
            f"CUDA {_version(driver).split('.')[0]}")


def _safe_int(result: Any) -> int:
    try:
        error, value = result
        return int(value) if int(error) == 0 else 0
    except Exception:
        return 0


def _check(result: Any, what: str, cudart: Any = None) -> Any:
    """cuda-python returns (error, *values); raise CudaError naming the error, else return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        name = error_name(cudart, error) if cudart is not None else str(error)
        raise CudaError(f"CUDA error in {what}: {name}")
    return values[0] if len(values) == 1 else values


def gpu_status(cudart: Any) -> tuple[int, str | None]:
    """(number of GPUs, None) or (0, why not): cudaGetDeviceCount's error keeps its name."""
    error, count = cudart.cudaGetDeviceCount()
    if int(error) == 0:
        return int(count), (None if int(count) else "no NVIDIA GPU found")
    return 0, driver_problem(cudart, error) or f"CUDA cannot list the GPUs ({error_name(cudart, error)})"


def available(device: str = "cuda") -> bool:
    """Whether TensorRT could run here. A driver too old for cuda-bindings counts as available, so that
    loading reports it (with the versions) instead of `auto` skipping TensorRT in silence."""
    if device != "cuda":
        return False
    try:
        _, cudart = _modules()
    except BackendUnavailable:
        return False
    count, problem = gpu_status(cudart)
    return count > 0 or (problem is not None and "too old" in problem)


class TensorRtBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, metadata: dict[str, Any], engine: Any, trt: Any, cudart: Any):
        super().__init__(path, "cuda", metadata)
        self.trt, self.cudart, self.engine = trt, cudart, engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise BackendError(f"{path}: expected one input tensor, found {self.inputs}")
        self.input_name = self.inputs[0]
        missing = [t for t in self.tasks if t not in self.outputs]
        if missing:
            raise BackendError(f"{path}: the engine has no output named {', '.join(missing)}")
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        batch_dim = engine.get_tensor_shape(self.input_name)[0]
        if batch_dim == -1:
            low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(low[0]), int(high[0])
        else:
            self.min_batch = self.max_batch = int(batch_dim)
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self.cudart.cudaFree(pointer), "cudaFree", self.cudart)
            pointer = int(_check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})", self.cudart))
            self.buffers[name] = (pointer, nbytes)
        return pointer

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        tasks = self.check_tasks(tasks)
        batch = np.ascontiguousarray(self.check_batch(batch), dtype=self.dtypes[self.input_name])
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            raise BackendError(f"batch {batch.shape[0]} exceeds the engine's maximum batch {self.max_batch}")
        count = batch.shape[0]
        if count < self.min_batch:  # an engine built elsewhere with a profile starting above 1: pad, then drop
            padding = np.repeat(batch[-1:], self.min_batch - count, axis=0)
            batch = np.ascontiguousarray(np.concatenate([batch, padding]))
        cudart, context = self.cudart, self.context
        if not context.set_input_shape(self.input_name, tuple(batch.shape)):
            raise BackendError(f"the engine does not accept input shape {tuple(batch.shape)}")
        pointer = self._buffer(self.input_name, batch.nbytes)
        _check(cudart.cudaMemcpyAsync(pointer, batch.ctypes.data, batch.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "copy to GPU", cudart)
        context.set_tensor_address(self.input_name, pointer)
        host: dict[str, np.ndarray] = {}
        for name in self.outputs:  # every output needs an address, requested or not
            shape = tuple(context.get_tensor_shape(name))
            array = np.empty(shape, dtype=self.dtypes[name])
            context.set_tensor_address(name, self._buffer(name, array.nbytes))
            if name in tasks:
                host[name] = array
        if not context.execute_async_v3(stream_handle=int(self.stream)):
            raise BackendError(f"TensorRT failed to run {self.path.name}")
        for name, array in host.items():
            copy = cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name][0], array.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
            _check(copy, "copy back", cudart)
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize", cudart)
        return {t: host[t][:count].astype(np.float32, copy=False) for t in tasks}

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: CUDA may already be gone
            self.close()


def load(path: str | Path, device: str = "cuda", **_: Any) -> TensorRtBackend:
    """Deserialize an engine on GPU 0. Raises BackendUnavailable when TensorRT, cuda-python or a GPU is
    missing, or when `device` is not cuda."""
    if device != "cuda":
        raise BackendUnavailable(f"TensorRT engines run on an NVIDIA GPU; pass --device cuda (got {device!r}), "
                                 f"or run the .onnx export on the CPU")
    trt, cudart = _modules()
    count, problem = gpu_status(cudart)
    if count == 0:
        raise BackendUnavailable(f"TensorRT cannot run here: {problem}")
    metadata = read_engine_metadata(path, error=BackendError)  # the <engine>.json sidecar
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise BackendError(f"{path}: TensorRT could not deserialize it (built by another TensorRT version or "
                           f"for another GPU? rebuild it with mtl-export on this machine)")
    backend = TensorRtBackend(path, metadata, engine, trt, cudart)
    backend.runtime = runtime  # the runtime must outlive the engine
    return backend
