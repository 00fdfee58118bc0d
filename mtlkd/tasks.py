"""The task registry: everything that differs between dense-prediction tasks lives in one entry here.

Adding a task (edges, saliency, ...) means adding one `Task` to `TASKS`; networks, losses, metrics,
decoding and pictures all read it from here. This module imports no torch at import time, so the
torch-free runtime can use the decode and colour functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtlkd.errors import ConfigError
from mtlkd.eval.metrics import DepthMetrics, NormalMetrics, SegMetrics

# Output conventions, shared by the networks (which apply them) and the runtime (which reads them).
LOGITS = "logits"  # unnormalised class scores, argmax gives the class
POSITIVE = "positive"  # softplus: strictly positive values (metres for depth)
UNIT = "unit"  # L2-normalised vectors along the channel axis

IGNORE_INDEX = -1


@dataclass(frozen=True)
class Task:
    """One dense-prediction task.

    `loss(pred, target)` takes torch tensors (pred B x C x H x W after the output activation, target as the
    dataset gives it) and returns a scalar; `metrics` maps each metric to whether higher is better, in
    the order the papers print them.
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
    colours = palette(num_classes)
    out = colours[np.clip(seg, 0, num_classes - 1)]
    out[seg < 0] = 0
    return out


def colourise_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None, **_: Any):
    """Turbo colour map, near = warm; invalid (0) pixels black."""
    import cv2

    valid = depth > 0
    lo = float(np.percentile(depth[valid], 2)) if vmin is None and valid.any() else (vmin or 0.0)
    hi = float(np.percentile(depth[valid], 98)) if vmax is None and valid.any() else (vmax or 1.0)
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    grey = ((1.0 - scaled) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~valid] = 0
    return rgb


def colourise_normal(normal: np.ndarray, **_: Any) -> np.ndarray:
    """The usual (n + 1) / 2 mapping of x, y, z to red, green, blue; invalid (all zero) pixels black."""
    rgb = ((normal + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[np.abs(normal).sum(axis=-1) == 0] = 0
    return rgb


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
    ),
}


def get_task(name: str) -> Task:
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
