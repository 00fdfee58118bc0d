"""The OKD paper's Table 1 on the built-in benchmark, in the papers' setting scaled to a CPU:

- every network starts from one pretrained backbone (`mtl-train --pretrained`: the SimMIM backbones that
  ship with mtlkd, made by `mtl-pretrain` on scenes that are not the benchmark's; KDAM's wider teacher
  from its own);
- the papers' optimiser and schedule (AdamW, OneCycle, peak lr 1e-3), OKD's warm-up at the paper's
  fraction of the schedule (5 of 200 epochs: 2.5% of the steps), and its ablations without a warm-up and
  with one whole epoch;
- KDAM's teacher trained first, as the paper does, for `--teacher-epochs` (outside the student's budget);
- every row with several seeds, seed i of every row paired with plain MTL's seed i (the same data order,
  augmentation and initial student weights), the epoch chosen on images held out of the training split,
  the evaluation split scored once by the chosen checkpoint (and by the last epoch, for comparison);
- the report: mean ± std of every metric, Delta with its 95% interval against the mean of plain MTL, and
  each row's paired Delta (seed i against mtl's seed i) with its 95% interval and the verdict from it.

    .venv/bin/python scripts/experiment.py

Runs go to OUT/ROW/seedN/ (runs/experiment: weights and all, each its own `mtl-train` process, one thread
each, `--jobs` at a time, the order respecting that kd-mtl needs the same seed's stl run and kdam its
teacher). A finished run's small files (metrics, last metrics, selection, history, run options, the CPU
it ran on: never weights) are copied to RESULTS/ROW/seedN/ (results/experiment, committed), and the
report is built from RESULTS. A run recorded there is not run again, unless a run still to do needs its
weights (kd-mtl its stl run, kdam its teacher) and OUT lacks them: then it is rebuilt in OUT (the same
seed gives the same run) and its recorded files are kept. An interrupted run is resumed. Nothing is tuned
per method: each runs with its paper's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtlkd.runtime.cpu import cpu_name

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
    "okd": ("okd", "student", [], []),  # the warm-up: the paper's 2.5% of the schedule (mtl-train's default)
    "okd-afd": ("okd", "student", ["--task-weighting", "equal"], []),
    "okd-otw": ("okd", "student", ["--afd", "none"], []),
    "okd-warmup-none": ("okd", "student", ["--warmup", "0"], []),
    "okd-warmup-epoch": ("okd", "student", ["--warmup", "{epoch_steps}"], []),
    "kdam-teacher": ("mtl", "teacher", [], []),
    "kdam": ("kdam", "student", ["--teacher", "{run:kdam-teacher}"], ["kdam-teacher"]),
    "kdam-kl": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--kd", "kl"], ["kdam-teacher"]),
    "kdam-dist": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--kd", "dist"], ["kdam-teacher"]),
    "kdam-channel": ("kdam", "student", ["--teacher", "{run:kdam-teacher}", "--regression-kd", "channel"],
                     ["kdam-teacher"]),
}
# The minimum for a 2-core budget; the other rows with --rows.
DEFAULT_ROWS = ["stl", "mtl", "dwa", "kd-mtl", "okd", "okd-afd", "okd-otw", "okd-warmup-none", "okd-warmup-epoch",
                "kdam-teacher", "kdam", "kdam-kl", "kdam-dist"]
# Relative cost of a step (plain mtl = 1), measured in the 10-epoch experiment of the README, for ordering.
COST = {"stl": 1.8, "mtl": 1.0, "mtl-scratch": 1.0, "dwa": 1.1, "uw": 1.1, "gradnorm": 1.5, "rlw": 1.1,
        "cross-stitch": 1.9, "kd-mtl": 1.5, "okd": 2.8, "okd-afd": 2.8, "okd-otw": 2.6, "okd-warmup-none": 2.8,
        "okd-warmup-epoch": 2.8, "kdam-teacher": 2.5,
        "kdam": 2.1, "kdam-kl": 2.1, "kdam-dist": 2.1, "kdam-channel": 2.1}
TEACHER_EPOCHS = 16  # README, "Experiment": at 16 epochs the teacher beat plain MTL on every task, at 8 it did not
SMALL_FILES = ("metrics.json", "last_metrics.json", "selection.json", "history.jsonl", "run.json")


@dataclass
class Job:
    row: str
    seed: int
    folder: Path  # OUT/ROW/seedN: the run itself
    needs: list[str] = field(default_factory=list)
    record: Path | None = None  # RESULTS/ROW/seedN: its small files, once finished

    @property
    def done(self) -> bool:
        """Finished here (its weights in OUT)."""
        return (self.folder / "metrics.json").is_file()

    @property
    def recorded(self) -> bool:
        return self.record is not None and (self.record / "metrics.json").is_file()


def record_run(job: Job, wall_seconds: float) -> None:
    """Copy a finished run's small files to its results folder (written beside, then moved into place)."""
    assert job.record is not None
    staging = job.record.with_name(f".{job.record.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in SMALL_FILES:
        if (job.folder / name).is_file():
            shutil.copy2(job.folder / name, staging / name)
    (staging / "machine.json").write_text(json.dumps(
        {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": 1, "wall_seconds": round(wall_seconds, 1)},
        indent=2) + "\n")
    staging.rename(job.record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"), help="the runs, weights and all")
    parser.add_argument("--results", type=Path, default=Path("results/experiment"),
                        help="each finished run's small files, and the report built from them (committed)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS,
                        help="KDAM's teacher, trained first and outside the student's budget")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="vit-micro")
    parser.add_argument("--teacher-preset", default="vit-micro-wide", help="KDAM's teacher: a wider network")
    parser.add_argument("--train-images", type=int, default=288, help="of which --select-fraction are held out")
    parser.add_argument("--select-fraction", type=float, default=1 / 9)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights (ablation)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--report-only", action="store_true", help="run nothing: the report of what is recorded")
    parser.add_argument("--quiet", action="store_true", help="no progress bar: only the report and errors")
    args = parser.parse_args()

    from mtlkd.data.synthetic import write_synthetic

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"error: unknown rows {', '.join(unknown)}; known: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    missing = {n for row in rows for n in ROWS[row][3]} - set(rows)
    if missing:
        sys.exit(f"error: rows {', '.join(sorted(missing))} are needed by others; add them to --rows")
    started = time.perf_counter()
    wall: dict[str, float] = {}
    if not args.report_only:
        data = args.out / "data"
        if not (data / "meta.json").exists():
            write_synthetic(data, args.train_images, args.eval_images, size=(96, 128), seed=0)
        jobs = [Job(row, seed, args.out / row / f"seed{seed}", [n for n in ROWS[row][3] if n in rows],
                    args.results / row / f"seed{seed}") for seed in seeds for row in rows]
        wall = _run_jobs(jobs, args, data)
    total = time.perf_counter() - started
    _report(args.results, rows, seeds, wall, total, vars(args) | {"out": str(args.out), "results": str(args.results),
                                                                  "epoch_steps": epoch_steps(args)})


def epoch_steps(args) -> int:
    """Optimiser steps of one epoch: the training images left after the held-out ones, in whole batches."""
    from mtlkd.train.selection import holdout_split

    train_ids, _ = holdout_split(args.train_images, args.select_fraction)
    return len(train_ids) // args.batch_size


def _command(job: Job, args, data: Path) -> list[str]:
    method, role, extra, _ = ROWS[job.row]
    preset = args.teacher_preset if role == "teacher" else args.preset
    epochs = args.teacher_epochs if role == "teacher" else args.epochs
    out = job.folder.parent.parent
    extra = [e.format(epoch_steps=epoch_steps(args)) if "{run:" not in e
             else str(out / e[5:-1] / f"seed{job.seed}") + ("/model.safetensors" if method == "kdam" else "")
             for e in extra]
    cmd = [sys.executable, "-m", "mtlkd.cli.train", "synthetic", "--data-dir", str(data), "--out", str(job.folder),
           "--method", method, "--preset", preset, "--epochs", str(epochs), "--batch-size", str(args.batch_size),
           "--seed", str(job.seed), "--select-fraction", str(args.select_fraction), "--device", "cpu", *extra]
    if not args.no_pretrained and not job.row.endswith("-scratch"):
        cmd.append("--pretrained")
    if (job.folder / "state.json").is_file():
        cmd.append("--resume")
    return cmd


def _to_do(jobs: list[Job]) -> list[Job]:
    """Jobs not recorded, and recorded ones whose weights a job still to do needs but OUT lacks (rebuilt)."""
    pending = [j for j in jobs if not j.recorded and not j.done]
    needed = {(n, j.seed) for j in pending for n in j.needs}
    return pending + [j for j in jobs if j not in pending and (j.row, j.seed) in needed and not j.done]


def _run_jobs(jobs: list[Job], args, data: Path) -> dict[str, float]:
    """Run what is to do, `--jobs` at a time, dependencies first, the costliest first; one bar. Each finished
    run is recorded (when its job has a results folder and nothing is recorded there yet)."""
    from mtlkd.ui import console, progress_bar

    wall: dict[str, float] = {}
    for job in jobs:  # finished in OUT by an earlier call, not yet recorded
        if job.done and job.record is not None and not job.recorded:
            record_run(job, 0.0)
    pending = _to_do(jobs)
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with progress_bar("run", quiet=args.quiet) as bar:
        task = bar.add_task("experiment", total=len(pending), completed=0, info="")
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
                proc = subprocess.Popen(_command(job, args, data), stdout=log, stderr=subprocess.STDOUT, env=env)
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
                if job.record is not None and not job.recorded:
                    record_run(job, wall[f"{job.row}/seed{job.seed}"])
                bar.update(task, advance=1, info=f"{job.row} seed {job.seed} {time.perf_counter() - began:.0f}s")
            if not running and pending and not any(
                    all((j.folder.parent.parent / n / f"seed{j.seed}" / "metrics.json").is_file() for n in j.needs)
                    for j in pending):
                console.print("[red]stopping:[/] the remaining runs need runs that failed")
                break
    return wall


def _report(out: Path, rows: list[str], seeds: list[int], wall: dict, total: float, budget: dict) -> None:
    from mtlkd.eval.report import LAST_METRICS_FILE, METRICS_FILE
    from mtlkd.eval.seeds import aggregate, load_rows, seeds_markdown, split_entries

    present = [out / row for row in ["mtl", *(r for r in rows if r != "mtl")] if list((out / row).glob("seed*/"))]
    if not present or present[0].name != "mtl":
        print(f"no report: {out / 'mtl'} records no run yet, and every Delta is against it")
        return
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
        metrics, run_seeds = split_entries(groups)
        table = aggregate(metrics, "mtl", run_seeds)
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
