"""Datasets stored in the preprocessed layout of the MTAN code base: ROOT/{train,val}/{folder}/{i}.npy.

Why this layout: the NYUv2 and Cityscapes files that the multi-task literature trains on are distributed
this way, and the embedded synthetic dataset is written the same way, so one loader serves all three.

Files are read with `np.load(allow_pickle=False)`: nothing in a user's folder is ever unpickled, and
nothing is ever downloaded. Importing this module does not import torch; fetching an item does.

Cityscapes comes in two label sets: `cityscapes` (MTAN's 7 classes, folder label_7) and `cityscapes19`
(the 19 Cityscapes train-id classes, folder label_19); both use the same ROOT.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.data import synthetic
from mtlkd.errors import DatasetError
from mtlkd.tasks import TASKS

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that differs between datasets in the MTAN layout."""

    name: str
    title: str
    folders: dict[str, str]  # task -> folder under ROOT/split (the image folder is always "image")
    num_classes: int
    class_names: tuple[str, ...]
    size: tuple[int, int] | None  # native H, W; None: read from ROOT/meta.json
    source: str  # where to get it and how to unpack it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.folders)


NYUV2_CLASSES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "painting", "sofa", "table", "tv", "wall", "window",
)  # fmt: skip
CITYSCAPES7_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES19_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_CITYSCAPES_SOURCE = (
    "Get the preprocessed Cityscapes of the MTAN code base (github.com/lorenmt/mtan, the 'Cityscapes "
    "preprocessed' link in its README) and unpack it so that {root}/train/image/0.npy exists."
)

SPECS: dict[str, DatasetSpec] = {
    "nyuv2": DatasetSpec(
        name="nyuv2",
        title="NYUv2",
        folders={"seg": "label", "depth": "depth", "normal": "normal"},
        num_classes=13,
        class_names=NYUV2_CLASSES,
        size=(288, 384),
        source="Get the preprocessed NYUv2 of the MTAN code base (github.com/lorenmt/mtan, the 'NYUv2 "
        "preprocessed' link in its README) and unpack it so that {root}/train/image/0.npy exists.",
    ),
    "cityscapes": DatasetSpec(
        name="cityscapes",
        title="Cityscapes (7 classes)",
        folders={"seg": "label_7", "depth": "depth"},
        num_classes=7,
        class_names=CITYSCAPES7_CLASSES,
        size=(128, 256),
        source=_CITYSCAPES_SOURCE,
    ),
    "cityscapes19": DatasetSpec(
        name="cityscapes19",
        title="Cityscapes (19 classes)",
        folders={"seg": "label_19", "depth": "depth"},
        num_classes=19,
        class_names=CITYSCAPES19_CLASSES,
        size=(128, 256),
        source=_CITYSCAPES_SOURCE,
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        title="Synthetic rooms",
        folders={"seg": "label", "depth": "depth", "normal": "normal"},
        num_classes=len(synthetic.CLASS_NAMES),
        class_names=synthetic.CLASS_NAMES,
        size=None,
        source="Generate it with `mtl-data synthetic --out {root}` (or pass no --data-dir to use the cache).",
    ),
}
DATASET_NAMES = tuple(SPECS)

# Per folder: trailing shape after H, W, and the numpy kinds accepted (f float, u/i integer). A folder not
# listed here that is named after a task takes the task's layout (`folder_layout`).
_LAYOUT = {
    "image": ((3,), "fu"),
    "label": ((), "fiu"),
    "label_7": ((), "fiu"),
    "label_19": ((), "fiu"),
    "depth": ((1,), "f"),
    "normal": ((3,), "f"),
}


def get_spec(name: str | DatasetSpec) -> DatasetSpec:
    if isinstance(name, DatasetSpec):
        return name
    try:
        return SPECS[name.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}") from None


