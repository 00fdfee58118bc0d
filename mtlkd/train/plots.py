"""Pictures of a run, redrawn from history.jsonl after every epoch: training curves, validation
metrics, task weights, MTL vs STL loss per task (OKD Fig. 3) and AFD's omega per layer (Fig. 4)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PRIMARY = {"seg": ("miou", "mIoU (%)"), "depth": ("abs_err", "abs err (m)"), "normal": ("mean", "mean angle (°)")}


def read_history(run: Path) -> list[dict]:
    path = Path(run) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_history(run: Path) -> list[Path]:
    """Write curves.png, and task_weights.png / mtl_vs_stl.png / omega.png when the run has them."""
    run = Path(run)
    history = read_history(run)
    if not history:
        return []
    written = [_curves(run, history)]
    if _weights_vary(history):  # equal weights would be flat lines on top of each other
        written.append(_task_weights(run, history))
    if any("mtl_loss" in r["train"] and "stl_loss" in r["train"] for r in history):
        written.append(_mtl_vs_stl(run, history))
    if history[-1].get("omega"):
        written.append(_omega(run, history))
    return written


def _weights_vary(history: list[dict]) -> bool:
    values = {round(w, 9) for r in history for w in (r.get("task_weights") or {}).values()}
    return len(values) > 1


def _curves(run: Path, history: list[dict]) -> Path:
    epochs = [r["epoch"] for r in history]
    seen = {t for r in history for res in r.get("val", {}).values() for t in res["metrics"]}
    tasks = [t for t in PRIMARY if t in seen] + sorted(seen - set(PRIMARY))
    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(4.2 * (1 + len(tasks)), 3.4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(epochs, [r["train"]["loss"] for r in history], label="train loss")
    for name in history[-1].get("val", {}):
        ax.plot(epochs, [sum(r["val"][name]["loss"].values()) for r in history], "--", label=f"val loss ({name})")
    ax.set(title="loss", xlabel="epoch")
    ax.legend(fontsize=7)
    for ax, task in zip(axes[0, 1:], tasks, strict=True):
        key, label = PRIMARY.get(task, (None, task))
        for name, res in history[-1]["val"].items():
            if task in res["metrics"]:
                metric = key or next(iter(res["metrics"][task]))
                ax.plot(epochs, [r["val"][name]["metrics"][task][metric] for r in history], marker=".", label=name)
        ax.set(title=f"val {task}", xlabel="epoch", ylabel=label)
        ax.legend(fontsize=7)
    return _save(fig, run / "curves.png")


def _task_weights(run: Path, history: list[dict]) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    rows = [r for r in history if r.get("task_weights")]
    for task in rows[-1]["task_weights"]:
        ax.plot([r["epoch"] for r in rows], [r["task_weights"][task] for r in rows], marker=".", label=task)
    ax.set(title="task weights (epoch mean)", xlabel="epoch", ylabel="weight")
    ax.legend(fontsize=7)
    return _save(fig, run / "task_weights.png")


def _mtl_vs_stl(run: Path, history: list[dict]) -> Path:
    rows = [r for r in history if "mtl_loss" in r["train"] and "stl_loss" in r["train"]]
    tasks = list(rows[-1]["train"]["mtl_loss"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["train"]["mtl_loss"][task] for r in rows], label="MTL")
        ax.plot(epochs, [r["train"]["stl_loss"][task] for r in rows], label="STL")
        ax.set(title=f"{task} training loss", xlabel="epoch")
        ax.legend(fontsize=7)
    return _save(fig, run / "mtl_vs_stl.png")


def _omega(run: Path, history: list[dict]) -> Path:
    """Box plot over epochs of each layer's omega per task, the final value as a red star (as Fig. 4)."""
    rows = [r for r in history if r.get("omega")]
    layers = len(rows[-1]["omega"])
    tasks = list(rows[-1]["omega"][0])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        values = [[r["omega"][layer][task] for r in rows] for layer in range(layers)]
        ax.boxplot(values, showfliers=False)
        ax.plot(range(1, layers + 1), [v[-1] for v in values], "r*", markersize=9)
        ax.set(title=f"omega, {task}", xlabel="layer", ylabel="omega")
    return _save(fig, run / "omega.png")


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.2, 1.4
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_figure(fig, path: Path) -> None:
    """Beside, checked, then renamed: a full disk never leaves a 0-byte picture under the final name (matplotlib
    can report nothing when the disk fills); the figure is closed either way."""
    from mtlkd.files import atomic_write, check_written

    def write(tmp: str) -> None:
        fig.savefig(tmp, dpi=110, format="png")
        check_written(tmp, min_bytes=len(PNG_SIGNATURE) + 1)

    try:
        atomic_write(path, write, suffix=".png")
    finally:
        plt.close(fig)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
