"""MTAN-style augmentation applied consistently to the image and every target (torch, channel-first).

Why these two: random scale-crop and horizontal flip are what the multi-task papers train NYUv2 with, so
results stay comparable. A sample is a dict: image 3xHxW float and one target per task (a registered
task's name: C x H x W, or H x W for a class map), other keys left as they are. Targets are resized with
nearest-exact sampling so ignore labels (-1), missing depth (0) and missing normals (all zero) stay exactly
invalid and never blend with valid values; how a target changes beyond that is its task's
(`Task.zoom_divides`, `Task.mirror_negates`).

Randomness comes from the passed torch.Generator, or torch's global RNG when it is None, so the trainer's
seed makes augmentation repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mtlkd.tasks import TASKS

Sample = dict[str, torch.Tensor]


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator).item())


def _resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact resize of a C x h x w tensor of any dtype (integers survive exactly via float64)."""
    out = F.interpolate(x[None].to(torch.float64), size=size, mode="nearest-exact")[0]
    return out.to(x.dtype)


def random_scale_crop(
    sample: Sample, generator: torch.Generator | None = None, scales: Sequence[float] = (1.0, 1.2, 1.5)
) -> Sample:
    """Crop a random (H/s, W/s) window for a random scale s and resize it back to H x W.

    Targets of distances (`Task.zoom_divides`: depth) are divided by s: enlarging the picture by s is what
    moving s times closer looks like.
    """
    image = sample["image"]
    height, width = image.shape[-2:]
    scale = float(scales[_randint(len(scales), generator)])
    crop_h, crop_w = int(height / scale), int(width / scale)
    top = _randint(height - crop_h + 1, generator)
    left = _randint(width - crop_w + 1, generator)
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    out = dict(sample)
    out["image"] = F.interpolate(
        image[None, :, window[0], window[1]], size=(height, width), mode="bilinear", align_corners=False
    )[0]
    for name in [key for key in sample if key in TASKS]:
        task, target = TASKS[name], sample[name]
        class_map = task.target_channels is None  # H x W class ids
        planes = target[None] if class_map else target
        resized = _resize_nearest(planes[:, window[0], window[1]], (height, width))
        resized = resized[0] if class_map else resized
        out[name] = resized / scale if task.zoom_divides else resized
    return out


def random_flip(sample: Sample, generator: torch.Generator | None = None, p: float = 0.5) -> Sample:
    """Mirror everything left-right with probability p (`flip`)."""
    if float(torch.rand((), generator=generator)) >= p:
        return sample
    return flip(sample)


def flip(sample: Sample) -> Sample:
    """The left-right mirror image of a sample (always); the target channels a task names in
    `mirror_negates` change sign (the normals' x component, rightwards)."""
    out = {key: value.flip(-1) for key, value in sample.items()}
    for name in [key for key in out if key in TASKS and TASKS[key].mirror_negates]:
        out[name] = out[name].clone()
        for channel in TASKS[name].mirror_negates:
            out[name][channel] = -out[name][channel]
    return out