def native_size(root: Path, spec: DatasetSpec) -> tuple[int, int] | None:
    """The H, W every file must have: the spec's, or for the synthetic set the one in its meta.json."""
    if spec.size is not None:
        return spec.size
    meta = Path(root) / "meta.json"
    if meta.is_file():
        try:
            return tuple(json.loads(meta.read_text())["size"])  # type: ignore[return-value]
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{meta} is not a valid synthetic meta.json ({err})") from None
    return None


def _indexed_files(folder: Path) -> list[int]:
    return sorted(int(p.name[:-4]) for p in os.scandir(folder) if p.name.endswith(".npy") and p.name[:-4].isdigit())


def validate_dataset(root: str | Path, spec: DatasetSpec | str, split: str = "train") -> int:
    """Check one split's folders, counts and first files; return its number of samples or raise DatasetError."""
    spec, root = get_spec(spec), Path(root).expanduser()
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    first = root / "train" / "image" / "0.npy"
    if not root.is_dir() or not ((root / split).is_dir() or first.is_file()):
        raise DatasetError(f"{spec.title} not found at {root}: expected {first}. {spec.source.format(root=root)}")
    if not (root / split).is_dir():
        raise DatasetError(f"{spec.title} at {root} has no {split} split: missing folder {root / split}")
    folders = ["image", *spec.folders.values()]
    counts: dict[str, int] = {}
    for folder in folders:
        path = root / split / folder
        if not path.is_dir():
            raise DatasetError(f"{spec.title} at {root} is incomplete: missing folder {path}")
        indices = _indexed_files(path)
        if indices != list(range(len(indices))):
            missing = next(i for i in range(len(indices) + 1) if i >= len(indices) or indices[i] != i)
            raise DatasetError(f"{path} has {len(indices)} files but {path / f'{missing}.npy'} is missing")
        counts[folder] = len(indices)
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{folder}: {n}" for folder, n in counts.items())
        raise DatasetError(f"{spec.title} {split} split has mismatched file counts ({found})")
    if counts["image"] == 0:
        raise DatasetError(f"{spec.title} {split} split at {root / split} has no samples")
    size = native_size(root, spec)
    for folder in folders:
        check_file(root / split / folder / "0.npy", folder, size)
        if size is None:  # the image fixes the size of the targets
            size = np.load(root / split / "image" / "0.npy", mmap_mode="r", allow_pickle=False).shape[:2]
    return counts["image"]


def check_file(path: Path, folder: str, size: tuple[int, int] | None) -> None:
    """Shape and dtype of one file against its folder's layout; raises DatasetError naming file and shapes."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DatasetError(f"{path} is not a readable .npy array ({err})") from None
    check_layout(path, folder, array, size)


def folder_layout(folder: str) -> tuple[tuple[int, ...], str]:
    """A folder's trailing shape after H, W and the numpy kinds it accepts: `_LAYOUT`'s, or for a folder
    named after a registered task the task's (class ids, or its target channels as floats)."""
    if folder in _LAYOUT:
        return _LAYOUT[folder]
    if folder in TASKS:
        channels = TASKS[folder].target_channels
        return ((), "fiu") if channels is None else ((channels,), "f")
    raise DatasetError(f"folder {folder!r} holds no known target; name it after a task ({', '.join(TASKS)})")


def check_layout(path: Path, folder: str, array: np.ndarray, size: tuple[int, int] | None) -> None:
    trailing, kinds = folder_layout(folder)
    if size is None:
        size = array.shape[:2]
    expected = tuple(size) + trailing
    ok_shape = array.shape == expected or (trailing == (1,) and array.shape == expected[:2])  # H x W for one
    if not ok_shape:
        raise DatasetError(f"{path} has shape {array.shape}, expected {expected}")
    if array.dtype.kind not in kinds:
        wanted = " or ".join({"f": "float", "i": "int", "u": "uint"}[k] for k in kinds)
        raise DatasetError(f"{path} has dtype {array.dtype}, expected {wanted}")


NORMAL_TOLERANCE = 0.1  # |length - 1| of a unit normal, allowing for resampled (interpolated) normals
NORMAL_BAD_FRACTION = 0.01  # share of non-zero normals allowed outside the tolerance


