"""The options of every training method and task weighting, with the papers' defaults (torch-free, so that
`mtl-train --help` and its flags need nothing heavier; each method and weighting class names its dataclass
as `Options`, and a test checks that the two registries agree).

What each default is and where it comes from is said in the field's help, which is also the flag's help.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mtlkd.errors import ConfigError
from mtlkd.train.options import NoOptions, Options, flag, option

# -- task weightings (mtlkd.train.weighting) ------------------------------------------------------------------
WEIGHTING_NAMES = ("equal", "dwa", "uw", "gradnorm", "rlw", "otw")


@dataclass
class DWAOptions(Options):
    dwa_temperature: float = option(2.0, "DWA's softmax temperature T (Liu et al.: 2).", metavar="T")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dwa_temperature <= 0:
            raise ConfigError(f"--dwa-temperature {self.dwa_temperature}: must be > 0")


@dataclass
class GradNormOptions(Options):
    gradnorm_alpha: float = option(1.5, "GradNorm's asymmetry alpha (Chen et al.'s NYUv2 value: 1.5).",
                                   metavar="ALPHA")


@dataclass
class OTWOptions(Options):
    otw_temperature: float = option(0.1, "OKD's online task weighting temperature T (the paper: 0.1).",
                                    metavar="T")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.otw_temperature <= 0:
            raise ConfigError(f"--otw-temperature {self.otw_temperature}: must be > 0")


WEIGHTING_OPTIONS: dict[str, type] = {"equal": NoOptions, "dwa": DWAOptions, "uw": NoOptions,
                                      "gradnorm": GradNormOptions, "rlw": NoOptions, "otw": OTWOptions}


@dataclass
class WeightingOptions(OTWOptions, GradNormOptions, DWAOptions):
    """A method with a task weighting: the choice, and every weighting's options (each declared once above;
    a method sets its own default choice by redeclaring `task_weighting`)."""

    task_weighting: str = option("equal", "How the task losses are combined.", choices=WEIGHTING_NAMES,
                                 metavar="NAME")

    def __post_init__(self) -> None:
        super().__post_init__()
        own = {f.name for f in dataclasses.fields(WEIGHTING_OPTIONS[self.task_weighting])}
        for cls in set(WEIGHTING_OPTIONS.values()):
            for f in dataclasses.fields(cls):
                if f.name not in own and getattr(self, f.name) != f.default:
                    raise ConfigError(f"{flag(f.name)} applies to another task weighting than {self.task_weighting}; "
                                      f"drop it or pass --task-weighting accordingly")


# -- methods (mtlkd.train.methods) -----------------------------------------------------------------------------
AFD_VARIANTS = ("learned", "equal", "softmax", "select", "last", "none")
PAPER_KD_WEIGHTS = {"seg": 1.0, "depth": 1.0, "normal": 2.0}
KD_LAYERS = ("last", "mid+last")
# The paper's adaptor / network learning-rate ratio: 0.1 / 1e-4 with Adam (kd4mtl-adaptors.txt 554-556).
# By default the adaptors' peak lr is this ratio times the network's (1.0 at our default 1e-3). The adaptor
# output is L2-normalised, so the loss does not depend on the adaptor's scale and Adam-type updates stay
# stable at such rates: on vit-nano (150 AdamW + OneCycle steps, network lr 1e-3) the distillation loss
# ended at 3.17 / 2.10 / 1.81 / 1.76 / 1.76 for adaptor lr 1e-3 / 1e-2 / 0.1 / 1 / 10.
ADAPTOR_LR_RATIO = 1000.0
ADAPTOR_OPTIMIZERS = ("own", "shared")
PAPER_ADAPTOR_LR = 0.1
PAPER_ADAPTOR_WEIGHT_DECAY = 5e-4
KD_LOSSES_DEFAULT_TEMPERATURE = {"cs": 3.0, "kl": 3.0, "dist": 1.0}
REGRESSION_VIEWS = ("spatial", "channel")
PAPER_WARMUP_FRACTION = 5 / 200  # OKD: 5 warm-up epochs of 200


@dataclass
class OKDOptions(WeightingOptions):
    """OKD's options with the paper's defaults (Jacob et al., WACV 2023)."""

    task_weighting: str = option("otw", "How the task losses are combined (OKD's own: otw, eq. 3).",
                                 choices=WEIGHTING_NAMES, metavar="NAME")
    afd: str = option("learned", "Adaptive feature distillation variant (Table 5's ablations; none: no AFD).",
                      choices=AFD_VARIANTS, metavar="VARIANT")
    warmup: float = option(PAPER_WARMUP_FRACTION, "Steps the single-task networks train alone first: a fraction "
                           "of the schedule below 1 (rounded up to a whole step; the paper's 5 of 200 epochs is "
                           f"{PAPER_WARMUP_FRACTION:g}), or a whole number of steps.", metavar="F|STEPS")
    same_init: bool = option(True, "Start every backbone from the same weights (the paper: one ImageNet ViT).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup < 0 or (self.warmup >= 1 and self.warmup != int(self.warmup)):
            raise ConfigError(f"--warmup {self.warmup:g}: expected a fraction of the schedule in [0, 1) or a whole "
                              "number of steps")

    def warmup_steps(self, total_steps: int) -> int:
        """The warm-up in optimiser steps of a schedule of `total_steps`."""
        return math.ceil(self.warmup * total_steps - 1e-9) if self.warmup < 1 else int(self.warmup)


@dataclass
class KDMTLOptions(WeightingOptions):
    """KD-MTL's options with the paper's defaults (Li and Bilen, ECCV-W 2020)."""

    teachers: tuple[str, ...] = option((), "Frozen single-task teachers: stl_<task>.safetensors files or the run "
                                       "folder of an stl run.", metavar="PATH")
    kd_layers: str = option("last", "Distilled blocks: last (the OKD paper's reading) or mid+last (NYUv2, Table 4).",
                            choices=KD_LAYERS, metavar="LAYERS")
    kd_weights: dict[str, float] = option(
        help="Per-task distillation weights lambda_t as task=w pairs; tasks not named keep the paper's NYUv2 "
        f"values ({','.join(f'{t}={w:g}' for t, w in PAPER_KD_WEIGHTS.items())}).", metavar="TASK=W,...",
        factory=dict)
    adaptor_optimizer: str = option("own", f"own: the paper's Adam at a constant {PAPER_ADAPTOR_LR:g}, weight decay "
                                    f"{PAPER_ADAPTOR_WEIGHT_DECAY:g}; shared: a group of the network's AdamW + "
                                    "OneCycle.", choices=ADAPTOR_OPTIMIZERS, metavar="WHICH")
    adaptor_lr: float | None = option(None, f"Adaptor learning rate (own: {PAPER_ADAPTOR_LR:g}; shared: peak, "
                                      f"{ADAPTOR_LR_RATIO:g} x --lr).", metavar="LR")


@dataclass
class KDAMOptions(WeightingOptions):
    """KDAM's options with the paper's defaults ("Loss weights", kdam-cauchy-schwarz-kd.txt line 145)."""

    teacher: str | None = option(None, "The trained multi-task teacher: its model.safetensors or run folder.",
                                 metavar="PATH")
    kd: str = option("cs", "Distillation loss: cs (KDAM's Cauchy-Schwarz), kl (plain KD) or dist (DIST).",
                     choices=tuple(KD_LOSSES_DEFAULT_TEMPERATURE), metavar="LOSS")
    alpha: float = option(1.0, "Weight of the multi-task loss (the paper: 1).", metavar="W")
    beta: float = option(1.0, "Weight of the distillation loss (the paper: 1).", metavar="W")
    kd_temperature: float | None = option(
        None, "Softening temperature T (" + ", ".join(f"{k}: {v:g}" for k, v in KD_LOSSES_DEFAULT_TEMPERATURE.items())
        + "; the paper states 3 for plain KD only).", metavar="T")
    regression_kd: str = option("spatial", "How depth and normals become distributions (mtlkd.train.distill).",
                                choices=REGRESSION_VIEWS, metavar="VIEW")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kd_temperature is not None and self.kd_temperature <= 0:
            raise ConfigError(f"--kd-temperature {self.kd_temperature}: must be > 0")


SEG_TARGET_LOSSES = ("kl", "ce")


@dataclass
class DistillOptions(WeightingOptions):
    """mtl-distill's student (mtlkd.train.methods.replace, losses in mtlkd.train.soft_targets)."""

    seg_loss: str = option("kl", "Segmentation against the teacher: kl (Hinton's soft targets at --seg-temperature) "
                           "or ce (cross-entropy on the teacher's classes).", choices=SEG_TARGET_LOSSES, metavar="LOSS")
    seg_temperature: float = option(1.0, "Temperature T of the soft targets (1: the teacher's own distribution; the "
                                    "loss is scaled by T^2, as Hinton et al.).", metavar="T")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seg_temperature <= 0:
            raise ConfigError(f"--seg-temperature {self.seg_temperature}: must be > 0")


METHOD_OPTIONS: dict[str, type] = {
    "stl": NoOptions, "mtl": WeightingOptions, "cross-stitch": WeightingOptions, "okd": OKDOptions,
    "kd-mtl": KDMTLOptions, "kdam": KDAMOptions, "distill": DistillOptions,
}


def method_flags() -> dict[str, dict[str, Any]]:
    """Every method option once: name -> {"field": the dataclass field, "methods": {method: default}}.
    A name declared by several methods has one type (checked here)."""
    flags: dict[str, dict[str, Any]] = {}
    for method, cls in METHOD_OPTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            entry = flags.setdefault(f.name, {"field": f, "methods": {}})
            if str(entry["field"].type) != str(f.type):
                raise TypeError(f"option {f.name} has two types: {entry['field'].type} and {f.type}")
            entry["methods"][method] = default
    return flags
