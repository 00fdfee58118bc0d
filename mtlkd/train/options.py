"""The options of the train side, torch-free, each checking itself and naming the user's flag.

- `TrainOptions` (`mtl-train`, `train.trainer.train`), `PretrainOptions` (`mtl-pretrain`) and
  `DistillRunOptions` (`mtl-distill`, holding a `TrainOptions`).
- The pieces every method's and weighting's options dataclass is made of (`Options`, `option`): a field
  carries its default, a one-line help, its allowed values and its flag's placeholder. From those alone
  come the checks (an unknown key is one ConfigError listing the known ones; a value outside `choices`
  likewise), the JSON a run stores in run.json (`options_to_json`, read back by `parse_options`), and
  `mtl-train`'s method flags and their help. The dataclasses themselves live beside their method or
  weighting (mtlkd.train.methods, mtlkd.train.weighting).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlkd.errors import ConfigError
from mtlkd.files import lands_on_input, resolved
from mtlkd.runtime.teachers import TeacherSpec, parse_teacher
from mtlkd.train.runfolder import RUN_FILES


def option(default: Any = None, help: str = "", *, choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
           metavar: str | None = None, factory: Any = None, positive: bool = False) -> Any:
    """A dataclass field carrying its help, its allowed values (a tuple, or a function returning them when
    they come from a registry; `positive`: a number above 0, or None) and the placeholder its flag shows."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, "positive": positive}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of an options field: dwa_temperature -> --dwa-temperature."""
    return "--" + name.replace("_", "-")


def field_choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The values a field allows, or None for any."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


@dataclasses.dataclass
class Options:
    """Base of every options dataclass: checks `choices`, `positive` and that numbers are finite."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = field_choices(f)
            if choices and value not in choices:
                raise ConfigError(f"{flag(f.name)} {value}: expected one of {', '.join(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag(f.name)} {value}: expected a finite number")
            if f.metadata.get("positive") and value is not None and value <= 0:
                raise ConfigError(f"{flag(f.name)} {value}: must be > 0")


@dataclasses.dataclass
class NoOptions(Options):
    """A method or weighting without options of its own."""


def _coerce(value: Any, kind: str, name: str, where: str) -> Any:
    """`value` (from JSON or Python) as the field's declared type (annotations are strings here)."""
    kind = kind.replace(" ", "")
    if value is None:
        if kind.endswith("|None"):
            return None
        raise ConfigError(f"{where}: option {name!r} needs a value")
    base = kind.removesuffix("|None")

    def wrong() -> ConfigError:
        return ConfigError(f"{where}: option {name!r} is {value!r}, expected {base}")

    if base == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if base in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or (base == "int" and value != int(value)):
            raise wrong()
        return int(value) if base == "int" else float(value)
    if base == "str":
        if not isinstance(value, str):
            raise wrong()
        return value
    if base == "tuple[str,...]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise wrong()
        return tuple(value)
    if base == "dict[str,float]":
        if not isinstance(value, Mapping) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                    for v in value.values()):
            raise wrong()
        return {str(k): float(v) for k, v in value.items()}
    raise TypeError(f"options of type {kind} are not supported (field {name})")  # a bug, not user input


def parse_options(cls: type, values: Any, where: str) -> Any:
    """An instance of the options dataclass `cls` from a mapping (run.json, the CLI, a test) or an instance.

    Keys the dataclass does not declare are refused, naming the known ones; None means "not given" for a
    field that cannot be None."""
    if isinstance(values, cls):
        return values
    if dataclasses.is_dataclass(values):
        values = options_to_json(values)
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(flag(n) for n in fields) or "none"
        raise ConfigError(f"{where}: unknown option {flag(unknown[0])}; its options: {known}")
    parsed = {}
    for name, value in values.items():
        if value is None and not str(fields[name].type).replace(" ", "").endswith("|None"):
            continue  # not given: the default
        parsed[name] = _coerce(value, str(fields[name].type), name, where)
    return cls(**parsed)


