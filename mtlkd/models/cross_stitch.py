"""Cross-stitch networks (Misra et al., CVPR 2016) on ViT blocks, the OKD paper's feature-fusion baseline.

One backbone per task ("stream"); after every transformer block a cross-stitch unit replaces each
stream's tokens by a learned linear combination of all streams' tokens,

    x_i <- sum_j alpha_ij x_j,     alpha: N_t x N_t per block,

initialised as Misra et al. found best: 0.9 on the diagonal and 0.1 / (N_t - 1) elsewhere (each row sums
to 1). The streams start from the same weights (Misra et al. start all from one ImageNet network; without
pretrained weights, from one random initialisation), so that the tokens they mix share a basis. Each
task's head reads its own stream after the final norm. Every stream runs whatever tasks are
asked for, because the streams mix. The "features" of `forward(..., return_features=True)` are, per
block, the mean over the streams of the mixed patch tokens (B x N x E, like MultiTaskNet's).

It is a multi-task network: one checkpoint (`arch: cross_stitch`) that `mtlkd.models.load_model` rebuilds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.models.config import ModelConfig
from mtlkd.models.nets import DenseNet, activate, build_backbone, build_head, register_arch

SELF_WEIGHT = 0.9  # Misra et al.'s (alpha_S, alpha_D) = (0.9, 0.1)


def cross_stitch_init(n: int, self_weight: float = SELF_WEIGHT) -> torch.Tensor:
    """N x N: `self_weight` on the diagonal, the rest of each row shared equally by the other tasks."""
    if n == 1:
        return torch.ones(1, 1)
    alpha = torch.full((n, n), (1.0 - self_weight) / (n - 1))
    alpha.fill_diagonal_(self_weight)
    return alpha


class CrossStitchBackbone(nn.Module):
    """N_t ViT streams mixed by a cross-stitch unit after each block.

    `forward(x) -> (blocks, outs)`: `blocks` one B x N x E tensor per block (mean of the mixed streams),
    `outs` task -> that stream's final-normed patch tokens (what its head reads)."""

    def __init__(self, config: ModelConfig, tasks: list[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.streams = nn.ModuleDict({t: build_backbone(config) for t in self.tasks})
        first = self.streams[self.tasks[0]]
        if not hasattr(first, "vit"):
            raise ConfigError(f"cross-stitch mixes ViT blocks; backbone {config.backbone.name!r} is not a ViT")
        for task in self.tasks[1:]:  # one initialisation for all streams, as one pretrained checkpoint gives:
            self.streams[task].load_state_dict(first.state_dict())  # mixing needs features in one basis
        self.depth = first.depth
        self.embed_dim = first.embed_dim
        self.out_dim = first.out_dim
        self.num_heads = first.num_heads
        self.grid = first.grid
        self.num_prefix = first.num_prefix
        self.output_stride = first.output_stride
        init = cross_stitch_init(len(self.tasks))
        self.units = nn.ParameterList([nn.Parameter(init.clone()) for _ in range(self.depth)])

    @property
    def feature_dims(self) -> list[int]:
        return [self.embed_dim] * self.depth

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        vits = [self.streams[t].vit for t in self.tasks]
        states = [self.streams[t].tokens(x) for t in self.tasks]
        blocks = []
        for layer, alpha in enumerate(self.units):
            stacked = torch.stack([vit.blocks[layer](h) for vit, h in zip(vits, states, strict=True)])
            mixed = torch.tensordot(alpha.to(stacked.dtype), stacked, dims=1)  # N_t x B x T x E
            states = list(mixed.unbind(0))
            blocks.append(mixed.mean(dim=0)[:, self.num_prefix :])
        outs = {t: vit.norm(h)[:, self.num_prefix :] for t, vit, h in zip(self.tasks, vits, states, strict=True)}
        return blocks, outs

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """The same local timm ViT weights into every stream; returns the first stream's (missing,
        unexpected) keys (all streams are alike)."""
        results = [stream.load_pretrained(path) for stream in self.streams.values()]
        return results[0]


@register_arch("cross_stitch")
class CrossStitchNet(DenseNet):
    """Cross-stitch multi-task network; the same forward contract as MultiTaskNet."""

    def __init__(self, config: ModelConfig | dict[str, Any]):
        super().__init__(config)
        self.backbone = CrossStitchBackbone(self.config, self.tasks)
        self.heads = nn.ModuleDict({t: build_head(self.config, t, self.backbone) for t in self.tasks})

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None, return_features: bool = False):
        size = self._size(x)
        blocks, outs = self.backbone(self.normalize(x))
        preds: dict[str, Any] = {t: activate(t, self.heads[t](outs[t], size)) for t in self._tasks(tasks)}
        if return_features:
            preds["features"] = blocks
        return preds

    def shared_parameters(self) -> list[nn.Parameter]:
        """The only parameters all tasks share are the cross-stitch units (GradNorm takes the last)."""
        return list(self.backbone.units)

    def stitch_matrices(self) -> list[list[list[float]]]:
        """alpha of every block as nested lists (for history.jsonl)."""
        return [unit.detach().float().cpu().tolist() for unit in self.backbone.units]
