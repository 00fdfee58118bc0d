"""What comes out of the measurements: one row per (configuration, model), and per configuration the
MTL / sum-of-STL ratios, the speed-ups against PyTorch fp32 eager and the accuracy verdict.

Accuracy is judged by `mtlkd.accuracy`, the policy the exporter uses too: raw outputs against PyTorch
fp32 within the precision's tolerance, and, for a trained checkpoint, the task agreement as well. Rows of
random-weight models are judged on raw outputs only (their class logits are near-ties, so whether an
argmax flips says nothing about the precision).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from mtlkd.accuracy import OutputError, verdict

REFERENCE = ("torch", "fp32", "default")  # PyTorch fp32 eager: what every speed-up is measured against


def file_mb(path: Path) -> float:
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 3)


def _fraction(achieved: float, ceiling: float | None) -> float | None:
    return float(f"{achieved / ceiling:.5g}") if ceiling else None


def make_row(config: Any, model: Any, path: Path, result: dict[str, Any], ceiling: Any,
             batch: int, shape_ceiling: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One measured (configuration, model) as a flat row; `ceiling` is the square-product ceiling of the
    precision it computes in, `shape_ceiling` the rate at the model's own matrix shapes (GFLOP/s)."""
    row: dict[str, Any] = {
        "backend": config.backend, "precision": config.precision, "variant": config.variant, "label": config.label,
        "model": model.name, "tasks": model.tasks, "batch": batch, "file": str(path), "file_mb": file_mb(path),
        "params": model.params, "gflop": model.flops["gflop"], "ceiling_precision": ceiling.precision,
        "ceiling_gflops": ceiling.gflops, "shape_ceiling_gflops": shape_ceiling, "options": config.options,
        "random_weights": bool(model.metadata.get("random_weights")),
    }  # fmt: skip
    if "error" in result:
        return {**row, "error": result["error"]}
    keep = ("p50_ms", "p90_ms", "mean_ms", "ci_ms", "repeats", "converged", "load_s", "throughput_ips",
            "batch_p50_ms", "batch_repeats", "peak_mem_mb", "peak_mem_batch_mb", "peak_mem_exact", "gpu_peak_mb",
            "samples_ms", "profile")
    row.update({k: result.get(k) for k in keep}, rounds=result.get("rounds", 1))
    achieved = model.flops["flops"] / (result["p50_ms"] / 1000) / 1e9
    row.update(achieved_gflops=float(f"{achieved:.5g}"), fraction_of_ceiling=_fraction(achieved, ceiling.gflops),
               fraction_of_shape_ceiling=_fraction(achieved, shape_ceiling))  # fmt: skip
    errors = {task: OutputError(**e) for task, e in (result.get("accuracy") or {}).items()}
    for task, err in errors.items():
        row[f"{task}_raw_err"] = round(err.raw_rel_err, 6)
        row.update({k: round(v, 4) for k, v in err.agreement.items()})
    if errors:
        judged = verdict(errors, config.precision, trained=not row["random_weights"])
        row.update(accuracy_kept=judged.kept, accuracy_basis=judged.basis, accuracy_failures=judged.failures)
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 6) if a is not None and b else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: MTL / sum-of-STL ratios, speed-ups against PyTorch fp32 eager, the accuracy
    verdict (a trained model's when there is one, else the raw outputs'); the fastest configuration and
    the fastest that keeps the accuracy."""
    groups: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for row in rows:
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
        judged = [r for r in (trained or ok) if r.get("accuracy_kept") is not None]
        configs.append({
            "label": label, "backend": group[0]["backend"], "precision": group[0]["precision"],
            "variant": group[0]["variant"], "mtl_p50_ms": mtl and mtl["p50_ms"], "mtl_p90_ms": mtl and mtl["p90_ms"],
            "mtl_throughput_ips": mtl and mtl["throughput_ips"], "stl_sum_p50_ms": stl_sum.get("p50_ms"),
            "latency_ratio": _ratio(mtl and mtl["p50_ms"], stl_sum.get("p50_ms")),
            "params_ratio": _ratio(mtl and mtl["params"], stl_sum.get("params")),
            "size_ratio": _ratio(mtl and mtl["file_mb"], stl_sum.get("file_mb")),
            "gflop_ratio": _ratio(mtl and mtl["gflop"], stl_sum.get("gflop")),
            "fraction_of_ceiling": mtl and mtl["fraction_of_ceiling"],
            "fraction_of_shape_ceiling": mtl and mtl.get("fraction_of_shape_ceiling"),
            "accuracy_kept": all(r["accuracy_kept"] for r in judged) if judged else None,
            "accuracy_basis": judged[0]["accuracy_basis"] if judged else None,
            "accuracy_failures": [f"{r['model']}: {f}" for r in judged for f in r.get("accuracy_failures", [])],
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
    return {
        "reference": ref and ref["label"], "configs": configs, "fastest": fastest and fastest["label"],
        "fastest_kept": fastest_kept and fastest_kept["label"],
        "e2e_config": (fastest_kept or ref or fastest or {}).get("label"),
    }  # fmt: skip
