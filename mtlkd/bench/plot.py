"""The benchmark chart: per backend+precision, the MTL model's latency beside the stacked latencies of
the STL models it replaces (with the MTL / sum-of-STL ratio above; configurations where the STL models
were not timed show the MTL bar alone), and the MTL model's achieved rate as a fraction of the ceiling of
its precision, for square products and at the model's own shapes. Titled with the model's name and the
CPU. Drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STL_COLOURS = {"seg": "#8fb8de", "depth": "#f4b183", "normal": "#a9d18e"}
MTL_COLOUR = "#2f5597"


def plot_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write the PNG chart of a `run_benchmark` result; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in result["summary"]["configs"] if c["mtl_p50_ms"] is not None]
    rows = [r for r in result["rows"] if not r.get("error")]
    labels = [c["label"] for c in configs]
    x = np.arange(len(configs))
    width = 0.38
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(7.0, 1.1 * len(configs) + 2), 8.2),
                                  gridspec_kw={"height_ratios": [3, 1.3]}, constrained_layout=True)  # fmt: skip
    mtl = [c["mtl_p50_ms"] for c in configs]
    p90 = [c["mtl_p90_ms"] - c["mtl_p50_ms"] for c in configs]
    ax.bar(x - width / 2, mtl, width, color=MTL_COLOUR, label="MTL (all tasks, one pass)",
           yerr=[np.zeros(len(p90)), p90], capsize=3, error_kw={"elinewidth": 0.8})  # fmt: skip
    bottom = np.zeros(len(configs))
    tasks = [t for t in STL_COLOURS if any(r["model"] == t for r in rows)]
    tasks += sorted({r["model"] for r in rows if r["model"] not in ("mtl", *tasks)})
    for task in tasks:
        values = np.array([next((r["p50_ms"] for r in rows if r["label"] == c["label"] and r["model"] == task), 0.0)
                           for c in configs])  # fmt: skip
        ax.bar(x + width / 2, values, width, bottom=bottom, color=STL_COLOURS.get(task, "#bbbbbb"),
               edgecolor="white", linewidth=0.6, label=f"STL {task}")  # fmt: skip
        bottom += values
    top = max([*mtl, *bottom, 1e-9])
    for i, c in enumerate(configs):
        if c["latency_ratio"] is not None:
            ax.text(x[i], max(mtl[i], bottom[i]) + 0.03 * top, f"{c['latency_ratio']:.2f}x", ha="center",
                    va="bottom", fontsize=8)  # fmt: skip
        if c["accuracy_kept"] is False:
            ax.text(x[i] - width / 2, mtl[i] / 2, "acc.\nlost", ha="center", va="center", fontsize=7, color="white")
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("latency p50, batch 1 (ms)")
    machine = result["machine"]
    ax.set_title(f"{result['name']}: one multi-task pass vs the single-task models (ratio above the bars)\n"
                 f"{machine['cpu']}, "
                 f"{machine['threads']} threads, load avg {machine['load_avg'][0] if machine['load_avg'] else '?'}",
                 fontsize=10)  # fmt: skip
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    ax.grid(axis="y", alpha=0.3)

    fractions = [100 * (c["fraction_of_ceiling"] or 0) for c in configs]
    shaped = [100 * (c.get("fraction_of_shape_ceiling") or 0) for c in configs]
    ax2.bar(x - 0.15, fractions, 0.3, color=MTL_COLOUR, label="of square products")
    ax2.bar(x + 0.15, shaped, 0.3, color="#9dc3e6", label="of the model's own shapes")
    for i, c in enumerate(configs):
        ceiling = next((r["ceiling_precision"] for r in rows if r["label"] == c["label"]), "")
        top_i = max(fractions[i], shaped[i])
        ax2.text(x[i], top_i + 1, ceiling, ha="center", va="bottom", fontsize=7)
    ax2.set_ylim(0, max(100, *fractions, *shaped) * 1.25)
    ax2.set_ylabel("MTL rate, % of ceiling")
    ax2.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax2.legend(fontsize=8, loc="upper right")
    ax2.grid(axis="y", alpha=0.3)
    from mtlkd.train.plots import save_figure

    path = Path(path)
    save_figure(fig, path)
    return path
