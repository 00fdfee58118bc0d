"""What is measured: which backend x precision x variant runs on this machine, and why the others do not.

Each backend's spec (`mtlkd.runtime.backends.registry`) says what it loads per precision
(`bench_precisions`), why a precision has no path (`bench_refusals`) and its optional rows
(`bench_variants`); the devices it runs on decide what is skipped on this one. For the built-in backends:
torch fp32 (eager), bf16/fp16 (autocast, where the CPU has them natively); onnxruntime fp32 / fp16 (mixed
graph) / int8 (Q/DQ graph); openvino fp32 (the ONNX graph) / fp16 (IR with fp16 weights) / bf16
(INFERENCE_PRECISION_HINT bf16) / int8 (the Q/DQ graph converted to IR); tensorrt fp32/fp16/int8 engines on
a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mtlkd.runtime.backends import BACKENDS as SPECS
from mtlkd.runtime.backends import BenchVariant, backend_names

__all__ = ["PRECISIONS", "Config", "backend_names", "plan", "variants"]

PRECISIONS = ("fp32", "fp16", "int8", "bf16")


def variants() -> dict[str, tuple[str, BenchVariant]]:
    """{variant name: (its backend, the variant)} over the backends registered now (`backend_names()`
    likewise), so a backend registered after this module was imported is planned too."""
    return {v.name: (spec.name, v) for spec in SPECS.values() for v in spec.bench_variants}


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


def plan(backends: list[str], precisions: list[str], variant_names: list[str], device: str,
         native: dict[str, bool]) -> tuple[list[Config], list[dict[str, str]]]:  # fmt: skip
    """(configurations to measure, [{backend, precision, variant, reason}] of what cannot run here)."""
    configs, skipped = [], []

    def skip(backend: str, precision: str, reason: str, variant: str = "default") -> None:
        skipped.append({"backend": backend, "precision": precision, "variant": variant, "reason": reason})

    for backend in backends:
        spec = SPECS[backend]
        for p in precisions:
            entry = spec.bench_precisions.get(p)
            if entry is None:
                skip(backend, p, spec.bench_refusals.get(p, f"{backend} has no {p} path"))
            elif device not in spec.devices:
                skip(backend, p, f"{spec.title} does not run on CUDA GPUs" if device == "cuda" else
                     f"{spec.title} needs an NVIDIA GPU (--device cuda)")  # fmt: skip
            elif entry.native and device == "cpu" and not native.get(entry.native):
                skip(backend, p, f"no native {entry.native} on this CPU (it would be emulated)")
            else:
                options = dict(entry.options)
                if entry.native_extra and native.get(entry.native_extra[0]):
                    options.update(entry.native_extra[1])
                configs.append(Config(backend, p, "default", entry.artifact, options, entry.autocast))
    known = variants()
    for name in variant_names:
        backend, variant = known[name]
        for base in [c for c in list(configs) if c.backend == backend and c.variant == "default"]:
            if base.precision not in variant.precisions:
                continue
            if variant.needs_native and not native.get(variant.needs_native):
                skip(backend, base.precision, f"no native {variant.needs_native} on this CPU", name)
                continue
            configs.append(Config(base.backend, base.precision, name, variant.artifact or base.artifact,
                                  {**base.options, **variant.options}, base.autocast, variant.compile,
                                  dict(variant.env)))  # fmt: skip
    return configs, skipped
