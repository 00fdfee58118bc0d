"""MTAN-style augmentation applied consistently to the image and every target (torch, channel-first).

Why these two: random scale-crop and horizontal flip are what the multi-task papers train NYUv2 with, so
results stay comparable. A sample is a dict: image 3xHxW float, seg HxW int64, depth 1xHxW, normal 3xHxW
(any subset of the targets). Targets are resized with nearest-exact sampling so ignore labels (-1), missing
depth (0) and missing normals (all zero) stay exactly invalid and never blend with valid values.

Randomness comes from the passed torch.Generator, or torch's global RNG when it is None, so the trainer's
seed makes augmentation repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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

    Depth is divided by s: enlarging the picture by s is what moving s times closer looks like.
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
    if "seg" in sample:
        out["seg"] = _resize_nearest(sample["seg"][None, window[0], window[1]], (height, width))[0]
    if "depth" in sample:
        out["depth"] = _resize_nearest(sample["depth"][:, window[0], window[1]], (height, width)) / scale
    if "normal" in sample:
        out["normal"] = _resize_nearest(sample["normal"][:, window[0], window[1]], (height, width))
    return out


def random_flip(sample: Sample, generator: torch.Generator | None = None, p: float = 0.5) -> Sample:
    """Mirror everything left-right with probability p; the normals' x component (rightwards) changes sign."""
    if float(torch.rand((), generator=generator)) >= p:
        return sample
    return flip(sample)


def flip(sample: Sample) -> Sample:
    """The left-right mirror image of a sample (always)."""
    out = {key: value.flip(-1) for key, value in sample.items()}
    if "normal" in out:
        out["normal"] = out["normal"].clone()
        out["normal"][0] = -out["normal"][0]
    return out
