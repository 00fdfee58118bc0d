"""`mtl-bench STUDENT --stl TASKS=MODEL ...`: does one student pass replace the models it was distilled from?

Every model (the student and each teacher, any format the runtime reads, foreign ones with their settings)
is opened on each backend that can run it here (or those of `backends`), timed at batch 1 on its network
call (mtlkd.bench.stats: warm-up, then repeats until the median's 95% interval is within +-2% or the budget
is spent), and checked against its first backend's outputs with mtlkd.accuracy's fp32 policy; each model
then counts on its fastest backend that kept the accuracy. The answer: the student's one pass against the
teachers' summed latency, and the student's agreement with each teacher on the same images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, ConfigError
from mtlkd.runtime.teachers import STUDENT_DEPTH, Teacher, TeacherSpec, load_teacher, make_spec, read_own_metadata


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
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ConfigError("--stl TASKS=MODEL: name at least one teacher")
        if self.images < 1 or self.repeats < 1:
            raise ConfigError("--accuracy-images and --repeats must be at least 1")


@dataclass
class ModelRows:
    label: str
    tasks: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] | None = None


def candidate_backends(path: Path, foreign: bool, wanted: list[str] | None, device: str) -> list[str]:
    """Backends that open the file and run here, in the runtime's order of preference."""
    from mtlkd.runtime.auto import candidates
    from mtlkd.runtime.foreign import FOREIGN_BACKENDS

    names = list(FOREIGN_BACKENDS.get(path.suffix.lower(), ())) if foreign else candidates(path, device)
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
    from mtlkd.bench.stats import measure
    from mtlkd.eval.agreement import Agreement
    from mtlkd.runtime.processing import preprocess, resize_raw

    meta = read_own_metadata(Path(options.student))
    if meta is None:
        raise ConfigError(f"{options.student}: the student must be an mtlkd file (mtl-distill's, or its export)")
    student_spec = make_spec(tuple(meta["tasks"]), options.student, {}, "student")
    frames = _images(options)
    results: dict[str, ModelRows] = {}
    loaded: dict[str, Teacher] = {}
    for spec in [student_spec, *options.teachers]:
        foreign = read_own_metadata(Path(spec.path)) is None
        entry = ModelRows(spec.label, list(spec.tasks))
        reference = None
        for name in candidate_backends(Path(spec.path), foreign, options.backends, options.device):
            model = load_teacher(dataclasses.replace(spec, backend=name), options.device, options.threads)
            batch, _ = preprocess(frames, model.input_size)
            raw = model.run(batch)
            reference = reference if reference is not None else raw
            kept = verdict(compare_outputs(reference, raw), "fp32", trained=True)
            one, _ = preprocess(frames[:1], model.input_size)
            timing = measure(lambda m=model, x=one: m.run(x), options.repeats, options.budget, options.rel_ci)
            entry.rows.append({"backend": name, "p50_ms": round(timing.p50, 3), "p90_ms": round(timing.p90, 3),
                               "runs": len(timing.samples_ms), "converged": timing.converged,
                               "kept_accuracy": kept.kept, "failures": kept.failures})
            if kept.kept and (entry.chosen is None or timing.p50 < entry.chosen["p50_ms"]):
                entry.chosen = entry.rows[-1]
                loaded[spec.label] = model
        if entry.chosen is None:
            raise BackendError(f"{spec.label}: no backend kept its accuracy ({entry.rows})")
        results[spec.label] = entry
    student = loaded[student_spec.label]
    size = tuple(frames[0].shape[:2])
    student_targets = resize_raw(student.targets(frames), size)
    agreement: dict[str, Any] = {}
    depth_meaning = STUDENT_DEPTH[student.meaning("depth")] if "depth" in student.spec.tasks else None
    for spec in options.teachers:
        teacher = loaded[spec.label]
        missing = [t for t in spec.tasks if t not in student.spec.tasks]
        if missing:
            raise ConfigError(f"--stl {spec.label}: the student has no {', '.join(missing)}")
        meter = Agreement(list(spec.tasks), len(teacher.class_names or ()) or None, depth_meaning)
        meter.update(student_targets, resize_raw(teacher.targets(frames), size))
        agreement[spec.label] = meter.compute()
    teachers_ms = sum(results[s.label].chosen["p50_ms"] for s in options.teachers)
    student_ms = results[student_spec.label].chosen["p50_ms"]
    return {
        "student": dataclasses.asdict(results[student_spec.label]),
        "teachers": [dataclasses.asdict(results[s.label]) for s in options.teachers],
        "student_p50_ms": student_ms, "teachers_sum_p50_ms": round(teachers_ms, 3),
        "ratio": round(student_ms / teachers_ms, 4) if teachers_ms else None,
        "agreement": agreement, "agreement_images": len(frames), "threads": options.threads,
        "device": options.device, "batch": 1,
    }


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
