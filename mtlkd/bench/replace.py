"""`mtl-bench STUDENT --stl TASKS=MODEL ...`: does one student pass replace the models it was distilled from?

Every model (the student and each teacher, any format the runtime reads, foreign ones with their settings)
is opened on each backend that can run it here (or those of `backends`), timed at batch 1 on its network
call (mtlkd.bench.stats: warm-up, then repeats until the median's 95% interval is within +-2% or the budget
is spent; `rounds` rounds in alternating order, samples pooled), and checked against the outputs of the
runtime's first choice for the file with mtlkd.accuracy's fp32 policy; each model then counts on its
fastest backend that kept the accuracy. The answer: the student's one pass against the
teachers' summed latency, and the student's agreement with each teacher on the same images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, ConfigError
from mtlkd.runtime.teachers import (
    STUDENT_DEPTH,
    Teacher,
    TeacherSpec,
    load_teacher,
    make_spec,
    read_own_metadata,
    targets_at,
)


@dataclass
class ReplaceBenchOptions:
    student: Path
    teachers: list[TeacherSpec]
    backends: list[str] | None = None  # None: every installed backend that opens the file
    threads: int | None = None
    device: str = "cpu"
    data_dir: Path | None = None  # MTAN layout; default: the synthetic set's val split
    images: int = 16  # images the agreement is measured on
    repeats: int = 10
    budget: float = 3.0
    rel_ci: float = 0.02
    rounds: int = 3
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ConfigError("--stl TASKS=MODEL: name at least one teacher")
        if self.images < 1 or self.repeats < 1 or self.rounds < 1:
            raise ConfigError("--accuracy-images, --repeats and --rounds must be at least 1")


@dataclass
class ModelRows:
    label: str
    tasks: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] | None = None


def candidate_backends(path: Path, foreign: bool, wanted: list[str] | None, device: str) -> list[str]:
    """Backends that open the file and run here, in the runtime's order of preference."""
    from mtlkd.runtime.auto import candidates
    from mtlkd.runtime.foreign import foreign_backends

    names = list(foreign_backends(path)) if foreign else candidates(path, device)
    if foreign:
        from mtlkd.runtime.backends import available, installed

        names = [n for n in names if installed(n) and available(n, device)]
    names = [n for n in names if wanted is None or n in wanted]
    if not names:
        raise BackendError(f"{path}: none of the backends {', '.join(wanted or ['installed'])} runs it on {device}")
    return names


