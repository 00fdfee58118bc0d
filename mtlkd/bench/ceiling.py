"""The limit, measured in the same run: the machine's own matrix-product rate for each precision.

A model row's achieved rate (its FLOPs / its latency) is reported as a fraction of the ceiling of the
precision it computes in. The ceiling is the best GFLOP/s (GOP/s for int8) of a square matrix product
over a few sizes, at the benchmark's thread count, best of several runs (a ceiling is what the machine
*can* do, so the maximum is the right statistic, also on a busy machine):

* fp32: torch.matmul (oneDNN / MKL sgemm), numpy's BLAS and an OpenVINO MatMul, whichever is fastest;
* bf16: torch.matmul on bfloat16 tensors (oneDNN uses AVX512_BF16 / AMX when the CPU has them) and an
  OpenVINO MatMul compiled with INFERENCE_PRECISION_HINT bf16, whichever is faster;
* int8: torch._int_mm (int8 x int8 -> int32) and ONNX Runtime's MatMulInteger (u8 x s8, the MLAS VNNI
  kernels the int8 graphs use), whichever is faster;
* fp16: torch.matmul on float16 tensors, measured only where the CPU has native fp16 (AVX512_FP16, AMX-FP16);
  elsewhere fp16 graphs compute in float32 on the CPU and their rows are compared with the fp32 ceiling.

The same products are also timed at the model's own shapes (`model_shapes`: for a ViT, the tokens x width
products of qkv, projection and MLP, and the per-head attention products, at batch 1), so that a row can
be held against what its own matrix products reach here (`shape_ceiling`), not only against large square
products, which run closer to peak than a 577 x 192 x 576 one can.

`native` says whether the CPU has dot-product instructions for the precision (see mtlkd.bench.machine);
a ceiling measured without them is marked emulated. On a GPU the same products run through torch with
CUDA events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mtlkd.bench.machine import native_flags, native_precisions
from mtlkd.errors import BackendUnavailable, ConfigError

SIZES = (512, 1024, 2048)
PRECISIONS = ("fp32", "bf16", "int8", "fp16")


@dataclass
class Ceiling:
    precision: str
    gflops: float  # best rate over sizes and methods (GOP/s for int8)
    native: bool
    method: str  # which product reached it
    size: int  # n of the n x n x n product that reached it
    threads: int
    flags: list[str]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_precision(precision: str, native: dict[str, bool], device: str = "cpu") -> str:
    """The precision whose ceiling a row in `precision` is compared with: fp16 on a CPU without native
    fp16 computes in float32 (ONNX Runtime and OpenVINO up-convert), so it is held against fp32."""
    if precision == "fp16" and device == "cpu" and not native.get("fp16"):
        return "fp32"
    return precision


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_seconds(fn: Callable[[], Any], budget_s: float, min_runs: int = 3, sync: Callable[[], Any] = lambda: None,
                 ) -> float:  # fmt: skip
    """Fastest of at least `min_runs` timed calls (after one warm-up), continuing until `budget_s`."""
    fn()
    sync()
    best, runs, start = float("inf"), 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        runs += 1
        if runs >= 200:
            break
    return best


Shape = tuple[int, int, int, int]  # (batch, m, k, n): `batch` independent (m x k) @ (k x n) products


def square(n: int) -> Shape:
    return (1, n, n, n)


def shape_flops(shape: Shape) -> float:
    batch, m, k, n = shape
    return 2.0 * batch * m * k * n


def _torch_product(precision: str, shape: Shape, device: str) -> Callable[[], Any]:
    import torch

    batch, m, k, n = shape
    if precision == "int8":  # torch._int_mm is 2-D only: the batch as a loop
        a = [torch.randint(-127, 128, (m, k), dtype=torch.int8, device=device) for _ in range(batch)]
        b = [torch.randint(-127, 128, (k, n), dtype=torch.int8, device=device) for _ in range(batch)]
        return lambda: [torch._int_mm(x, y) for x, y in zip(a, b, strict=True)]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    lead = (batch,) if batch > 1 else ()
    a = torch.randn(*lead, m, k, device=device).to(dtype)
    b = torch.randn(*lead, k, n, device=device).to(dtype)
    return lambda: torch.matmul(a, b)


def _numpy_product(shape: Shape) -> Callable[[], Any]:
    batch, m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, m, k), dtype=np.float32)
    b = rng.standard_normal((batch, k, n), dtype=np.float32)
    return lambda: a @ b


def _ort_int8_product(shape: Shape, threads: int) -> Callable[[], Any]:
    """ONNX Runtime MatMulInteger (uint8 activations x int8 weights), the op family of the int8 graphs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    batch, m, k, n = shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "ceiling",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [batch, m, k]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [batch, k, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [batch, m, n])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"A": rng.integers(0, 256, (batch, m, k), dtype=np.uint8),
             "B": rng.integers(-127, 128, (batch, k, n), dtype=np.int8)}  # fmt: skip
    return lambda: session.run(None, feeds)


