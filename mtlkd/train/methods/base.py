"""The contract between the trainer and a training method.

A method owns its networks and its losses; the trainer owns the loop, optimiser, schedule,
checkpoints, logging and distribution. So a new method is one small class, not a copy of a loop.

A method's options are parsed once (`Method.read_options`): its own `Options` dataclass and, for a
method with a task weighting, the chosen weighting's; flat in run.json and on the command line.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.errors import ConfigError
from mtlkd.models import create_model, input_size, load_model
from mtlkd.models.config import ModelConfig, as_model_config
from mtlkd.tasks import get_task
from mtlkd.train.options import NoOptions, Options, flag, option, options_to_json, parse_options
from mtlkd.train.weighting import WEIGHTINGS, EqualWeighting, create_weighting, weighting_choices, weighting_class


@dataclass
class WeightingOptions(Options):
    """The options of a method with a task weighting (StudentMethod): which one. The chosen weighting's own
    options come beside these (`MethodOptions.weighting`); a method sets its own default choice by
    redeclaring `task_weighting`."""

    task_weighting: str = option(EqualWeighting.name, "How the task losses are combined:",
                                 choices=weighting_choices, metavar="NAME")


@dataclass
class MethodOptions:
    """A method's options, parsed once: its own dataclass, and for a method with a task weighting the
    chosen weighting's; `to_json` is what run.json stores (one flat mapping, as the flags are)."""

    method: Any
    weighting: Any = None

    def to_json(self) -> dict[str, Any]:
        return options_to_json(self.method) | ({} if self.weighting is None else options_to_json(self.weighting))


@dataclass
class MethodContext:
    """What every method is built from: the network config, the dataset's tasks and classes, options."""

    config: ModelConfig | dict[str, Any]  # the (multi-task) network config, from a preset
    tasks: list[str]
    num_classes: int | None
    class_names: list[str] | None
    device: torch.device
    options: Any = field(default_factory=dict)  # MethodOptions, the method's Options, or one flat mapping
    epochs: int = 1
    steps_per_epoch: int = 1
    backbone_weights: str | None = None
    # What the teachers of mtl-distill give ({"depth_meaning": ..., "teachers": [...]}); None for mtl-train.
    teachers: dict[str, Any] | None = None
    seed: int = 0  # the run's seed: each network's initialisation comes from its own stream of it

    def __post_init__(self) -> None:
        self.config = as_model_config(self.config)

    def create_network(self, config: ModelConfig, stream: str) -> nn.Module:
        """A network initialised from the random stream (seed, `stream`) alone, and from the backbone
        weights when given: the multi-task student (`"mtl"`) of every method of one seed starts from the
        same weights, and so does each single-task network (`"stl_<task>"`), whatever else a method
        builds before it."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(stream.encode()))
            return create_model(config, self.backbone_weights)

    def network_config(self, arch: str = "mtl") -> ModelConfig:
        """The multi-task network's config with another architecture (mtl, cross_stitch)."""
        return dataclasses.replace(self.config, arch=arch)

    def task_config(self, task: str, arch: str = "stl") -> ModelConfig:
        """The same network with one task: the single-task baseline/teacher."""
        return self.config.with_tasks([task], arch)


@dataclass
class Trained:
    """A network a method trains, as the trainer sees it: validated on `tasks`, an epoch chosen for it,
    saved as `<stem>.safetensors`. The `headline` one's metrics are the run's metrics.json (the deployable
    multi-task network); without one, every network's metrics are merged per task (STL)."""

    net: nn.Module
    tasks: list[str]
    stem: str
    headline: bool = False


