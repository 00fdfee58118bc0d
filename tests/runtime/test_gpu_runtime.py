"""The GPU runtime as it behaves on a user's machine, with stand-ins for TensorRT and cuda-python where
this machine has neither: CUDA errors keep their name, an engine whose profile starts above batch 1 still
serves one image, ONNX Runtime that fell back to the CPU is not reported as cuda, and `auto` says why it
skipped a backend. Each test reproduces a failure of issue #14."""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from mtlkd.errors import BackendUnavailable
from mtlkd.runtime import Predictor
from mtlkd.runtime.backends import tensorrt_backend

META = {"tasks": ["seg", "depth"], "input_size": [4, 4], "num_classes": 2}
INSUFFICIENT_DRIVER, NO_DEVICE = 35, 100
NAMES = {0: b"cudaSuccess", INSUFFICIENT_DRIVER: b"cudaErrorInsufficientDriver", NO_DEVICE: b"cudaErrorNoDevice"}


class FakeCudart:
    """cuda.bindings.runtime as the backend uses it; device memory is host memory here."""

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, count_error: int = 0, gpus: int = 1, driver: int = 13000, runtime: int = 13000):
        self.count_error, self.gpus, self.driver, self.runtime = count_error, gpus, driver, runtime
        self.memory: dict[int, np.ndarray] = {}

    def cudaGetDeviceCount(self):
        return (self.count_error, 0 if self.count_error else self.gpus)

    def cudaGetErrorName(self, error):
        return (0, NAMES.get(int(error), b"unrecognized error code"))

    def cudaDriverGetVersion(self):
        return (0, self.driver)

    def cudaRuntimeGetVersion(self):
        return (0, self.runtime)

    def cudaStreamCreate(self):
        return (0, 7)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaMalloc(self, nbytes):
        block = np.zeros(nbytes, dtype=np.uint8)
        self.memory[block.ctypes.data] = block
        return (0, block.ctypes.data)

    def cudaFree(self, pointer):
        self.memory.pop(int(pointer), None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (0,)


class FakeEngine:
    """An engine built with profile MIN,OPT,MAX on input `image`: it refuses batches outside the profile
    (as TensorRT does) and computes seg = the mean colour per pixel, depth = the red channel."""

    def __init__(self, cudart: FakeCudart, profile=(2, 4, 8)):
        self.cudart, self.profile = cudart, profile
        self.names = ["image", "seg", "depth"]
        self.num_io_tensors = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name == "image" else "out"

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_shape(self, name):
        return (-1, 3, 4, 4) if name == "image" else (-1, 2 if name == "seg" else 1, 4, 4)

    def get_tensor_profile_shape(self, name, index):
        return [(b, 3, 4, 4) for b in self.profile]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.batch, self.addresses = engine, None, {}

    def set_input_shape(self, name, shape):
        low, _, high = self.engine.profile
        if not low <= shape[0] <= high:
            return False
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        channels = 2 if name == "seg" else 1
        return (self.batch, channels, 4, 4)

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def _array(self, name, channels):
        block = self.engine.cudart.memory[self.addresses[name]]
        return block[: self.batch * channels * 16 * 4].view(np.float32).reshape(self.batch, channels, 4, 4)

    def execute_async_v3(self, stream_handle):
        image = self._array("image", 3)
        self._array("seg", 2)[:] = image.mean(1, keepdims=True)
        self._array("depth", 1)[:] = image[:, :1]
        return True


FAKE_TRT = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=np.dtype)


def _backend(profile=(2, 4, 8)) -> tensorrt_backend.TensorRtBackend:
    cudart = FakeCudart()
    return tensorrt_backend.TensorRtBackend("model.engine", dict(META), FakeEngine(cudart, profile), FAKE_TRT, cudart)


# ----------------------------------------------------------------------------------------- TensorRT


def test_engine_with_profile_above_one_serves_one_image_by_padding():
    backend = _backend((2, 4, 8))
    assert (backend.min_batch, backend.max_batch) == (2, 8)
    batch = np.random.default_rng(0).random((1, 3, 4, 4), dtype=np.float32)
    out = backend.run(batch, ["seg", "depth"])
    assert out["seg"].shape == (1, 2, 4, 4) and out["depth"].shape == (1, 1, 4, 4)
    np.testing.assert_allclose(out["depth"], batch[:, :1])
    three = np.random.default_rng(1).random((3, 3, 4, 4), dtype=np.float32)  # inside the profile: no padding
    np.testing.assert_allclose(backend.run(three, ["depth"])["depth"], three[:, :1])


def test_predictor_splits_nine_images_by_the_engine_maximum():
    backend = _backend((2, 2, 4))
    images = [np.full((6, 5, 3), i * 20, dtype=np.uint8) for i in range(9)]  # 4 + 4 + 1
    results = Predictor(backend).predict_batch(images)
    assert len(results) == 9
    depth = [float(r["depth"].mean()) for r in results]
    assert depth == sorted(depth) and depth[-1] > depth[0]  # each image got its own row back


def test_old_driver_is_named_with_both_versions(monkeypatch, tmp_path):
    cudart = FakeCudart(count_error=INSUFFICIENT_DRIVER, driver=12020, runtime=13000)
    monkeypatch.setattr(tensorrt_backend, "_modules", lambda: (FAKE_TRT, cudart))
    count, problem = tensorrt_backend.gpu_status(cudart)
    assert count == 0 and "too old" in problem and "cudaErrorInsufficientDriver" in problem
    assert "CUDA 12.2" in problem and "CUDA 13.0" in problem
    assert tensorrt_backend.available("cuda")  # so that auto tries it and says why, instead of skipping it
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(BackendUnavailable, match="driver is too old.*12.2"):
        tensorrt_backend.load(engine)