def options_to_json(options: Any) -> dict[str, Any]:
    """The options as run.json stores them (tuples as lists)."""
    return {f.name: _jsonable(getattr(options, f.name)) for f in dataclasses.fields(options)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


# -- the run's options ------------------------------------------------------------------------------------------
# AdamW moves every weight by about lr each step whatever the gradient's scale: above 1, weights of scale 0.02
# to 1 jump past their own size every step and overflow float32 within a few; that is divergence, not a run.
MAX_LR = 1.0
MAX_SEED = 2**32 - 1  # numpy's and torch's common range; the trainer derives per-epoch seeds from it
DEVICES = ("auto", "cpu", "cuda")


def _bad(name: str, value: Any, want: str) -> ConfigError:
    return ConfigError(f"{flag(name)} {value}: {want}")


def _check_device(device: str) -> None:
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise _bad("device", device, "use auto, cpu or cuda")


@dataclass
class TrainOptions:
    """Everything a run is made of; stored in `run.json` so a run can be resumed and understood.

    `check()` (the trainer's first step) refuses what would crash or silently misbehave later, before
    anything is read or written; the method's own options are checked by the method registry
    (`mtlkd.train.methods.parse_method_options`)."""

    dataset: str = "synthetic"
    out: str = "runs/train"
    data_dir: str | None = None
    method: str = "mtl"
    preset: str = "vit-micro"
    tasks: list[str] | None = None
    img_size: list[int] | None = None
    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    workers: int = 0
    augment: bool = True
    resume: bool = False
    overwrite: bool = False  # replace the run in `out` (its training files are deleted first)
    max_steps_per_epoch: int | None = None
    max_val_batches: int | None = None
    backbone_weights: str | None = None
    select_fraction: float = 0.1  # share of the training images held out to choose the epoch (0: the last)
    select_seed: int = 0  # which images; the same for every run and seed, so rows are chosen alike
    quiet: bool = False  # no progress bars or epoch lines: only results and errors
    # The method's options (its Options dataclass, mtlkd.train.methods); given as a mapping of what was set,
    # stored in run.json complete, with the defaults the run used.
    method_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> TrainOptions:
        """These options, or a ConfigError naming the flag that is wrong and what it should be."""
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise _bad(name, value, "must be 1 or more")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise _bad("lr", self.lr, f"the learning rate must be a number in (0, {MAX_LR:g}], e.g. 1e-3")
        for name in ("seed", "select_seed"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value <= MAX_SEED):
                raise _bad(name, value, f"a seed is a whole number from 0 to {MAX_SEED}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise _bad("weight_decay", self.weight_decay, "must be 0 or more")
        if self.workers < 0:
            raise _bad("workers", self.workers, "must be 0 or more")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise _bad("max_steps", self.max_steps_per_epoch, "must be 1 or more")
        if not (math.isfinite(self.select_fraction) and 0 <= self.select_fraction < 1):
            raise _bad("select_fraction", self.select_fraction, "must be in [0, 1)")
        if self.img_size is not None:
            from mtlkd.metadata import MAX_SIDE

            shown = "x".join(map(str, self.img_size))
            if len(self.img_size) != 2 or min(self.img_size) < 8:
                raise _bad("img_size", shown, "expected HxW of at least 8x8, e.g. 96x128")
            if max(self.img_size) > MAX_SIDE:  # before 20 GB are allocated for it
                raise _bad("img_size", shown, f"at most {MAX_SIDE} pixels a side (the largest network input a "
                           "model file may record)")
        _check_device(self.device)
        self._check_inputs_outside_run()
        return self

    def _check_inputs_outside_run(self) -> None:
        """A training writes (and `--overwrite` deletes) its files and every *.safetensors in --out: backbone
        weights kept there would be replaced, and a dataset --out points into would get a run mixed into it."""
        out = resolved(self.out)
        weights = self.backbone_weights
        if weights and resolved(weights).parent == out and (Path(weights).suffix == ".safetensors"
                                                            or Path(weights).name in RUN_FILES):
            raise ConfigError(f"--backbone-weights {weights}: lies in --out {self.out}, whose checkpoints the run "
                            f"writes (and --overwrite deletes); move it out of the run folder or pass another --out")
        if self.data_dir and lands_on_input(out, folders=[self.data_dir]):
            raise ConfigError(f"--out {self.out}: is inside --data-dir {self.data_dir}; a run mixed into a dataset "
                            f"folder is read as part of it; pass another --out")


@dataclass
class PretrainOptions:
    """A pretraining run; stored in `pretrain.json` beside the backbone."""

    out: str = "runs/pretrain"
    preset: str = "vit-micro"
    images: int = 4800  # 6x the demo's training set of 800
    data_seed: int = 1000  # the benchmark's scenes are seed 0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.6
    mask_block: int = 2  # masked blocks of mask_block x mask_block patches
    seed: int = 0
    resume: bool = False
    img_size: tuple[int, int] | None = None  # the preset's unless given (a multiple of the patch size)
    device: str = "auto"  # auto: cuda when visible, else cpu
    quiet: bool = False  # no progress bars or epoch lines

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise _bad("mask_ratio", self.mask_ratio, "must be in (0, 1)")
        for name in ("images", "epochs", "batch_size", "mask_block"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be at least 1")
        if self.lr <= 0:
            raise _bad("lr", self.lr, "must be > 0")
        if self.images < self.batch_size:
            raise ConfigError(f"--images {self.images} is less than one batch of {self.batch_size}")
        if self.img_size is not None:
            self.img_size = (int(self.img_size[0]), int(self.img_size[1]))
            if min(self.img_size) < 8:
                raise _bad("img_size", f"{self.img_size[0]}x{self.img_size[1]}", "expected HxW of at least 8x8")
        _check_device(self.device)


DEFAULT_CACHE_LIMIT_GB = 20.0


@dataclass
class DistillRunOptions:
    """The frames, the teachers, and the student's training (mtl-train's options; method `distill`)."""

    sources: list[str]
    teachers: list[TeacherSpec | str]
    train: TrainOptions = field(default_factory=lambda: TrainOptions(out="runs/distill"))
    val_data: str | None = None  # a labelled dataset (its val split) for the true metrics
    val_dir: str | None = None
    cache: str | None = None  # the teacher cache folder (default: $MTLKD_CACHE/teachers)
    cache_limit_gb: float = DEFAULT_CACHE_LIMIT_GB
    frame_step: int = 1
    teacher_device: str | None = None  # default: cpu (cuda for TensorRT engines)

    def __post_init__(self) -> None:
        self.teachers = [parse_teacher(t) if isinstance(t, str) else t for t in self.teachers]
        if not self.sources:
            raise ConfigError("no SOURCE given: name image files, folders, globs or videos to distil on")
        if not self.teachers:
            raise ConfigError("no --teacher given; name at least one, e.g. --teacher depth=depth.onnx")
        if not self.cache_limit_gb > 0:
            raise ConfigError(f"--cache-limit {self.cache_limit_gb}: must be > 0 (GB)")
        if self.frame_step < 1:
            raise _bad("frame_step", self.frame_step, "must be 1 or more")
        if self.train.method != "distill" or isinstance(self.train.backbone_weights, Path):
            weights = self.train.backbone_weights
            self.train = dataclasses.replace(self.train, method="distill",
                                             backbone_weights=str(weights) if weights else None)  # run.json is JSON
        if self.train.select_fraction == 0 and not self.val_data:
            raise ConfigError("--select-fraction 0 without --val-data leaves nothing to score the student on; hold "
                              "frames out (the default 0.1) or give a labelled --val-data")
        if self.train.tasks is not None:
            raise ConfigError("the student's tasks are the teachers' tasks; drop --tasks")