def forward(net: nn.Module, images: torch.Tensor, tasks: list[str] | None = None,
            return_features: bool = False, target_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Run a network at its own input size and return predictions at the targets' size.

    Data and model sizes may differ (NYUv2 288x384 into a 384x384 ViT): images are resized in, and
    predictions resized back (bilinear; normals re-normalised)."""
    config = unwrap(net).config
    size = input_size(config)
    target_size = target_size or (images.shape[-2], images.shape[-1])
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    out = net(images, tasks=tasks, return_features=return_features)
    if tuple(size) != tuple(target_size):
        for task in unwrap(net).tasks if tasks is None else tasks:
            out[task] = F.interpolate(out[task], size=target_size, mode="bilinear", align_corners=False)
            if get_task(task).output == "unit":
                out[task] = F.normalize(out[task], dim=1)
    return out


def task_losses(preds: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                tasks: list[str]) -> dict[str, torch.Tensor]:
    return {t: get_task(t).loss(preds[t].float(), batch[t]) for t in tasks}


def load_frozen(path: str | Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """A trained network for distillation (a teacher): eval mode, no gradients, on `device`."""
    net, metadata = load_model(str(path), device=str(device))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, metadata


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (or any `.module`) wrapper."""
    return getattr(net, "module", net)


class Method:
    """Base class. Subclasses declare `Options` (a dataclass of their options, with the paper's defaults),
    set `self.nets` (an nn.ModuleDict of every trainable network), implement `training_step` and say what
    they train in `networks()`; the rest has sensible defaults."""

    name = "base"
    help = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.method_options = self.read_options(ctx.options)
        self.options = self.method_options.method
        self.tasks = list(ctx.tasks)
        self.nets = nn.ModuleDict()
        self.extra = nn.ModuleDict()  # non-network trainable state (task weights, omega, adaptors)

    @classmethod
    def read_options(cls, values: Any) -> MethodOptions:
        """The method's options from one flat mapping (run.json, the CLI, a test) or an instance of its
        Options; parsed once: a MethodOptions is taken as it is."""
        return _parse_method_options(cls, values)

    # -- what the trainer asks of a method ------------------------------------------------------------
    def networks(self) -> dict[str, Trained]:
        """Name (the key in history.jsonl and selection.json) -> a network the trainer validates and saves."""
        raise NotImplementedError

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups; a method with its own learning rates (KD-MTL adaptors) overrides this."""
        params = [p for p in list(self.nets.parameters()) + list(self.extra.parameters()) if p.requires_grad]
        return [{"params": params, "lr": lr}]

    def training_step(self, batch: dict[str, torch.Tensor], step: int, epoch: int) -> tuple[torch.Tensor, dict]:
        """Total loss of one batch and the numbers to log (floats, or dicts of floats)."""
        raise NotImplementedError

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers of the method's own, stepped with the trainer's AdamW but outside its schedule
        (KD-MTL's adaptors: the paper's constant-rate Adam)."""
        return []

    def trained_networks(self, epoch: int) -> set[str]:
        """Names of `networks()` that trained in this (0-based) epoch; the epoch selection ignores the
        others (OKD's multi-task network during the single-task warm-up)."""
        return set(self.networks())

    def on_epoch_end(self, epoch: int, epoch_logs: dict[str, Any]) -> dict[str, Any]:
        """Hook after each epoch; returns extra numbers for history.jsonl. A method with a task weighting
        (`self.extra["weighting"]`) hands it the epoch's MTL losses (DWA reads them) and logs its weights."""
        if "weighting" not in self.extra:
            return {}
        self.extra["weighting"].epoch_end(epoch_logs.get("mtl_loss", {}))
        return {"task_weights": epoch_logs.get("task_weights", {})}

    def metric_inputs(self, preds: dict[str, Any], batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(predictions, batch) as the task metrics read them; a student of relative depth aligns its depth
        first (mtlkd.train.methods.replace)."""
        return preds, batch

    def extra_metadata(self) -> dict[str, Any]:
        """Fields the saved checkpoints carry beside the network's (a distilled student's depth meaning)."""
        return {}

    def after_optimizer_step(self) -> None:
        """Hook after each optimiser step (GradNorm renormalises here)."""
        if "weighting" in self.extra:
            self.extra["weighting"].after_step()

    def train(self, mode: bool = True) -> None:
        self.nets.train(mode)
        self.extra.train(mode)

    def to(self, device: torch.device) -> Method:
        self.nets.to(device)
        self.extra.to(device)
        return self


class StudentMethod(Method):
    """A method that trains one multi-task network (`self.student`, saved as model.safetensors) on its task
    losses combined by a task weighting, plus whatever a subclass adds (distillation terms, other
    networks). Its Options derive from WeightingOptions, which carries the weighting's choice."""

    Options: ClassVar[type] = WeightingOptions
    arch = "mtl"  # the student's architecture
    provides_reference = False  # whether combine() gets single-task losses (OKD), which otw needs

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.extra["weighting"] = create_weighting(self.options.task_weighting, self.tasks,
                                                   self.method_options.weighting)
        self.nets["mtl"] = ctx.create_network(ctx.network_config(self.arch), "mtl")

    @property
    def student(self) -> nn.Module:
        return self.nets["mtl"]

    def student_losses(self, images: torch.Tensor, batch: dict[str, torch.Tensor], return_features: bool = False,
                       reference: dict[str, torch.Tensor] | None = None):
        """(predictions, per-task losses, their weighted total, the weights) of the student on a batch."""
        preds = forward(self.student, images, self.tasks, return_features=return_features)
        losses = task_losses(preds, batch, self.tasks)
        context = {} if reference is None else {"reference": reference}
        total, weights = self.extra["weighting"].combine(losses, shared=unwrap(self.student).shared_parameters(),
                                                         **context)
        return preds, losses, total, weights

    def networks(self) -> dict[str, Trained]:
        return {"mtl": Trained(self.student, self.tasks, "model", headline=True)}


def _parse_method_options(cls: type[Method], values: Any) -> MethodOptions:
    """The options of the method class `cls` from one flat mapping (run.json, the CLI, a test) or an
    instance of its Options. A key is refused unless `cls.Options` or the chosen weighting declares it;
    another weighting's option is refused unless it is at its default (run.json of runs that stored
    every weighting's options)."""
    where = f"--method {cls.name}"
    if isinstance(values, MethodOptions):
        return values
    if dataclasses.is_dataclass(values):
        values = options_to_json(values)
    values = dict(values or {})
    if not issubclass(cls.Options, WeightingOptions):
        return MethodOptions(parse_options(cls.Options, values, where))
    own_fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    chosen = values.get("task_weighting") or own_fields["task_weighting"].default
    weighting = weighting_class(chosen)
    if weighting.needs_reference and not getattr(cls, "provides_reference", False):
        providers = ", ".join(sorted(f"--method {c.name}" for c in _subclasses(StudentMethod)
                                     if c.provides_reference and "name" in vars(c)))  # registered on the class
        raise ConfigError(f"--task-weighting {chosen} needs single-task losses, which {where} does not train: "
                          f"use {providers or 'another task weighting'}")
    weighting_fields = {f.name for f in dataclasses.fields(weighting.Options)}
    others = {f.name: f.default for w in WEIGHTINGS.values() for f in dataclasses.fields(w.Options)}
    for name in sorted(set(values) - set(own_fields) - weighting_fields):
        if name not in others:
            known = ", ".join(flag(n) for n in [*own_fields, *sorted(weighting_fields)])
            raise ConfigError(f"{where}: unknown option {flag(name)}; its options: {known}")
        if values[name] is not None and values[name] != others[name]:
            raise ConfigError(f"{flag(name)} applies to another task weighting than {chosen}; drop it or pass "
                              "--task-weighting accordingly")
    return MethodOptions(parse_options(cls.Options, {k: v for k, v in values.items() if k in own_fields}, where),
                         parse_options(weighting.Options, {k: v for k, v in values.items() if k in weighting_fields},
                                       f"--task-weighting {chosen}"))


def _subclasses(cls: type) -> set[type]:
    """Every class deriving from `cls`, at any depth."""
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(c) for c in list(found)))
