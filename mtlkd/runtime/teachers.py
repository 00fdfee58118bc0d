"""Teachers: any model file the runtime reads, turned into per-task targets in mtlkd's conventions.

    spec = parse_teacher("depth=midas.onnx,size=256x256,mean=0.5/0.5/0.5,std=0.5/0.5/0.5,depth=inverse")
    teacher = load_teacher(spec)
    targets = teacher.targets(frames)   # {task: N x C x h x w float32}, checked on the first call

An mtlkd file describes itself (its metadata: tasks, input size, classes; normalisation is inside the
graph). A foreign model (an ONNX file or OpenVINO IR without mtlkd metadata) does not, so its settings are
the user's, and every one a task needs must be given: `size` (HxW), `mean` and `std` (three numbers each,
for RGB in [0, 1]; mean 0/0/0 and std 1/1/1 when the graph normalises itself), and per task what the output
means: `seg=logits|probs` with `classes=FILE` (one class name a line), `depth=metric|relative|inverse`
(metres, or depth / inverse depth known only up to scale and shift), `normal=AXES` (the teacher's x, y, z
in mtlkd's frame, e.g. `x-y-z`: x kept, y and z flipped; on the command line without commas).
`output=NAME[/NAME...]` picks the graph outputs, in task order, when their names are not the task names.

Targets are what a student learns: segmentation as class probabilities (softmax of logits), depth as the
teacher's values (their meaning is `depth_meaning`), normals as unit vectors in mtlkd's frame. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, ConfigError, MetadataError
from mtlkd.runtime import processing
from mtlkd.tasks import get_task, parse_tasks

SEG_MEANINGS = ("logits", "probs")
DEPTH_MEANINGS = ("metric", "relative", "inverse")
# What the student's depth is, in its metadata (`depth_meaning`), for each teacher depth meaning.
STUDENT_DEPTH = {"metric": "metric", "relative": "relative", "inverse": "relative-inverse"}
TEACHER_DEPTH = {v: k for k, v in STUDENT_DEPTH.items()}
AXES = ("x", "y", "z")
PROBABILITY_SLACK = 1e-2  # |sum of probabilities - 1|: fp16 outputs of 4096 classes stay well inside


@dataclass(frozen=True)
class TeacherSpec:
    """One `--teacher TASKS=MODEL[,key=value...]`: the tasks it gives and, for a foreign file, its settings
    (None: not given; an mtlkd file's own metadata fills them)."""

    tasks: tuple[str, ...]
    path: Path
    size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    seg: str | None = None
    classes: tuple[str, ...] | None = None
    depth: str | None = None
    normal: str | None = None
    output: tuple[str, ...] | None = None
    backend: str = "auto"

    def settings(self) -> dict[str, Any]:
        """The settings as JSON (what keys the prediction cache, with the file's hash)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out

    @property
    def label(self) -> str:
        return f"{','.join(self.tasks)}={self.path}"


def parse_teacher(text: str) -> TeacherSpec:
    """`seg,depth=mtl.onnx` or `depth=far.onnx,size=96x128,mean=0/0/0,std=1/1/1,depth=inverse` -> a spec."""
    where = f"--teacher {text}"
    if "=" not in text:
        raise ConfigError(f"{where}: expected TASKS=MODEL, e.g. depth=depth.onnx or seg,depth=mtl.xml")
    task_text, rest = text.split("=", 1)
    tasks = tuple(parse_tasks(task_text))
    path, *pairs = rest.split(",")
    if not path:
        raise ConfigError(f"{where}: no model file after '='")
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise ConfigError(f"{where}: setting {pair!r} is not KEY=VALUE")
        values[key.strip()] = value.strip()
    return make_spec(tasks, path, values, where)


def make_spec(tasks: tuple[str, ...] | list[str], path: str | Path, values: dict[str, Any],
              where: str = "teacher") -> TeacherSpec:
    """A checked spec from settings given as text (the command line) or as Python values (a library call)."""
    known = {f.name for f in fields(TeacherSpec)} - {"tasks", "path"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r}; settings: {', '.join(sorted(known))}")
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "size":
            parsed[key] = _size(value, where)
        elif key in ("mean", "std"):
            parsed[key] = _triple(value, key, where)
        elif key == "seg":
            parsed[key] = _choice(value, SEG_MEANINGS, key, where)
        elif key == "depth":
            parsed[key] = _choice(value, DEPTH_MEANINGS, key, where)
        elif key == "normal":
            parsed[key] = ",".join(f"{s}{a}" for s, a in axis_map(value, where))
        elif key == "classes":
            parsed[key] = _classes(value, where)
        elif key == "output":
            names = tuple(value.split("/")) if isinstance(value, str) else tuple(value)
            if len(names) != len(tasks):
                raise ConfigError(f"{where}: output= names {len(names)} outputs for {len(tasks)} tasks; "
                                  f"give one per task, in task order, separated by /")
            parsed[key] = names
        else:  # backend
            from mtlkd.runtime.backends import backend_names

            parsed[key] = _choice(value, ("auto", *backend_names()), key, where)
    spec = TeacherSpec(tasks=tuple(tasks), path=Path(path), **parsed)
    if spec.std is not None and min(spec.std) <= 0:
        raise ConfigError(f"{where}: std= must be three numbers > 0")
    return spec


def _size(value: Any, where: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in (value.lower().split("x") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: size={value} is not HxW, e.g. size=384x384") from None
    if min(h, w) < 8 or max(h, w) > 8192:
        raise ConfigError(f"{where}: size={value}: each side must be 8..8192 pixels")
    return h, w


def _triple(value: Any, key: str, where: str) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in (value.split("/") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        numbers = ()
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        raise ConfigError(f"{where}: {key}={value} is not three numbers R/G/B, e.g. {key}=0.485/0.456/0.406")
    return numbers  # type: ignore[return-value]


def _choice(value: Any, choices: tuple[str, ...], key: str, where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: {key}={value}: expected one of {', '.join(choices)}")
    return str(value)


def _classes(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, str):
        names = tuple(str(v) for v in value)
    else:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"{where}: classes={value}: no such file; give a text file with one class name a line")
        text = path.read_text()
        if path.suffix == ".json":
            try:
                names = tuple(str(v) for v in json.loads(text))
            except (json.JSONDecodeError, TypeError):
                raise ConfigError(f"{where}: classes={value} is not a JSON list of names") from None
        else:
            names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names or len(names) > 4096:
        raise ConfigError(f"{where}: classes={value}: expected 1..4096 class names")
    return names


def axis_map(text: str, where: str = "normal") -> list[tuple[str, str]]:
    """`x,-y,-z` -> [("", "x"), ("-", "y"), ("-", "z")]: the teacher's channel i is (sign) mtlkd axis."""
    parts = [p.strip() for p in str(text).split(",")] if "," in str(text) else list(_split_axes(str(text)))
    result = []
    for part in parts:
        sign, axis = ("-", part[1:]) if part.startswith("-") else ("", part.lstrip("+"))
        result.append((sign, axis))
    if len(result) != 3 or sorted(a for _, a in result) != list(AXES):
        raise ConfigError(f"{where}: normal={text}: name each of x, y, z once with an optional sign, e.g. x-y-z "
                          f"(the teacher's channels in mtlkd's frame)")
    return result


def _split_axes(text: str):
    """'x-y-z' / '+x-y-z' without commas."""
    token = ""
    for ch in text:
        token += ch
        if ch in AXES:
            yield token
            token = ""


def to_mtlkd_normals(raw: np.ndarray, axes: str) -> np.ndarray:
    """N x 3 x h x w normals with the teacher's channel i = (sign) mtlkd axis -> mtlkd's x, y, z, unit length."""
    out = np.empty_like(raw, dtype=np.float32)
    for channel, (sign, axis) in enumerate(axis_map(axes)):
        out[:, AXES.index(axis)] = -raw[:, channel] if sign else raw[:, channel]
    return out / np.maximum(np.sqrt((out * out).sum(axis=1, keepdims=True)), 1e-6)


def targets_at(targets: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Targets resized to `size` for comparing decisions, as the runtime resizes a model's outputs: seg as
    log-probabilities (a per-pixel shift of the logits, so their bilinear resize picks the class the
    logits' would; resizing probabilities picks others near boundaries), normals re-normalised."""
    from mtlkd.runtime.processing import resize_raw

    if "seg" in targets:
        targets = {**targets, "seg": np.log(np.maximum(targets["seg"].astype(np.float32), 1e-12))}
    return resize_raw(targets, size)


# ------------------------------------------------------------------------------------------- loading


def missing_settings(spec: TeacherSpec) -> list[str]:
    """What a foreign teacher must be told before it can teach these tasks."""
    needed = [name for name in ("size", "mean", "std") if getattr(spec, name) is None]
    for task in spec.tasks:
        if task == "seg":
            needed += [n for n in ("seg", "classes") if getattr(spec, n) is None]
        elif getattr(spec, task) is None:
            needed.append(task)
    return needed


def read_own_metadata(path: Path) -> dict[str, Any] | None:
    """The file's mtlkd metadata, or None when it has none (a foreign model); damaged metadata is an error."""
    from mtlkd.metadata import METADATA_KEY, read_model_file_metadata

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        if not any(p.key == METADATA_KEY for p in proto.metadata_props):
            return None
    elif suffix == ".xml":
        try:
            return read_model_file_metadata(path, error=BackendError)
        except BackendError as exc:
            if "no mtlkd metadata" in str(exc):
                return None
            raise
    return read_model_file_metadata(path, error=BackendError)


class Teacher:
    """A loaded teacher: `targets(frames)` gives its tasks in mtlkd's conventions; the first call checks the
    outputs (shapes, class count, probabilities) and says in one line what does not fit."""

    def __init__(self, spec: TeacherSpec, backend: Any, foreign: bool):
        self.spec = spec
        self.backend = backend
        self.foreign = foreign
        self.checked = False

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.backend.input_size)  # type: ignore[return-value]

    @property
    def class_names(self) -> list[str] | None:
        return list(self.spec.classes) if self.spec.classes else None

    def meaning(self, task: str) -> str:
        """seg: logits|probs; depth: metric|relative|inverse; normal: the axis map."""
        return getattr(self.spec, task) or ""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a float N x 3 x H x W batch in [0, 1] at `input_size`."""
        return self.backend.run(batch, list(self.spec.tasks))

    def targets(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        """RGB frames (any size) -> {task: N x C x h x w float32 target}."""
        batch, _ = processing.preprocess(frames, self.input_size)
        raw = self.run(batch)
        if not self.checked:
            self.check(raw, len(frames))
            self.checked = True
        return self.convert(raw)

    def convert(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for task in self.spec.tasks:
            value = np.asarray(raw[task], dtype=np.float32)
            if value.ndim == 3:  # N x h x w depth maps
                value = value[:, None]
            if task == "seg" and self.spec.seg == "logits":
                value = value - value.max(axis=1, keepdims=True)
                np.exp(value, out=value)
                value /= value.sum(axis=1, keepdims=True)
            elif task == "normal":
                value = to_mtlkd_normals(value, self.spec.normal or "x,y,z")
            out[task] = value
        return out

    def check(self, raw: dict[str, np.ndarray], count: int) -> None:
        """Each output has the shape its meaning needs, checked on the first batch."""
        where = f"teacher {self.spec.label}"
        for task in self.spec.tasks:
            value = np.asarray(raw[task])
            shape = "x".join(map(str, value.shape))
            if value.ndim == 3 and task == "depth":
                value = value[:, None]
            if value.ndim != 4 or value.shape[0] != count:
                raise ConfigError(f"{where}: its {task} output is {shape}, expected N x C x H x W with N = {count}; "
                                  f"pick the right output with output=NAME")
            want = len(self.spec.classes or ()) if task == "seg" else get_task(task).channels()
            if value.shape[1] != want:
                what = f"{want} classes (classes= names {want})" if task == "seg" else f"{want} channel(s)"
                raise ConfigError(f"{where}: its {task} output has {value.shape[1]} channels, expected {what}; "
                                  f"check the model and its settings")
            if not np.isfinite(value).all():
                raise ConfigError(f"{where}: its {task} output holds NaN or infinity on the first batch; "
                                  f"check size=, mean= and std=")
            if task == "seg" and self.spec.seg == "probs":
                sums = value.sum(axis=1)
                if value.min() < -PROBABILITY_SLACK or np.abs(sums - 1).max() > PROBABILITY_SLACK:
                    raise ConfigError(f"{where}: seg=probs, but its outputs do not sum to 1 over classes (sums "
                                      f"{sums.min():.3g}..{sums.max():.3g}); use seg=logits")


def load_teacher(spec: TeacherSpec, device: str | None = None, threads: int | None = None) -> Teacher:
    """Open a teacher through mtlkd's runtime: an mtlkd file with its own backend and metadata, a foreign
    ONNX file or OpenVINO IR with `spec`'s settings (refused in one line naming the missing ones).
    `threads`: the backend's CPU threads (default: its own, the physical cores)."""
    path = Path(spec.path)
    if not path.is_file():
        raise ConfigError(f"teacher {spec.label}: no such model file")
    try:
        meta = read_own_metadata(path)
    except MetadataError as exc:
        raise BackendError(str(exc)) from None
    if meta is not None:
        return _own_teacher(spec, path, meta, device, threads)
    missing = missing_settings(spec)
    if missing:
        raise ConfigError(f"teacher {spec.label}: a model without mtlkd metadata needs "
                          f"{', '.join(s + '=' for s in missing)} (see mtl-distill --help)")
    from mtlkd.runtime.foreign import load_foreign

    return Teacher(spec, load_foreign(path, spec, device or "cpu", threads), foreign=True)


def _own_teacher(spec: TeacherSpec, path: Path, meta: dict[str, Any], device: str | None,
                 threads: int | None) -> Teacher:
    from mtlkd.runtime.predictor import Predictor

    missing = [t for t in spec.tasks if t not in meta["tasks"]]
    if missing:
        raise ConfigError(f"teacher {spec.label}: the file predicts {', '.join(meta['tasks'])}, not "
                          f"{', '.join(missing)}")
    given = [n for n in ("size", "mean", "std", "output", "classes") if getattr(spec, n) is not None]
    if given:
        raise ConfigError(f"teacher {spec.label}: an mtlkd file describes itself; drop "
                          f"{', '.join(n + '=' for n in given)}")
    predictor = Predictor.load(path, backend=spec.backend, device=device, **({"threads": threads} if threads else {}))
    names = meta.get("class_names") or [f"class {i}" for i in range(meta.get("num_classes") or 0)]
    own_depth = TEACHER_DEPTH.get(meta.get("depth_meaning", "metric"), "metric")
    filled = replace(spec, size=tuple(meta["input_size"]), seg="logits" if "seg" in spec.tasks else None,
                     classes=tuple(names) if "seg" in spec.tasks else None,
                     depth=(spec.depth or own_depth) if "depth" in spec.tasks else None,
                     normal=(spec.normal or "x,y,z") if "normal" in spec.tasks else None)
    return Teacher(filled, predictor.backend, foreign=False)


@dataclass
class TeacherSet:
    """The teachers of one student: each task from exactly one teacher."""

    teachers: list[Teacher] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return [t for teacher in self.teachers for t in teacher.spec.tasks]

    def teacher_of(self, task: str) -> Teacher:
        return next(t for t in self.teachers if task in t.spec.tasks)

    @property
    def class_names(self) -> list[str] | None:
        return self.teacher_of("seg").class_names if "seg" in self.tasks else None

    @property
    def depth_meaning(self) -> str | None:
        return STUDENT_DEPTH[self.teacher_of("depth").meaning("depth")] if "depth" in self.tasks else None


def load_teachers(specs: list[TeacherSpec], device: str | None = None) -> TeacherSet:
    """Open every teacher; a task given by two teachers is refused."""
    seen: dict[str, str] = {}
    for spec in specs:
        for task in spec.tasks:
            if task in seen:
                raise ConfigError(f"task {task} is given by two teachers ({seen[task]} and {spec.label}); "
                                  f"give each task once")
            seen[task] = spec.label
    if not specs:
        raise ConfigError("no --teacher given; name at least one, e.g. --teacher depth=depth.onnx")
    return TeacherSet([load_teacher(spec, device) for spec in specs])
