"""`backend="auto"`: pick the backend by measuring, once per model file and machine.

When several installed backends can open a file (an .onnx: onnxruntime and openvino) on the CPU, the first
use times each of them at batch 1 (a couple of warm-up runs, then the median of a few) and stores the
winner in a JSON cache: `$MTLKD_CACHE/auto_backend.json` (or `$MTLKD_CACHE` itself when it names a .json
file), else `~/.cache/mtlkd/auto_backend.json`. Later loads of the same file on the same machine read the
cache and measure nothing.

* file key: resolved path + size + modification time (no hashing of multi-MB files on every load; a
  re-export changes the mtime and so is re-measured);
* machine key: CPU model name, a digest of the CPU flags, the usable core count, the device, and the
  versions of the candidate backends (a new onnxruntime may change the winner), plus backend options.

On a GPU the candidates (the backends whose spec lists cuda, by their `gpu_rank`: TensorRT, ONNX Runtime's
CUDA provider, torch) are loaded and measured the same way, so what is timed is what each really got: a
backend that cannot run (ONNX Runtime whose session fell back to the CPU, a driver too old for
cuda-bindings) is skipped with a warning that keeps its reason, never in silence. `MTLKD_AUTO_MEASURE=0`
(or `measure=False`) disables measuring and takes the first preference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.metadata import versions as library_versions
from mtlkd.runtime.backends import (
    Backend,
    BackendUnavailable,
    available,
    backends_for,
    gpu_order,
    install_hint,
    installed,
    load_backend,
    version_distributions,
)
from mtlkd.runtime.cpu import cpu_flags_text, cpu_name, physical_cores

CACHE_VERSION = 1
WARMUP, RUNS = 2, 5


def cache_path() -> Path:
    root = os.environ.get("MTLKD_CACHE")
    if root:
        return Path(root) if root.endswith(".json") else Path(root) / "auto_backend.json"
    return Path.home() / ".cache" / "mtlkd" / "auto_backend.json"


def measuring_enabled(measure: bool | None = None) -> bool:
    if measure is not None:
        return measure
    return os.environ.get("MTLKD_AUTO_MEASURE", "1").strip().lower() not in ("0", "false", "no", "off")


def cpu_identity() -> dict[str, Any]:
    """CPU model name and a digest of its feature flags (AVX-512, AMX... decide which kernels run)."""
    digest = hashlib.sha256(cpu_flags_text().encode()).hexdigest()[:12]
    return {"cpu": cpu_name(), "flags": digest, "cores": physical_cores()}


def file_identity(path: str | Path) -> dict[str, Any]:
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def versions(names: list[str]) -> dict[str, str]:
    """{backend: installed version}, each from the first installed of its spec's distributions."""
    return library_versions(names, version_distributions(names))


def cache_key(path: str | Path, device: str, names: list[str], options: dict[str, Any]) -> str:
    """The cache entry's key: the file, the machine, the device, the candidates' versions and the options."""
    identity = {"file": file_identity(path), "machine": cpu_identity(), "device": device,
                "versions": versions(names), "options": {k: str(v) for k, v in sorted(options.items())}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def read_cache(path: Path | None = None) -> dict[str, Any]:
    path = path or cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"version": CACHE_VERSION, "entries": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {"version": CACHE_VERSION, "entries": {}}
    return data


def write_cache(data: dict[str, Any], path: Path | None = None) -> None:
    from mtlkd.checkpoint import write_json  # torch-free atomic write

    with contextlib.suppress(OSError):  # a read-only home is no reason to fail inference
        write_json(path or cache_path(), data)


def candidates(path: str | Path, device: str) -> list[str]:
    """Backends that can open this file and run on `device` here, best first (without measuring)."""
    names = list(backends_for(path))
    if device == "cuda":
        names = gpu_order(names)
    return [n for n in names if installed(n) and available(n, device)]


def time_backend(backend: Backend, runs: int = RUNS, warmup: int = WARMUP) -> float:
    """Median seconds of one batch-1 forward pass with every task."""
    batch = np.random.default_rng(0).random((1, 3, *backend.input_size), dtype=np.float32)
    for _ in range(warmup):
        backend.run(batch, backend.tasks)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.run(batch, backend.tasks)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def select_backend(path: str | Path, device: str = "cpu", measure: bool | None = None,
                   cache: str | Path | None = None, **options: Any) -> tuple[str, Backend | None]:
    """(backend name, the already loaded backend when measuring loaded it, else None)."""
    names = candidates(path, device)
    if not names:
        wanted = backends_for(path)
        hints = "; ".join(f"{n}: {install_hint(n)}" for n in wanted)
        raise BackendUnavailable(f"no installed backend runs {Path(path).suffix} files on {device} ({hints})")
    if len(names) == 1 or not measuring_enabled(measure):
        return names[0], None
    cache_file = Path(cache) if cache else cache_path()
    data = read_cache(cache_file)
    key = cache_key(path, device, names, options)
    entry = data["entries"].get(key)
    if entry and entry.get("backend") in names:
        return entry["backend"], None

    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    best: tuple[float, str, Backend] | None = None
    for name in names:
        try:
            backend = load_backend(name, path, device, **options)
            seconds = time_backend(backend)
        except Exception as exc:  # one broken backend must not stop the others
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"backend auto: {name} skipped on {device}: {errors[name]}", stacklevel=2)
            continue
        timings[name] = round(seconds * 1000, 3)
        if best is None or seconds < best[0]:
            best = (seconds, name, backend)
        else:
            del backend
    if best is None:
        reasons = "; ".join(f"{k}: {v}" for k, v in errors.items())
        raise BackendUnavailable(f"{path}: no backend could run it: {reasons}")
    data["entries"][key] = {
        "backend": best[1], "timings_ms": timings, "errors": errors, "file": str(Path(path).resolve()),
        "device": device, **cpu_identity(), "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_cache(data, cache_file)
    return best[1], best[2]
