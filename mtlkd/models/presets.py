"""Model presets as typed data: a backbone and the head settings for class-logit and regression tasks,
which `preset_config` completes with the tasks and classes of a dataset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mtlkd.errors import ConfigError
from mtlkd.models.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ASPPConfig,
    BackboneConfig,
    HeadConfig,
    MaskTransformerConfig,
    ModelConfig,
    QueryRegressionConfig,
    ResNetConfig,
    ViTConfig,
)
from mtlkd.tasks import LOGITS, get_task


@dataclass(frozen=True)
class Preset:
    """What a preset fixes; the tasks and classes come from the data."""

    backbone: BackboneConfig
    logits_head: HeadConfig  # segmentation
    regression_head: HeadConfig  # depth, normals
    about: str


_ASPP_R50 = ASPPConfig(channels=256, rates=(12, 24, 36))
_ASPP_R18 = ASPPConfig(channels=64, rates=(12, 24, 36))

PRESETS: dict[str, Preset] = {
    "vit-tiny": Preset(
        ViTConfig((384, 384), patch_size=16, embed_dim=192, depth=12, num_heads=3, drop_path=0.1),
        MaskTransformerConfig(layers=2), QueryRegressionConfig(layers=2, num_queries=128, product_norm=True),
        "the OKD paper's model: ViT-Ti/16 at 384x384, heads with two transformer layers, N_reg = 128"),
    "vit-small": Preset(
        ViTConfig((384, 384), patch_size=16, embed_dim=384, depth=12, num_heads=6, drop_path=0.1),
        MaskTransformerConfig(layers=2), QueryRegressionConfig(layers=2, num_queries=128, product_norm=True),
        "a larger multi-task teacher for KDAM (ViT-S/16)"),
    "vit-micro": Preset(
        ViTConfig((96, 128), patch_size=8, embed_dim=128, depth=4, num_heads=4),
        MaskTransformerConfig(layers=2), QueryRegressionConfig(layers=2, num_queries=64, product_norm=True),
        "the CPU demo: 96x128 input, 8x8 patches (12x16 tokens), 4 blocks of width 128"),
    "vit-micro-lite": Preset(
        ViTConfig((96, 128), patch_size=8, embed_dim=128, depth=4, num_heads=4),
        MaskTransformerConfig(layers=1), QueryRegressionConfig(layers=1, num_queries=64, product_norm=True),
        "vit-micro with one-layer heads: a cheaper multi-task student (mtl-distill), the same backbone"),
    "vit-nano": Preset(
        ViTConfig((32, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2),
        MaskTransformerConfig(layers=1), QueryRegressionConfig(layers=1, num_queries=8, product_norm=True),
        "a few-thousand-parameter model for unit tests that must run in milliseconds"),
    "vit-micro-wide": Preset(
        ViTConfig((96, 128), patch_size=8, embed_dim=192, depth=6, num_heads=6),
        MaskTransformerConfig(layers=2), QueryRegressionConfig(layers=2, num_queries=64, product_norm=True),
        "a CPU-sized multi-task teacher for KDAM at the demo's 96x128 input (ViT-S-like width)"),
    "deeplabv3-r50": Preset(
        ResNetConfig("resnet50", (288, 384), output_stride=8), _ASPP_R50, _ASPP_R50,
        "DeepLabV3 of the OKD paper's Table 3: dilated ResNet-50 at output stride 8, one ASPP head "
        "(rates 12/24/36, 256 channels) per task, NYUv2's 288x384 input"),
    "deeplabv3-r18": Preset(
        ResNetConfig("resnet18", (96, 128), output_stride=8), _ASPP_R18, _ASPP_R18,
        "its CPU-sized sibling for tests and demos: dilated ResNet-18, 64-channel ASPP heads, 96x128 input"),
}

_MODEL_FIELDS = ("arch", "num_classes", "class_names", "mean", "std")


def model_config(preset: str, tasks: list[str] | tuple[str, ...] | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, **overrides: Any) -> ModelConfig:
    """The typed config of a preset for `tasks` (default: none, a backbone alone), with `overrides` of any
    field of the model (arch, mean, std), its backbone (img_size, depth, drop_path, ...) or its heads
    (layers, num_queries, channels, ...; applied to every head that has the field)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    tasks = list(tasks or [])
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    classes = [t for t in tasks if get_task(t).has_classes]
    if classes and num_classes is None:
        raise ConfigError(f"preset {preset!r}: {', '.join(classes)} needs num_classes or class_names (NYUv2: 13)")
    overrides = {k: v for k, v in overrides.items() if v is not None or k in ("num_classes", "class_names")}
    backbone_fields = {f.name for f in dataclasses.fields(spec.backbone)}
    head_fields = {f.name for h in (spec.logits_head, spec.regression_head) for f in dataclasses.fields(h)}
    unknown = sorted(set(overrides) - backbone_fields - head_fields - set(_MODEL_FIELDS))
    if unknown:
        known = sorted(backbone_fields | head_fields | set(_MODEL_FIELDS))
        raise ConfigError(f"preset {preset!r}: unknown override {unknown[0]!r}; known: {', '.join(known)}")
    try:
        backbone = dataclasses.replace(spec.backbone, **{k: v for k, v in overrides.items() if k in backbone_fields})
        heads = {}
        for task in tasks:
            head = spec.logits_head if get_task(task).output == LOGITS else spec.regression_head
            own = {f.name for f in dataclasses.fields(head)}
            heads[task] = dataclasses.replace(head, **{k: v for k, v in overrides.items() if k in own})
        model = {k: v for k, v in overrides.items() if k in _MODEL_FIELDS}
        return ModelConfig(backbone=backbone, heads=heads, tasks=tuple(tasks), num_classes=num_classes,
                           class_names=class_names, preset=preset, mean=model.pop("mean", IMAGENET_MEAN),
                           std=model.pop("std", IMAGENET_STD), **model)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"preset {preset!r}: {exc}") from None


def preset_config(preset: str, tasks: list[str] | tuple[str, ...] | None = None, num_classes: int | None = None,
                  class_names: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete config from a preset name, in the JSON form a checkpoint stores (see `model_config`;
    `ModelConfig.from_dict` reads it back): `preset_config("vit-tiny", ["seg", "depth"], 13, img_size=(288, 384))`."""
    return model_config(preset, tasks, num_classes, class_names, **overrides).to_dict()


def input_size(config: ModelConfig | dict[str, Any]) -> tuple[int, int]:
    """(H, W) the network was built for."""
    if isinstance(config, ModelConfig):
        return config.img_size
    size = config["backbone"]["img_size"]
    return int(size[0]), int(size[1])
