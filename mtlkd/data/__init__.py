"""Datasets: NYUv2 and Cityscapes in the MTAN layout, and the embedded synthetic rooms.

`open_dataset("synthetic")` needs nothing: the first call renders the default synthetic set into a cache
folder ($MTLKD_CACHE or ~/.cache/mtlkd). Real datasets are never downloaded; pass their folder.
Importing this package does not import torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mtlkd.data.mtan import (
    DATASET_NAMES,
    SPECS,
    DatasetError,
    DatasetSpec,
    MTANDataset,
    get_spec,
    validate_dataset,
)

SYNTHETIC_DEFAULTS = {"n_train": 800, "n_val": 200, "size": (96, 128), "seed": 0}

__all__ = [
    "DATASET_NAMES",
    "SPECS",
    "SYNTHETIC_DEFAULTS",
    "DatasetError",
    "DatasetSpec",
    "MTANDataset",
    "cache_dir",
    "create_synthetic",
    "ensure_synthetic",
    "get_spec",
    "open_dataset",
    "validate_dataset",
]


def cache_dir() -> Path:
    """Where generated data lives: $MTLKD_CACHE, else ~/.cache/mtlkd."""
    return Path(os.environ.get("MTLKD_CACHE") or Path.home() / ".cache" / "mtlkd").expanduser()


def ensure_synthetic(
    n_train: int = 800,
    n_val: int = 200,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    progress: bool = True,
    cache: Path | None = None,
) -> Path:
    """The cached synthetic set with these parameters, rendered on first use.

    Rendering goes to a temporary sibling folder that is renamed into place only when complete, so an
    interrupted run never leaves a half dataset, and two processes racing both end up with a whole one.
    """
    base = Path(cache) if cache is not None else cache_dir()
    target = base / f"synthetic-{size[0]}x{size[1]}-s{seed}-n{n_train}-{n_val}"
    if (target / "meta.json").is_file():
        return target
    if target.exists() and not (target / "meta.json").is_file():
        shutil.rmtree(target)  # a leftover of the cache's own without meta.json cannot be trusted
    try:
        return create_synthetic(target, n_train, n_val, size=size, seed=seed, progress=progress)
    except OSError:
        if not (target / "meta.json").is_file():  # not someone else's finished copy: a real failure
            raise
    return target


def create_synthetic(out: str | Path, n_train: int, n_val: int, size: tuple[int, int] = (96, 128), seed: int = 0,
                     progress: bool = True) -> Path:
    """Render the synthetic set into a new folder `out` (absent or empty): built beside it and renamed into
    place when complete, so `out` is a whole dataset or nothing. An `out` holding files is refused
    (FileExistsError naming it): files of an earlier set would mix into this one."""
    from mtlkd.data.synthetic import write_synthetic
    from mtlkd.files import build_folder

    return build_folder(out, lambda stage: write_synthetic(stage, n_train, n_val, size=size, seed=seed,
                                                           progress=progress))


def open_dataset(
    name: str,
    data_dir: str | Path | None = None,
    split: str = "train",
    tasks: list[str] | tuple[str, ...] | None = None,
    augment: bool = False,
    progress: bool = True,
) -> MTANDataset:
    """One split of a dataset by name (see DATASET_NAMES); raises DatasetError with a one-line fix."""
    spec = get_spec(name)
    if data_dir is None:
        if spec.name != "synthetic":
            hint = spec.source.format(root="DIR")
            raise DatasetError(f"{spec.title} needs --data-dir DIR (nothing is downloaded). {hint}")
        data_dir = ensure_synthetic(**SYNTHETIC_DEFAULTS, progress=progress)
    return MTANDataset(data_dir, spec, split=split, tasks=tasks, augment=augment)
