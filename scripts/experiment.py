"""The OKD paper's Table 1, on the synthetic data, on this machine: every method and baseline trained
with one shared budget (same preset, data, epochs, batch, learning rate and seed), then the paper-style
report with plain MTL as the baseline.

    .venv/bin/python scripts/experiment.py --epochs 10 --train-images 256 --val-images 64 --out runs/experiment

Nothing is tuned per method: each runs with its paper's defaults. Runs already finished in --out are
reused, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# (row name, method, extra method options); order matters: kd-mtl reads the stl run, kdam the teacher run.
ROWS = [
    ("stl", "stl", {}),
    ("mtl", "mtl", {}),
    ("dwa", "mtl", {"task_weighting": "dwa"}),
    ("gradnorm", "mtl", {"task_weighting": "gradnorm"}),
    ("uw", "mtl", {"task_weighting": "uw"}),
    ("rlw", "mtl", {"task_weighting": "rlw"}),
    ("cross-stitch", "cross-stitch", {}),
    ("kd-mtl", "kd-mtl", {"teachers": ["{out}/stl"]}),
    ("okd", "okd", {"warmup_epochs": 1}),  # the paper warms up 5 of 200 epochs; 1 of a short budget
    ("kdam-teacher", "mtl", {}),
    ("kdam", "kdam", {"teacher": "{out}/kdam-teacher/model.safetensors"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="vit-micro")
    parser.add_argument("--teacher-preset", default="vit-micro-wide",
                        help="KDAM's teacher: a larger multi-task model trained first with the same budget")
    parser.add_argument("--train-images", type=int, default=800)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="the seed of every run (the data stay seed 0)")
    parser.add_argument("--only", default=None, help="comma-separated row names to run")
    args = parser.parse_args()

    from mtlkd.data.synthetic import write_synthetic
    from mtlkd.eval.report import build_report, load_metrics, markdown_table, render_table
    from mtlkd.train.trainer import TrainOptions, train
    from mtlkd.ui import console

    data = args.out / "data"
    if not (data / "meta.json").exists():
        write_synthetic(data, args.train_images, args.val_images, size=(96, 128), seed=0)
    wall: dict[str, float] = {}
    only = set(args.only.split(",")) if args.only else None
    for name, method, extra in ROWS:
        run = args.out / name
        if (only and name not in only) or (run / "metrics.json").exists():
            continue
        options = {k: ([v.format(out=args.out) for v in val] if isinstance(val, list)
                       else val.format(out=args.out) if isinstance(val, str) else val) for k, val in extra.items()}
        console.rule(f"{name}  ({method})")
        started = time.perf_counter()
        train(TrainOptions(
            dataset="synthetic", data_dir=str(data), out=str(run), method=method,
            preset=args.teacher_preset if name == "kdam-teacher" else args.preset,
            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, method_options=options,
        ))
        wall[name] = time.perf_counter() - started

    baseline = load_metrics(args.out / "mtl")
    entries = [load_metrics(args.out / name) for name, _, _ in ROWS
               if name != "mtl" and (args.out / name / "metrics.json").exists()]
    rows = build_report(entries, baseline)
    render_table(rows, console, baseline=baseline[0])
    epoch_seconds = {}
    for name, _, _ in ROWS:
        history = args.out / name / "history.jsonl"
        if history.exists():
            lines = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
            epoch_seconds[name] = sum(r["train_seconds"] for r in lines) / len(lines)
    base = epoch_seconds.get("mtl")
    console.print("mean training seconds per epoch (x plain mtl): " + ", ".join(
        f"{k} {v:.0f}s ({v / base:.1f}x)" if base else f"{k} {v:.0f}s" for k, v in epoch_seconds.items()))
    times = {"s/epoch": {k: f"{v:.1f}" for k, v in epoch_seconds.items()}}
    if base:
        times["× mtl"] = {k: f"{v / base:.2f}" for k, v in epoch_seconds.items()}
    (args.out / "report.md").write_text(markdown_table(rows, times))
    (args.out / "report.json").write_text(json.dumps(
        {"rows": rows, "epoch_seconds": epoch_seconds, "wall_seconds_this_call": wall,
         "budget": vars(args) | {"out": str(args.out)}}, indent=2, default=str) + "\n")
    console.print(f"written: {args.out / 'report.json'}, {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
