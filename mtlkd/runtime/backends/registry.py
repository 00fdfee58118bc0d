"""The one place a runtime backend is named: a `BackendSpec` per backend, registered in `BACKENDS`.

A spec says everything the rest of mtlkd needs to know about a backend without importing it: which file
suffixes it opens, which packages it needs (found with `find_spec`, never imported here) and the line
that says how to install them, the devices it runs on, its rank on a GPU, and how the benchmark runs each
precision on it. The code lives in the module the spec names, which has `load(path, device, **options)`
and `available(device)` (see `mtlkd.runtime.backends`).

Everything else derives from the specs: suffix dispatch (`backends_for`), the install hints of
`BackendUnavailable`, `auto`'s order on a GPU, the benchmark's plan, `--backend` choices, the versions a
cache key or a benchmark records. The order of registration is the order of preference on the CPU for a
suffix several backends open (`.onnx`: onnxruntime, then openvino).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mtlkd.errors import BackendError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BenchPrecision:
    """How the benchmark runs one precision on a backend: the file it loads (a `mtlkd.bench.artifacts`
    kind, or "ckpt": the checkpoint), options for `load`, torch autocast, and the CPU precision it needs
    natively (without it the row would be emulated); `native_extra`: (a precision, options added where
    the CPU computes that precision natively)."""

    artifact: str
    options: Mapping[str, Any] = field(default_factory=dict)
    autocast: str | None = None
    native: str | None = None
    native_extra: tuple[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class BenchVariant:
    """An optional benchmark row: the backend's default row for `precisions`, changed as given."""

    name: str
    precisions: tuple[str, ...]
    what: str
    artifact: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    compile: bool = False
    env: Mapping[str, str | None] = field(default_factory=dict)  # worker environment (None: unset)
    needs_native: str | None = None  # skipped on a CPU without this precision natively


@dataclass(frozen=True)
class BackendSpec:
    """One runtime backend. `packages`: import names that must be installed; `distributions`: the
    distributions whose version counts for it, the first installed one (default: `packages[0]`).
    `gpu_rank`: lower is preferred by `auto` on a GPU. `foreign`: its module's `load_foreign(path, teacher,
    device, threads)` opens files without mtlkd metadata (`mtlkd.runtime.foreign`). `bench_precisions`:
    what the benchmark loads per precision; `bench_refusals`: why a precision has no path;
    `bench_variants`: the optional rows."""

    name: str
    title: str  # the engine's name in messages
    module: str  # dotted path of the module with `load(path, device, **options)` and `available(device)`
    suffixes: tuple[str, ...]
    packages: tuple[str, ...]
    install_hint: str
    devices: tuple[str, ...] = ("cpu",)
    gpu_rank: int | None = None
    distributions: tuple[str, ...] = ()
    foreign: bool = False
    bench_precisions: Mapping[str, BenchPrecision] = field(default_factory=dict)
    bench_refusals: Mapping[str, str] = field(default_factory=dict)
    bench_variants: tuple[BenchVariant, ...] = ()

    def __post_init__(self) -> None:
        unknown = [d for d in self.devices if d not in DEVICES]
        if unknown or not self.devices:
            raise ValueError(f"backend {self.name}: devices {self.devices} must be among {', '.join(DEVICES)}")
        if not self.suffixes or any(not s.startswith(".") or s != s.lower() for s in self.suffixes):
            raise ValueError(f"backend {self.name}: suffixes {self.suffixes} must be lower-case, like '.onnx'")

    @property
    def version_distributions(self) -> tuple[str, ...]:
        return self.distributions or self.packages[:1]


_BACKENDS: dict[str, BackendSpec] = {}
BACKENDS: Mapping[str, BackendSpec] = MappingProxyType(_BACKENDS)  # name -> spec, in registration order


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add a backend (a new name; "auto" is taken by the measuring choice)."""
    if spec.name in _BACKENDS or spec.name == "auto":
        raise ValueError(f"backend {spec.name!r} is already registered")
    _BACKENDS[spec.name] = spec
    return spec


def unregister_backend(name: str) -> None:
    _BACKENDS.pop(name, None)


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def backend_spec(name: str) -> BackendSpec:
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}; use auto, {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def suffixes() -> dict[str, tuple[str, ...]]:
    """{suffix: the backends that open it, in order of preference}."""
    table: dict[str, list[str]] = {}
    for spec in _BACKENDS.values():
        for suffix in spec.suffixes:
            table.setdefault(suffix, []).append(spec.name)
    return {suffix: tuple(names) for suffix, names in table.items()}


def file_types() -> str:
    """The model files the registered backends open, for messages: ".onnx (onnxruntime, openvino), ..."."""
    return ", ".join(f"{suffix} ({', '.join(names)})" for suffix, names in suffixes().items())


def backends_for(path: str | Path) -> tuple[str, ...]:
    """The backends able to open this file, from its suffix."""
    suffix = Path(path).suffix.lower()
    table = suffixes()
    if suffix not in table:
        raise BackendError(f"{path}: unknown model file type {suffix or '(none)'}; pass one of {file_types()}")
    return table[suffix]


def default_device(path: str | Path) -> str:
    """cpu when a backend opening this file runs there, else the first device of its backends (cuda for
    TensorRT engines)."""
    specs = [_BACKENDS[n] for n in suffixes().get(Path(path).suffix.lower(), ())]
    if not specs or any("cpu" in s.devices for s in specs):
        return "cpu"
    return specs[0].devices[0]


def gpu_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """The backends among `names` that run on a CUDA GPU, by `gpu_rank` (unranked last, in order)."""
    ranked = [n for n in names if "cuda" in _BACKENDS[n].devices]
    return sorted(ranked, key=lambda n: (_BACKENDS[n].gpu_rank is None, _BACKENDS[n].gpu_rank or 0))


def installed(name: str) -> bool:
    """Whether the backend's packages are installed (without importing them)."""
    return all(importlib.util.find_spec(pkg) is not None for pkg in backend_spec(name).packages)


