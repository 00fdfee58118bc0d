"""What is measured: which backend x precision x variant runs on this machine, and why the others do not.

Configurations: torch fp32 (eager), bf16 (autocast, where the CPU has native bf16); onnxruntime fp32 /
fp16 (mixed graph) / int8 (Q/DQ graph); openvino fp32 (the ONNX graph) / fp16 (IR with fp16 weights) /
bf16 (INFERENCE_PRECISION_HINT bf16) / int8 (the Q/DQ graph converted to IR); tensorrt fp32/fp16/int8
engines on a GPU. Optional `VARIANTS` add rows for the options worth trying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8", "bf16")
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")

# name -> (backend, precisions it applies to, what it changes)
VARIANTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ort-opt": ("onnxruntime", ("fp32",), "graph fused by onnxruntime.transformers.optimizer (model_type vit)"),
    "ort-spin": ("onnxruntime", ("fp32", "int8"), "intra-op threads spin between runs (allow_spinning=1)"),
    "ov-throughput": ("openvino", ("fp32", "bf16", "int8"), "PERFORMANCE_HINT THROUGHPUT (streams) instead of LATENCY"),
    "ov-int8-bf16": ("openvino", ("int8",), "int8 IR with the non-quantised ops in bf16 instead of f32"),
    "ov-nncf": ("openvino", ("int8",), "int8 IR from NNCF post-training quantisation instead of the Q/DQ graph"),
    "torch-compile": ("torch", ("fp32",), "torch.compile (inductor), compiled during warm-up"),
    "torch-spin": ("torch", ("fp32",), "OpenMP's default wait policy (threads spin) instead of PASSIVE"),
}


@dataclass
class Config:
    backend: str
    precision: str
    variant: str = "default"
    artifact: str = "onnx"
    options: dict[str, Any] = field(default_factory=dict)
    autocast: str | None = None
    compile: bool = False
    env: dict[str, str | None] = field(default_factory=dict)  # worker environment changes (None: unset)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}" + ("" if self.variant == "default" else f" {self.variant}")


# (backend, precision) -> (artifact, load options, torch autocast, the native CPU precision it needs)
MATRIX: dict[tuple[str, str], tuple[str, dict[str, Any], str | None, str | None]] = {
    ("torch", "fp32"): ("ckpt", {}, None, None),
    ("torch", "bf16"): ("ckpt", {}, "bf16", "bf16"),
    ("torch", "fp16"): ("ckpt", {}, "fp16", "fp16"),
    ("onnxruntime", "fp32"): ("onnx", {}, None, None),
    ("onnxruntime", "fp16"): ("fp16.onnx", {}, None, None),
    ("onnxruntime", "int8"): ("int8.onnx", {}, None, None),
    ("openvino", "fp32"): ("onnx", {}, None, None),  # OpenVINO reads the ONNX graph: the fp32 IR's model
    ("openvino", "fp16"): ("ov-fp16", {}, None, None),  # fp16 weights; computes in f32 on the CPU
    ("openvino", "bf16"): ("onnx", {"precision": "bf16"}, None, "bf16"),
    ("openvino", "int8"): ("ov-int8", {}, None, None),  # the Q/DQ graph converted by OpenVINO
    **{("tensorrt", p): (f"trt-{p}", {}, None, None) for p in ("fp32", "fp16", "int8")},
}
WHY_NOT = {
    ("torch", "int8"): "no int8 path in the torch backend; int8 runs as the Q/DQ graph (onnxruntime, and "
                       "converted to IR in openvino)",
    ("onnxruntime", "bf16"): "ONNX Runtime's execution providers here have no bf16 graph path",
    ("tensorrt", "bf16"): "no bf16 engine from the exporter",
}


def plan(backends: list[str], precisions: list[str], variants: list[str], device: str,
         native: dict[str, bool]) -> tuple[list[Config], list[dict[str, str]]]:  # fmt: skip
    """(configurations to measure, [{backend, precision, variant, reason}] of what cannot run here)."""
    configs, skipped = [], []

    def skip(backend: str, precision: str, reason: str, variant: str = "default") -> None:
        skipped.append({"backend": backend, "precision": precision, "variant": variant, "reason": reason})

    for backend in backends:
        for p in precisions:
            entry = MATRIX.get((backend, p))
            if entry is None:
                skip(backend, p, WHY_NOT.get((backend, p), f"{backend} has no {p} path"))
            elif backend == "openvino" and device != "cpu":
                skip(backend, p, "OpenVINO does not run on CUDA GPUs")
            elif backend == "tensorrt" and device != "cuda":
                skip(backend, p, "TensorRT needs an NVIDIA GPU (--device cuda)")
            elif entry[3] and device == "cpu" and not native.get(entry[3]):
                skip(backend, p, f"no native {entry[3]} on this CPU (it would be emulated)")
            else:
                options = dict(entry[1])
                if (backend, p) == ("openvino", "fp16") and native.get("fp16"):
                    options["precision"] = "f16"
                configs.append(Config(backend, p, "default", entry[0], options, entry[2]))
    for name in variants:
        backend, applies, _ = VARIANTS[name]
        for base in [c for c in list(configs) if c.backend == backend and c.variant == "default"]:
            if base.precision not in applies:
                continue
            config = Config(base.backend, base.precision, name, base.artifact, dict(base.options), base.autocast)
            if name == "ort-opt":
                config.artifact = "ort.onnx"
            elif name == "ort-spin":
                config.options["spinning"] = True
            elif name == "ov-nncf":
                config.artifact = "ov-int8-nncf"
            elif name == "ov-throughput":
                config.options["hint"] = "THROUGHPUT"
            elif name == "ov-int8-bf16" and native.get("bf16"):
                config.options["precision"] = "bf16"
            elif name == "ov-int8-bf16":
                skip(backend, base.precision, "no native bf16 on this CPU", name)
                continue
            elif name == "torch-compile":
                config.compile = True
            elif name == "torch-spin":
                config.env["OMP_WAIT_POLICY"] = None
            configs.append(config)
    return configs, skipped
