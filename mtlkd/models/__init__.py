"""Models: one registry of architectures, configs as data, `create_model(name or config)`, `list_models()`.

The typed configs and presets (mtlkd.models.config, .presets) import no torch, so a command can list and
check them without loading it; the networks and registries are imported on first use (`ARCHS`,
`MultiTaskNet`, `create_model`, ...).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mtlkd.errors import ConfigError
from mtlkd.models.config import ModelConfig, as_model_config
from mtlkd.models.presets import PRESETS, input_size, model_config, preset_config
from mtlkd.tasks import get_task

if TYPE_CHECKING:
    from torch import nn

# Imported on first access: name -> module (importing all three registers every arch, backbone and head).
_LAZY = {
    "ARCHS": "mtlkd.models.nets", "DenseNet": "mtlkd.models.nets", "MultiTaskNet": "mtlkd.models.nets",
    "SingleTaskNet": "mtlkd.models.nets", "register_arch": "mtlkd.models.nets",
    "BACKBONES": "mtlkd.models.backbones", "register_backbone": "mtlkd.models.backbones",
    "HEADS": "mtlkd.models.heads", "register_head": "mtlkd.models.heads",
    "CrossStitchNet": "mtlkd.models.cross_stitch", "ResNetBackbone": "mtlkd.models.resnet",
}


def _networks() -> None:
    """Import every module that registers an architecture, backbone or head."""
    for module in ("mtlkd.models.nets", "mtlkd.models.cross_stitch", "mtlkd.models.resnet"):
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        _networks()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ARCHS", "BACKBONES", "HEADS", "PRESETS", "DenseNet", "ModelConfig", "MultiTaskNet", "SingleTaskNet",
    "count_parameters", "load_model", "create_model", "list_models", "explicit_attention", "input_size",
    "model_config", "preset_config", "register_arch", "register_backbone", "register_head",
]


DEFAULT_TASKS = ("seg", "depth", "normal")
DEFAULT_NUM_CLASSES = 13  # NYUv2-13, the papers' benchmark (and the synthetic scenes' classes)


def list_models() -> list[str]:
    """The preset names `create_model` takes."""
    return sorted(PRESETS)


def create_model(config: ModelConfig | dict[str, Any] | str, backbone_weights: str | None = None, *,
                 tasks: list[str] | tuple[str, ...] | None = None, num_classes: int | None = None,
                 class_names: list[str] | None = None, img_size: tuple[int, int] | None = None,
                 arch: str = "mtl", pretrained: bool = False) -> nn.Module:
    """Build a network from a preset name (`create_model("vit-tiny", tasks=["seg", "depth"])`; by default all
    three tasks and NYUv2's 13 classes) or from a complete config (typed, or its JSON form); optionally start
    its backbone from local weights, or from the preset's pretrained backbone (`pretrained=True`, see
    mtlkd.models.pretrained)."""
    if isinstance(config, str):
        preset = config
        tasks = list(tasks or DEFAULT_TASKS)
        if any(get_task(t).has_classes for t in tasks) and num_classes is None and class_names is None:
            num_classes = DEFAULT_NUM_CLASSES
        config = model_config(preset, tasks, num_classes, class_names, img_size=img_size, arch=arch)
        if pretrained:
            from mtlkd.models.pretrained import pretrained_backbone

            backbone_weights = str(pretrained_backbone(preset))
    config = as_model_config(config)
    _networks()
    from mtlkd.models.nets import ARCHS

    if config.arch not in ARCHS:
        raise ConfigError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHS)}")
    model = ARCHS[config.arch](config)
    if backbone_weights:
        missing, _ = model.backbone.load_pretrained(backbone_weights)
        if missing:
            lacks = ", ".join(missing[:3])
            from mtlkd.errors import CheckpointError

            raise CheckpointError(f"{backbone_weights}: not a checkpoint of this backbone (it lacks {lacks})")
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


def check_device(name: str, option: str = "--device") -> None:
    """One ConfigError line when `name` is a CUDA device this machine lacks (no GPU, or cuda:N past the last
    one), before a tensor is sent there and torch fails with its own traceback."""
    import torch

    if not str(name).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"{option} {name}: no CUDA GPU is visible on this machine; use --device cpu")
    index = str(name).partition(":")[2]
    count = torch.cuda.device_count()
    if index and (not index.isdigit() or int(index) >= count):
        raise ConfigError(f"{option} {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")


def load_model(path: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A network and its metadata from an mtlkd checkpoint (safetensors; never a pickle)."""
    from mtlkd.checkpoint import load_checkpoint, read_metadata
    from mtlkd.errors import CheckpointError

    check_shapes(path, read_metadata(path))
    state, metadata = load_checkpoint(path, device=device)
    model = create_model(metadata["config"]).to(device)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the config (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    return model.eval(), metadata


def check_shapes(path: str, metadata: dict[str, Any]) -> None:
    """The network the metadata's config describes has exactly the tensors the file holds, shape for shape.

    Built on torch's meta device (no memory), from the header alone, so that a forged config cannot make
    the real build allocate gigabytes before the weights are found not to fit."""
    import torch

    from mtlkd.checkpoint import tensor_shapes
    from mtlkd.errors import CheckpointError

    if not isinstance(metadata.get("config"), dict):
        raise CheckpointError(f"{path}: no network config in its metadata; pass a model.safetensors of mtl-train")
    try:
        with torch.device("meta"):
            wanted = {k: tuple(v.shape) for k, v in create_model(metadata["config"]).state_dict().items()}
    except (KeyError, TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its config does not describe a network ({type(exc).__name__}: {exc})") from None
    found = tensor_shapes(path)
    for key, shape in wanted.items():
        if key in found and found[key] != shape:
            raise CheckpointError(f"{path}: tensor {key} has shape {list(found[key])} but the config needs "
                                  f"{list(shape)}; the metadata does not match the weights")
