"""The task registry: everything that differs between dense-prediction tasks lives in one entry here.

Adding a task (edges, saliency, ...) means adding one `Task` to `TASKS` (`register_task`); networks,
losses, metrics, augmentation, decoding, accuracy checks, progress lines, tables and pictures all read it
from here. Only a dataset's file layout names tasks elsewhere (`data.mtan.SPECS`: which folder holds
which task's targets). This module imports no torch at import time, so the torch-free runtime can use
the decode and colour functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError
from mtlkd.eval.metrics import DepthMetrics, NormalMetrics, SegMetrics

# Output conventions, shared by the networks (which apply them) and the runtime (which reads them).
LOGITS = "logits"  # unnormalised class scores, argmax gives the class
POSITIVE = "positive"  # softplus: strictly positive values (metres for depth)
UNIT = "unit"  # L2-normalised vectors along the channel axis

IGNORE_INDEX = -1

# How `runtime.visualize` draws a prediction; every kind colours it with the task's `colourise`.
CLASSES = "classes"  # class colours with a legend of the classes present, also blended over the input
SCALE = "scale"  # a colour map with a colour bar in the task's `unit`; one colour range per run
DIRECTIONS = "directions"  # unit vectors as colours with a key of which colour faces which way
PLAIN = "plain"  # the colours alone


@dataclass(frozen=True, eq=False)  # compared and hashed as objects: pictures are cached by task
class Task:
    """One dense-prediction task.

    `loss(pred, target)` takes torch tensors (pred B x C x H x W after the output activation, target as the
    dataset gives it) and returns a scalar; `metrics` maps each metric to whether higher is better, in
    the order the papers print them; `decode` turns one raw C x H x W output into the user's prediction,
    and `colourise(prediction, **context)` into H x W x 3 uint8 colours (context: num_classes, vmin,
    vmax), which every picture uses.

    The fields with defaults say how the other parts treat the task:

    * targets under augmentation (`data.augment`): resized with nearest sampling (no blend of a valid
      value with an invalid one); `mirror_negates` are the target channels whose sign a left-right mirror
      changes (a normal's x); `zoom_divides`: the values are distances, divided by the zoom factor s of a
      scale-crop (enlarging the picture s times is what moving s times closer looks like);
    * `picture` (CLASSES, SCALE, DIRECTIONS or PLAIN) and `unit`: how `runtime.visualize` draws it, under
      `heading` (default `title`, with the unit in brackets);
    * `agreement(ref, out)`: what `accuracy` compares between a file and its fp32 reference (both
      N x C x H x W raw outputs) beyond the raw error, as {Tolerance field: value}; None: raw error only;
    * `progress`: the format of its part of a training epoch's line (`str.format` over its metrics);
      `short_title`: its column group in metric tables (default `title`);
    * `teacher_metrics`: its metrics renamed for student-vs-teacher agreement (`eval.agreement`);
    * `relative_forms`: a model may predict it up to a per-image scale and shift (`depth_meaning`
      relative), so it is aligned to the reference before scoring; `meanings` then says how such a model's
      values are drawn ({meaning: the fields that change, as `shown_as` applies them}).
    """

    name: str
    title: str
    output: str
    fixed_channels: int | None  # None: one channel per class
    target_channels: int | None  # channels of the target (None: an integer map of class ids)
    loss: Callable[[Any, Any], Any]
    metrics: dict[str, bool]
    decode: Callable[[np.ndarray], np.ndarray]
    colourise: Callable[..., np.ndarray]
    metric: Callable[..., Any]  # factory(num_classes=...) -> accumulator with update(pred, target) / compute()
    extra: dict[str, Any] = field(default_factory=dict)
    mirror_negates: tuple[int, ...] = ()
    zoom_divides: bool = False
    picture: str = PLAIN
    unit: str = ""
    heading: str = ""
    agreement: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    progress: str = ""
    short_title: str = ""
    teacher_metrics: dict[str, str] = field(default_factory=dict)
    relative_forms: bool = False
    meanings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.picture not in (CLASSES, SCALE, DIRECTIONS, PLAIN):
            raise ConfigError(f"task {self.name!r}: picture {self.picture!r} is not one of "
                              f"{CLASSES}, {SCALE}, {DIRECTIONS}, {PLAIN}")
        titled = f"{self.title} ({self.unit})" if self.unit else self.title
        object.__setattr__(self, "heading", self.heading or titled)
        object.__setattr__(self, "short_title", self.short_title or self.title)

    def shown_as(self, meaning: str | None) -> Task:
        """The task as a model whose values mean `meaning` (metadata `depth_meaning`) is drawn: a relative
        depth has no unit, an inverse one is near where it is large. Itself for None or its own meaning."""
        view = self.meanings.get(meaning or "")
        return replace(self, heading="", **view) if view else self

    @property
    def has_classes(self) -> bool:
        """One output channel per class of the dataset: the model and its file need the class names."""
        return self.fixed_channels is None

    def channels(self, num_classes: int | None = None) -> int:
        if self.fixed_channels is not None:
            return self.fixed_channels
        if not num_classes:
            raise ConfigError(f"task {self.name!r} needs num_classes")
        return num_classes


# ----------------------------------------------------------------------------------------------- losses
# torch is imported inside the loss functions so that importing this module stays torch-free.


def seg_loss(pred, target):
    """Cross-entropy over classes, pixels labelled -1 ignored."""
    import torch.nn.functional as F

    return F.cross_entropy(pred, target.long(), ignore_index=IGNORE_INDEX)


def depth_loss(pred, target):
    """L1 in metres over pixels with a measurement (ground truth != 0), as in MTAN."""
    valid = (target != 0).to(pred.dtype)
    return ((pred - target).abs() * valid).sum() / valid.sum().clamp_min(1.0)


def normal_loss(pred, target):
    """1 - cosine similarity over pixels whose ground-truth vector is not all zero."""
    valid = (target.abs().sum(dim=1, keepdim=True) != 0).to(pred.dtype)
    cos = (pred * target).sum(dim=1, keepdim=True)
    return ((1.0 - cos) * valid).sum() / valid.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------- decode (numpy)
# Each takes one raw network output C x H x W (float) and returns what the user sees.


def decode_seg(raw: np.ndarray) -> np.ndarray:
    return raw.argmax(axis=0).astype(np.int32)


def decode_depth(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw[0], dtype=np.float32)


def decode_normal(raw: np.ndarray) -> np.ndarray:
    vec = np.moveaxis(raw, 0, -1).astype(np.float32)
    return vec / np.maximum(np.linalg.norm(vec, axis=-1, keepdims=True), 1e-6)


# ---------------------------------------------------------------------------------- colours (numpy)


def palette(num_classes: int) -> np.ndarray:
    """A fixed, well-separated colour per class (uint8, num_classes x 3); deterministic across runs."""
    base = np.array(
        [  # matplotlib's tab10 then the light half of tab20: well separated for up to 20 classes
            [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
            [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
            [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [199, 199, 199],
            [219, 219, 141], [158, 218, 229],
        ],
        dtype=np.uint8,
    )
    if num_classes <= len(base):
        return base[:num_classes]
    rng = np.random.default_rng(0)
    extra = rng.integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def colourise_seg(seg: np.ndarray, num_classes: int = 13, **_: Any) -> np.ndarray:
    """Each class its palette colour (ids beyond num_classes get colours of their own); ignored (-1) black."""
    colours = palette(max(num_classes, int(seg.max()) + 1 if seg.size else 1))
    out = colours[np.clip(seg, 0, len(colours) - 1)]
    out[seg < 0] = 0
    return out


def colourise_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None, **_: Any):
    """Turbo colour map, near (small) = warm; invalid (0) pixels black."""
    return _turbo(depth, vmin, vmax, large_is_warm=False)


def colourise_inverse_depth(inverse: np.ndarray, vmin: float | None = None, vmax: float | None = None, **_: Any):
    """Inverse depth (disparity) in the same colours as depth: near (large) = warm; invalid (0) black."""
    return _turbo(inverse, vmin, vmax, large_is_warm=True)


def _turbo(depth: np.ndarray, vmin: float | None, vmax: float | None, large_is_warm: bool) -> np.ndarray:
    import cv2

    valid = depth > 0
    lo = float(np.percentile(depth[valid], 2)) if vmin is None and valid.any() else (vmin or 0.0)
    hi = float(np.percentile(depth[valid], 98)) if vmax is None and valid.any() else (vmax or 1.0)
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    grey = ((scaled if large_is_warm else 1.0 - scaled) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~valid] = 0
    return rgb


def colourise_normal(normal: np.ndarray, **_: Any) -> np.ndarray:
    """The usual (n + 1) / 2 mapping of x, y, z to red, green, blue; invalid (all zero) pixels black."""
    rgb = ((normal + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[np.abs(normal).sum(axis=-1) == 0] = 0
    return rgb


# ------------------------------------------------------------------ agreement with a reference (numpy)
# Each takes the fp32 reference and a candidate's raw outputs (N x C x H x W) and says what a user sees change.


def class_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """% of pixels given the reference's class."""
    return {"seg_agreement": float((ref.argmax(1) == out.argmax(1)).mean() * 100)}


def positive_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Mean relative error against the reference, %."""
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
    return {"depth_rel_err": float(rel.mean() * 100)}


def unit_agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Mean angle to the reference's vectors, degrees."""
    a = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
    b = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-6)
    cos = np.clip((a * b).sum(1), -1.0, 1.0)
    return {"normal_angle": float(np.degrees(np.arccos(cos)).mean())}