def check_array(path: Path, folder: str, array: np.ndarray, size: tuple[int, int] | None,
                num_classes: int) -> None:
    """Shape, dtype and values of one loaded file: images uint8 or float in [0, 1]; labels class ids in
    [0, num_classes) or -1 (ignore); depth finite and >= 0 (0 = no measurement); normals unit length or all
    zero (no measurement). Raises DatasetError naming the file and what is wrong."""
    check_layout(path, folder, array, size)
    if folder == "image":
        if array.dtype != np.uint8:
            if array.dtype.kind != "f" or not np.isfinite(array).all():
                raise DatasetError(f"{path}: image of {array.dtype} with non-finite values; store uint8 or "
                                   f"float in [0, 1]")
            lo, hi = float(array.min()), float(array.max())
            if lo < 0.0 or hi > 1.0 + 1e-3:
                raise DatasetError(f"{path}: float image with values in [{lo:g}, {hi:g}], expected [0, 1] "
                                   f"(0-255 values: store uint8, or divide by 255)")
    elif folder.startswith("label"):
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DatasetError(f"{path}: label map with non-finite values")
        ids = np.rint(array) if array.dtype.kind == "f" else array
        bad = (ids != -1) & ((ids < 0) | (ids >= num_classes))
        if bad.any():
            raise DatasetError(f"{path}: label {ids[bad].flat[0]:g} outside the {num_classes} classes "
                               f"(ids 0..{num_classes - 1}, -1 = ignore) at {int(bad.sum())} pixel(s)")
    elif folder == "depth":
        if not np.isfinite(array).all() or (array < 0).any():
            raise DatasetError(f"{path}: depth must be finite and >= 0 metres (0 = no measurement); "
                               f"found {'non-finite' if not np.isfinite(array).all() else 'negative'} values")
    elif folder == "normal":
        if not np.isfinite(array).all():
            raise DatasetError(f"{path}: normals with non-finite values")
        length = np.sqrt((array.astype(np.float32) ** 2).sum(axis=-1))
        present = length > 0
        off = present & (np.abs(length - 1.0) > NORMAL_TOLERANCE)
        if present.any() and off.sum() > NORMAL_BAD_FRACTION * present.sum():
            raise DatasetError(f"{path}: {100 * off.sum() / present.sum():.0f}% of the normals are not unit length "
                               f"(e.g. {float(length[off].flat[0]):.3g}); expected unit vectors, or 0 for none")


