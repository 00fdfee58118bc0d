"""The OKD paper's Table 1 on the built-in benchmark, in the papers' setting scaled to a CPU:

- every network starts from one pretrained backbone (`mtl-train --pretrained`: the SimMIM backbones that
  ship with mtlkd, made by `mtl-pretrain` on scenes that are not the benchmark's; KDAM's wider teacher
  from its own);
- the papers' optimiser and schedule (AdamW, OneCycle, peak lr 1e-3), OKD's warm-up at the paper's
  fraction (5 of 200 epochs) rounded up to a whole epoch;
- every row with several seeds, the epoch chosen on images held out of the training split, the
  evaluation split scored once by the chosen checkpoint (and by the last epoch, for comparison);
- the report: mean ± std of every metric, Delta with its 95% interval, above/level/below plain MTL.

    .venv/bin/python scripts/experiment.py --out runs/experiment

Runs go to OUT/ROW/seedN/ (each its own `mtl-train` process, one thread each, `--jobs` at a time, the
order respecting that kd-mtl needs the same seed's stl run and kdam its teacher). A finished run is
reused and an interrupted one resumed, so the command can be stopped and started again. Nothing is tuned
per method: each runs with its paper's defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# name -> (method, preset role, extra mtl-train arguments, rows it needs first)
ROWS: dict[str, tuple[str, str, list[str], list[str]]] = {
    "stl": ("stl", "student", [], []),
    "mtl": ("mtl", "student", [], []),
    "mtl-scratch": ("mtl", "student", [], []),  # the same from random weights: what the pretrained start gives
    "dwa": ("mtl", "student", ["--task-weighting", "dwa"], []),
    "uw": ("mtl", "student", ["--task-weighting", "uw"], []),
    "gradnorm": ("mtl", "student", ["--task-weighting", "gradnorm"], []),
    "rlw": ("mtl", "student", ["--task-weighting", "rlw"], []),
    "cross-stitch": ("cross-stitch", "student", [], []),
    "kd-mtl": ("kd-mtl", "student", ["--teachers", "{run:stl}"], ["stl"]),
    "okd": ("okd", "student", ["--warmup-epochs", "{warmup}"], []),
    "okd-afd": ("okd", "student", ["--warmup-epochs", "{warmup}", "--task-weighting", "equal"], []),
    "okd-otw": ("okd", "student", ["--warmup-epochs", "{warmup}", "--afd", "none"], []),
    "kdam-teacher": ("mtl", "teacher", [], []),
    "kdam": ("kdam", "student", ["--teacher", "{run:kdam-teacher}"], ["kdam-teacher"]),
    "kdam-kl": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--kd", "kl"], ["kdam-teacher"]),
    "kdam-dist": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--kd", "dist"], ["kdam-teacher"]),
    "kdam-channel": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--regression-kd", "channel"],
                     ["kdam-teacher"]),
}
# The minimum for a 2-core budget; the other rows with --rows.
DEFAULT_ROWS = ["stl", "mtl", "dwa", "kd-mtl", "okd", "okd-afd", "okd-otw", "kdam-teacher", "kdam",
                "kdam-kl", "kdam-dist"]
# Relative cost of a step (plain mtl = 1), measured in the 10-epoch experiment of the README, for ordering.
COST = {"stl": 1.8, "mtl": 1.0, "mtl-scratch": 1.0, "dwa": 1.1, "uw": 1.1, "gradnorm": 1.5, "rlw": 1.1,
        "cross-stitch": 1.9, "kd-mtl": 1.5, "okd": 2.8, "okd-afd": 2.8, "okd-otw": 2.6, "kdam-teacher": 2.5,
        "kdam": 2.1, "kdam-kl": 2.1, "kdam-dist": 2.1, "kdam-channel": 2.1}
PAPER_WARMUP_FRACTION = 5 / 200


@dataclass
class Job:
    row: str
    seed: int
    folder: Path
    needs: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return (self.folder / "metrics.json").is_file()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"))
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="vit-micro")
    parser.add_argument("--teacher-preset", default="vit-micro-wide", help="KDAM's teacher: a wider network")
    parser.add_argument("--train-images", type=int, default=288, help="of which --select-fraction are held out")
    parser.add_argument("--select-fraction", type=float, default=1 / 9)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (ablation)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--quiet", action="store_true", help="no progress bar: only the report and errors")
    args = parser.parse_args()

    from mtlkd.data.synthetic import write_synthetic

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"error: unknown rows {', '.join(unknown)}; known: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    data = args.out / "data"
    if not (data / "meta.json").exists():
        write_synthetic(data, args.train_images, args.eval_images, size=(96, 128), seed=0)
    warmup = max(1, math.ceil(PAPER_WARMUP_FRACTION * args.epochs))
    jobs = [Job(row, seed, args.out / row / f"seed{seed}", [n for n in ROWS[row][3] if n in rows])
            for seed in seeds for row in rows]
    missing = {n for row in rows for n in ROWS[row][3]} - set(rows)
    if missing:
        sys.exit(f"error: rows {', '.join(sorted(missing))} are needed by others; add them to --rows")
    started = time.perf_counter()
    wall = _run_jobs(jobs, args, data, warmup)
    total = time.perf_counter() - started
    _report(args.out, rows, seeds, wall, total, vars(args) | {"out": str(args.out), "warmup_epochs": warmup})


def _command(job: Job, args, data: Path, warmup: int) -> list[str]:
    method, role, extra, _ = ROWS[job.row]
    preset = args.teacher_preset if role == "teacher" else args.preset
    out = job.folder.parent.parent
    extra = [e.format(warmup=warmup, run=None) if "{run:" not in e
             else str(out / e[5:-1] / f"seed{job.seed}") + ("/model.safetensors" if method == "kdam" else "")
             for e in extra]
    cmd = [sys.executable, "-m", "mtlkd.cli.train", "synthetic", "--data-dir", str(data), "--out", str(job.folder),
           "--method", method, "--preset", preset, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--seed", str(job.seed), "--select-fraction", str(args.select_fraction), "--device", "cpu", *extra]
    if not args.no_pretrained and not job.row.endswith("-scratch"):
        cmd.append("--pretrained")
    if (job.folder / "state.json").is_file():
        cmd.append("--resume")
    return cmd


def _run_jobs(jobs: list[Job], args, data: Path, warmup: int) -> dict[str, float]:
    """Run what is not done, `--jobs` at a time, dependencies first, the costliest first; one bar."""
    from mtlkd.ui import console, progress_bar

    wall: dict[str, float] = {}
    pending = [j for j in jobs if not j.done]
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with progress_bar("run", quiet=args.quiet) as bar:
        task = bar.add_task("experiment", total=len(jobs), completed=len(jobs) - len(pending), info="")
        while pending or running:
            ready = [j for j in pending if all((j.folder.parent.parent / n / f"seed{j.seed}" / "metrics.json").is_file()
                                               for n in j.needs)]
            # the baseline first (every Delta needs it), then what others wait for, then the costliest
            ready.sort(key=lambda j: (j.row != "mtl", -sum(j.row in ROWS[o.row][3] for o in pending), -COST[j.row],
                                      j.seed))
            while ready and len(running) < args.jobs:
                job = ready.pop(0)
                pending.remove(job)
                if job.folder.is_dir() and not (job.folder / "state.json").is_file():  # died before epoch 1 ended
                    job.folder.rename(job.folder.with_name(f".{job.folder.name}.incomplete-{int(time.time())}"))
                job.folder.mkdir(parents=True, exist_ok=True)
                log = open(job.folder / "train.log", "a")  # noqa: SIM115 (closed with the process below)
                proc = subprocess.Popen(_command(job, args, data, warmup), stdout=log, stderr=subprocess.STDOUT,
                                        env=env)
                running[proc] = (job, time.perf_counter())
                proc.log = log  # type: ignore[attr-defined]
            time.sleep(2)
            for proc in [p for p in running if p.poll() is not None]:
                job, began = running.pop(proc)
                proc.log.close()  # type: ignore[attr-defined]
                if proc.returncode != 0:
                    console.print(f"[red]{job.row} seed {job.seed} failed[/] (exit {proc.returncode}); "
                                  f"see {job.folder / 'train.log'}")
                    continue
                wall[f"{job.row}/seed{job.seed}"] = time.perf_counter() - began
                bar.update(task, advance=1, info=f"{job.row} seed {job.seed} {time.perf_counter() - began:.0f}s")
            if not running and pending and not any(
                    all((j.folder.parent.parent / n / f"seed{j.seed}" / "metrics.json").is_file() for n in j.needs)
                    for j in pending):
                console.print("[red]stopping:[/] the remaining runs need runs that failed")
                break
    return wall


def _report(out: Path, rows: list[str], seeds: list[int], wall: dict, total: float, budget: dict) -> None:
    from mtlkd.eval.report import LAST_METRICS_FILE, METRICS_FILE
    from mtlkd.eval.seeds import aggregate, load_rows, seeds_markdown

    present = [out / row for row in ["mtl", *(r for r in rows if r != "mtl")] if (out / row).is_dir()]
    seconds = {}
    for row in rows:
        per_epoch = []
        for seed in seeds:
            history = out / row / f"seed{seed}" / "history.jsonl"
            if history.is_file():
                records = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
                per_epoch += [r["train_seconds"] for r in records]
        if per_epoch:
            seconds[row] = sum(per_epoch) / len(per_epoch)
    times = {"s/epoch": {k: f"{v:.1f}" for k, v in seconds.items()}}
    if seconds.get("mtl"):
        times["× mtl"] = {k: f"{v / seconds['mtl']:.2f}" for k, v in seconds.items()}
    tables, results = [], {}
    for name, title in ((METRICS_FILE, "chosen epoch"), (LAST_METRICS_FILE, "last epoch")):
        groups = load_rows(present, name)
        table = aggregate({row: [m for _, m in entries] for row, entries in groups.items()}, "mtl")
        results[title] = table
        tables.append(f"### {title}\n\n" + seeds_markdown(table, times if title == "chosen epoch" else None))
    (out / "report.md").write_text("\n".join(tables))
    (out / "report.json").write_text(json.dumps({"tables": results, "epoch_seconds": seconds, "run_wall_seconds": wall,
                                                 "wall_seconds_this_call": total, "budget": budget},
                                                indent=2, default=str) + "\n")
    _plot_curves(out, [r for r in ("mtl", "okd", "kdam", "kd-mtl") if r in rows], seeds)
    print("\n".join(tables))
    print(f"written: {out / 'report.md'}, {out / 'report.json'}, {out / 'curves.png'}; this call {total / 60:.1f} min")


def _plot_curves(out: Path, rows: list[str], seeds: list[int]) -> None:
    """curves.png: held-out metrics per epoch of the deployable network, one thin line per seed, so that a
    reader sees whether the budget let plain MTL's curve flatten."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [("seg", "miou", "segmentation mIoU % ↑"), ("depth", "abs_err", "depth abs. error m ↓"),
              ("normal", "mean", "normal mean angle ° ↓")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    for colour, row in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], rows, strict=False):
        for i, seed in enumerate(seeds):
            history = out / row / f"seed{seed}" / "history.jsonl"
            if not history.is_file():
                continue
            records = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
            records = [r for r in records if "mtl" in r.get("val", {}) and r.get("okd_phase") != "stl_warmup"]
            for ax, (task, metric, _) in zip(axes, panels, strict=True):
                ax.plot([r["epoch"] for r in records], [r["val"]["mtl"]["metrics"][task][metric] for r in records],
                        color=colour, alpha=0.8, lw=1.2, label=row if i == 0 else None)
    for ax, (_, _, label) in zip(axes, panels, strict=True):
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("held-out training images (the selection split), one line per seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
