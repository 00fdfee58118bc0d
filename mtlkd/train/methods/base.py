"""The contract between the trainer and a training method.

A method owns its networks and its losses; the trainer owns the loop, optimiser, schedule,
checkpoints, logging and distribution. So a new method is one small class, not a copy of a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.models import input_size, load_model
from mtlkd.tasks import get_task


@dataclass
class MethodContext:
    """What every method is built from: the network config, the dataset's tasks and classes, options."""

    config: dict[str, Any]  # the (multi-task) network config, from a preset
    tasks: list[str]
    num_classes: int | None
    class_names: list[str] | None
    device: torch.device
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1
    steps_per_epoch: int = 1
    backbone_weights: str | None = None

    def task_config(self, task: str, arch: str = "stl") -> dict[str, Any]:
        """The same network with one task: the single-task baseline/teacher."""
        return {**self.config, "arch": arch, "tasks": [task]}


def forward(net: nn.Module, images: torch.Tensor, tasks: list[str] | None = None,
            return_features: bool = False, target_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Run a network at its own input size and return predictions at the targets' size.

    Data and model sizes may differ (NYUv2 288x384 into a 384x384 ViT): images are resized in, and
    predictions resized back (bilinear; normals re-normalised)."""
    config = unwrap(net).config
    size = input_size(config)
    target_size = target_size or (images.shape[-2], images.shape[-1])
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    out = net(images, tasks=tasks, return_features=return_features)
    if tuple(size) != tuple(target_size):
        for task in tasks or unwrap(net).tasks:
            out[task] = F.interpolate(out[task], size=target_size, mode="bilinear", align_corners=False)
            if get_task(task).output == "unit":
                out[task] = F.normalize(out[task], dim=1)
    return out


def task_losses(preds: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                tasks: list[str]) -> dict[str, torch.Tensor]:
    return {t: get_task(t).loss(preds[t].float(), batch[t]) for t in tasks}


def load_frozen(path: str | Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A trained network for distillation (a teacher): eval mode, no gradients, on `device`."""
    net, metadata = load_model(str(path), device=str(device))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, metadata


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or any `.module`) wrapper."""
    return getattr(net, "module", net)


class Method:
    """Base class. Subclasses set `self.nets` (an nn.ModuleDict of every trainable network) and implement
    `training_step`; the rest has sensible defaults."""

    name = "base"

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.tasks = list(ctx.tasks)
        self.nets = nn.ModuleDict()
        self.extra = nn.ModuleDict()  # non-network trainable state (task weights, omega, adaptors)

    # -- what the trainer asks of a method ------------------------------------------------------------
    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups; a method with its own learning rates (KD-MTL adaptors) overrides this."""
        params = [p for p in list(self.nets.parameters()) + list(self.extra.parameters()) if p.requires_grad]
        return [{"params": params, "lr": lr}]

    def training_step(self, batch: dict[str, torch.Tensor], step: int, epoch: int) -> tuple[torch.Tensor, dict]:
        """Total loss of one batch and the numbers to log (floats, or dicts of floats)."""
        raise NotImplementedError

    def eval_targets(self) -> dict[str, tuple[nn.Module, list[str]]]:
        """What validation measures: name -> (network, tasks). The metrics of all entries are merged
        per task into metrics.json (for STL: each task from its own network)."""
        return {"mtl": (self.nets["mtl"], self.tasks)}

    def checkpoints(self) -> dict[str, nn.Module]:
        """File stem -> network to save as `<stem>.safetensors`; `model` is the deployable one."""
        return {"model": unwrap(self.nets["mtl"])}

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers of the method's own, stepped with the trainer's AdamW but outside its schedule
        (KD-MTL's adaptors: the paper's constant-rate Adam)."""
        return []

    def trained_networks(self, epoch: int) -> set[str]:
        """Names of `eval_targets` that trained in this (0-based) epoch; the epoch selection ignores the
        others (OKD's multi-task network during the single-task warm-up)."""
        return set(self.eval_targets())

    def on_epoch_end(self, epoch: int, epoch_logs: dict[str, Any]) -> dict[str, Any]:
        """Hook after each epoch; returns extra numbers for history.jsonl. A method with a task weighting
        (`self.extra["weighting"]`) hands it the epoch's MTL losses (DWA reads them) and logs its weights."""
        if "weighting" not in self.extra:
            return {}
        self.extra["weighting"].epoch_end(epoch_logs.get("mtl_loss", {}))
        return {"task_weights": epoch_logs.get("task_weights", {})}

    def after_optimizer_step(self) -> None:
        """Hook after each optimiser step (GradNorm renormalises its weights here)."""
        if "weighting" in self.extra:
            self.extra["weighting"].after_step()

    def train(self, mode: bool = True) -> None:
        self.nets.train(mode)
        self.extra.train(mode)

    def to(self, device: torch.device) -> Method:
        self.nets.to(device)
        self.extra.to(device)
        return self
