"""Networks: plain nn.Modules that know nothing of training.

`forward(x, tasks=None, return_features=False) -> dict`: task -> prediction at the input's size
(seg logits, positive depth in metres, unit normals), for the requested tasks (None: every task; []:
none), plus the list of per-block backbone features under "features" when asked. `features(x)` gives
those features alone. A network is built from a typed `ModelConfig` (or its JSON form) and keeps it as
`config`. Input: B x 3 x H x W RGB in [0, 1]; the
normalisation is part of the network so that every exported graph carries it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.models.backbones import BACKBONES
from mtlkd.models.config import ModelConfig, as_model_config
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


def build_backbone(config: ModelConfig) -> nn.Module:
    return BACKBONES[config.backbone.name](config.backbone)


def build_head(config: ModelConfig, task: str, backbone: nn.Module) -> nn.Module:
    head = config.heads[task]
    return HEADS[head.kind].from_config(head, backbone, get_task(task).channels(config.num_classes))


class _Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class DenseNet(nn.Module):
    """What every network shares: its typed config, tasks, input normalisation, the output-size switch.

    `full_resolution` (True, the default, what training uses): predictions at the input's size. False: each
    head's map at its own grid, `output_stride` times smaller per side (bilinear upsampling of it by
    `output_stride`, align_corners=False, is what the full-resolution path computes for class logits; for
    depth and normals the activation comes before rather than after that upsampling)."""

    def __init__(self, config: ModelConfig | dict[str, Any]):
        super().__init__()
        self.config = as_model_config(config)
        self.tasks: list[str] = list(self.config.tasks)
        self.normalize = _Normalize(self.config.mean, self.config.std)
        self.full_resolution = True

    @property
    def output_stride(self) -> int:
        """Input pixels per output-map cell, per side, when `full_resolution` is off."""
        return int(self.backbone.output_stride)

    def _tasks(self, tasks: list[str] | None) -> list[str]:
        """None: every task; a list: those (an empty list: none)."""
        if tasks is None:
            return self.tasks
        unknown = [t for t in tasks if t not in self.heads]
        if unknown:
            raise ConfigError(f"this network predicts {', '.join(self.tasks)}, not {', '.join(unknown)}")
        return list(tasks)

    def _size(self, x: torch.Tensor) -> tuple[int, int] | None:
        return (x.shape[-2], x.shape[-1]) if self.full_resolution else None

    @property
    def feature_dims(self) -> list[int]:
        """Channels of each block's features (what `features` returns, in order)."""
        return list(self.backbone.feature_dims)

    @property
    def feature_grid(self) -> tuple[int, int] | None:
        """(h, w) of the token grid of a ViT's B x N x E features; None for B x C x h x w maps."""
        grid = getattr(self.backbone, "grid", None)
        return tuple(grid) if grid is not None else None

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The per-block backbone features of B x 3 x H x W images in [0, 1] (no head runs)."""
        blocks, _ = self.backbone(self.normalize(images))
        return blocks


@register_arch("mtl")
class MultiTaskNet(DenseNet):
    """One shared backbone, one head per task."""

    def __init__(self, config: ModelConfig | dict[str, Any]):
        super().__init__(config)
        self.backbone = build_backbone(self.config)
        self.heads = nn.ModuleDict({t: build_head(self.config, t, self.backbone) for t in self.tasks})

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None, return_features: bool = False):
        size = self._size(x)
        blocks, out = self.backbone(self.normalize(x))
        preds: dict[str, Any] = {t: activate(t, self.heads[t](out, size)) for t in self._tasks(tasks)}
        if return_features:
            preds["features"] = blocks
        return preds

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares (GradNorm reads the last shared layer's gradients)."""
        return list(self.backbone.parameters())


@register_arch("stl")
class SingleTaskNet(MultiTaskNet):
    """Its own backbone and one head: the single-task baseline and the distillation teacher."""

    def __init__(self, config: ModelConfig | dict[str, Any]):
        config = as_model_config(config)
        if len(config.tasks) != 1:
            raise ConfigError(f"a single-task network takes one task, got {list(config.tasks)}")
        super().__init__(config)

    @property
    def task(self) -> str:
        return self.tasks[0]
