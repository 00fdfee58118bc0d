"""How often a seed fails a task: N fresh seeds of a row of scripts/experiment.py (plain `mtl`, KDAM's
teacher preset `kdam-teacher`), in the experiment's exact setting, tabulated against the trivial
predictors of the same data.

A run **learned** a task when it closes at least `MARGIN` (10%) of the way from the trivial predictor
to a perfect score on the evaluation scenes:

- normals: mean angle <= (1 - MARGIN) x the mean angle of predicting, everywhere, the mean training normal;
- segmentation: mIoU >= base + MARGIN x (100 - base), base the mIoU of predicting the most frequent
  training class everywhere.

A run **fails** when it does not learn one of these two (the issue's definition). Depth is shown beside
them against the same kind of bar (abs. error <= (1 - MARGIN) x that of predicting the median training
depth everywhere), as `depth/median`, the ratio of the two errors, without counting as a failure.

    OMP_NUM_THREADS=1 python scripts/seed_failures.py --rows mtl,kdam-teacher --seeds 100-109 \
        --out runs/seed-failures

The teacher preset trains for `--teacher-epochs` (the experiment's budget for KDAM's teacher); pass
`--teacher-epochs 8` for the students' budget.

Runs go to OUT/ROW/seedN/ as in the experiment (a finished run is reused); the table goes to stdout and
OUT/seed_failures.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import experiment  # noqa: E402  (scripts/experiment.py: its rows, commands and job runner)

MARGIN = 0.10


def parse_seeds(text: str) -> list[int]:
    """'100-109' or '1,2,5' -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds += range(int(lo), int(hi) + 1)
        elif part.strip():
            seeds.append(int(part))
    return seeds


def trivial_scores(data: Path) -> dict[str, dict[str, float]]:
    """Metrics on the evaluation split of the constant predictors fitted on the training split."""
    from mtlkd.data import open_dataset
    from mtlkd.eval.evaluate import evaluate

    train = open_dataset("synthetic", data, "train", augment=False, progress=False)
    counts = np.zeros(train.num_classes)
    normal_sum = np.zeros(3)
    depths = []
    for i in range(len(train)):
        item = train[i]
        seg = np.asarray(item["seg"]).ravel()
        counts += np.bincount(seg[seg >= 0], minlength=train.num_classes)[:train.num_classes]
        normal = np.asarray(item["normal"]).reshape(3, -1)
        valid = np.abs(normal).sum(axis=0) != 0
        normal_sum += normal[:, valid].sum(axis=1)
        depth = np.asarray(item["depth"]).ravel()
        depths.append(depth[depth != 0])
    top_class = int(counts.argmax())
    mean_normal = normal_sum / np.linalg.norm(normal_sum)
    median_depth = float(np.median(np.concatenate(depths)))
    val = open_dataset("synthetic", data, "val", augment=False, progress=False)

    def constant(images, tasks):
        b, _, h, w = np.asarray(images).shape
        seg = np.zeros((b, val.num_classes, h, w), np.float32)
        seg[:, top_class] = 1.0
        return {"seg": seg, "depth": np.full((b, 1, h, w), median_depth, np.float32),
                "normal": np.broadcast_to(mean_normal.astype(np.float32)[None, :, None, None], (b, 3, h, w))}

    batches = ({k: np.asarray(v)[None] for k, v in val[i].items()} for i in range(len(val)))
    scores = evaluate(constant, batches, ["seg", "depth", "normal"], val.num_classes)
    scores["constants"] = {"top_class": top_class, "mean_normal": mean_normal.tolist(), "median_depth": median_depth}
    return scores


def thresholds(trivial: dict[str, dict[str, float]]) -> dict[str, float]:
    """The bar a run must pass on each task (see the module's docstring)."""
    base = trivial["seg"]["miou"]
    return {"seg_miou_min": base + MARGIN * (100.0 - base),
            "depth_abs_max": (1 - MARGIN) * trivial["depth"]["abs_err"],
            "normal_mean_max": (1 - MARGIN) * trivial["normal"]["mean"]}


def failed_tasks(metrics: dict, bars: dict[str, float]) -> list[str]:
    failed = []
    if metrics["seg"]["miou"] < bars["seg_miou_min"]:
        failed.append("seg")
    if metrics["normal"]["mean"] > bars["normal_mean_max"]:
        failed.append("normal")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/seed-failures"))
    parser.add_argument("--data", type=Path, default=None, help="the experiment's data (default: OUT/data)")
    parser.add_argument("--rows", default="mtl,kdam-teacher")
    parser.add_argument("--seeds", default="100-109")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--teacher-epochs", type=int, default=experiment.TEACHER_EPOCHS,
                        help="the teacher preset's budget, as in the experiment")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="vit-micro")
    parser.add_argument("--teacher-preset", default="vit-micro-wide")
    parser.add_argument("--select-fraction", type=float, default=1 / 9)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--table-only", action="store_true", help="run nothing: tabulate the finished runs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.no_pretrained = False
    args.train_images = 288
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    seeds = parse_seeds(args.seeds)
    data = args.data or args.out / "data"
    if not (data / "meta.json").exists():
        from mtlkd.data.synthetic import write_synthetic

        write_synthetic(data, 288, 200, size=(96, 128), seed=0)
    jobs = [experiment.Job(row, seed, args.out / row / f"seed{seed}") for seed in seeds for row in rows]
    if not args.table_only:
        experiment._run_jobs(jobs, args, data)

    trivial = trivial_scores(data)
    bars = thresholds(trivial)
    lines = [f"trivial predictors on the evaluation split: most frequent class mIoU {trivial['seg']['miou']:.2f}, "
             f"median depth abs {trivial['depth']['abs_err']:.4f} m, mean normal {trivial['normal']['mean']:.2f}°",
             f"learned = mIoU >= {bars['seg_miou_min']:.2f} and normal mean <= {bars['normal_mean_max']:.2f}° "
             f"(depth's bar, not counted: abs <= {bars['depth_abs_max']:.4f} m)", "",
             "| row | seed | mIoU | normal mean | failed | depth abs | depth/median |", "|---|---|---|---|---|---|---|"]
    summary: dict[str, dict] = {}
    for row in rows:
        per_seed = {}
        for seed in seeds:
            path = args.out / row / f"seed{seed}" / "metrics.json"
            if not path.is_file():
                continue
            m = json.loads(path.read_text())
            failed = failed_tasks(m, bars)
            per_seed[seed] = {"failed": failed, "metrics": m}
            ratio = m["depth"]["abs_err"] / trivial["depth"]["abs_err"]
            lines.append(f"| {row} | {seed} | {m['seg']['miou']:.2f} | {m['normal']['mean']:.2f} | "
                         f"{', '.join(failed) or '-'} | {m['depth']['abs_err']:.4f} | {ratio:.3f} |")
        summary[row] = {"runs": len(per_seed), "failed_runs": sum(bool(f["failed"]) for f in per_seed.values()),
                        "per_seed": per_seed}
    lines.append("")
    lines += [f"{row}: {s['failed_runs']} of {s['runs']} runs failed a task" for row, s in summary.items()]
    text = "\n".join(lines)
    (args.out / "seed_failures.md").write_text(text + "\n")
    (args.out / "seed_failures.json").write_text(json.dumps(
        {"trivial": trivial, "thresholds": bars, "margin": MARGIN, "rows": summary}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