TASKS: dict[str, Task] = {
    "seg": Task(
        name="seg",
        title="Semantic segmentation",
        output=LOGITS,
        fixed_channels=None,
        target_channels=None,
        loss=seg_loss,
        metrics={"miou": True, "pixel_acc": True},
        decode=decode_seg,
        colourise=colourise_seg,
        metric=SegMetrics,
        picture=CLASSES,
        heading="Segmentation",
        agreement=class_agreement,
        progress="mIoU {miou:.1f}",
        short_title="Segm.",
        teacher_metrics={"pixel_acc": "pixel_agreement", "miou": "miou_vs_teacher"},
    ),
    "depth": Task(
        name="depth",
        title="Depth",
        output=POSITIVE,
        fixed_channels=1,
        target_channels=1,
        loss=depth_loss,
        metrics={"abs_err": False, "rel_err": False},
        decode=decode_depth,
        colourise=colourise_depth,
        metric=DepthMetrics,
        zoom_divides=True,
        picture=SCALE,
        unit="m",
        agreement=positive_agreement,
        progress="depth abs {abs_err:.3f}",
        teacher_metrics={"rel_err": "rel_err_vs_teacher", "abs_err": "abs_err_vs_teacher"},
        relative_forms=True,
        meanings={"relative": {"title": "Relative depth", "unit": ""},
                  "relative-inverse": {"title": "Relative inverse depth", "unit": "",
                                       "colourise": colourise_inverse_depth}},
    ),
    "normal": Task(
        name="normal",
        title="Surface normals",
        output=UNIT,
        fixed_channels=3,
        target_channels=3,
        loss=normal_loss,
        metrics={"mean": False, "median": False, "within_11.25": True, "within_22.5": True, "within_30": True},
        decode=decode_normal,
        colourise=colourise_normal,
        metric=NormalMetrics,
        mirror_negates=(0,),
        picture=DIRECTIONS,
        agreement=unit_agreement,
        progress="normal mean {mean:.1f}°",
        short_title="Normals",
        teacher_metrics={"mean": "mean_angle_to_teacher", "median": "median_angle_to_teacher"},
    ),
}


def register_task(task: Task) -> Task:
    """Add `task` to the registry (what a new task does once, beside its definition); returns it."""
    if task.name in TASKS:
        raise ConfigError(f"task {task.name!r} is registered twice; give the new task another name")
    TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """The registered task of that name; a Task (one `shown_as` a meaning) is returned as it is."""
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def parse_tasks(text: str | list[str] | tuple[str, ...] | None, available: list[str] | None = None) -> list[str]:
    """'seg,depth' -> ['seg', 'depth'], checked against the registry and against what is available."""
    if text is None:
        return list(available or TASKS)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    for i, name in enumerate(names):
        get_task(name)
        if name in names[:i]:
            raise ConfigError(f"task {name!r} is given twice in {','.join(names)!r}; name each task once")
        if available is not None and name not in available:
            raise ConfigError(f"task {name!r} is not available here; available: {', '.join(available)}")
    if not names:
        raise ConfigError("no task given")
    return names
