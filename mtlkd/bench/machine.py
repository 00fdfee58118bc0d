"""What the machine is: CPU name, cores, the instruction-set features that decide which kernels run
(read from /proc/cpuinfo at run time), memory, GPU and library versions; stored with every result.

Also thread pinning (one thread per physical core) and the peak-RSS probe the benchmark workers use.
Nothing here imports torch unless it is already imported (or a GPU is asked about).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from mtlkd.runtime.cpu import cpu_flags, cpu_name, one_cpu_per_core, physical_cores, usable_cpus

# The flags worth reporting (x86 names as Linux prints them; asimd* / bf16 / i8mm are AArch64 names).
FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni_int8", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "bf16", "i8mm", "sve",
)  # fmt: skip

# A precision is "native" when one of these flags is present: the CPU has dot-product instructions for it.
# Without them the libraries still run the precision, by converting to float32 (bf16, fp16) or with
# multi-instruction sequences (int8 on plain AVX2), which the benchmark reports as "emulated".
NATIVE_FLAGS = {
    "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8", "asimddp", "i8mm"),
    "fp16": ("avx512_fp16", "amx_fp16", "asimdhp"),
}
# Libraries a result depends on besides the backends' engines (whose distributions come from their specs).
LIBRARIES = ("numpy", "timm", "onnx", "onnxruntime-gpu", "nncf")


def native_precisions(flags: set[str] | None = None) -> dict[str, bool]:
    """{precision: computed natively by this CPU}; fp32 always."""
    flags = cpu_flags() if flags is None else flags
    return {"fp32": True, **{p: any(f in flags for f in names) for p, names in NATIVE_FLAGS.items()}}


def native_flags(precision: str, flags: set[str] | None = None) -> list[str]:
    """The flags that make `precision` native here (empty: emulated)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in NATIVE_FLAGS.get(precision, ()) if f in flags]


def pin_threads(threads: int) -> list[int]:
    """Restrict this process to `threads` logical CPUs on distinct physical cores (so no two compute
    threads share a core's floating-point units) and set the OpenMP/MKL thread counts of libraries loaded
    later. Returns the CPUs pinned to (all usable ones when the OS does not support affinity)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    cpus = one_cpu_per_core()[: max(1, threads)]
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):
        return usable_cpus()
    return cpus


def versions() -> dict[str, str]:
    """{library: version} of the libraries a result depends on (`mtlkd.metadata.versions`): each backend
    under its name, from the first installed of its spec's distributions (so ONNX Runtime and TensorRT are
    recorded under their backend names when only onnxruntime-gpu or tensorrt-cu12/13 is installed), and
    `LIBRARIES`."""
    from mtlkd.metadata import versions as installed_versions
    from mtlkd.runtime.backends import version_distributions

    engines = version_distributions()
    return installed_versions([*engines, *LIBRARIES], engines)


def gpu_info(device: str = "cpu") -> dict[str, Any] | None:
    """Name and memory of GPU 0 through torch, when torch is already loaded or the device is cuda."""
    if device != "cuda" and "torch" not in sys.modules:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
        return {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}  # fmt: skip
    except Exception:  # a broken driver is not the benchmark's problem
        return None


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Everything about the machine a benchmark result depends on."""
    flags = cpu_flags()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(usable_cpus()),
        "physical_cores": physical_cores(),
        "threads": threads or physical_cores(),
        "features": [f for f in FEATURES if f in flags],
        "native": native_precisions(flags),
        "memory_gb": memory_gb(),
        "gpu": gpu_info(device),
        "device": device,
        "load_avg": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


# ------------------------------------------------------------------------------------------ memory


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class PeakMemory:
    """Peak resident memory growth of this process from `start()` on, in MiB.

    Linux: writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the current
    RSS, so `peak_mb()` is max RSS since `start()` minus RSS at `start()`: the memory the model's loading
    and running added, whatever allocator returned it since. Elsewhere: ru_maxrss (peak over the whole
    process life) minus RSS at start, which over-counts when imports peaked higher."""

    def __init__(self):
        self.start_kb = 0
        self.exact = False

    def start(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.start_kb = _status_kb("VmRSS") or self._maxrss_kb()
        return self

    @staticmethod
    def _maxrss_kb() -> int:
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
        except (ImportError, OSError):
            return 0

    def peak_mb(self) -> float:
        peak = (_status_kb("VmHWM") if self.exact else None) or self._maxrss_kb()
        return round(max(0, peak - self.start_kb) / 1024, 1)
