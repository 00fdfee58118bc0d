"""Task heads of Fig. 2 of the OKD paper: learned queries attend with the patch tokens, then a scalar
product of patches and queries gives per-patch outputs that are upsampled to the input size (or left at
the token grid: `forward(tokens, size=None)`). A head class is built by `from_config(config, backbone,
out_channels)` from its kind's typed config; what the backbone fixes (width, grid, attention heads) comes
from the backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from mtlkd.models.config import MaskTransformerConfig, QueryRegressionConfig

HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str):
    def wrap(cls):
        HEADS[name] = cls
        return cls

    return wrap


class _QueryDecoder(nn.Module):
    """Shared by both heads: `num_queries` learned queries and the patch tokens pass through `layers`
    transformer layers together; returns L2-normalised patch and query embeddings (Segmenter's choice,
    which keeps the scalar products in [-1, 1] and the training stable)."""

    def __init__(self, embed_dim: int, num_queries: int, layers: int, num_heads: int):
        super().__init__()
        self.proj_in = nn.Linear(embed_dim, embed_dim)
        self.queries = nn.Parameter(torch.randn(1, num_queries, embed_dim) * 0.02)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(embed_dim)
        self.proj_patch = nn.Linear(embed_dim, embed_dim, bias=False)
        self.proj_query = nn.Linear(embed_dim, embed_dim, bias=False)
        self.num_queries = num_queries

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x N x E patch tokens -> B x N x Q scalar products."""
        n = tokens.shape[1]
        x = torch.cat([self.proj_in(tokens), self.queries.expand(tokens.shape[0], -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        patches = F.normalize(self.proj_patch(x[:, :n]), dim=-1)
        queries = F.normalize(self.proj_query(x[:, n:]), dim=-1)
        return patches @ queries.transpose(1, 2)


def _to_map(per_patch: torch.Tensor, grid: tuple[int, int], size: tuple[int, int] | None) -> torch.Tensor:
    """B x N x C per-patch values -> B x C x H x W at `size` (bilinear), or at the token grid when `size`
    is None."""
    b, _, c = per_patch.shape
    maps = per_patch.transpose(1, 2).reshape(b, c, grid[0], grid[1])
    if size is None:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


@register_head("mask_transformer")
class MaskTransformerHead(nn.Module):
    """Segmenter-style classification head: one learned query per class; the class map of a patch is the
    scalar product of its embedding with each class embedding (Fig. 2a)."""

    def __init__(self, embed_dim: int, out_channels: int, grid: tuple[int, int], layers: int = 2,
                 num_heads: int = 3):
        super().__init__()
        self.decoder = _QueryDecoder(embed_dim, out_channels, layers, num_heads)
        self.mask_norm = nn.LayerNorm(out_channels)
        self.grid = tuple(grid)

    @classmethod
    def from_config(cls, config: MaskTransformerConfig, backbone: nn.Module, out_channels: int) -> nn.Module:
        return cls(backbone.out_dim, out_channels, backbone.grid, config.layers, backbone.num_heads)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        return _to_map(self.mask_norm(self.decoder(tokens)), self.grid, size)


@register_head("query_regression")
class QueryRegressionHead(nn.Module):
    """Regression head of Fig. 2b: N_reg learned queries (128 in the paper), scalar product with the
    patches, then an MLP to the task's channels (1 for depth, 3 for normals). With `product_norm`, a
    LayerNorm over the N_reg products first (the classification head's mask norm): the learned queries
    start nearly parallel (cosine about 0.99), so the raw products barely vary across patches and the
    head would begin as a near-constant map; normalised, the MLP reads them at unit scale."""

    def __init__(self, embed_dim: int, out_channels: int, grid: tuple[int, int], layers: int = 2,
                 num_heads: int = 3, num_queries: int = 128, product_norm: bool = False):
        super().__init__()
        self.decoder = _QueryDecoder(embed_dim, num_queries, layers, num_heads)
        self.product_norm = nn.LayerNorm(num_queries) if product_norm else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(num_queries, num_queries), nn.GELU(), nn.Linear(num_queries, out_channels)
        )
        self.grid = tuple(grid)

    @classmethod
    def from_config(cls, config: QueryRegressionConfig, backbone: nn.Module, out_channels: int) -> nn.Module:
        return cls(backbone.out_dim, out_channels, backbone.grid, config.layers, backbone.num_heads,
                   config.num_queries, config.product_norm)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        return _to_map(self.mlp(self.product_norm(self.decoder(tokens))), self.grid, size)