def install_hint(name: str) -> str:
    return backend_spec(name).install_hint


def version_distributions(names: list[str] | tuple[str, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """{backend: the distributions whose version counts for it} (`mtlkd.metadata.versions`' table)."""
    return {n: backend_spec(n).version_distributions for n in (backend_names() if names is None else names)}


# ------------------------------------------------------------------------------------------------------------
# The built-in backends. A new backend: its module under mtlkd/runtime/backends/ and one entry here.

register_backend(BackendSpec(
    name="torch", title="PyTorch", module="mtlkd.runtime.backends.torch_backend",
    suffixes=(".safetensors",), packages=("torch", "timm"), install_hint="pip install 'mtlkd[train]'",
    devices=("cpu", "cuda"), gpu_rank=2,
    bench_precisions={"fp32": BenchPrecision("ckpt"), "bf16": BenchPrecision("ckpt", autocast="bf16", native="bf16"),
                      "fp16": BenchPrecision("ckpt", autocast="fp16", native="fp16")},
    bench_refusals={"int8": "no int8 path in the torch backend; int8 runs as the Q/DQ graph (onnxruntime, and "
                            "converted to IR in openvino)"},
    bench_variants=(
        BenchVariant("torch-compile", ("fp32",), "torch.compile (inductor), compiled during warm-up", compile=True),
        BenchVariant("torch-spin", ("fp32",), "OpenMP's default wait policy (threads spin) instead of PASSIVE",
                     env={"OMP_WAIT_POLICY": None}),
    ),
))  # fmt: skip
register_backend(BackendSpec(
    name="onnxruntime", title="ONNX Runtime", module="mtlkd.runtime.backends.onnxruntime_backend",
    suffixes=(".onnx",), packages=("onnxruntime",), install_hint="pip install onnxruntime, or onnxruntime-gpu for CUDA",
    devices=("cpu", "cuda"), gpu_rank=1, distributions=("onnxruntime", "onnxruntime-gpu"), foreign=True,
    bench_precisions={"fp32": BenchPrecision("onnx"), "fp16": BenchPrecision("fp16.onnx"),
                      "int8": BenchPrecision("int8.onnx")},
    bench_refusals={"bf16": "ONNX Runtime's execution providers here have no bf16 graph path"},
    bench_variants=(
        BenchVariant("ort-opt", ("fp32",), "graph fused by onnxruntime.transformers.optimizer (model_type vit)",
                     artifact="ort.onnx"),
        BenchVariant("ort-spin", ("fp32", "int8"), "intra-op threads spin between runs (allow_spinning=1)",
                     options={"spinning": True}),
    ),
))  # fmt: skip
register_backend(BackendSpec(
    name="openvino", title="OpenVINO", module="mtlkd.runtime.backends.openvino_backend",
    suffixes=(".onnx", ".xml"), packages=("openvino",), install_hint="pip install openvino", devices=("cpu",),
    foreign=True,
    bench_precisions={
        "fp32": BenchPrecision("onnx"),  # OpenVINO reads the ONNX graph: the fp32 IR's model
        "fp16": BenchPrecision("ov-fp16", native_extra=("fp16", {"precision": "f16"})),
        "bf16": BenchPrecision("onnx", {"precision": "bf16"}, native="bf16"),
        "int8": BenchPrecision("ov-int8"),  # the Q/DQ graph converted by OpenVINO
    },
    bench_variants=(
        BenchVariant("ov-throughput", ("fp32", "bf16", "int8"), "PERFORMANCE_HINT THROUGHPUT (streams) instead of "
                     "LATENCY", options={"hint": "THROUGHPUT"}),
        BenchVariant("ov-int8-bf16", ("int8",), "int8 IR with the non-quantised ops in bf16 instead of f32",
                     options={"precision": "bf16"}, needs_native="bf16"),
        BenchVariant("ov-nncf", ("int8",), "int8 IR from NNCF post-training quantisation instead of the Q/DQ graph",
                     artifact="ov-int8-nncf"),
    ),
))  # fmt: skip
register_backend(BackendSpec(
    name="tensorrt", title="TensorRT", module="mtlkd.runtime.backends.tensorrt_backend",
    suffixes=(".engine", ".plan"), packages=("tensorrt",),
    install_hint="pip install 'mtlkd[gpu]' (tensorrt and cuda-python); needs an NVIDIA GPU",
    devices=("cuda",), gpu_rank=0, distributions=("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    bench_precisions={p: BenchPrecision(f"trt-{p}") for p in ("fp32", "fp16", "int8")},
    bench_refusals={"bf16": "no bf16 engine from the exporter"},
))  # fmt: skip
