"""Networks: plain nn.Modules that know nothing of training.

`forward(x, tasks=None, return_features=False) -> dict`: task -> prediction at the input's size
(seg logits, positive depth in metres, unit normals), only for the requested tasks, plus the list of
per-block backbone features under "features" when asked. Input: B x 3 x H x W RGB in [0, 1]; the
normalisation is part of the network so that every exported graph carries it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.models.backbones import BACKBONES
from mtlkd.models.heads import HEADS
from mtlkd.tasks import LOGITS, POSITIVE, UNIT, get_task

ARCHS: dict[str, type[nn.Module]] = {}


def register_arch(name: str):
    def wrap(cls):
        ARCHS[name] = cls
        return cls

    return wrap


def activate(task: str, raw: torch.Tensor) -> torch.Tensor:
    """Apply the task's output convention (see mtlkd.tasks)."""
    output = get_task(task).output
    if output == POSITIVE:
        return F.softplus(raw)
    if output == UNIT:
        return F.normalize(raw, dim=1)
    assert output == LOGITS
    return raw


def build_backbone(config: dict[str, Any]) -> nn.Module:
    spec = dict(config["backbone"])
    return BACKBONES[spec.pop("name")](**spec)


def build_head(config: dict[str, Any], task: str, backbone: nn.Module) -> nn.Module:
    spec = dict(config.get("head", {}))
    kinds = spec.pop("kinds", {})
    kind = kinds.get(task) or ("mask_transformer" if get_task(task).output == LOGITS else "query_regression")
    return HEADS[kind](
        embed_dim=backbone.out_dim,
        out_channels=get_task(task).channels(config.get("num_classes")),
        grid=getattr(backbone, "grid", (1, 1)),
        num_heads=getattr(backbone, "num_heads", 4),
        **spec,
    )


class _Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@register_arch("mtl")
class MultiTaskNet(nn.Module):
    """One shared backbone, one head per task."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.tasks: list[str] = list(config["tasks"])
        self.normalize = _Normalize(config["mean"], config["std"])
        self.backbone = build_backbone(config)
        self.heads = nn.ModuleDict({t: build_head(config, t, self.backbone) for t in self.tasks})

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None, return_features: bool = False):
        size = (x.shape[-2], x.shape[-1])
        blocks, out = self.backbone(self.normalize(x))
        preds: dict[str, Any] = {t: activate(t, self.heads[t](out, size)) for t in (tasks or self.tasks)}
        if return_features:
            preds["features"] = blocks
        return preds

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares (GradNorm reads the last shared layer's gradients)."""
        return list(self.backbone.parameters())


@register_arch("stl")
class SingleTaskNet(MultiTaskNet):
    """Its own backbone and one head: the single-task baseline and the distillation teacher."""

    def __init__(self, config: dict[str, Any]):
        if len(config["tasks"]) != 1:
            raise ConfigError(f"a single-task network takes one task, got {config['tasks']}")
        super().__init__(config)

    @property
    def task(self) -> str:
        return self.tasks[0]
