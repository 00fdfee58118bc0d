"""`mtl-bench`: is one multi-task network cheaper than the single-task networks it replaces, on every
backend and precision, how close does it run to the machine's own limit, and what does accuracy cost?

    from mtlkd.bench.run import BenchOptions, run_benchmark
    result = run_benchmark(BenchOptions(preset="vit-tiny", backends=["torch", "onnxruntime"]))

Modules: `machine` (CPU, features, pinning, peak memory), `ceiling` (matrix-product ceilings), `flops`
(FLOPs per image), `timing` (adaptive timing and the per-configuration worker), `run` (models, exports,
running the workers), `plot` (the PNG chart). This module says what is measured (`plan`: which
backend x precision x variant runs here, and why the others do not) and what comes out of it (`make_row`,
`summarise` with the targets, the runtime's auto-backend cache).

Configurations: torch fp32 (eager), bf16 (autocast, where the CPU has native bf16); onnxruntime fp32 /
fp16 (mixed graph) / int8 (Q/DQ graph); openvino fp32 (the ONNX graph) / fp16 (IR with fp16 weights) /
bf16 (INFERENCE_PRECISION_HINT bf16) / int8 (the Q/DQ graph converted to IR); tensorrt fp32/fp16/int8
engines on a GPU. Optional `VARIANTS` add rows for the options worth trying.

JSON (`--json`):

* `rows`: one object per measured (backend, precision, variant) x model: `backend`, `precision`,
  `variant` ("default" or a `--variants` name), `label`, `model` ("mtl" or the task of an STL model),
  `tasks`, `batch` (of the throughput), `file`, `file_mb`, `params`, `gflop` (per image), `p50_ms`,
  `p90_ms`, `mean_ms`, `ci_ms` (95% CI of the median), `repeats`, `rounds`, `samples_ms`, `converged`, `load_s`,
  `throughput_ips` (images/s at `batch`), `batch_p50_ms`, `achieved_gflops`, `ceiling_precision`,
  `ceiling_gflops`, `fraction_of_ceiling`, `peak_mem_mb` (RSS growth while loading and running at batch
  1), `peak_mem_batch_mb` (after the batch runs too), `gpu_peak_mb`, accuracy against PyTorch fp32:
  `seg_agreement` (%), `depth_rel_err` (%), `normal_angle` (degrees), `accuracy_kept`; `error` when the
  configuration failed.
* `summary`: `configs` (per backend+precision+variant: `mtl_p50_ms`, `stl_sum_p50_ms`, `latency_ratio`,
  `params_ratio`, `size_ratio`, `gflop_ratio` = MTL / sum of STL, `speedup_vs_torch_fp32` of the MTL
  model, `stl_speedup_vs_torch_fp32`, `mtl_vs_torch_stl_chain`, `fraction_of_ceiling`, `accuracy_kept`),
  `reference`, `fastest`, `fastest_kept`, `targets` (name, description, threshold, value, passed).
* `machine`, `ceilings` (per compute precision: gflops, native, method, size, before/after the rows),
  `models` (params, gflop and its split per backbone/head), `skipped` (what cannot run here, and why),
  `end_to_end` (decode/preprocess/network/postprocess ms, network alone, overhead), `auto_cache`,
  `options`, `command`, `created`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
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


# ---------------------------------------------------------------------------------------- summary

REFERENCE = ("torch", "fp32", "default")  # PyTorch fp32 eager: what every speed-up is measured against
# Accuracy kept against PyTorch fp32 (the "seg agreement >= 99%, depth/normal within 1%"): the
# normal bound is 1% of a unit vector, |n - n_fp32| <= 0.01, i.e. 0.573 degrees.
ACCURACY = {"seg_agreement": (">=", 99.0), "depth_rel_err": ("<=", 1.0), "normal_angle": ("<=", 0.573)}
TARGETS = {"latency_ratio": 0.45, "speedup": 1.4, "speedup_native": 2.0, "fraction_of_ceiling": 0.75,
           "overhead_pct": 15.0}  # fmt: skip


def accuracy_kept(row: dict[str, Any]) -> bool | None:
    """Whether every accuracy field of a row is within `ACCURACY` (None: nothing measured)."""
    found = [(row[k], op, bound) for k, (op, bound) in ACCURACY.items() if row.get(k) is not None]
    if not found:
        return None
    return all(v >= b if op == ">=" else v <= b for v, op, b in found)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 6) if a is not None and b else None


def summarise(rows: list[dict[str, Any]], native: dict[str, bool], preset: str | None = None,
              size: tuple[int, int] | None = None, end_to_end: dict[str, Any] | None = None,
              ) -> dict[str, Any]:  # fmt: skip
    """Per configuration: MTL / sum-of-STL ratios and speed-ups against PyTorch fp32 eager; the fastest
    configurations; the issue's targets with pass/fail. Sets `accuracy_kept` on each row."""
    groups: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for row in rows:
        row["accuracy_kept"] = None if row.get("error") else accuracy_kept(row)
        groups.setdefault(row["label"], []).append(row)
    stl_names = sorted({r["model"] for r in rows if r["model"] != "mtl"})
    configs = []
    for label, group in groups.items():
        ok = [r for r in group if not r.get("error")]
        mtl = next((r for r in ok if r["model"] == "mtl"), None)
        stl = [r for r in ok if r["model"] != "mtl"]
        full = bool(stl_names) and len(stl) == len(stl_names)
        stl_sum = {k: sum(r[k] for r in stl) for k in ("p50_ms", "params", "file_mb", "gflop")} if full else {}
        trained = [r for r in ok if not r.get("random_weights")]  # random STL counterparts: latency only
        kept = [r["accuracy_kept"] for r in (trained or ok) if r["accuracy_kept"] is not None]
        configs.append({
            "label": label, "backend": group[0]["backend"], "precision": group[0]["precision"],
            "variant": group[0]["variant"], "mtl_p50_ms": mtl and mtl["p50_ms"], "mtl_p90_ms": mtl and mtl["p90_ms"],
            "mtl_throughput_ips": mtl and mtl["throughput_ips"], "stl_sum_p50_ms": stl_sum.get("p50_ms"),
            "latency_ratio": _ratio(mtl and mtl["p50_ms"], stl_sum.get("p50_ms")),
            "params_ratio": _ratio(mtl and mtl["params"], stl_sum.get("params")),
            "size_ratio": _ratio(mtl and mtl["file_mb"], stl_sum.get("file_mb")),
            "gflop_ratio": _ratio(mtl and mtl["gflop"], stl_sum.get("gflop")),
            "fraction_of_ceiling": mtl and mtl["fraction_of_ceiling"],
            "accuracy_kept": all(kept) if kept else None,
            "errors": [f"{r['model']}: {r['error']}" for r in group if r.get("error")],
        })  # fmt: skip
    ref = next((c for c in configs if (c["backend"], c["precision"], c["variant"]) == REFERENCE), None)
    for c in configs:
        c["speedup_vs_torch_fp32"] = _ratio(ref and ref["mtl_p50_ms"], c["mtl_p50_ms"])
        c["stl_speedup_vs_torch_fp32"] = _ratio(ref and ref["stl_sum_p50_ms"], c["stl_sum_p50_ms"])
        c["mtl_vs_torch_stl_chain"] = _ratio(ref and ref["stl_sum_p50_ms"], c["mtl_p50_ms"])
    timed = [c for c in configs if c["mtl_p50_ms"]]
    fastest = min(timed, key=lambda c: c["mtl_p50_ms"], default=None)
    fastest_kept = min((c for c in timed if c["accuracy_kept"] is not False), key=lambda c: c["mtl_p50_ms"],
                       default=None)  # fmt: skip
    summary = {
        "reference": ref and ref["label"], "configs": configs, "fastest": fastest and fastest["label"],
        "fastest_kept": fastest_kept and fastest_kept["label"],
        "e2e_config": (fastest_kept or ref or fastest or {}).get("label"),
        "accuracy_thresholds": {k: f"{op} {b}" for k, (op, b) in ACCURACY.items()},
    }  # fmt: skip
    summary["targets"] = targets(configs, ref, fastest, fastest_kept, native, end_to_end)
    if preset != "vit-tiny" or (size and tuple(size) != (384, 384)):
        summary["targets_note"] = "the targets are set for vit-tiny at 384x384; this run measured another model"
    return summary


