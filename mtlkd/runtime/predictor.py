"""`Predictor`: images in, per-task maps out, with any backend.

    predictor = Predictor.load("exports/model.onnx")          # backend chosen by file type / measurement
    result = predictor.predict(rgb)                            # H x W x 3 uint8, or float in [0, 1]
    result["seg"]      # H x W int32 class ids        (predictor.class_names[id])
    result["depth"]    # H x W float32 metres
    result["normal"]   # H x W x 3 float32 unit vectors
    predictor.timings  # {"preprocess": s, "network": s, "postprocess": s, "images": n} of the last call

All requested tasks come from one forward pass; pre- and postprocessing are the same numpy/OpenCV code
for every backend (mtlkd.runtime.processing), so backends differ only in the network call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, MediaError
from mtlkd.runtime import processing
from mtlkd.runtime.backends import Backend, backend_spec, backends_for, default_device, load_backend
from mtlkd.tasks import parse_tasks


def refuse_half_swapped(path: Path) -> None:
    """A model in an export folder whose replacement a kill interrupted (its .swap.json is still there) may
    mix two exports' files: refused in one line until the next export into that folder finishes the swap."""
    from mtlkd.files import SWAP_JOURNAL

    for folder in (path.parent, path.parent.parent):
        if (folder / SWAP_JOURNAL).is_file():
            raise BackendError(f"{path}: an export into {folder} was interrupted while it replaced the files "
                               f"there ({folder / SWAP_JOURNAL}); run the same mtl-export again to finish it")


class Predictor:
    """One loaded model plus the shared pre- and postprocessing."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.timings: dict[str, float] = {"preprocess": 0.0, "network": 0.0, "postprocess": 0.0, "images": 0}

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", device: str | None = None, **options: Any) -> Predictor:
        """Open a model file.

        path: a file a registered backend opens (`mtlkd.runtime.backends.suffixes()`): model.safetensors
            (torch), model.onnx (onnxruntime or openvino), model.xml (openvino), model.engine / .plan
            (tensorrt, with its .engine.json sidecar).
        backend: "auto" picks by file type and, when several backends can open the file, by measuring them
            once per file and machine (cached; see mtlkd.runtime.auto); or a backend's name
            (`backend_names()`).
        device: "cpu" or "cuda"; default cpu, or cuda for files only GPU backends open (TensorRT engines).
        options: passed to the backend's `load` (threads=, hint="THROUGHPUT" for OpenVINO, ...); with
            backend="auto" also measure=False (take the first preference) and cache=PATH (the JSON cache).
        """
        path = Path(path)
        device = device or default_device(path)
        if device not in ("cpu", "cuda"):
            raise BackendError(f"unknown device {device!r}; use cpu or cuda")
        if not path.is_file():
            hint = " (a folder: pass the model file inside it)" if path.is_dir() else ""
            raise BackendError(f"{path}: no such model file{hint}")
        refuse_half_swapped(path)
        if backend == "auto":
            from mtlkd.runtime.auto import select_backend

            auto = {k: options.pop(k) for k in ("measure", "cache") if k in options}
            name, loaded = select_backend(path, device, **auto, **options)
            return cls(loaded if loaded is not None else load_backend(name, path, device, **options))
        backend_spec(backend)  # an unknown name, in one line
        backends_for(path)
        return cls(load_backend(backend, path, device, **options))

    # ------------------------------------------------------------------------------------- properties
    @property
    def metadata(self) -> dict[str, Any]:
        return self.backend.metadata

    @property
    def tasks(self) -> list[str]:
        return list(self.backend.tasks)

    @property
    def num_classes(self) -> int | None:
        return self.metadata.get("num_classes")

    @property
    def class_names(self) -> list[str]:
        names = self.metadata.get("class_names")
        if names:
            return list(names)
        return [f"class {i}" for i in range(self.num_classes or 0)]

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def input_size(self) -> tuple[int, int]:
        return self.backend.input_size

    @property
    def path(self) -> Path:
        return self.backend.path

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"Predictor({self.path.name}, backend={self.backend_name}, device={self.device}, " \
               f"tasks={self.tasks}, input={h}x{w})"

    # --------------------------------------------------------------------------------------- running
    def resolve_tasks(self, tasks: str | Sequence[str] | None) -> list[str]:
        """None -> every task of the model; "seg,depth" or ["seg", "depth"] -> checked against the model."""
        return parse_tasks(tasks if tasks is None or isinstance(tasks, str) else list(tasks), self.tasks)

    def predict(self, image: Any, tasks: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """One image -> {task: map} at the image's own resolution. The image: an H x W x 3 RGB array (uint8,
        uint16, or float in [0, 1]; grey and RGBA accepted), a PIL image, or the path of an image file."""
        return self.predict_batch([image], tasks)[0]

    def predict_batch(self, images: Sequence[np.ndarray], tasks: str | Sequence[str] | None = None) -> list[dict]:
        """Several images (sizes may differ) in one forward pass per backend-sized chunk."""
        tasks = self.resolve_tasks(tasks)
        images = [as_rgb_array(image) for image in images]
        timings = {"preprocess": 0.0, "network": 0.0, "postprocess": 0.0, "images": len(images)}
        results: list[dict] = []
        if not images:
            self.timings = timings
            return results
        step = self.backend.max_batch or max(1, len(images))
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            t0 = time.perf_counter()
            batch, sizes = processing.preprocess(chunk, self.input_size)
            t1 = time.perf_counter()
            raw = self.backend.run(batch, tasks)
            t2 = time.perf_counter()
            results.extend(processing.postprocess_batch(raw, tasks, sizes))
            t3 = time.perf_counter()
            timings["preprocess"] += t1 - t0
            timings["network"] += t2 - t1
            timings["postprocess"] += t3 - t2
        self.timings = timings
        return results

    def run_raw(self, batch: Any, tasks: str | Sequence[str] | None = None, data_size: bool = False) -> dict:
        """Raw network outputs for a float N x 3 x H x W batch in [0, 1] (numpy or anything np.asarray
        takes): {task: N x C x h x w float32}, seg as logits, depth in metres, normals unit length, at the
        heads' grid (input size / `output_stride` of the model's metadata) for every backend.

        The batch is resized to the network's input size when it differs; with `data_size` the outputs
        are resized once, straight to the batch's H x W (what dataset metrics compare against)."""
        tasks = self.resolve_tasks(tasks)
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise MediaError(f"run_raw takes an N x 3 x H x W batch of RGB images, got shape {batch.shape}")
        t0 = time.perf_counter()
        network_batch = processing.resize_batch(batch, self.input_size)
        t1 = time.perf_counter()
        step = self.backend.max_batch or network_batch.shape[0]
        parts = [self.backend.run(network_batch[i : i + step], tasks) for i in range(0, len(network_batch), step)]
        raw = {t: np.concatenate([p[t] for p in parts]) if len(parts) > 1 else parts[0][t] for t in tasks}
        t2 = time.perf_counter()
        if data_size:
            raw = processing.resize_raw(raw, tuple(batch.shape[2:]))
        self.timings = {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": time.perf_counter() - t2,
                        "images": batch.shape[0]}
        return raw


def as_rgb_array(image: Any) -> np.ndarray:
    """An array as it is; a path (str or Path) read from disk (EXIF-upright RGB); a PIL image as RGB."""
    if isinstance(image, (str, Path)):
        from mtlkd.runtime.media import read_image

        return read_image(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image, without importing PIL here
        return np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L", "I;16") else image)
    return np.asarray(image)