def select_tasks(spec: DatasetSpec, tasks: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The requested tasks ('seg,depth' or a list) that this dataset has targets for, in request order.

    Tasks the dataset lacks are dropped (a 3-task model can be scored on Cityscapes' seg and depth);
    callers that need all of them compare with `.tasks`. Unknown names, or nothing left, raise.
    """
    if tasks is None:
        return spec.tasks
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    repeated = [t for i, t in enumerate(names) if t in names[:i]]
    if repeated:
        raise DatasetError(f"task {repeated[0]!r} is given twice in {','.join(names)!r}; name each task once")
    if unknown:
        raise DatasetError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
    kept = [t for t in names if t in spec.folders]
    if not kept:
        raise DatasetError(f"{spec.title} has no targets for {', '.join(names) or 'no task'}; "
                           f"available: {', '.join(spec.tasks)}")  # fmt: skip
    return kept


class MTANDataset:
    """A map-style dataset (use it with torch's DataLoader) over one split of an MTAN-layout folder.

    `dataset[i]` is a dict of torch tensors: image 3xHxW float32 in [0, 1], seg HxW int64 (-1 = ignore),
    depth 1xHxW float32 (0 = no measurement), normal 3xHxW float32 (all zero = no measurement), only for
    `.tasks` (the requested tasks the dataset has, see `select_tasks`). `read(i)` gives the same as numpy
    arrays without importing torch. Not a torch Dataset subclass, so the torch-free runtime can use it;
    DataLoader, Subset and random_split accept it as it is.
    """

    def __init__(
        self,
        root: str | Path,
        spec: DatasetSpec | str,
        split: str = "train",
        tasks: list[str] | tuple[str, ...] | None = None,
        augment: bool = False,
        generator: Any = None,
    ):
        self.spec = get_spec(spec)
        self.root = Path(root).expanduser()
        self.split = split
        self.tasks = select_tasks(self.spec, tasks)
        self.length = validate_dataset(self.root, self.spec, split)
        self.augment = augment
        self.generator = generator  # a torch.Generator for augmentation, or None for torch's global RNG
        # When set, sample i is augmented from its own generator seeded by (augment_seed, i): what a sample
        # becomes then depends on nothing else that draws random numbers (a method's, a worker's), so runs
        # of one seed see the same augmented batches whatever they train (the trainer sets it per epoch).
        self.augment_seed: int | None = None
        self._size: tuple[int, int] | None = None  # H, W every file must have (from the spec or the images)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def __len__(self) -> int:
        return self.length

    def _load(self, folder: str, index: int) -> np.ndarray:
        return np.load(self.root / self.split / folder / f"{index}.npy", allow_pickle=False)

    def _checked(self, folder: str, index: int) -> np.ndarray:
        """One file, loaded and checked (shape, dtype, values), so that a bad sample is one line naming it."""
        path = self.root / self.split / folder / f"{index}.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DatasetError(f"{path} is not a readable .npy array ({err})") from None
        if self._size is None:
            self._size = native_size(self.root, self.spec) or (array.shape[:2] if folder == "image" else None)
        check_array(path, folder, array, self._size, self.spec.num_classes)
        return array

    def check(self, index: int) -> None:
        """Read sample `index` from every folder of the dataset (all tasks, not only `.tasks`) and check it;
        raises DatasetError naming the first bad file. What `mtl-data check` runs on every sample."""
        for folder in ("image", *self.spec.folders.values()):
            self._checked(folder, index)

    def read(self, index: int) -> dict[str, np.ndarray]:
        """One sample as channel-first numpy arrays (no torch, no augmentation), each file checked."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        image = self._checked("image", index)
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        sample = {"image": np.ascontiguousarray(np.moveaxis(image, -1, 0))}
        for task in self.tasks:
            array = self._checked(self.spec.folders[task], index)
            if TASKS[task].target_channels is None:  # class ids
                sample[task] = (np.rint(array) if array.dtype.kind == "f" else array).astype(np.int64)
            else:
                array = array[..., None] if array.ndim == 2 else array
                sample[task] = np.ascontiguousarray(np.moveaxis(array.astype(np.float32), -1, 0))
        return sample

    def batches(self, batch_size: int, indices: Sequence[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Samples in order (or `indices`), `batch_size` at a time, stacked into numpy arrays: image
        N x 3 x H x W float32, seg N x H x W int64, depth N x 1 x H x W, normal N x 3 x H x W. What a
        DataLoader without shuffling gives, without torch (scoring an exported model needs no torch)."""
        if batch_size < 1:
            raise DatasetError(f"batch size {batch_size}: must be 1 or more")
        order = list(range(self.length) if indices is None else indices)
        for start in range(0, len(order), batch_size):
            samples = [self.read(i) for i in order[start : start + batch_size]]
            yield {key: np.stack([s[key] for s in samples]) for key in samples[0]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        sample = {key: torch.from_numpy(value) for key, value in self.read(index).items()}
        if self.augment:
            from mtlkd.data.augment import random_flip, random_scale_crop

            generator = self.generator
            if self.augment_seed is not None:
                generator = torch.Generator().manual_seed(self.augment_seed * 1_000_003 + index)
            sample = random_flip(random_scale_crop(sample, generator), generator)
        return sample

    def __repr__(self) -> str:
        return f"MTANDataset({self.spec.name}, {self.root}, split={self.split}, n={self.length}, tasks={self.tasks})"