def _openvino_product(precision: str, shape: Shape, threads: int) -> Callable[[], Any]:
    """OpenVINO's CPU plugin on one MatMul (fp32, or bf16 through INFERENCE_PRECISION_HINT): the kernels the
    OpenVINO rows use, which can beat oneDNN-through-torch on the same CPU. At batch 1 the right operand is
    a constant (a layer's weights: OpenVINO's FullyConnected kernel); batched, both are inputs (attention)."""
    import openvino as ov

    batch, m, k, n = shape
    rng = np.random.default_rng(0)
    a = ov.opset13.parameter([batch, m, k], ov.Type.f32, name="a")
    inputs = [a]
    if batch == 1:
        b = ov.opset13.constant(rng.standard_normal((1, k, n), dtype=np.float32))
    else:
        b = ov.opset13.parameter([batch, k, n], ov.Type.f32, name="b")
        inputs.append(b)
    model = ov.Model([ov.opset13.matmul(a, b, False, False)], inputs, "ceiling")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}  # fmt: skip
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    feeds = {i: rng.standard_normal(tuple(p.get_shape()), dtype=np.float32) for i, p in enumerate(inputs)}
    return lambda: request.infer(feeds)


Maker = Callable[[Shape], Callable[[], Any]]


def _methods(precision: str, device: str, threads: int) -> list[tuple[str, Maker]]:
    import importlib.util

    from mtlkd.runtime.backends import installed

    methods: list[tuple[str, Maker]] = []
    if installed("torch"):
        name = "torch._int_mm" if precision == "int8" else f"torch.matmul {precision}"
        methods.append((name, lambda shape: _torch_product(precision, shape, device)))
    if device == "cpu" and precision == "fp32":
        methods.append(("numpy matmul", _numpy_product))
    # OpenVINO quietly computes a bf16 hint in f32 on a CPU without bf16 instructions: only where it is native
    ov_precision = precision == "fp32" or (precision == "bf16" and native_precisions()["bf16"])
    if device == "cpu" and ov_precision and installed("openvino"):
        methods.append((f"openvino MatMul {precision}", lambda shape: _openvino_product(precision, shape, threads)))
    if device == "cpu" and precision == "int8" and installed("onnxruntime") and importlib.util.find_spec("onnx"):
        methods.append(("onnxruntime MatMulInteger", lambda shape: _ort_int8_product(shape, threads)))
    return methods


def _timing(methods: list[tuple[str, Maker]], threads: int, device: str,
            ) -> tuple[Callable[[], Any], contextlib.AbstractContextManager]:  # fmt: skip
    """What every product is timed with: a GPU sync (nothing on the CPU) and torch's thread count."""
    sync: Callable[[], Any] = lambda: None  # noqa: E731
    if device == "cuda":
        import torch

        sync = torch.cuda.synchronize
    uses_torch = any(name.startswith("torch") for name, _ in methods)
    return sync, torch_threads(threads) if uses_torch else contextlib.nullcontext()


def compute_precisions(precisions: list[str], device: str = "cpu") -> list[str]:
    """The precisions the rows compute in (fp32 always), each once: what the ceilings are measured for."""
    native = native_precisions()
    return list(dict.fromkeys(["fp32"] + [compute_precision(p, native, device) for p in precisions]))