def targets(configs: list[dict], ref: dict | None, fastest: dict | None, kept: dict | None,
            native: dict[str, bool], end_to_end: dict[str, Any] | None) -> list[dict[str, Any]]:  # fmt: skip
    """The issue's targets, each with its measured value and pass/fail (None: not measured)."""
    out = []

    def add(name: str, description: str, threshold: float, value: float | None, passed: bool | None,
            config: str | None = None) -> None:  # fmt: skip
        out.append({"name": name, "description": description, "threshold": threshold,
                    "value": value, "passed": passed, "config": config})  # fmt: skip

    ratios = [c for c in configs if c["latency_ratio"] is not None]
    worst = max(ratios, key=lambda c: c["latency_ratio"], default=None)
    limit = TARGETS["latency_ratio"]
    add("latency_ratio", f"MTL / sum of STL latency <= {limit} on every backend+precision", limit,
        worst and worst["latency_ratio"], worst and all(c["latency_ratio"] <= limit for c in ratios),
        worst and worst["label"])  # fmt: skip
    need = TARGETS["speedup_native"] if native.get("bf16") or native.get("int8") else TARGETS["speedup"]
    why = " (native bf16/VNNI here)" if need == TARGETS["speedup_native"] else ""
    speed = kept and kept["speedup_vs_torch_fp32"]
    add("speedup", f"fastest configuration with accuracy kept >= {need}x PyTorch fp32 eager{why}", need, speed,
        None if speed is None else speed >= need, kept and kept["label"])  # fmt: skip
    acc = fastest and fastest["accuracy_kept"]
    add("accuracy", "the fastest configuration keeps accuracy (seg >= 99%, depth <= 1%, normal <= 0.573 deg)",
        1.0, None if acc is None else float(acc), acc, fastest and fastest["label"])  # fmt: skip
    frac = kept and kept["fraction_of_ceiling"]
    limit = TARGETS["fraction_of_ceiling"]
    add("fraction_of_ceiling", f"achieved rate >= {limit:.0%} of the ceiling of its precision (MTL, fastest kept)",
        limit, frac, None if frac is None else frac >= limit, kept and kept["label"])  # fmt: skip
    over = end_to_end.get("overhead_pct") if end_to_end else None
    limit = TARGETS["overhead_pct"]
    add("overhead_pct", f"mtl-infer per-image overhead over the network alone <= {limit:g}%", limit, over,
        None if over is None else over <= limit, end_to_end and end_to_end.get("label"))  # fmt: skip
    return out


