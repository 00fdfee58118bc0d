"""The measurement of one configuration (one model file on one backend in one precision), normally in a
fresh worker process: `python -m mtlkd.bench.worker SPEC.json OUT.json` runs `run_spec(spec)` in a process
of its own, pinned to one thread per physical core, so that peak memory (RSS growth while loading and
running, see `mtlkd.bench.machine.PeakMemory`) belongs to this configuration alone and no allocator state or
thread pool is left over from another configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.bench.stats import cuda_timer, measure, wall_timer

WORKER_TIMEOUT_S = 3600
# OpenMP threads (torch, oneDNN, MKL) sleep instead of spinning while they wait for work, like ONNX Runtime's
# intra-op threads (allow_spinning=0). Where cores are few or shared, spinning makes torch eager several
# times slower: every small op waits for a thread whose core a spinning thread or another process holds.
# A wait policy the user set is kept; the `torch-spin` variant measures the library default.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def precision_context(spec: dict[str, Any]) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context every call runs in: torch autocast for torch bf16/fp16, else nothing."""
    autocast = spec.get("autocast")
    if not autocast:
        return contextlib.nullcontext
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast]
    device = "cuda" if spec["device"] == "cuda" else "cpu"
    return lambda: torch.autocast(device_type=device, dtype=dtype)


def _import_engine(backend: str) -> None:
    """Import the engine before the memory probe starts, so its libraries are not counted as the model's."""
    import importlib

    from mtlkd.runtime.backends import backend_spec, module

    module(backend)
    for package in backend_spec(backend).packages:
        importlib.import_module(package)


def _gpu_peak_mb(spec: dict[str, Any]) -> float | None:
    if spec["device"] != "cuda" or "torch" not in sys.modules:
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def measure_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model file with one backend and measure it: batch-1 latency, accuracy against the PyTorch
    fp32 references in `spec["inputs"]`, peak memory, batch-`spec["batch"]` throughput (or, with mode
    "e2e", the end-to-end per-image split instead)."""
    from mtlkd.bench.machine import PeakMemory, pin_threads
    from mtlkd.runtime.backends import load_backend

    if spec.get("pin"):
        spec["cpus"] = pin_threads(spec["threads"])
    if spec["backend"] == "torch" and spec["device"] == "cpu":
        import torch

        torch.set_num_threads(spec["threads"])
    _import_engine(spec["backend"])
    data = np.load(spec["inputs"], allow_pickle=False)
    image = np.ascontiguousarray(data["timing"][:1])
    memory = PeakMemory().start()
    t0 = time.perf_counter()
    backend = load_backend(spec["backend"], spec["path"], spec["device"], **spec.get("options", {}))
    if spec.get("compile"):
        import torch

        torch._dynamo.reset()  # in-process runs: no guards or recompile budget left over from another model
        backend.model = torch.compile(backend.model)
    load_s = time.perf_counter() - t0
    tasks = list(backend.tasks)
    context = precision_context(spec)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        with context():
            return backend.run(batch, tasks)

    if spec.get("mode") == "e2e":
        return {"load_s": round(load_s, 3), "end_to_end": end_to_end(backend, context, image, spec)}
    timer = cuda_timer if spec["device"] == "cuda" and spec["backend"] == "torch" else wall_timer
    timing = measure(lambda: run(image), spec["repeats"], spec["budget"], spec.get("rel_ci", 0.02), timer=timer)
    result: dict[str, Any] = {"load_s": round(load_s, 3), **timing.summary(), "tasks": tasks,
                              "samples_ms": [round(v, 3) for v in timing.samples_ms]}
    result["accuracy"] = accuracy(run, data, tasks)
    result["peak_mem_mb"] = memory.peak_mb()
    result["peak_mem_exact"] = memory.exact
    result["gpu_peak_mb"] = _gpu_peak_mb(spec)
    batch = int(spec.get("batch") or 1)
    if batch > 1 and (backend.max_batch is None or batch <= backend.max_batch):
        big = np.ascontiguousarray(np.repeat(image, batch, axis=0))
        timing_b = measure(lambda: run(big), max(2, spec["repeats"] // 3), spec["budget"] / 2,
                           spec.get("rel_ci", 0.02), timer=timer)  # fmt: skip
        result.update(batch_p50_ms=round(timing_b.p50, 4), batch_repeats=len(timing_b.samples_ms),
                      throughput_ips=round(batch / (timing_b.p50 / 1000), 3), peak_mem_batch_mb=memory.peak_mb())
    else:
        result.update(batch_p50_ms=round(timing.p50, 4), batch_repeats=len(timing.samples_ms),
                      throughput_ips=round(1000 / timing.p50, 3), peak_mem_batch_mb=result["peak_mem_mb"])
    if spec.get("profile") and spec["device"] == "cpu":
        from mtlkd.bench.profile import PROFILERS

        profiler = PROFILERS.get(spec["backend"])
        if profiler is not None:
            result["profile"] = profiler(backend, image, tasks, spec["threads"]).to_dict()
    return result


def accuracy(run: Callable[[np.ndarray], dict[str, np.ndarray]], data: Any, tasks: list[str]) -> dict[str, dict]:
    """Per task, how this configuration's outputs differ from the PyTorch fp32 outputs stored with the
    inputs (`mtlkd.accuracy.OutputError` as a dict; one image per call, so any batch profile works)."""
    from mtlkd.accuracy import compare_outputs

    images = data["accuracy"]
    outs = [run(np.ascontiguousarray(images[i : i + 1])) for i in range(len(images))]
    refs = {task: data[f"ref_{task}"] for task in tasks if f"ref_{task}" in data.files}
    candidate = {task: np.concatenate([o[task] for o in outs]) for task in refs}
    return {task: err.to_dict() for task, err in compare_outputs(refs, candidate).items()}


def end_to_end(backend: Any, context: Callable[[], contextlib.AbstractContextManager], image: np.ndarray,
               spec: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What `mtl-infer` does per image, through `Predictor` (decode a JPEG file, preprocess, network,
    postprocess), against the network alone, measured in pairs: each timed step runs the network alone on
    a ready batch, then the whole pipeline, so both see the same machine state. The overhead is the median
    of the per-pair differences; the stage split is the median of each stage."""
    from mtlkd.runtime import Predictor
    from mtlkd.runtime.media import read_image

    predictor = Predictor(backend)
    tasks = list(backend.tasks)
    times: dict[str, list[float]] = {k: [] for k in ("alone", "total", "decode", "preprocess", "network",
                                                     "postprocess")}  # fmt: skip

    def pair() -> None:
        t0 = time.perf_counter()
        with context():
            backend.run(image, tasks)
        t1 = time.perf_counter()
        picture = read_image(spec["image"])
        t2 = time.perf_counter()
        with context():
            predictor.predict(picture)
        t3 = time.perf_counter()
        for key, value in (("alone", t1 - t0), ("total", t3 - t1), ("decode", t2 - t1),
                           *((k, predictor.timings[k]) for k in ("preprocess", "network", "postprocess"))):  # fmt: skip
            times[key].append(value * 1000)

    timing = measure(pair, spec["repeats"], spec["budget"], spec.get("rel_ci", 0.02))
    n = len(timing.samples_ms)
    last = {k: np.array(v[-n:]) for k, v in times.items()}
    med = {k: round(float(np.median(v)), 3) for k, v in last.items()}
    overhead = float(np.median(last["total"] - last["alone"]))
    return {"total_ms": med["total"], "network_alone_ms": med["alone"], "repeats": n,
            **{f"{k}_ms": med[k] for k in ("decode", "preprocess", "network", "postprocess")},
            "stages_overhead_ms": round(med["decode"] + med["preprocess"] + med["postprocess"], 3),
            "overhead_ms": round(overhead, 3), "overhead_pct": round(100 * overhead / med["alone"], 2),
            "overhead_share_pct": round(100 * overhead / med["total"], 2)}  # fmt: skip


