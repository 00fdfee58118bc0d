"""The inputs every worker reads: the timing image, the accuracy images with the PyTorch fp32 outputs on
them, and a JPEG for the end-to-end measurement. Written by the parent process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

E2E_SIZE = (480, 640)  # the per-image end-to-end test decodes a VGA JPEG, like a camera frame or photo


def dataset_images(root: Path, size: tuple[int, int], n: int) -> np.ndarray:
    """n images (N x 3 x H x W float32 in [0, 1]) from an MTAN-layout folder's val split (else train)."""
    import cv2

    from mtlkd.errors import UserError

    folder = next((root / s / "image" for s in ("val", "train") if (root / s / "image").is_dir()), None)
    if folder is None:
        raise UserError(f"--data-dir {root}: expected {root}/val/image/0.npy (the MTAN layout; mtl-data writes it)")
    files = sorted((f for f in folder.glob("*.npy") if f.stem.isdigit()), key=lambda f: int(f.stem))[:n]
    if not files:
        raise UserError(f"--data-dir {root}: {folder} has no .npy images")
    images = []
    for f in files:
        image = np.load(f, allow_pickle=False).astype(np.float32)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise UserError(f"{f}: expected an H x W x 3 image, got shape {image.shape}")
        image = image / 255.0 if image.max() > 1.5 else image
        if image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(np.clip(image, 0, 1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(images), dtype=np.float32)


def write_inputs(net: Any, tasks: list[str], timing: np.ndarray, images: np.ndarray, path: Path) -> Path:
    """The timing image, the accuracy images and the PyTorch fp32 outputs of `net` on them, for the workers."""
    from mtlkd.export.validate import run_torch

    before = getattr(net, "full_resolution", None)
    if before is not None:  # the references at the heads' grid, as the exported graphs put out their maps
        net.full_resolution = False
    try:
        refs = run_torch(net, images, tasks)
    finally:
        if before is not None:
            net.full_resolution = before
    np.savez(path, timing=timing, accuracy=images, **{f"ref_{t}": refs[t] for t in tasks})
    return path


def write_jpeg(path: Path, seed: int = 99) -> Path:
    """A synthetic VGA scene as a quality-90 JPEG: what `mtl-infer image.jpg` decodes (a PNG of the same
    scene takes several times longer to decode, which would inflate the end-to-end rows)."""
    from PIL import Image

    from mtlkd.data.synthetic import render_scene

    scene = render_scene(np.random.default_rng(seed), *E2E_SIZE)["image"]
    Image.fromarray((np.clip(scene, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, quality=90)
    return path