def file_mb(path: Path) -> float:
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 3)


def make_row(config: Any, model: Any, path: Path, result: dict[str, Any], ceiling: Any,
             batch: int) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {
        "backend": config.backend, "precision": config.precision, "variant": config.variant, "label": config.label,
        "model": model.name, "tasks": model.tasks, "batch": batch, "file": str(path), "file_mb": file_mb(path),
        "params": model.params, "gflop": model.flops["gflop"], "ceiling_precision": ceiling.precision,
        "ceiling_gflops": ceiling.gflops, "options": config.options,
        "random_weights": bool(model.metadata.get("random_weights")),
    }  # fmt: skip
    if "error" in result:
        return {**row, "error": result["error"]}
    keep = ("p50_ms", "p90_ms", "mean_ms", "ci_ms", "repeats", "converged", "load_s", "throughput_ips",
            "batch_p50_ms", "batch_repeats", "peak_mem_mb", "peak_mem_batch_mb", "peak_mem_exact", "gpu_peak_mb",
            "samples_ms")
    row.update({k: result.get(k) for k in keep}, rounds=result.get("rounds", 1))
    achieved = model.flops["flops"] / (result["p50_ms"] / 1000) / 1e9
    row.update(achieved_gflops=float(f"{achieved:.5g}"), fraction_of_ceiling=float(f"{achieved / ceiling.gflops:.5g}"))
    row.update(result.get("accuracy", {}))
    return row


# ------------------------------------------------------------------------------------- auto cache


def update_auto_cache(rows: list[dict[str, Any]], device: str, exports: dict[str, Path] | None = None,
                      cache: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Write the measured winner per model file + machine into the runtime's auto-backend cache
    (mtlkd.runtime.auto), for every file that all its candidate backends were measured on with the same
    options, and for the user's own exports of the same checkpoints (`exports`: bench file -> user file).
    Returns what was written."""
    import json

    from mtlkd.runtime import auto

    measured: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row.get("error") or row["variant"] != "default" or row.get("p50_ms") is None:
            continue
        options = {k: v for k, v in row.get("options", {}).items() if k == "threads"}
        if set(row.get("options", {})) - {"threads"}:
            continue  # a precision or hint option: not what `Predictor.load(path)` would use
        measured.setdefault((row["file"], json.dumps(options, sort_keys=True)), {})[row["backend"]] = row["p50_ms"]
    path = cache or auto.cache_path()
    data = auto.read_cache(path)
    written = []
    for (file, options_json), timings in measured.items():
        names = auto.candidates(file, device)
        if len(names) < 2 or not all(n in timings for n in names):
            continue
        winner = min(names, key=lambda n: timings[n])
        options = json.loads(options_json)
        for target in [Path(file), *([exports[file]] if exports and file in exports else [])]:
            key = auto.cache_key(target, device, names, options)
            data["entries"][key] = {
                "backend": winner, "timings_ms": {n: timings[n] for n in names}, "errors": {},
                "file": str(target.resolve()), "device": device, **auto.cpu_identity(),
                "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": "mtl-bench",
            }  # fmt: skip
            written.append({"file": str(target), "backend": winner, "timings_ms": data["entries"][key]["timings_ms"]})
    if written:
        auto.write_cache(data, path)
    return written


def user_exports(models: list[Any], paths: dict[tuple[str, str], Path]) -> dict[str, Path]:
    """{benchmarked fp32 .onnx: the user's own export of the same checkpoint}: the `export/model.onnx`
    that mtl-export writes beside a checkpoint, when its metadata names this checkpoint's hash and tasks
    (so the auto-backend winner measured here is written for the file the user will load too)."""
    from mtlkd.checkpoint import sha256_of
    from mtlkd.export.onnx import read_onnx_metadata

    found = {}
    for model in models:
        sibling, ours = model.checkpoint.parent / "export" / "model.onnx", paths.get((model.name, "onnx"))
        if not sibling.is_file() or ours is None:
            continue
        try:
            meta = read_onnx_metadata(sibling)
        except Exception:  # not ours to judge; just no cache entry for it
            continue
        if meta.get("source_sha256") == sha256_of(model.checkpoint) and meta.get("tasks") == model.tasks:
            found[str(ours)] = sibling
    return found
