"""Timing statistics: warm-up, adaptive repetition until the median is stable, pooled rounds.

Statistics: latency p50 (median) and p90 of single calls. Repetition is adaptive: at least `repeats`
timed calls, then more until the distribution-free 95% confidence interval of the median (order
statistics n/2 +- 1.96 sqrt(n)/2) is within +-`rel_ci` of the median, or the time budget is spent.

Clocks: `time.perf_counter` around each call on the CPU (every backend returns host arrays, so a call is
complete when it returns); on a GPU, torch.cuda.Event pairs around the call for the torch backend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

WARMUP_RUNS, WARMUP_SECONDS, MAX_WARMUP = 2, 0.3, 20


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
