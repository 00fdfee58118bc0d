"""The options of a training run (`mtl-train`) and of a pretraining run (`mtl-pretrain`), torch-free, so
that the commands take their defaults from here (each default written once) without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mtlkd.errors import ConfigError


@dataclass
class TrainOptions:
    """Everything a run is made of; stored in `run.json` so a run can be resumed and understood."""

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
            raise ConfigError(f"--mask-ratio {self.mask_ratio}: must be in (0, 1)")
        for name in ("images", "epochs", "batch_size", "mask_block"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: must be > 0")
        if self.images < self.batch_size:
            raise ConfigError(f"--images {self.images} is less than one batch of {self.batch_size}")
        if self.img_size is not None:
            self.img_size = (int(self.img_size[0]), int(self.img_size[1]))
            if min(self.img_size) < 8:
                raise ConfigError(f"--img-size {self.img_size[0]}x{self.img_size[1]}: expected HxW of at least 8x8")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device {self.device}: use auto, cpu or cuda")
