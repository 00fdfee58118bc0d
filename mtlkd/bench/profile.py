"""Where a model's time goes, per kind of operation, as the engine itself reports it.

OpenVINO's CPU plugin counts each executed node (PERF_COUNT); ONNX Runtime writes a per-node trace
(enable_profiling). Both are summed over repeated batch-1 runs and grouped into categories a person can act
on: matrix products, attention, normalisation, activations, layout changes (reorders, transposes,
reshapes), resizing, quantisation, element-wise arithmetic. Engine timings of very short nodes are
coarse, so shares matter more than absolute values; they add up to the engine's own total, which is a
little below the wall time of a call.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES: dict[str, tuple[str, ...]] = {
    "matrix products": ("FullyConnected", "MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul",
                        "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "Convolution", "Conv",
                        "ConvInteger", "QLinearConv"),
    "attention": ("Softmax", "MHA", "Attention", "MultiHeadAttention", "ScaledDotProductAttention"),
    "normalisation": ("MVN", "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                      "NormalizeL2", "ReduceL2"),
    "activations": ("Gelu", "Erf", "BiasGelu", "FastGelu", "SoftPlus", "Softplus", "Sigmoid", "Tanh", "Relu",
                    "Exp", "Log"),
    "layout": ("Reorder", "Transpose", "Reshape", "Concatenation", "Concat", "Split", "VariadicSplit", "Gather",
               "Slice", "StridedSlice", "Squeeze", "Unsqueeze", "Convert", "Cast", "Flatten", "Expand",
               "ShapeOf", "Shape", "Broadcast"),
    "resizing": ("Interpolate", "Resize", "Upsample"),
    "quantisation": ("FakeQuantize", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"),
    "element-wise": ("Add", "Multiply", "Mul", "Subtract", "Sub", "Divide", "Div", "Power", "PowerStatic", "Pow",
                     "Sqrt", "Select", "Where", "Greater", "Less", "Eltwise", "Maximum", "Minimum", "Max", "Min",
                     "ReduceMean", "ReduceSum", "Clip", "Abs"),
}  # fmt: skip
_CATEGORY_OF = {op: name for name, ops in CATEGORIES.items() for op in ops}


def category(op_type: str, fused: str = "") -> str:
    """The category of an engine's node type. OpenVINO fuses nodes into `Subgraph`s; `fused` lists the
    original layers: one with a softmax is attention (its MHA kernel), the others element-wise chains."""
    if op_type == "Subgraph":
        return "attention" if "softmax" in fused.lower() else "element-wise"
    if op_type.startswith(("FullyConnected", "MatMul", "Convolution")):  # FullyConnectedQuantizedLegacy...
        return "matrix products"
    return _CATEGORY_OF.get(op_type, "other")


@dataclass
class Profile:
    """Per category: milliseconds per call and share of the engine's total; the slowest nodes."""

    engine: str
    total_ms: float
    categories: dict[str, float]
    shares: dict[str, float]
    top_nodes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _profile(engine: str, node_ms: Counter, node_type: dict[str, str], runs: int,
             fused: dict[str, str] | None = None) -> Profile:  # fmt: skip
    per_call = {name: ms / runs for name, ms in node_ms.items()}
    totals: Counter = Counter()
    for name, ms in per_call.items():
        totals[category(node_type[name], (fused or {}).get(name, ""))] += ms
    total = sum(totals.values()) or 1e-12
    top = sorted(per_call.items(), key=lambda kv: -kv[1])[:10]
    return Profile(engine, round(total, 3), {k: round(v, 3) for k, v in totals.most_common()},
                   {k: round(v / total, 4) for k, v in totals.most_common()},
                   [{"node": n, "type": node_type[n], "ms": round(ms, 3)} for n, ms in top])  # fmt: skip


def profile_openvino(backend: Any, image: np.ndarray, tasks: list[str], runs: int = 20) -> Profile:
    """Profile an `OpenVinoBackend` (as loaded by the runtime, so with its precision and hint) at batch 1."""
    backend.config = {**backend.config, "PERF_COUNT": True}
    backend._compiled.clear()  # compiled again with the counters on
    compiled, request = backend.compiled(list(tasks), 1)
    fused = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "originalLayersNames" in info:
            fused[op.get_friendly_name()] = info["originalLayersNames"].astype(str)
    for _ in range(3):
        request.infer({0: image})
    node_ms: Counter = Counter()
    node_type: dict[str, str] = {}
    for _ in range(runs):
        request.infer({0: image})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                node_ms[info.node_name] += info.real_time.total_seconds() * 1e3
                node_type[info.node_name] = info.node_type
    return _profile("openvino", node_ms, node_type, runs, fused)


def profile_onnxruntime(path: str | Path, image: np.ndarray, threads: int, runs: int = 20) -> Profile:
    """Profile an ONNX graph on ONNX Runtime's CPU provider with the runtime's session settings; only the
    node events inside the last `runs` calls count (the trace starts with the session's creation)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mtl-profile-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image}
        for _ in range(3 + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-runs:]
    node_ms: Counter = Counter()
    node_type: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in calls):
            continue
        name = event["name"][: -len("_kernel_time")]
        node_ms[name] += event["dur"] / 1e3
        node_type[name] = event.get("args", {}).get("op_name", "other")
    return _profile("onnxruntime", node_ms, node_type, len(calls) or 1)


# backend name -> profile(loaded backend, batch-1 image, tasks, threads): the engines with a per-node profiler
PROFILERS: dict[str, Callable[[Any, np.ndarray, list[str], int], Profile]] = {
    "openvino": lambda backend, image, tasks, threads: profile_openvino(backend, image, tasks),
    "onnxruntime": lambda backend, image, tasks, threads: profile_onnxruntime(backend.path, image, threads),
}