def measure_ceilings_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The matrix-product ceilings, square and at the model's shapes, under the rows' pinning and threads."""
    from mtlkd.bench.ceiling import measure_ceilings, measure_shape_ceilings
    from mtlkd.bench.machine import pin_threads

    if spec.get("pin"):
        pin_threads(spec["threads"])
    square = measure_ceilings(spec["precisions"], spec["threads"], spec["device"], spec["budget"])
    shapes = measure_shape_ceilings(spec["precisions"], spec["config"], spec["threads"], spec["device"],
                                    spec["budget"])  # fmt: skip
    return {"square": {p: c.to_dict() for p, c in square.items()},
            "shapes": {p: c.to_dict() for p, c in shapes.items()}}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A worker's job: the ceilings (mode "ceiling") or one configuration."""
    return measure_ceilings_here(spec) if spec.get("mode") == "ceiling" else measure_config(spec)


def run_worker(spec: dict[str, Any], folder: Path, isolate: bool) -> dict[str, Any]:
    """Measure one configuration in a fresh process (isolate) or in this one."""
    if not isolate:
        try:
            return run_spec(dict(spec, pin=False))
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    fd, name = tempfile.mkstemp(dir=folder, suffix=".json")
    os.close(fd)
    spec_path, out_path = Path(name), Path(name).with_suffix(".out.json")
    spec_path.write_text(json.dumps(dict(spec, pin=True)))
    threads = str(spec["threads"])
    env = {**{k: v for k, v in WORKER_ENV.items() if k not in os.environ}, **os.environ, "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
    for key, value in spec.get("env", {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    try:
        proc = subprocess.run([sys.executable, "-m", "mtlkd.bench.worker", str(spec_path), str(out_path)],
                              capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {WORKER_TIMEOUT_S} s"}
    if out_path.is_file():
        return json.loads(out_path.read_text())
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"error": f"worker crashed: {tail[0][:200]}"}


def worker_main(argv: list[str]) -> int:
    """Entry of the worker process: read the spec, measure, write the result (or the error) as JSON."""
    import warnings

    spec = json.loads(Path(argv[0]).read_text())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_spec(spec)
    except Exception as exc:  # reported in the row; the other configurations go on
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        result = {"error": f"{type(exc).__name__}: {message}", "traceback": traceback.format_exc(limit=6)}
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
