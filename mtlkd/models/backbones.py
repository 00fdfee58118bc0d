"""Backbones return every block's features, because the distillation methods read them all.

`forward(x) -> (blocks, out)`: `blocks` is one tensor per block (B x N x E patch tokens for a ViT,
B x C x h x w maps for a CNN) and `out` is what the heads read (for a ViT: the final-normed patch
tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mtlkd.errors import CheckpointError

BACKBONES: dict[str, type[nn.Module]] = {}


def register_backbone(name: str):
    def wrap(cls):
        BACKBONES[name] = cls
        return cls

    return wrap


@register_backbone("vit")
class ViTBackbone(nn.Module):
    """A timm VisionTransformer built locally (no download), returning the patch tokens of every block."""

    def __init__(
        self,
        img_size: tuple[int, int] = (384, 384),
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(
            img_size=tuple(img_size),
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            num_classes=0,
            global_pool="",
            drop_path_rate=drop_path,
        )
        self.embed_dim = embed_dim
        self.out_dim = embed_dim  # channels of `out`, what the heads read
        self.num_heads = num_heads
        self.depth = depth
        self.grid = tuple(self.vit.patch_embed.grid_size)
        self.num_prefix = self.vit.num_prefix_tokens

    @property
    def feature_dims(self) -> list[int]:
        return [self.embed_dim] * self.depth

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        blocks = []
        for block in vit.blocks:
            x = block(x)
            blocks.append(x[:, self.num_prefix :])
        return blocks, vit.norm(x)[:, self.num_prefix :]

    def load_pretrained(self, path: str | Path) -> tuple[list[str], list[str]]:
        """Load a local timm ViT checkpoint (safetensors), resampling the position embedding when the
        input size differs; the classifier head is dropped. Returns (missing, unexpected) keys."""
        from safetensors.torch import load_file
        from timm.layers import resample_abs_pos_embed

        state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("head.")}
        pos = state.get("pos_embed")
        if pos is not None and pos.shape != self.vit.pos_embed.shape:
            state["pos_embed"] = resample_abs_pos_embed(
                pos, new_size=list(self.grid), num_prefix_tokens=self.num_prefix
            )
        try:
            result = self.vit.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes that do not fit: another width or depth
            detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
            raise CheckpointError(f"{path}: weights do not fit this ViT ({detail}); pass a checkpoint of the same "
                             "width and depth") from None
        return list(result.missing_keys), list(result.unexpected_keys)
