"""Online knowledge distillation for multi-task learning (OKD; Jacob, Agarwal and Stenger, WACV 2023).

One multi-task network and one single-task network per task (each with its own backbone) train together
in one loop, on the loss of eq. 1:

    L = L_AFD + sum_i (L_STL^i + lambda_i L_MTL^i)

- L_AFD, adaptive feature distillation (eq. 2), pulls every block's MTL features towards a learned
  per-layer combination of the single-task networks' features, which are detached: no gradient of
  L_AFD reaches a single-task network (`AdaptiveFeatureDistillation`).
- lambda_i is the task weighting, by default OKD's online task weighting (eq. 3, `otw` in
  mtlkd.train.weighting, T = 0.1), computed from the current MTL and STL losses without gradient.
  Any other weighting can be chosen with `task_weighting` (`equal` gives Table 4's OKD-MTL-AFD row).
- For the first `warmup` steps (the paper: 5 of 200 epochs, 2.5% of the schedule) only the single-task
  networks train; an epoch in which the warm-up ends counts as joint.
- All backbones start from the same weights (the paper: one ImageNet ViT-Ti; here `--backbone-weights`,
  or without it one random initialisation copied into every network; `same_init=False` switches that off).

The single-task networks are kept: they are validated as `stl_<task>` and saved as
`stl_<task>.safetensors` next to the multi-task `model.safetensors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import (
    MethodContext,
    StudentMethod,
    Trained,
    WeightingOptions,
    forward,
    task_losses,
    unwrap,
)
from mtlkd.train.options import option
from mtlkd.train.weighting import OnlineTaskWeighting, weighting_choices
from mtlkd.ui import console

AFD_VARIANTS = ("learned", "equal", "softmax", "select", "last", "none")
PAPER_WARMUP_FRACTION = 5 / 200  # OKD: 5 warm-up epochs of 200


@dataclass
class OKDOptions(WeightingOptions):
    """OKD's options with the paper's defaults (Jacob et al., WACV 2023)."""

    task_weighting: str = option(OnlineTaskWeighting.name, "How the task losses are combined (OKD's own: otw, "
                                 "eq. 3):", choices=weighting_choices, metavar="NAME")
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


class AdaptiveFeatureDistillation(nn.Module):
    """L_AFD of eq. 2 and the ablations of Table 5:

        L_AFD = sum_l mean( (f_MTL(l) - sum_i omega_i^l sg[f_STL^i(l)])^2 )

    over the backbone blocks l, where sg[] stops the gradient (the STL features are detached, as the
    paper does). Normalisation: eq. 2's squared L2 norm is divided by the number of elements of f(l)
    (batch x tokens x channels), i.e. a mean squared error per layer, summed over layers, so that the
    loss does not grow with the batch size or the input resolution and sits on the scale of the task
    losses it is added to with weight 1.

    omega is an L x N_t parameter initialised uniformly in [0, 2 / N_t] ("randomly initialised"; mean
    1 / N_t, so that on average the target starts as the mean of the single-task features) and trained
    by the same optimiser and schedule as the networks. The variant transforms it:

    - learned (AFD-ours): omega as it is.
    - equal: omega fixed to 1 (a buffer, not trained).
    - softmax: softmax of omega over the tasks, per layer (each layer's weights sum to 1).
    - select (AFD-select/skip): only the task with the largest softmax weight in each layer, weight 1;
      straight-through: the forward value is the one-hot selection, the gradient is that of the
      softmax, so omega keeps learning and the selection can change.
    - last (AFD-last layer): one learned row, applied to one block only: the penultimate one, as the
      paper describes the row ("feature distillation on the penultimate layer only, similar to KD-MTL",
      section 4.3, on Table 5); with a single block, that block.
    - none: no feature distillation (Table 4's OKD-MTL-OTW row).
    """

    def __init__(self, variant: str, tasks: list[str], num_layers: int):
        super().__init__()
        if variant not in AFD_VARIANTS:
            raise ConfigError(f"unknown afd variant {variant!r}; known: {', '.join(AFD_VARIANTS)}")
        self.variant = variant
        self.tasks = list(tasks)
        n = len(self.tasks)
        if variant == "none":
            self.layers: list[int] = []
        elif variant == "last":
            self.layers = [max(num_layers - 2, 0)]
        else:
            self.layers = list(range(num_layers))
        shape = (len(self.layers), n)
        if variant == "equal":
            self.register_buffer("omega", torch.ones(shape))
        elif variant != "none":
            self.omega = nn.Parameter(torch.rand(shape) * (2.0 / n))

    @property
    def enabled(self) -> bool:
        return bool(self.layers)

    def effective_omega(self) -> torch.Tensor:
        """The weights eq. 2 uses, one row per distilled layer (`self.layers`), one column per task."""
        if not self.enabled:
            return torch.zeros(0, len(self.tasks))
        omega = self.omega
        if self.variant == "softmax":
            return torch.softmax(omega, dim=1)
        if self.variant == "select":
            soft = torch.softmax(omega, dim=1)
            hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).to(soft.dtype)
            return hard + soft - soft.detach()
        return omega

    def forward(self, mtl_features: list[torch.Tensor], stl_features: list[list[torch.Tensor]]) -> torch.Tensor:
        """mtl_features: one tensor per block; stl_features: per task (in `self.tasks` order) the same."""
        omega = self.effective_omega()
        loss = mtl_features[0].new_zeros((), dtype=torch.float32)
        for row, layer in enumerate(self.layers):
            target = sum(omega[row, i] * feats[layer].detach().float() for i, feats in enumerate(stl_features))
            loss = loss + F.mse_loss(mtl_features[layer].float(), target)
        return loss

    @torch.no_grad()
    def report(self) -> list[dict[str, float]]:
        """Effective omega per distilled layer, {task: value}, for history.jsonl and omega.png."""
        return [
            {t: float(v) for t, v in zip(self.tasks, row.tolist(), strict=True)}
            for row in self.effective_omega().detach().float().cpu()
        ]


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@register_method("okd", help="online distillation from single-task networks trained alongside (Jacob et al.)")
class OKDMethod(StudentMethod):
    """The multi-task student (`mtl`) and one single-task network per task (`stl_<task>`); see OKDOptions."""

    Options = OKDOptions
    provides_reference = True

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        for task in self.tasks:
            self.nets[f"stl_{task}"] = ctx.create_network(ctx.task_config(task), f"stl_{task}")
        self.same_init = self.options.same_init
        if self.same_init and not ctx.backbone_weights:
            # The paper starts every network from the same ImageNet ViT-Ti, so block l of each one speaks the
            # same basis and eq. 2's distance between them means something. Without pretrained weights,
            # independent random initialisations would make AFD pull the MTL features towards an arbitrary
            # rotation of its own; the single-task backbones start as copies of the MTL one instead.
            shared = unwrap(self.student).backbone.state_dict()
            for task in self.tasks:
                self.nets[f"stl_{task}"].backbone.load_state_dict(shared)
        self.weighting_name = self.options.task_weighting
        num_layers = len(unwrap(self.student).feature_dims)
        self.extra["afd"] = AdaptiveFeatureDistillation(self.options.afd, self.tasks, num_layers)

        total = ctx.epochs * ctx.steps_per_epoch
        warmup = self.options.warmup_steps(total)
        if warmup > total - ctx.steps_per_epoch:
            clamped = max(total - ctx.steps_per_epoch, 0)
            if _is_main_process():
                console.print(
                    f"[yellow]warning:[/] okd: a warm-up of {warmup} single-task steps leaves the multi-task "
                    f"network less than an epoch of {total} steps; warming up for {clamped} (set --warmup)"
                )
            warmup = clamped
        self.warmup_steps = warmup

    @property
    def afd(self) -> AdaptiveFeatureDistillation:
        return self.extra["afd"]

    def training_step(self, batch, step, epoch):
        images = batch["image"]
        joint = step >= self.warmup_steps
        with_features = joint and self.afd.enabled

        stl_losses: dict[str, torch.Tensor] = {}
        stl_features: list[list[torch.Tensor]] = []
        for task in self.tasks:
            out = forward(self.nets[f"stl_{task}"], images, [task], return_features=with_features)
            stl_losses.update(task_losses(out, batch, [task]))
            if with_features:
                stl_features.append(out["features"])
        loss = sum(stl_losses.values())
        logs: dict = {"stl_loss": {t: v.item() for t, v in stl_losses.items()}}
        if not joint:  # warm-up: the single-task networks alone
            return loss, logs

        out, mtl_losses, weighted, weights = self.student_losses(
            images, batch, return_features=with_features, reference={t: v.detach() for t, v in stl_losses.items()})
        afd = self.afd(out["features"], stl_features) if with_features else weighted.new_zeros(())
        loss = afd + loss + weighted
        logs.update(mtl_loss={t: v.item() for t, v in mtl_losses.items()}, task_weights=weights,
                    afd_loss=afd.item())
        return loss, logs

    def networks(self):
        networks = super().networks()
        networks.update({f"stl_{t}": Trained(self.nets[f"stl_{t}"], [t], f"stl_{t}") for t in self.tasks})
        return networks

    def _joint_in(self, epoch: int) -> bool:
        """Whether the multi-task network trained in (0-based) `epoch`: some of its steps came after the warm-up."""
        return (epoch + 1) * self.ctx.steps_per_epoch > self.warmup_steps

    def trained_networks(self, epoch):
        names = set(self.networks())
        return names if self._joint_in(epoch) else names - set(super().networks())

    def on_epoch_end(self, epoch, epoch_logs):
        record: dict = {"okd_phase": "joint" if self._joint_in(epoch) else "stl_warmup"}
        record.update({k: v for k, v in super().on_epoch_end(epoch, epoch_logs).items() if v})  # none in warm-up
        if self.afd.enabled:
            record["omega"] = self.afd.report()
        return record
