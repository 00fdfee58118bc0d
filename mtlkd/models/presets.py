"""Model presets as data: a preset is a partial config that `create_model` completes."""

from __future__ import annotations

import copy
from typing import Any

from mtlkd.errors import ConfigError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

PRESETS: dict[str, dict[str, Any]] = {
    # The OKD paper's model: ViT-Ti/16 at 384x384, heads with two transformer layers, N_reg = 128.
    "vit-tiny": {
        "backbone": {"name": "vit", "img_size": [384, 384], "patch_size": 16, "embed_dim": 192,
                     "depth": 12, "num_heads": 3, "drop_path": 0.1},
        "head": {"layers": 2, "num_queries": 128},
    },
    # A larger multi-task teacher for KDAM (ViT-S/16).
    "vit-small": {
        "backbone": {"name": "vit", "img_size": [384, 384], "patch_size": 16, "embed_dim": 384,
                     "depth": 12, "num_heads": 6, "drop_path": 0.1},
        "head": {"layers": 2, "num_queries": 128},
    },
    # The CPU demo and test model: 96x128 input, 8x8 patches (12x16 tokens), 4 blocks of width 128.
    "vit-micro": {
        "backbone": {"name": "vit", "img_size": [96, 128], "patch_size": 8, "embed_dim": 128,
                     "depth": 4, "num_heads": 4, "drop_path": 0.0},
        "head": {"layers": 2, "num_queries": 64},
    },
    # A few-thousand-parameter model for unit tests that must run in milliseconds.
    "vit-nano": {
        "backbone": {"name": "vit", "img_size": [32, 32], "patch_size": 8, "embed_dim": 32,
                     "depth": 2, "num_heads": 2, "drop_path": 0.0},
        "head": {"layers": 1, "num_queries": 8},
    },
    # A larger CPU-sized multi-task teacher for KDAM at the demo's 96x128 input (ViT-S-like width).
    "vit-micro-wide": {
        "backbone": {"name": "vit", "img_size": [96, 128], "patch_size": 8, "embed_dim": 192,
                     "depth": 6, "num_heads": 6, "drop_path": 0.0},
        "head": {"layers": 2, "num_queries": 64},
    },
    # DeepLabV3 of the OKD paper's Table 3 (CNN rows): dilated ResNet-50 at output stride 8, one ASPP head
    # (rates 12/24/36, 256 channels) per task, NYUv2's 288x384 input.
    "deeplabv3-r50": {
        "backbone": {"name": "resnet", "variant": "resnet50", "img_size": [288, 384], "output_stride": 8},
        "head": {"kinds": {"seg": "aspp", "depth": "aspp", "normal": "aspp"}, "channels": 256,
                 "rates": [12, 24, 36]},
    },
    # Its CPU-sized sibling for tests and demos: dilated ResNet-18, 64-channel ASPP heads, 96x128 input.
    "deeplabv3-r18": {
        "backbone": {"name": "resnet", "variant": "resnet18", "img_size": [96, 128], "output_stride": 8},
        "head": {"kinds": {"seg": "aspp", "depth": "aspp", "normal": "aspp"}, "channels": 64,
                 "rates": [12, 24, 36]},
    },
}


def preset_config(
    preset: str,
    tasks: list[str],
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    img_size: tuple[int, int] | None = None,
    arch: str = "mtl",
) -> dict[str, Any]:
    """A complete, JSON-serialisable network config from a preset name."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    config = copy.deepcopy(PRESETS[preset])
    if img_size is not None:
        config["backbone"]["img_size"] = list(img_size)
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    if "seg" in tasks and num_classes is None:
        raise ConfigError(f"preset_config({preset!r}): segmentation needs num_classes or class_names (NYUv2: 13)")
    config.update(
        preset=preset,
        arch=arch,
        tasks=list(tasks),
        num_classes=num_classes,
        class_names=list(class_names) if class_names else None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return config


def input_size(config: dict[str, Any]) -> tuple[int, int]:
    """(H, W) the network was built for."""
    size = config["backbone"].get("img_size") or config.get("input_size")
    return int(size[0]), int(size[1])
