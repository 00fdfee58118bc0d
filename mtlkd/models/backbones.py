"""Backbones return every block's features, because the distillation methods read them all.

`forward(x) -> (blocks, out)`: `blocks` is one tensor per block (B x N x E patch tokens for a ViT,
B x C x h x w maps for a CNN) and `out` is what the heads read (for a ViT: the final-normed patch
tokens). A backbone is built from its typed config (mtlkd.models.config) and says its `output_stride`
(input pixels per feature-map cell, per side).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mtlkd.errors import CheckpointError
from mtlkd.models.config import ViTConfig

BACKBONES: dict[str, type[nn.Module]] = {}


def register_backbone(name: str):
    def wrap(cls):
        BACKBONES[name] = cls
        return cls

    return wrap


@register_backbone("vit")
class ViTBackbone(nn.Module):
    """A timm VisionTransformer built locally (no download), returning the patch tokens of every block."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.config = config
        self.vit = VisionTransformer(
            img_size=tuple(config.img_size),
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            num_classes=0,
            global_pool="",
            drop_path_rate=config.drop_path,
        )
        self.embed_dim = config.embed_dim
        self.out_dim = config.embed_dim  # channels of `out`, what the heads read
        self.num_heads = config.num_heads
        self.depth = config.depth
        self.grid = tuple(self.vit.patch_embed.grid_size)
        self.num_prefix = self.vit.num_prefix_tokens
        self.output_stride = config.patch_size  # input pixels per token, per side

    @property
    def feature_dims(self) -> list[int]:
        return [self.embed_dim] * self.depth

    def add_position(self, patches: torch.Tensor) -> torch.Tensor:
        """B x N x E patch tokens -> B x (1 + N) x E: the class token in front, then the learned position
        embedding (which covers the class token too, as in the original ViT), then timm's pre-norm. Written
        out with the model's public attributes so that no private timm method is called; the presets build
        the timm model this covers (class token, no register tokens, fixed image size)."""
        vit = self.vit
        if vit.cls_token is not None:
            patches = torch.cat([vit.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        tokens = vit.pos_drop(patches + vit.pos_embed)
        return vit.norm_pre(vit.patch_drop(tokens))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> the tokens the first block reads."""
        return self.add_position(self.vit.patch_embed(x))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        vit = self.vit
        x = self.tokens(x)
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
