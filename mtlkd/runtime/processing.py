"""Pre- and postprocessing shared by every backend, so that all backends give the same answer.

Preprocessing is only what the exported graphs do not do themselves (normalisation is inside the
network): RGB -> float32 in [0, 1] -> resize to the network's input size -> N x 3 x H x W.
Images are converted to float before resizing, so a uint8 image and the same image as float in [0, 1]
give the same batch (resizing uint8 would round every pixel to 1/255 first).
Shrinking uses cv2.INTER_AREA (averages, no aliasing), enlarging cv2.INTER_LINEAR.

Postprocessing resizes the raw maps back to the image's own size BEFORE decoding:

* segmentation: the logits are resized bilinearly and the argmax is taken at full resolution. This gives
  smooth class boundaries at the image's resolution, where argmax-then-nearest gives the network's pixel
  staircase; it costs one bilinear resize per class, fused here with the running argmax so each
  full-size logit plane is touched once (about 2x faster than resize-all-then-argmax, same result);
* depth: bilinear (a convex combination of positive depths stays positive);
* normals: bilinear per component, then re-normalised to unit length (interpolated unit vectors are
  shorter than one).

Decoding is the task registry's `decode` (mtlkd.tasks), so new tasks need nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mtlkd.errors import MediaError
from mtlkd.tasks import UNIT, decode_seg, get_task

Size = tuple[int, int]  # (H, W)

SCALES = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.uint16): 1.0 / 65535.0}


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 from HxW grey, HxWx1, HxWx3 or HxWx4 (alpha dropped); dtype unchanged."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise MediaError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


def to_float(image: np.ndarray) -> np.ndarray:
    """RGB float32 in [0, 1]: uint8 / 255, uint16 / 65535, bool as 0/1, floats as they are (checked)."""
    image = as_rgb(image)
    if image.dtype in SCALES:
        return image.astype(np.float32) * np.float32(SCALES[image.dtype])
    if image.dtype == bool:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32, copy=False)
        high = float(image.max()) if image.size else 0.0
        if high > 1.0 + 1e-3:
            raise MediaError(f"float images must be in [0, 1] (this one reaches {high:g}); pass uint8 or divide by 255")
        return np.clip(image, 0.0, 1.0)
    raise MediaError(f"unsupported image dtype {image.dtype}; pass uint8, uint16 or float in [0, 1]")


def resize_image(image: np.ndarray, size: Size) -> np.ndarray:
    """H x W x C float image to `size` (H, W): INTER_AREA to shrink, INTER_LINEAR to enlarge."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    shrink = size[0] <= h and size[1] <= w
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess(images: Sequence[np.ndarray], size: Size) -> tuple[np.ndarray, list[Size]]:
    """A list of RGB images (any size, uint8 / uint16 / float) -> (float32 N x 3 x H x W batch at `size`,
    each image's original (H, W))."""
    size = (int(size[0]), int(size[1]))
    batch = np.empty((len(images), 3, *size), dtype=np.float32)
    originals = []
    for i, image in enumerate(images):
        image = to_float(image)
        originals.append((image.shape[0], image.shape[1]))
        batch[i] = resize_image(image, size).transpose(2, 0, 1)
    return batch, originals


def resize_maps(maps: np.ndarray, size: Size) -> np.ndarray:
    """C x h x w float maps -> C x H x W, bilinear (half-pixel centres, as torch's align_corners=False)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    out = np.empty((maps.shape[0], *size), dtype=np.float32)
    for c in range(maps.shape[0]):
        cv2.resize(maps[c], (size[1], size[0]), dst=out[c], interpolation=cv2.INTER_LINEAR)
    return out


def upsampled_argmax(logits: np.ndarray, size: Size) -> np.ndarray:
    """argmax over classes of the bilinearly resized logits, H x W int32 (ties -> lowest class, as argmax),
    resizing one class plane at a time into a running maximum. The compare, select and maximum are OpenCV
    calls on a uint8 label plane (int32 beyond 256 classes): several times faster than the same in numpy,
    and this is most of mtl-infer's postprocessing."""
    h, w = size
    classes = logits.shape[0]
    labels = np.zeros((h, w), dtype=np.uint8 if classes <= 256 else np.int32)
    best = cv2.resize(np.ascontiguousarray(logits[0], dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    plane = np.empty((h, w), dtype=np.float32)
    greater = np.empty((h, w), dtype=np.uint8)
    fill = np.empty_like(labels)
    for c in range(1, classes):
        cv2.resize(np.ascontiguousarray(logits[c], dtype=np.float32), (w, h), dst=plane,
                   interpolation=cv2.INTER_LINEAR)  # fmt: skip
        cv2.compare(plane, best, cv2.CMP_GT, dst=greater)  # strictly greater: ties keep the lower class
        fill.fill(c)
        cv2.copyTo(fill, greater, labels)
        cv2.max(best, plane, dst=best)
    return labels.astype(np.int32, copy=False)


def decode_one(task: str, raw: np.ndarray, size: Size) -> np.ndarray:
    """One image's raw C x h x w output -> what the user sees, at `size`."""
    spec = get_task(task)
    raw = np.asarray(raw, dtype=np.float32)
    if tuple(raw.shape[1:]) == tuple(size):
        return spec.decode(raw)
    if spec.decode is decode_seg:
        return upsampled_argmax(raw, size)  # == decode_seg(resize_maps(raw, size)), fused
    return spec.decode(resize_maps(raw, size))


def postprocess(raw: dict[str, np.ndarray], tasks: Sequence[str], original_size: Size) -> dict[str, np.ndarray]:
    """One image: {task: C x h x w raw map} -> {task: decoded map at original_size}
    (seg H x W int32 class ids, depth H x W float32 metres, normal H x W x 3 float32 unit vectors)."""
    return {t: decode_one(t, raw[t], original_size) for t in tasks}


def postprocess_batch(raw: dict[str, np.ndarray], tasks: Sequence[str], sizes: Sequence[Size]) -> list[dict]:
    """A batch: {task: N x C x h x w} -> one dict per image, each at its own original size."""
    return [postprocess({t: raw[t][i] for t in tasks}, tasks, size) for i, size in enumerate(sizes)]


def resize_batch(batch: np.ndarray, size: Size) -> np.ndarray:
    """N x 3 x H x W float batch -> N x 3 x size (the network's input), each image resized like preprocess."""
    if tuple(batch.shape[2:]) == tuple(size):
        return np.ascontiguousarray(batch, dtype=np.float32)
    out = np.empty((batch.shape[0], batch.shape[1], *size), dtype=np.float32)
    for i, image in enumerate(np.asarray(batch, dtype=np.float32)):
        resized = resize_image(np.ascontiguousarray(image.transpose(1, 2, 0)), size)
        out[i] = resized.reshape(*size, -1).transpose(2, 0, 1)
    return out


def resize_raw(raw: dict[str, np.ndarray], size: Size) -> dict[str, np.ndarray]:
    """Raw N x C x h x w outputs -> N x C x size, keeping each task's convention (logits stay logits,
    unit vectors are re-normalised)."""
    out = {}
    for task, maps in raw.items():
        if tuple(maps.shape[2:]) == tuple(size):
            out[task] = maps
            continue
        resized = np.stack([resize_maps(m, size) for m in maps])
        if get_task(task).output == UNIT:
            resized /= np.maximum(np.sqrt((resized * resized).sum(axis=1, keepdims=True)), 1e-6)
        out[task] = resized
    return out
