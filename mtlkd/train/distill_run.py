"""`mtl-distill` as a library call: single-task (or any) model files and unlabeled frames in, one multi-task
student out, in a run folder exactly like mtl-train's (so mtl-export, mtl-infer and mtl-bench take it).

    from mtlkd.train.distill_run import DistillRunOptions, distill
    result = distill(DistillRunOptions(sources=["frames/"], teachers=["seg=seg.xml", "depth=depth.onnx,..."],
                                       train=TrainOptions(out="runs/student", epochs=8)))

Order of work, inside the run folder's lock: the folder check (a run is never replaced by accident), the
teachers opened and checked, the frames listed, the teacher pass (cached, mtlkd.train.teacher_cache), then
mtl-train's trainer on the cached targets with the `distill` method. Labels are read only from `val_data`,
the labelled split the true metrics come from (the student's, and each teacher's beside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError, UserError
from mtlkd.runtime.teachers import STUDENT_DEPTH, TeacherSet, load_teachers
from mtlkd.train.options import DistillRunOptions


@dataclass
class DistillResult:
    out: Path
    tasks: list[str]
    frames: int
    student: dict[str, Any]  # metrics.json: true metrics with val_data, else agreement on held-out frames
    agreement: dict[str, Any]  # the kept epoch's agreement with the teachers, on held-out frames
    teachers: dict[str, dict[str, Any]]  # each teacher's true metrics on val_data ({} without it)
    main: bool = True  # False on a torchrun rank other than 0: the numbers are rank 0's, and empty here


def distill(options: DistillRunOptions) -> DistillResult:
    """Distil; returns the run folder and the numbers of replace.json (also written there). Under torchrun
    every rank trains its shard after one teacher pass (teacher_cache); rank 0 alone writes and scores."""
    from mtlkd.train.trainer import DistInfo, train

    state: dict[str, Any] = {}
    out = train(options.train, data=lambda train_options: _prepare(options, state))
    if not DistInfo.launched().main:
        return DistillResult(out=out, tasks=state["tasks"], frames=state["frames"], student={}, agreement={},
                             teachers={}, main=False)
    agreement = _kept_agreement(out)
    teachers = _teacher_scores(options, state["teachers"], state["tasks"]) if options.val_data else {}
    student = json.loads((out / "metrics.json").read_text())
    summary = {"frames": state["frames"], "tasks": state["tasks"], "student": student,
               "student_scored_on": f"{options.val_data} val" if options.val_data else "held-out frames (agreement)",
               "agreement": agreement, "teachers": teachers}
    from mtlkd.checkpoint import write_json

    write_json(out / "replace.json", summary)
    return DistillResult(out=out, tasks=state["tasks"], frames=state["frames"], student=student,
                         agreement=agreement, teachers=teachers)


def _prepare(options: DistillRunOptions, state: dict[str, Any]):
    """Inside the run's lock: teachers, frames, teacher pass, datasets (mtlkd.train.trainer.RunData)."""
    from torch.utils.data import Subset

    from mtlkd.data import cache_dir
    from mtlkd.files import sha256_of
    from mtlkd.models import input_size, model_config
    from mtlkd.train.selection import holdout_split
    from mtlkd.train.teacher_cache import TeacherCache, fill_cache, frames_key, list_frames
    from mtlkd.train.trainer import DistInfo, RunData

    train_options = options.train
    teachers = load_teachers(options.teachers, options.teacher_device)
    tasks = teachers.tasks
    classes = teachers.class_names
    config = model_config(train_options.preset, tasks, len(classes) if classes else None, classes,
                          img_size=tuple(train_options.img_size) if train_options.img_size else None)
    size = tuple(input_size(config))
    frames = list_frames(options.sources, options.frame_step)
    record = {"sources": [str(s) for s in options.sources], "frame_step": options.frame_step,
              "frames": len(frames), "frames_key": frames_key(frames, size),
              "teachers": [{"tasks": list(t.spec.tasks), "file": str(t.spec.path), "sha256": sha256_of(t.spec.path),
                            "settings": t.spec.settings(), "foreign": t.foreign} for t in teachers.teachers],
              "depth_meaning": teachers.depth_meaning, "val_data": options.val_data}
    launched = DistInfo.launched()
    main = launched.main  # under torchrun: rank 0 holds the run folder's lock
    if main:
        _check_resume(Path(train_options.out), record, train_options.resume)
    cache = TeacherCache(options.cache or cache_dir() / "teachers", int(options.cache_limit_gb * 1e9))
    cached = fill_cache(cache, frames, teachers, size, quiet=train_options.quiet or not main,
                        wait=launched.world > 1)  # one pass, whichever rank is first
    from mtlkd.checkpoint import write_json

    if main:
        write_json(Path(train_options.out) / "distill.json", {**record, "cache": cached.folders})
        (Path(train_options.out) / "replace.json").unlink(missing_ok=True)  # the replaced run's; written at the end
    dataset = FrameTargets(cached.images, cached.targets)
    train_ids, select_ids = holdout_split(len(dataset), train_options.select_fraction, train_options.select_seed)
    select = Subset(dataset, select_ids)
    evaluate = select
    if options.val_data:
        from mtlkd.data import open_dataset

        evaluate = open_dataset(options.val_data, options.val_dir, "val", tasks, augment=False)
        _check_classes(evaluate, classes)
    state.update(teachers=teachers, tasks=tasks, frames=len(frames))
    summary = [{"tasks": r["tasks"], "file": r["file"], "sha256": r["sha256"]} for r in record["teachers"]]
    return RunData(train=Subset(dataset, train_ids), select=select, evaluate=evaluate, tasks=tasks,
                   num_classes=len(classes) if classes else None, class_names=classes,
                   teachers={"depth_meaning": teachers.depth_meaning, "teachers": summary})


