"""README "Replace three models with one": three single-task teachers in three guises, one student distilled
on unlabeled frames, measured against them.

1. Teachers: `mtl-train synthetic --method stl` (vit-micro, pretrained backbone) trains one network per task.
2. Their guises (what a user gets from elsewhere):
   - seg: exported to ONNX, then stripped of mtlkd's metadata, input and output renamed (`pixel_values`,
     `logits`): a foreign model, described to mtl-distill by its settings and a class-name file;
   - normal: exported as an OpenVINO IR (it describes itself);
   - depth: exported to ONNX, its metric output replaced by inverse depth under an affine map the student is
     not told (a / depth + b), metadata stripped: declared as `depth=inverse`, like most monocular models.
3. Frames: the synthetic training images as 8-bit PNGs (only `train/image/` is read; no label file).
4. `mtl-distill` on those frames, once per student preset (vit-micro: the teachers' own architecture with
   three heads; vit-micro-lite: the same backbone with one-layer heads), pretrained backbone, true metrics
   on the labelled val split for the student and each teacher (`--val-data synthetic`).
5. `mtl-bench STUDENT --stl ...` on one backend (OpenVINO opens all three files and the student's ONNX),
   one thread: the student's pass against the teachers' sum, and agreement.

    PYTHONPATH=. .venv/bin/python scripts/replace_three.py --out runs/replace

Every step is skipped when its output exists (the teachers' run, the exports, the student's run), so the
script can be stopped and started again. Prints the README table and writes OUT/replace_three.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

INVERSE_SCALE, INVERSE_SHIFT = 2.5, 0.1  # the depth teacher's hidden affine map of 1 / depth
GOAL_METRIC_SHARE = 0.10  # the student within 10% of each teacher's own metric
GOAL_LATENCY_RATIO = 0.45  # at most this share of the teachers' summed latency
HEADLINE = {"seg": ("miou", True), "depth": ("abs_err", False), "normal": ("mean", False)}


def run(argv: list[str], log: Path) -> None:
    """One mtlkd command, one thread, its output appended to `log` (an earlier run's stays above it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        done = subprocess.run([sys.executable, "-m", *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}); see {log}")
    print(f"{argv[0]}: {time.perf_counter() - started:.0f} s", file=sys.stderr)


def strip_metadata(model) -> None:
    for i in reversed(range(len(model.metadata_props))):
        del model.metadata_props[i]


def rename(model, old: str, new: str) -> None:
    """Rename a graph input or output everywhere it is used."""
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == old:
            value.name = new


def foreign_seg(onnx_path: Path, target: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    strip_metadata(model)
    rename(model, model.graph.input[0].name, "pixel_values")
    rename(model, "seg", "logits")
    onnx.save(model, str(target))


def inverse_depth(onnx_path: Path, target: Path) -> None:
    """depth (metres) -> INVERSE_SCALE / depth + INVERSE_SHIFT, named `predicted_inverse_depth`."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    strip_metadata(model)
    rename(model, "depth", "metric_depth")
    model.graph.output[0].name = "predicted_inverse_depth"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(INVERSE_SCALE, np.float32), "inv_scale"),
                                    numpy_helper.from_array(np.array(INVERSE_SHIFT, np.float32), "inv_shift")])
    model.graph.node.extend([
        helper.make_node("Reciprocal", ["metric_depth"], ["inv"]),
        helper.make_node("Mul", ["inv", "inv_scale"], ["inv_scaled"]),
        helper.make_node("Add", ["inv_scaled", "inv_shift"], ["predicted_inverse_depth"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def write_frames(data: Path, out: Path) -> int:
    """The training split's images as PNGs; nothing but train/image/ is opened."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    files = sorted((data / "train" / "image").glob("*.npy"), key=lambda p: int(p.stem))
    for path in files:
        target = out / f"{int(path.stem):05d}.png"
        if not target.is_file():
            image = np.clip(np.load(path) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(target)
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/replace"))
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--teacher-preset", default="vit-micro")
    parser.add_argument("--students", default="vit-micro,vit-micro-lite", help="Student presets, comma-separated.")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    from mtlkd.data import SYNTHETIC_DEFAULTS, ensure_synthetic

    data = ensure_synthetic(**SYNTHETIC_DEFAULTS)
    teachers = out / "teachers"
    if not (teachers / "metrics.json").is_file():
        run(["mtlkd.cli.train", "synthetic", "--method", "stl", "--preset", args.teacher_preset, "--pretrained",
             "--epochs", str(args.teacher_epochs), "--out", str(teachers)]
            + (["--resume"] if (teachers / "state.json").is_file() else []), out / "teachers.log")
    exports = out / "exports"
    for task, flag in (("seg", "--onnx"), ("depth", "--onnx"), ("normal", "--openvino")):
        if not (exports / task / "export.json").is_file():
            run(["mtlkd.cli.export", str(teachers / f"stl_{task}.safetensors"), flag, "--out", str(exports / task)],
                out / f"export_{task}.log")
    guises = out / "guises"
    guises.mkdir(exist_ok=True)
    foreign_seg(exports / "seg" / "model.onnx", guises / "seg_foreign.onnx")
    inverse_depth(exports / "depth" / "model.onnx", guises / "depth_inverse.onnx")
    meta = json.loads((data / "meta.json").read_text())
    (guises / "classes.txt").write_text("\n".join(meta["classes"]) + "\n")
    h, w = meta["size"]
    normal_ir = next((exports / "normal").rglob("*.xml"))
    teacher_args = [
        f"seg={guises / 'seg_foreign.onnx'},size={h}x{w},mean=0/0/0,std=1/1/1,seg=logits,"
        f"classes={guises / 'classes.txt'}",
        f"normal={normal_ir}",
        f"depth={guises / 'depth_inverse.onnx'},size={h}x{w},mean=0/0/0,std=1/1/1,depth=inverse",
    ]
    frames = out / "frames"
    count = write_frames(data, frames)
    results = {}
    for preset in args.students.split(","):
        student, exported = out / f"student-{preset}", exports / f"student-{preset}"
        if not (student / "replace.json").is_file():
            resume = ["--resume"] if (student / "state.json").is_file() else []
            run(["mtlkd.cli.distill", str(frames), *[a for t in teacher_args for a in ("--teacher", t)],
                 "--preset", preset, "--pretrained", "--epochs", str(args.student_epochs), "--val-data", "synthetic",
                 "--cache", str(out / "cache"), "--out", str(student), *resume], out / f"distill-{preset}.log")
        if not (exported / "export.json").is_file():
            run(["mtlkd.cli.export", str(student / "model.safetensors"), "--onnx", "--out", str(exported)],
                out / f"export-{preset}.log")
        bench = out / f"bench-{preset}.json"
        if not bench.is_file():
            run(["mtlkd.cli.bench", str(exported / "model.onnx"), *[a for t in teacher_args for a in ("--stl", t)],
                 "--backends", "openvino", "--threads", "1", "--rounds", "5", "--data-dir", str(data),
                 "--accuracy-images", "64", "--json", str(bench)], out / f"bench-{preset}.log")
        results[preset] = (json.loads((student / "replace.json").read_text()), json.loads(bench.read_text()))
        print(f"picture: {picture(out / f'replace_three-{preset}.png', data, teacher_args, exported / 'model.onnx')}")
    report(out, count, results)


def picture(path: Path, data: Path, teacher_args: list[str], student: Path, count: int = 3) -> Path:
    """Rows of val images: the image, then per task the teacher's map beside the student's (depth of both
    aligned to the ground truth, as scored), saved as `path`."""
    from PIL import Image

    from mtlkd.eval.align import aligned_depth
    from mtlkd.runtime.teachers import (
        STUDENT_DEPTH,
        load_teacher,
        make_spec,
        parse_teacher,
        read_own_metadata,
        targets_at,
    )
    from mtlkd.tasks import colourise_depth, colourise_normal, colourise_seg

    teachers = [load_teacher(parse_teacher(t), threads=1) for t in teacher_args]
    meta = read_own_metadata(student)
    pupil = load_teacher(make_spec(tuple(meta["tasks"]), student, {}), threads=1)
    rows = []
    for i in range(count):
        image = np.load(data / "val" / "image" / f"{i}.npy")
        size = image.shape[:2]
        depth = np.load(data / "val" / "depth" / f"{i}.npy").reshape(1, 1, *size)  # the scoring's ground truth
        cells = [np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)]
        mine = targets_at(pupil.targets([image]), size)
        for teacher in teachers:
            theirs = targets_at(teacher.targets([image]), size)
            for task in teacher.spec.tasks:
                pair = []
                for source, meaning in ((theirs, STUDENT_DEPTH.get(teacher.meaning("depth"))),
                                        (mine, meta.get("depth_meaning", "metric"))):
                    value = source[task]
                    if task == "seg":
                        pair.append(colourise_seg(value[0].argmax(axis=0), num_classes=value.shape[1]))
                    elif task == "depth":
                        metres = aligned_depth(value, depth, meaning)[0, 0]
                        pair.append(colourise_depth(metres, vmin=0.5, vmax=float(depth.max())))
                    else:
                        pair.append(colourise_normal(np.moveaxis(value[0], 0, -1)))
                cells += pair
        rows.append(np.concatenate(cells, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).resize((rows[0].shape[1] * 2, len(rows) * size[0] * 2),
                                                         Image.NEAREST).save(path)
    return path


def report(out: Path, frames: int, results: dict[str, tuple[dict, dict]]) -> None:
    """The README tables: true metrics (val split) of the teachers and each student, agreement, latency; and
    whether each goal is met."""
    first = next(iter(results.values()))[0]
    teachers = {entry["tasks"][0]: entry for entry in first["teachers"].values()}
    presets = list(results)
    head = " | ".join(f"student {p} | vs teacher | agreement" for p in presets)
    lines = [f"| task | metric | teacher | {head} |", "|---|---|---|" + "---|---|---|" * len(presets)]
    summary: dict[str, dict] = {}
    for task, (metric, higher) in HEADLINE.items():
        teacher = teachers[task]["metrics"][task][metric]
        cells = []
        for preset, (replace, bench) in results.items():
            student = replace["student"][task][metric]
            worse = (teacher - student) / teacher if higher else (student - teacher) / teacher
            agree = next(v for e, v in zip(bench["teachers"], bench["agreement"].values(), strict=True)
                         if e["tasks"] == [task])[task]
            entry = summary.setdefault(preset, {"rows": [], "agreement": {}})
            entry["rows"].append({"task": task, "metric": metric, "teacher": teacher, "student": student,
                                  "worse_share": worse, "within_goal": worse <= GOAL_METRIC_SHARE})
            entry["agreement"][task] = agree
            text = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in agree.items())
            cells.append(f"{student:.3f} | {100 * worse:+.1f}% {'(within 10%)' if worse <= GOAL_METRIC_SHARE else ''}"
                         f" | {text}")
        lines.append(f"| {task} | {metric} | {teacher:.3f} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print("\n| model | backend | p50 ms (batch 1, 1 thread) |\n|---|---|---|")
    bench = next(iter(results.values()))[1]
    for entry in bench["teachers"]:
        print(f"| teacher {entry['tasks'][0]} ({Path(entry['label'].split(',')[0].split('=')[1]).name}) | "
              f"{entry['chosen']['backend']} | "
              f"{entry['chosen']['p50_ms']:.2f} |")
    for preset, (_, bench) in results.items():
        ratio = bench["ratio"]
        summary[preset].update(latency_ratio=ratio, latency_goal_met=ratio <= GOAL_LATENCY_RATIO, bench=bench,
                               replace=results[preset][0])
        print(f"| student {preset} | {bench['student']['chosen']['backend']} | {bench['student_p50_ms']:.2f} "
              f"(teachers' sum in the same run {bench['teachers_sum_p50_ms']:.2f}: ratio {ratio:.3f}, goal <= "
              f"{GOAL_LATENCY_RATIO} {'met' if ratio <= GOAL_LATENCY_RATIO else 'not met'}) |")
    print(f"\nframes: {frames}; metric goals met: " + ", ".join(
        f"{p} {sum(r['within_goal'] for r in summary[p]['rows'])} of {len(summary[p]['rows'])}" for p in presets))
    (out / "replace_three.json").write_text(json.dumps({"frames": frames, "students": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
