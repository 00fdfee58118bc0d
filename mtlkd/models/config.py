"""Network configs as typed dataclasses: one per backbone and one per head kind, composed by `ModelConfig`.

A config is what a checkpoint stores (as JSON, `ModelConfig.to_dict()`) and what rebuilds the network
(`ModelConfig.from_dict`). Every part declares exactly the fields it reads, so a misspelt key fails in one
line naming the known ones instead of being swallowed. Heads are configured per task, because a
segmentation head and a regression head take different settings.

Checkpoints written before this module kept one head spec shared by every head
(`"head": {"layers": 2, "num_queries": 128}` or `{"kinds": {...}, "channels": 64, ...}`); `from_dict`
reads that form too, giving each task's head the keys its kind declares.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlkd.errors import ConfigError
from mtlkd.tasks import LOGITS, TASKS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BACKBONE_CONFIGS: dict[str, type] = {}  # backbone name -> its config dataclass
HEAD_CONFIGS: dict[str, type] = {}  # head kind -> its config dataclass


def _registered(registry: dict[str, type], key: str):
    def wrap(cls):
        registry[getattr(cls, key)] = cls
        return cls

    return wrap


def _size(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


@_registered(BACKBONE_CONFIGS, "name")
@dataclass(frozen=True)
class ViTConfig:
    """A timm VisionTransformer (class token, learned position embedding covering it)."""

    name: ClassVar[str] = "vit"
    img_size: tuple[int, int] = (384, 384)
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _size(self.img_size))


@_registered(BACKBONE_CONFIGS, "name")
@dataclass(frozen=True)
class ResNetConfig:
    """A timm ResNet with dilated last stages (DeepLabV3's dense setting)."""

    name: ClassVar[str] = "resnet"
    variant: str = "resnet50"
    img_size: tuple[int, int] = (288, 384)
    output_stride: int = 8
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _size(self.img_size))


@_registered(HEAD_CONFIGS, "kind")
@dataclass(frozen=True)
class MaskTransformerConfig:
    """Segmenter-style head: one learned query per class (their count is the class count)."""

    kind: ClassVar[str] = "mask_transformer"
    layers: int = 2


@_registered(HEAD_CONFIGS, "kind")
@dataclass(frozen=True)
class QueryRegressionConfig:
    """The OKD paper's regression head: N_reg learned queries (128 in the paper), then an MLP.

    `product_norm`: a LayerNorm over each patch's N_reg scalar products before the MLP, as the
    classification head's mask norm does over its class scores (every preset sets it; False is what
    files written before the field existed hold). Without it the MLP reads products whose spread across
    patches is a few hundredths, so the head starts as a near-constant map and can settle on the mean
    normal (scripts/failure_mechanism.py measures this)."""

    kind: ClassVar[str] = "query_regression"
    layers: int = 2
    num_queries: int = 128
    product_norm: bool = False


@_registered(HEAD_CONFIGS, "kind")
@dataclass(frozen=True)
class ASPPConfig:
    """DeepLabV3's head: rates (12, 24, 36) at output stride 8 (the paper's (6, 12, 18) at 16, doubled)."""

    kind: ClassVar[str] = "aspp"
    channels: int = 256
    rates: tuple[int, ...] = (12, 24, 36)
    dropout: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", tuple(int(r) for r in self.rates))


BackboneConfig = ViTConfig | ResNetConfig
HeadConfig = MaskTransformerConfig | QueryRegressionConfig | ASPPConfig