def test_no_device_and_no_driver_are_told_apart():
    assert "no NVIDIA GPU" in tensorrt_backend.gpu_status(FakeCudart(count_error=NO_DEVICE))[1]
    no_driver = tensorrt_backend.gpu_status(FakeCudart(count_error=INSUFFICIENT_DRIVER, driver=0))[1]
    assert "no NVIDIA driver" in no_driver and "too old" not in no_driver


def test_real_cuda_bindings_without_a_driver():
    """This machine has cuda-bindings (pulled by torch) but no NVIDIA driver: cudaGetDeviceCount says
    cudaErrorInsufficientDriver, which must not read as an old driver."""
    runtime = pytest.importorskip("cuda.bindings.runtime")
    count, problem = tensorrt_backend.gpu_status(runtime)
    if count:
        pytest.skip("this machine has a GPU")
    assert problem and ("no NVIDIA driver" in problem or "no NVIDIA GPU" in problem)


def test_cuda_errors_keep_their_name():
    cudart = FakeCudart()
    with pytest.raises(tensorrt_backend.CudaError, match="cudaMalloc.*cudaErrorNoDevice"):
        tensorrt_backend._check((NO_DEVICE, 0), "cudaMalloc(64)", cudart)
    assert tensorrt_backend._check((0, 42), "x", cudart) == 42


# ------------------------------------------------------------------------------------ ONNX Runtime


@pytest.fixture
def ort_claims_cuda(monkeypatch):
    """onnxruntime-gpu lists CUDA whenever it is installed, even when CUDA or cuDNN cannot load; the CPU
    build here then creates a CPU-only session, exactly as the GPU build does when its libraries fail."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime has a working CUDA provider here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    return ort


def test_cuda_session_that_fell_back_to_the_cpu_is_refused(nano_onnx, ort_claims_cuda):
    from mtlkd.runtime.backends import onnxruntime_backend

    with pytest.raises(BackendUnavailable, match="asked for CUDA but runs on CPUExecutionProvider"):
        onnxruntime_backend.load(nano_onnx, device="cuda")
    assert onnxruntime_backend.load(nano_onnx, device="cpu").device == "cpu"


def test_auto_on_cuda_does_not_hand_out_a_cpu_session(nano_onnx, ort_claims_cuda, tmp_path, monkeypatch):
    from mtlkd.runtime import auto

    with pytest.raises(BackendUnavailable, match="asked for CUDA"):  # the only candidate: loaded, refused
        Predictor.load(nano_onnx, device="cuda", cache=tmp_path / "auto.json")
    # several candidates on a GPU are loaded and measured; one that cannot run is skipped with its reason
    monkeypatch.setattr(auto, "candidates", lambda path, device: ["onnxruntime", "openvino"])
    with pytest.warns(UserWarning, match="onnxruntime skipped on cuda.*CPUExecutionProvider"), \
            pytest.raises(BackendUnavailable, match="no backend could run it"):  # fmt: skip
        auto.select_backend(nano_onnx, "cuda", cache=tmp_path / "auto.json")


def test_gpu_check_without_a_gpu_is_one_line_and_exit_0():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--out", "unused"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if "no usable NVIDIA GPU" not in done.stdout and done.returncode == 0:
        pytest.skip("this machine has a GPU: the check ran for real")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no usable NVIDIA GPU here")


def test_gpu_check_export_step_speaks_the_pipeline(tmp_path, nano_checkpoint):
    """The script's export step calls the export pipeline with mtl-export's options (--batch-size 1,4,9):
    without TensorRT it writes the ONNX graph and reports the engine it could not build as a failed check,
    in one line, instead of crashing on an old API."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the step would build a real engine")
    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    passed, detail = gpu_check.export(nano_checkpoint, tmp_path / "fp32", "fp32")
    assert not passed and "tensorrt" in detail.lower() and "\n" not in detail
    assert (tmp_path / "fp32" / "model.onnx").is_file()


def test_gpu_check_measures_every_torch_mode_on_a_stand_in(tmp_path):
    """`--stand-in-cpu`: the whole check on torch's CPU build (the GPU machine's path, CUDA events aside):
    each compute mode judged by the accuracy policy and timed, MTL against three STL, the Predictor's torch
    backend, and the rows of what cannot run here marked as such, not failed; the table written to a file."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    code = gpu_check.main(["--stand-in-cpu", "--preset", "vit-nano", "--steps", "30", "--runs", "1",
                           "--out", str(tmp_path)])  # fmt: skip
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    rows = {r["check"]: r for r in record["rows"]}
    assert code == 0, [r for r in record["rows"] if r["result"] == "FAIL"]
    for mode in gpu_check.MODES:
        for batch in (1, 8):
            eager = rows[f"torch {mode} eager batch {batch}"]
            assert eager["result"] == "ok" and "MTL/STL" in eager["detail"] and "seg err" in eager["detail"]
            assert rows[f"torch {mode} CUDA graph batch {batch}"]["result"] == "n/a"
    assert rows["Predictor torch cpu vs cpu, batch 1/3/9"]["result"] == "ok"
    assert rows["TensorRT engines"]["result"] == ("n/a" if importlib.util.find_spec("tensorrt") else "not installed")
    assert rows["ONNX Runtime CUDA"]["result"] == "not installed"  # the CPU build of onnxruntime
    assert (tmp_path / "gpu-check.txt").read_text().startswith("gpu-check on CPU stand-in")
