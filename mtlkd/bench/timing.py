"""Timing: warm-up, adaptive repetition until the median is stable, and the measurement of one
configuration (one model file on one backend in one precision), normally in a fresh worker process.

Statistics: latency p50 (median) and p90 of single calls. Repetition is adaptive: at least `repeats`
timed calls, then more until the distribution-free 95% confidence interval of the median (order
statistics n/2 +- 1.96 sqrt(n)/2) is within +-`rel_ci` of the median, or the time budget is spent.

Clocks: `time.perf_counter` around each call on the CPU (every backend returns host arrays, so a call is
complete when it returns); on a GPU, torch.cuda.Event pairs around the call for the torch backend.

Worker: `python -m mtlkd.bench.timing SPEC.json OUT.json` runs `measure_config(spec)` in a process of its
own, pinned to one thread per physical core, so that peak memory (RSS growth while loading and running,
see `mtlkd.bench.machine.PeakMemory`) belongs to this configuration alone and no allocator state or
thread pool is inherited from an earlier one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WARMUP_RUNS, WARMUP_SECONDS, MAX_WARMUP = 2, 0.3, 20
WORKER_TIMEOUT_S = 3600
# OpenMP threads (torch, oneDNN, MKL) sleep instead of spinning while they wait for work, like ONNX Runtime's
# intra-op threads (allow_spinning=0). On a shared 2-core machine spinning made torch eager 4-8x slower:
# every small op waits for a thread whose core a spinning thread or another process holds (vit-tiny
# MTL, torch fp32, 2 threads: 1.1-2.7 s per image with the default policy, 0.27-0.42 s with PASSIVE).
# A wait policy the user set is kept; the `torch-spin` variant measures the library default.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
E2E_SIZE = (480, 640)  # the per-image end-to-end test decodes a VGA JPEG, like a camera frame or photo


@dataclass
class Timing:
    samples_ms: list[float]
    warmup: int = 0
    seconds: float = 0.0
    converged: bool = False

    @property
    def p50(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples_ms, 90))

    @property
    def ci(self) -> tuple[float, float]:
        return median_ci(self.samples_ms)

    def summary(self) -> dict[str, Any]:
        lo, hi = self.ci
        return {"p50_ms": round(self.p50, 4), "p90_ms": round(self.p90, 4),
                "mean_ms": round(float(np.mean(self.samples_ms)), 4), "ci_ms": [round(lo, 4), round(hi, 4)],
                "repeats": len(self.samples_ms), "converged": self.converged}  # fmt: skip


def median_ci(samples: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics (min/max below 6 samples)."""
    values = sorted(samples)
    n = len(values)
    if n < 6:
        return values[0], values[-1]
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + half)) - 1)
    return values[lo], values[hi]