def run_replace_benchmark(options: ReplaceBenchOptions) -> dict[str, Any]:
    """Latency of the student against the teachers' sum, each on its fastest accurate backend, and agreement."""
    from mtlkd.accuracy import compare_outputs, verdict
    from mtlkd.eval.agreement import Agreement
    from mtlkd.runtime.processing import preprocess
    from mtlkd.tasks import get_task

    meta = read_own_metadata(Path(options.student))
    if meta is None:
        raise ConfigError(f"{options.student}: the student must be an mtlkd file (mtl-distill's, or its export)")
    student_spec = make_spec(tuple(meta["tasks"]), options.student, {}, "student")
    frames = _images(options)
    results: dict[str, ModelRows] = {}
    jobs: list[tuple[str, dict[str, Any], Teacher, np.ndarray]] = []
    for spec in [student_spec, *options.teachers]:
        foreign = read_own_metadata(Path(spec.path)) is None
        entry = results[spec.label] = ModelRows(spec.label, list(spec.tasks))
        # the reference is the runtime's first choice for the file, also when --backends leaves it out
        first = candidate_backends(Path(spec.path), foreign, None, options.device)[0]
        judge = _load(spec, first, options)
        reference = judge.run(preprocess(frames, judge.input_size)[0])
        for name in candidate_backends(Path(spec.path), foreign, options.backends, options.device):
            model = _load(spec, name, options)
            kept = verdict(compare_outputs(reference, model.run(preprocess(frames, model.input_size)[0])), "fp32",
                           trained=True)
            row = {"backend": name, "kept_accuracy": kept.kept, "failures": kept.failures, "samples_ms": []}
            entry.rows.append(row)
            jobs.append((spec.label, row, model, preprocess(frames[:1], model.input_size)[0]))
    _time(jobs, options)
    loaded: dict[str, Teacher] = {}
    for label, row, model, _ in jobs:
        entry = results[label]
        if row["kept_accuracy"] and (entry.chosen is None or row["p50_ms"] < entry.chosen["p50_ms"]):
            entry.chosen, loaded[label] = row, model
    for entry in results.values():
        if entry.chosen is None:
            raise BackendError(f"{entry.label}: no backend kept its accuracy "
                               f"({'; '.join(f for r in entry.rows for f in r['failures'])})")
    student = loaded[student_spec.label]
    size = tuple(frames[0].shape[:2])
    student_targets = targets_at(student.targets(frames), size)
    agreement: dict[str, Any] = {}
    depth_meaning = STUDENT_DEPTH[student.meaning("depth")] if "depth" in student.spec.tasks else None
    for spec in options.teachers:
        teacher = loaded[spec.label]
        missing = [t for t in spec.tasks if t not in student.spec.tasks]
        if missing:
            raise ConfigError(f"--stl {spec.label}: the student has no {', '.join(missing)}")
        meter = Agreement([get_task(t) for t in spec.tasks], len(teacher.class_names or ()) or None, depth_meaning)
        meter.update(student_targets, targets_at(teacher.targets(frames), size))
        agreement[spec.label] = meter.compute()
    teachers_ms = sum(results[s.label].chosen["p50_ms"] for s in options.teachers)
    student_ms = results[student_spec.label].chosen["p50_ms"]
    return {
        "student": dataclasses.asdict(results[student_spec.label]),
        "teachers": [dataclasses.asdict(results[s.label]) for s in options.teachers],
        "student_p50_ms": student_ms, "teachers_sum_p50_ms": round(teachers_ms, 3),
        "ratio": round(student_ms / teachers_ms, 4) if teachers_ms else None,
        "agreement": agreement, "agreement_images": len(frames), "threads": options.threads,
        "device": options.device, "batch": 1, "rounds": options.rounds,
    }


def _load(spec: TeacherSpec, backend: str, options: ReplaceBenchOptions) -> Teacher:
    return load_teacher(dataclasses.replace(spec, backend=backend), options.device, options.threads)


def _time(jobs: list[tuple[str, dict[str, Any], Teacher, np.ndarray]], options: ReplaceBenchOptions) -> None:
    """Every (model, backend) timed in `rounds` rounds, the order reversed every other round so that a slow
    spell of a shared machine falls on all of them; each row's samples pooled (p50, p90 of all)."""
    from mtlkd.bench.stats import measure

    for r in range(options.rounds):
        for _, row, model, one in jobs if r % 2 == 0 else reversed(jobs):
            timing = measure(lambda m=model, x=one: m.run(x), options.repeats, options.budget, options.rel_ci)
            row["samples_ms"].extend(timing.samples_ms)
    for _, row, _, _ in jobs:
        samples = row.pop("samples_ms")
        row.update(p50_ms=round(float(np.median(samples)), 3), p90_ms=round(float(np.percentile(samples, 90)), 3),
                   runs=len(samples))


def _images(options: ReplaceBenchOptions) -> list[np.ndarray]:
    """H x W x 3 float frames at the data's own size."""
    from mtlkd.bench.inputs import dataset_images
    from mtlkd.data import SYNTHETIC_DEFAULTS, ensure_synthetic

    root = Path(options.data_dir) if options.data_dir else ensure_synthetic(**SYNTHETIC_DEFAULTS,
                                                                              progress=not options.quiet)
    folder = next((root / s / "image" for s in ("val", "train") if (root / s / "image" / "0.npy").is_file()), None)
    size = np.load(folder / "0.npy", mmap_mode="r").shape[:2] if folder else (1, 1)  # no folder: its error below
    images = dataset_images(root, tuple(size), options.images)
    return [np.ascontiguousarray(image.transpose(1, 2, 0)) for image in images]
