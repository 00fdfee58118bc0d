"""Models: one registry of architectures, configs as data, `create_model(config)`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from mtlkd.models.backbones import BACKBONES, register_backbone
from mtlkd.models.cross_stitch import CrossStitchNet  # noqa: F401  (registers the "cross_stitch" arch)
from mtlkd.models.heads import HEADS, register_head
from mtlkd.models.nets import ARCHS, MultiTaskNet, SingleTaskNet, register_arch
from mtlkd.models.presets import PRESETS, input_size, preset_config
from mtlkd.models.resnet import ResNetBackbone  # noqa: F401  (registers the "resnet" backbone and "aspp" head)

__all__ = [
    "ARCHS", "BACKBONES", "HEADS", "PRESETS", "MultiTaskNet", "SingleTaskNet", "count_parameters", "load_model",
    "create_model", "explicit_attention", "input_size", "preset_config", "register_arch", "register_backbone",
    "register_head",
]


def create_model(config: dict[str, Any], backbone_weights: str | None = None) -> nn.Module:
    """Build the network a config describes; optionally load local pretrained backbone weights."""
    arch = config.get("arch", "mtl")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    model = ARCHS[arch](config)
    if backbone_weights:
        model.backbone.load_pretrained(backbone_weights)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """Switch timm's fused scaled-dot-product attention off for the duration (restored afterwards), so that
    attention runs as MatMul-Softmax-MatMul: what the ONNX exporter writes and what a FLOP counter can see."""
    switched = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for module in switched:
        module.fused_attn = False
    try:
        yield
    finally:
        for module in switched:
            module.fused_attn = True


def load_model(path: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A network and its metadata from an mtlkd checkpoint (safetensors; never a pickle)."""
    from mtlkd.checkpoint import CheckpointError, load_checkpoint

    state, metadata = load_checkpoint(path, device=device)
    model = create_model(metadata["config"]).to(device)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the config (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    return model.eval(), metadata
