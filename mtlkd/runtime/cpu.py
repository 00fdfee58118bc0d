"""What CPU this is, read at run time (the machines change; nothing is assumed): /proc/cpuinfo's model
name and feature flags, and which logical CPUs are distinct physical cores. Shared by the runtime (thread
counts, the auto-backend cache key) and the benchmark (features, pinning)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


@functools.cache
def cpu_info() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty elsewhere); read once per process."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags_text() -> str:
    """The feature flags as the kernel prints them (x86 `flags`, AArch64 `Features`)."""
    info = cpu_info()
    return info.get("flags") or info.get("Features") or ""


def cpu_flags() -> set[str]:
    return set(cpu_flags_text().split())


def cpu_name() -> str:
    info = cpu_info()
    return info.get("model name") or info.get("Model name") or platform.processor() or platform.machine()


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, which pinning changes)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def one_cpu_per_core(cpus: list[int] | None = None) -> list[int]:
    """The first logical CPU of each physical core among `cpus` (hyper-thread siblings dropped)."""
    chosen, seen = [], set()
    for cpu in cpus if cpus is not None else usable_cpus():
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = ((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip())
        except OSError:
            core = ("?", str(cpu))
        if core not in seen:
            seen.add(core)
            chosen.append(cpu)
    return chosen


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share a core's floating-point units, so one
    thread per core is what dense maths wants). Falls back to the logical count."""
    return max(1, len(one_cpu_per_core()))