def wall_timer(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cuda_timer(fn: Callable[[], Any]) -> float:
    """Seconds between two CUDA events recorded around `fn` on the current stream."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


Timer = Callable[[Callable[[], Any]], float]


def measure(fn: Callable[[], Any], repeats: int = 10, budget_s: float = 10.0, rel_ci: float = 0.02,
            max_repeats: int | None = None, timer: Timer = wall_timer) -> Timing:  # fmt: skip
    """Warm up (at least 2 calls and 0.3 s), then time calls until the median is stable (see module doc)."""
    warm, start = 0, time.perf_counter()
    while warm < WARMUP_RUNS or (time.perf_counter() - start < WARMUP_SECONDS and warm < MAX_WARMUP):
        fn()
        warm += 1
    max_repeats = max_repeats or max(repeats * 20, 200)
    samples: list[float] = []
    converged, start = False, time.perf_counter()
    while len(samples) < max_repeats:
        samples.append(timer(fn) * 1000.0)
        if len(samples) >= max(repeats, 1):
            lo, hi = median_ci(samples)
            median = float(np.median(samples))
            if len(samples) >= 6 and (hi - lo) / 2 <= rel_ci * median:
                converged = True
                break
            if time.perf_counter() - start >= budget_s:
                break
    return Timing(samples, warm, time.perf_counter() - start, converged)


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration measured in several rounds (fresh workers at different times) -> one result:
    latency statistics over the pooled samples, throughput and load time the median of the rounds, peak
    memory the maximum, accuracy from the first round (it does not depend on timing)."""
    errors = [r for r in results if "error" in r]
    if errors or len(results) == 1:
        return errors[0] if errors else results[0]
    samples = [v for r in results for v in r["samples_ms"]]
    pooled = Timing(samples, converged=all(r["converged"] for r in results))
    merged = {**results[0], **pooled.summary(), "samples_ms": samples, "rounds": len(results)}
    for key in ("load_s", "throughput_ips", "batch_p50_ms"):
        merged[key] = round(float(np.median([r[key] for r in results])), 4)
    for key in ("peak_mem_mb", "peak_mem_batch_mb", "gpu_peak_mb"):
        values = [r[key] for r in results if r.get(key) is not None]
        merged[key] = max(values) if values else None
    merged["batch_repeats"] = sum(r["batch_repeats"] for r in results)
    return merged


# ------------------------------------------------------------------------------------------ worker


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

    from mtlkd.runtime.backends import MODULES

    importlib.import_module(MODULES[backend])
    engine = {"torch": "mtlkd.models", "onnxruntime": "onnxruntime", "openvino": "openvino",
              "tensorrt": "tensorrt"}[backend]  # fmt: skip
    importlib.import_module(engine)


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
    return result


def accuracy(run: Callable[[np.ndarray], dict[str, np.ndarray]], data: Any, tasks: list[str]) -> dict[str, float]:
    """Seg agreement %, depth relative error %, normal angle (deg) of this configuration's outputs against
    the PyTorch fp32 outputs stored with the inputs (one image per call, so any batch profile works)."""
    from mtlkd.export.validate import accuracy_kept

    images = data["accuracy"]
    outs = [run(np.ascontiguousarray(images[i : i + 1])) for i in range(len(images))]
    kept: dict[str, float] = {}
    for task in tasks:
        key = f"ref_{task}"
        if key in data.files:
            out = np.concatenate([o[task] for o in outs])
            kept.update({k: round(v, 4) for k, v in accuracy_kept(task, data[key], out).items()})
    return kept


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


# ------------------------------------------------------------------------------------------ inputs
# Written by the parent process, read by the workers.


def dataset_images(root: Path, size: tuple[int, int], n: int) -> np.ndarray:
    """n images (N x 3 x H x W float32 in [0, 1]) from an MTAN-layout folder's val split (else train)."""
    import cv2

    from mtlkd.errors import UserError

    folder = next((root / s / "image" for s in ("val", "train") if (root / s / "image").is_dir()), None)
    if folder is None:
        raise UserError(f"--data-dir {root}: expected {root}/val/image/0.npy (the MTAN layout; mtl-data writes it)")
    files = sorted((f for f in folder.glob("*.npy") if f.stem.isdigit()), key=lambda f: int(f.stem))[:n]
    if not files:
        raise UserError(f"--data-dir {root}: {folder} has no .npy images")
    images = []
    for f in files:
        image = np.load(f, allow_pickle=False).astype(np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise UserError(f"{f}: expected an H x W x 3 image, got shape {image.shape}")
        image = image / 255.0 if image.max() > 1.5 else image
        if image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(np.clip(image, 0, 1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(images), dtype=np.float32)


def write_inputs(net: Any, tasks: list[str], timing: np.ndarray, images: np.ndarray, path: Path) -> Path:
    """The timing image, the accuracy images and the PyTorch fp32 outputs of `net` on them, for the workers."""
    from mtlkd.export.validate import run_torch

    refs = run_torch(net, images, tasks)
    np.savez(path, timing=timing, accuracy=images, **{f"ref_{t}": refs[t] for t in tasks})
    return path


def write_jpeg(path: Path, seed: int = 99) -> Path:
    """A synthetic VGA scene as a quality-90 JPEG: what `mtl-infer image.jpg` decodes (a PNG of the same
    scene costs about 7.5 ms to decode here against 2 ms)."""
    from PIL import Image

    from mtlkd.data.synthetic import render_scene

    scene = render_scene(np.random.default_rng(seed), *E2E_SIZE)["image"]
    Image.fromarray((np.clip(scene, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, quality=90)
    return path


def measure_ceilings_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The matrix-product ceilings, measured under the same pinning and thread settings as the rows."""
    from mtlkd.bench.ceiling import measure_ceilings
    from mtlkd.bench.machine import pin_threads

    if spec.get("pin"):
        pin_threads(spec["threads"])
    ceilings = measure_ceilings(spec["precisions"], spec["threads"], spec["device"], spec["budget"])
    return {p: c.to_dict() for p, c in ceilings.items()}


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
        proc = subprocess.run([sys.executable, "-m", "mtlkd.bench.timing", str(spec_path), str(out_path)],
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