def build_part(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls(**values)`, where a key `cls` does not declare is one ConfigError naming the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def part_to_dict(part: Any, tag: str) -> dict[str, Any]:
    """A backbone or head config as JSON, its registry name first under `tag` ("name" or "kind")."""
    values = {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}
    return {tag: getattr(part, tag), **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}


@dataclass(frozen=True)
class ModelConfig:
    """A whole network: architecture, backbone, one head per task, classes and input normalisation."""

    backbone: BackboneConfig
    heads: dict[str, HeadConfig]
    tasks: tuple[str, ...]
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    arch: str = "mtl"  # mtl (shared backbone), stl (one task) or cross_stitch
    preset: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        missing = [t for t in self.tasks if t not in self.heads]
        if missing:
            raise ConfigError(f"network config: no head config for task {missing[0]!r}")

    @property
    def img_size(self) -> tuple[int, int]:
        return self.backbone.img_size

    def with_tasks(self, tasks: list[str] | tuple[str, ...], arch: str | None = None) -> ModelConfig:
        """The same network for a subset of its tasks (a single-task baseline: `with_tasks([t], "stl")`)."""
        unknown = [t for t in tasks if t not in self.heads]
        if unknown:
            raise ConfigError(f"network config: no head config for task {unknown[0]!r}")
        return dataclasses.replace(self, tasks=tuple(tasks), heads={t: self.heads[t] for t in tasks},
                                   arch=arch or self.arch)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a checkpoint stores."""
        return {
            "backbone": part_to_dict(self.backbone, "name"),
            "head": {t: part_to_dict(self.heads[t], "kind") for t in self.tasks},
            "preset": self.preset,
            "arch": self.arch,
            "tasks": list(self.tasks),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "network config") -> ModelConfig:
        """Parse the JSON form (per-task head specs, or one head spec shared by every task)."""
        if isinstance(data, ModelConfig):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        known = {"backbone", "head", "preset", "arch", "tasks", "num_classes", "class_names", "mean", "std"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        tasks = data.get("tasks")
        if not isinstance(tasks, list | tuple) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"{where}: 'tasks' is not a list of task names")
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"{where}: unknown task {bad[0]!r}; known: {', '.join(TASKS)}")
        spec = data.get("backbone")
        if not isinstance(spec, dict) or spec.get("name") not in BACKBONE_CONFIGS:
            name = spec.get("name") if isinstance(spec, dict) else None
            raise ConfigError(f"{where}: unknown backbone {name!r}; known: {', '.join(BACKBONE_CONFIGS)}")
        backbone = build_part(BACKBONE_CONFIGS[spec["name"]], {k: v for k, v in spec.items() if k != "name"},
                              f"{where}, backbone {spec['name']}")
        heads = parse_heads(data.get("head") or {}, list(tasks), where)
        try:
            return cls(backbone=backbone, heads=heads, tasks=tuple(tasks), num_classes=data.get("num_classes"),
                       class_names=data.get("class_names"), arch=data.get("arch") or "mtl",
                       preset=data.get("preset"), mean=data.get("mean", IMAGENET_MEAN),
                       std=data.get("std", IMAGENET_STD))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where}: {exc}") from None


def default_head_kind(task: str) -> str:
    """What a ViT preset uses: the mask transformer for class logits, query regression otherwise."""
    from mtlkd.tasks import get_task

    return "mask_transformer" if get_task(task).output == LOGITS else "query_regression"


def parse_heads(spec: dict[str, Any], tasks: list[str], where: str) -> dict[str, HeadConfig]:
    """task -> head config, from the per-task form ({task: {"kind": ..., ...}}) or one shared spec (what
    checkpoints written with a single head spec for every task hold: {key: value, "kinds": {task: kind}}).

    Per-task entries for tasks the network does not have are dropped: a task subset of a config is a config."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: 'head' is not an object")
    per_task = bool(spec) and all(isinstance(v, dict) and "kind" in v for v in spec.values())
    heads: dict[str, HeadConfig] = {}
    if per_task:
        for task in tasks:
            if task not in spec:
                raise ConfigError(f"{where}: no head config for task {task!r}")
            entry = dict(spec[task])
            kind = entry.pop("kind")
            if kind not in HEAD_CONFIGS:
                raise ConfigError(f"{where}: unknown head kind {kind!r}; known: {', '.join(HEAD_CONFIGS)}")
            heads[task] = build_part(HEAD_CONFIGS[kind], entry, f"{where}, {task} head ({kind})")
        return heads
    # One spec for every head, with optional per-task kinds: each head takes the keys its kind declares.
    shared = dict(spec)
    kinds = shared.pop("kinds", {}) or {}
    declared = {f.name for c in HEAD_CONFIGS.values() for f in dataclasses.fields(c)}
    unknown = sorted(set(shared) - declared)
    if unknown:
        raise ConfigError(f"{where}: unknown head key {unknown[0]!r}; known: {', '.join(sorted(declared))}")
    for task in tasks:
        kind = kinds.get(task) or default_head_kind(task)
        if kind not in HEAD_CONFIGS:
            raise ConfigError(f"{where}: unknown head kind {kind!r}; known: {', '.join(HEAD_CONFIGS)}")
        own = {f.name for f in dataclasses.fields(HEAD_CONFIGS[kind])}
        heads[task] = build_part(HEAD_CONFIGS[kind], {k: v for k, v in shared.items() if k in own},
                                 f"{where}, {task} head ({kind})")
    return heads


def as_model_config(config: ModelConfig | dict[str, Any], where: str = "network config") -> ModelConfig:
    return config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config, where)