def measure_ceiling(precision: str, threads: int, device: str = "cpu", sizes: tuple[int, ...] = SIZES,
                    budget_s: float = 1.0) -> Ceiling:  # fmt: skip
    """The best matrix-product rate of `precision` here (GFLOP/s), with `threads` CPU threads, within about
    `budget_s` seconds: sizes are tried smallest first, and a larger one only while the budget allows it
    (its product estimated at 8x the previous size's)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    flags = native_flags(precision) if device == "cpu" else []
    native = native_precisions()[precision] if device == "cpu" else True
    best = Ceiling(precision, 0.0, native, "", 0, threads, flags)
    methods = _methods(precision, device, threads)
    if not methods:
        raise BackendUnavailable(f"no way to measure a {precision} matrix product here (install torch)")
    share = budget_s / len(methods)
    sync, context = _timing(methods, threads, device)
    with context:
        for name, make in methods:
            start, last = time.perf_counter(), 0.0
            for i, n in enumerate(sorted(sizes)):
                left = share - (time.perf_counter() - start)
                if i > 0 and 8 * last * 3 > left:
                    break
                try:
                    seconds = best_seconds(make(square(n)), left / (len(sizes) - i), sync=sync)
                except (RuntimeError, NotImplementedError) as exc:  # e.g. an op missing on this build
                    best.note = f"{name}: {str(exc).splitlines()[0][:80]}"
                    break
                last = seconds
                rate = 2.0 * n**3 / seconds / 1e9
                if rate > best.gflops:
                    best.gflops, best.method, best.size = round(rate, 2), name, n
    if not native:
        best.note = (best.note + "; " if best.note else "") + f"emulated: no native {precision} instructions"
    return best


def measure_ceilings(precisions: list[str], threads: int, device: str = "cpu", budget_s: float = 1.0,
                     sizes: tuple[int, ...] = SIZES) -> dict[str, Ceiling]:  # fmt: skip
    """Ceilings for the compute precisions the rows need (fp32 always)."""
    return {p: measure_ceiling(p, threads, device, sizes, budget_s) for p in compute_precisions(precisions, device)}


# ----------------------------------------------------------------------------- the model's own shapes


def model_shapes(config: dict[str, Any]) -> list[tuple[Shape, int]]:
    """The matrix products of one image through the backbone, as (shape, how many per image): for a ViT,
    per block the qkv, attention-output and two MLP products over all tokens, and the two attention
    products per head (Q K^T and A V). Empty for backbones without a model of their shapes (CNNs)."""
    backbone = config.get("backbone", {})
    if backbone.get("name") != "vit":
        return []
    height, width = backbone["img_size"]
    patch, dim, depth, heads = (int(backbone[k]) for k in ("patch_size", "embed_dim", "depth", "num_heads"))
    hidden = int(dim * float(backbone.get("mlp_ratio", 4.0)))
    tokens = (int(height) // patch) * (int(width) // patch) + 1  # patches and the class token
    head_dim = dim // heads
    shapes = [((1, tokens, dim, 3 * dim), depth), ((1, tokens, dim, dim), depth), ((1, tokens, dim, hidden), depth),
              ((1, tokens, hidden, dim), depth), ((heads, tokens, head_dim, tokens), depth),
              ((heads, tokens, tokens, head_dim), depth)]  # fmt: skip
    merged: dict[Shape, int] = {}
    for shape, count in shapes:
        merged[shape] = merged.get(shape, 0) + count
    return list(merged.items())


@dataclass
class ShapeCeiling:
    precision: str
    gflops: float  # all the model's products (per image) over the sum of their best times
    per_shape: list[dict[str, Any]]  # shape, count, best gflops, method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_shape_ceiling(precision: str, shapes: list[tuple[Shape, int]], threads: int, device: str = "cpu",
                          budget_s: float = 1.0) -> ShapeCeiling | None:  # fmt: skip
    """The rate the model's own matrix products reach here in `precision`: each distinct shape timed with
    every method (best of several runs), then total FLOPs / total time, as if every product ran at its own
    best. What the whole model could reach if everything but its matrix products were free."""
    methods = _methods(precision, device, threads)
    if not shapes or not methods:
        return None
    share = budget_s / (len(shapes) * len(methods))
    sync, context = _timing(methods, threads, device)
    per_shape, total_flops, total_s = [], 0.0, 0.0
    with context:
        for shape, count in shapes:
            best, method = float("inf"), ""
            for name, make in methods:
                try:
                    seconds = best_seconds(make(shape), share, sync=sync)
                except (RuntimeError, NotImplementedError):  # e.g. _int_mm refuses small or odd shapes
                    continue
                if seconds < best:
                    best, method = seconds, name
            if best == float("inf"):
                return None
            flops = shape_flops(shape)
            per_shape.append({"shape": list(shape), "count": count, "gflops": round(flops / best / 1e9, 2),
                              "method": method})  # fmt: skip
            total_flops += count * flops
            total_s += count * best
    return ShapeCeiling(precision, round(total_flops / total_s / 1e9, 2), per_shape)


def measure_shape_ceilings(precisions: list[str], config: dict[str, Any], threads: int, device: str = "cpu",
                           budget_s: float = 1.0) -> dict[str, ShapeCeiling]:  # fmt: skip
    """Shape ceilings for the compute precisions the rows need (fp32 always); none for CNN backbones."""
    shapes = model_shapes(config)
    out = {}
    for precision in compute_precisions(precisions, device):
        ceiling = measure_shape_ceiling(precision, shapes, threads, device, budget_s)
        if ceiling is not None:
            out[precision] = ceiling
    return out