class FrameTargets:
    """A torch Dataset of cached frames and teacher targets: {"image", task..., "teacher_targets"}."""

    def __init__(self, images: np.ndarray, targets: dict[str, np.ndarray]):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from mtlkd.train.methods.replace import TEACHER_BATCH

        item = {"image": torch.from_numpy(np.asarray(self.images[index], dtype=np.float32) / 255.0),
                TEACHER_BATCH: torch.ones(())}
        for task, values in self.targets.items():
            item[task] = torch.from_numpy(np.array(values[index], dtype=np.float32))
        return item


def _check_resume(out: Path, record: dict[str, Any], resume: bool) -> None:
    """--resume continues only the same distillation: same frames, same teacher files and settings."""
    path = out / "distill.json"
    if not resume or not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt ({exc}); resume is not possible, start with --overwrite") from None
    for key in ("frames_key", "teachers", "depth_meaning"):
        if json.dumps(saved.get(key), sort_keys=True) != json.dumps(record[key], sort_keys=True):
            what = "frames" if key == "frames_key" else key.replace("_", " ")
            raise UserError(f"--resume: the {what} differ from the run in {out} ({path.name}); pass the same "
                            f"SOURCE and --teacher arguments, or --overwrite to start again")


def _check_classes(dataset: Any, classes: list[str] | None) -> None:
    if not classes or list(dataset.class_names) == list(classes):
        return
    theirs = list(dataset.class_names)
    first = next((i for i, (a, b) in enumerate(zip(theirs, classes, strict=False)) if a != b), min(len(theirs),
                                                                                                   len(classes)))
    raise ConfigError(f"--val-data {dataset.spec.name}: its classes differ from the seg teacher's at class {first} "
                      f"({len(theirs)} against {len(classes)} classes); true mIoU needs the same classes in order")


def _kept_agreement(out: Path) -> dict[str, Any]:
    """The held-out agreement of the kept epoch (history.jsonl), or {} when nothing was held out."""
    selection = json.loads((out / "selection.json").read_text())
    epoch = selection.get("networks", {}).get("mtl", {}).get("epoch")
    for line in (out / "history.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("epoch") == epoch and "val" in record:
            return {"epoch": epoch, **record["val"]["mtl"]["metrics"]}
    return {}


def _teacher_scores(options: DistillRunOptions, teachers: TeacherSet, tasks: list[str]) -> dict[str, Any]:
    """Each teacher's true metrics on the labelled split, with the student's protocol (relative depth aligned
    to the ground truth per image)."""
    from mtlkd.data import open_dataset
    from mtlkd.eval.align import aligned_depth
    from mtlkd.eval.evaluate import metric_arrays
    from mtlkd.runtime.teachers import targets_at
    from mtlkd.tasks import get_task
    from mtlkd.ui import progress_bar

    dataset = open_dataset(options.val_data, options.val_dir, "val", tasks, augment=False)
    scores: dict[str, Any] = {}
    with progress_bar("img", transient=True, quiet=options.train.quiet) as bar:
        for teacher in teachers.teachers:
            label = teacher.spec.label
            meters = {t: get_task(t).metric(num_classes=len(teacher.class_names or ()) or None)
                      for t in teacher.spec.tasks}
            job = bar.add_task(f"scoring {Path(teacher.spec.path).name}", total=len(dataset), info="")
            for batch in dataset.batches(options.train.batch_size):
                frames = list(np.moveaxis(batch["image"], 1, -1))
                targets = targets_at(teacher.targets(frames), tuple(batch["image"].shape[2:]))
                for task in teacher.spec.tasks:
                    pred = targets[task]
                    if task == "depth":
                        pred = aligned_depth(pred, batch["depth"], STUDENT_DEPTH[teacher.meaning("depth")])
                    meters[task].update(*metric_arrays(task, pred, batch[task]))
                bar.update(job, advance=len(frames))
            scores[label] = {"tasks": list(teacher.spec.tasks), "depth_meaning": teacher.meaning("depth") or None,
                             "foreign": teacher.foreign, "metrics": {t: m.compute() for t, m in meters.items()}}
    return scores
