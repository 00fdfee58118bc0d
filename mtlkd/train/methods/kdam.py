"""KDAM (Xu, Yang, Zhang): one strong, trained multi-task teacher distils its predictions into a
multi-task student with the Cauchy-Schwarz divergence, inter-task (each instance's distribution, eq. 5)
plus intra-task (each channel across the batch, eq. 6):

    L_total = alpha * L_mt + beta * sum_tasks (L_inter + L_intra)          (eq. 7, 9)

Defaults from the paper's "Loss weights" paragraph (section 4.1, Experiment setup): alpha = beta = 1
for KDAM and for plain KD, and T = 3 (the only temperature the paper states, the plain-KD default, which we
use for KDAM too: its T for KDAM is searched per teacher-student pair and not reported). `kd`: cs (KDAM), kl (plain KD:
T^2 KL on the instance distributions, no intra term, as Hinton's KD) or dist (DIST; T = 1 by default,
DIST's own default). How depth and normals get distributions: see mtlkd.train.distill.

Options: KDAMOptions (below): teacher (checkpoint path, or a run folder holding
model.safetensors), kd, alpha, beta, kd_temperature, task_weighting (the lambda_n of eq. 8; default equal),
regression_kd (spatial, default, or channel: how depth and normals become distributions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtlkd.errors import CheckpointError, ConfigError
from mtlkd.train.distill import REGRESSION_VIEWS, task_kd_loss
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import MethodContext, StudentMethod, WeightingOptions, forward, load_frozen, unwrap
from mtlkd.train.options import option

KD_LOSSES_DEFAULT_TEMPERATURE = {"cs": 3.0, "kl": 3.0, "dist": 1.0}


@dataclass
class KDAMOptions(WeightingOptions):
    """KDAM's options with the paper's defaults ("Loss weights", section 4.1)."""

    teacher: str | None = option(None, "The trained multi-task teacher: its model.safetensors or run folder.",
                                 metavar="PATH")
    kd: str = option("cs", "Distillation loss: cs (KDAM's Cauchy-Schwarz), kl (plain KD) or dist (DIST).",
                     choices=tuple(KD_LOSSES_DEFAULT_TEMPERATURE), metavar="LOSS")
    alpha: float = option(1.0, "Weight of the multi-task loss (the paper: 1).", metavar="W")
    beta: float = option(1.0, "Weight of the distillation loss (the paper: 1).", metavar="W")
    kd_temperature: float | None = option(
        None, "Softening temperature T (" + ", ".join(f"{k}: {v:g}" for k, v in KD_LOSSES_DEFAULT_TEMPERATURE.items())
        + "; the paper states 3 for plain KD only).", metavar="T", positive=True)
    regression_kd: str = option("spatial", "How depth and normals become distributions (mtlkd.train.distill).",
                                choices=REGRESSION_VIEWS, metavar="VIEW")


@register_method("kdam", help="a trained multi-task teacher, Cauchy-Schwarz divergence (Xu et al.)")
class KDAMMethod(StudentMethod):
    Options = KDAMOptions

    def __init__(self, ctx: MethodContext):
        parsed = self.read_options(ctx.options)  # parsed once: super().__init__ takes them as they are
        options = parsed.method
        teacher_path = _teacher_file(options.teacher)  # before any network is built: the likeliest mistake
        super().__init__(dataclasses.replace(ctx, options=parsed))
        self.kd = options.kd
        self.alpha = options.alpha
        self.beta = options.beta
        default = KD_LOSSES_DEFAULT_TEMPERATURE[self.kd]
        self.temperature = default if options.kd_temperature is None else options.kd_temperature
        self.regression_kd = options.regression_kd
        self.teacher_path = teacher_path
        # The frozen teacher lives outside self.nets: the optimiser and DDP never see it.
        self.teacher, meta = load_frozen(self.teacher_path, ctx.device)
        self._check_teacher(meta)

    def _check_teacher(self, meta: dict[str, Any]) -> None:
        teacher_tasks = list(meta.get("tasks") or unwrap(self.teacher).tasks)
        missing = [t for t in self.tasks if t not in teacher_tasks]
        if missing:
            raise CheckpointError(
                f"teacher {self.teacher_path} predicts {', '.join(teacher_tasks)} but not {', '.join(missing)}; "
                "KDAM needs a multi-task teacher covering every task of the student"
            )
        if "seg" in self.tasks and meta.get("num_classes") != self.ctx.num_classes:
            raise CheckpointError(
                f"teacher {self.teacher_path} segments {meta.get('num_classes')} classes, the data has "
                f"{self.ctx.num_classes}"
            )

    def training_step(self, batch, step, epoch):
        images = batch["image"]
        preds, losses, l_mt, weights = self.student_losses(images, batch)
        with torch.no_grad():
            # Each network at its own input size; both predictions come back at the batch's size.
            teacher_preds = forward(self.teacher, images, self.tasks)
        kd_losses, inter, intra = {}, {}, {}
        for task in self.tasks:
            kd_losses[task], parts = task_kd_loss(task, preds[task], teacher_preds[task], self.kd, self.temperature,
                                                       self.regression_kd)
            inter[task], intra[task] = parts["inter"], parts["intra"]
        l_kd = sum(kd_losses.values())
        total = self.alpha * l_mt + self.beta * l_kd
        logs = {
            "mtl_loss": {t: v.item() for t, v in losses.items()},
            "kd_loss": {t: v.item() for t, v in kd_losses.items()},
            "kd_inter": inter,
            "kd_intra": intra,
            "task_weights": weights,
            "alpha": self.alpha,
            "beta": self.beta,
        }
        return total, logs


    def to(self, device: torch.device) -> KDAMMethod:
        super().to(device)
        self.teacher.to(device)
        return self


def _teacher_file(value: Any) -> Path:
    if not value:
        raise ConfigError(
            "kdam needs a trained multi-task teacher: train one first (mtl-train DATASET --method mtl "
            "--preset vit-small --out runs/teacher) and pass --teacher runs/teacher/model.safetensors"
        )
    path = Path(value)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"--teacher {value}: no such checkpoint (expected a model.safetensors or its run folder)")
    return path
