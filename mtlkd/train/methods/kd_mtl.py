"""KD-MTL (Li and Bilen, ECCV-W 2020): frozen, pre-trained single-task networks regulate the multi-task
network through their features. One linear adaptor per task (a 1 x 1 x C x C convolution; on ViT tokens
the same matrix as a linear layer) maps the shared multi-task feature into that task's feature space,
and the loss compares L2-normalised features (eq. 3-5):

    L = sum_t w_t L_t  +  sum_t lambda_t || A_t(f_mtl) / ||.|| - f_t / ||.|| ||^2

Defaults, with where in the KD-MTL paper they come from:

* w_t uniform (section 4.3, "Results on NYU-V2"); `task_weighting` may replace it.
* lambda_t (`kd_weights`): seg 1, depth 1, normal 2, the paper's NYUv2 values (same paragraph; any other
  task 1). For Cityscapes the paper used seg 2, depth 6 ("Results on Cityscapes"): pass
  --kd-weights seg=2,depth=6.
* `kd_layers`: last (the last shared block: how the OKD paper, whose tables mtlkd reproduces, describes
  and re-implements KD-MTL in its section 2 and Table 5; best on Cityscapes and SVHN & Omniglot in the
  KD-MTL paper's ablation, section 4.4) or mid+last (the middle and the last block: the paper's NYUv2
  setting, Table 4). The middle block of n is block (n - 1) // 2 (0-based): 5 of 12, 1 of 4.
* adaptors' optimiser (`adaptor_optimizer`): `own` (default) is the paper's and the authors' code's: a
  separate Adam at a constant learning rate of 0.1 with weight decay 5e-4 ("Results on NYU-V2"),
  stepped with the network's optimiser but outside its schedule. `shared` puts the adaptors into the
  trainer's AdamW + OneCycle as their own group peaking at `adaptor_lr` (default 1000 x the network's
  peak, the paper's ratio 0.1 / 1e-4).

Normalisation: per token / pixel over the channels, squared distance summed over channels and averaged
over positions and images (the per-location L2 normalisation of the authors' implementation; eq. 4 only
says "L2 normalised feature maps"). Features are the per-block outputs of the backbones (ViT: the patch
tokens after each block; CNN: each stage's map). Teacher features are detached and, if the grids differ,
resized to the student's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkd.checkpoint import read_metadata
from mtlkd.errors import CheckpointError, ConfigError
from mtlkd.models import input_size
from mtlkd.train.distill import normalized_feature_loss
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import MethodContext, StudentMethod, WeightingOptions, load_frozen, unwrap
from mtlkd.train.options import option

PAPER_KD_WEIGHTS = {"seg": 1.0, "depth": 1.0, "normal": 2.0}
KD_LAYERS = ("last", "mid+last")
# The paper's adaptor / network learning-rate ratio: 0.1 / 1e-4 with Adam ("Results on NYU-V2").
# By default the adaptors' peak lr is this ratio times the network's (1.0 at our default 1e-3). The adaptor
# output is L2-normalised, so the loss does not depend on the adaptor's scale and Adam-type updates stay
# stable at such rates, while an adaptor lr near the network's fits the adaptors too slowly for a short run.
ADAPTOR_LR_RATIO = 1000.0
ADAPTOR_OPTIMIZERS = ("own", "shared")
PAPER_ADAPTOR_LR = 0.1
PAPER_ADAPTOR_WEIGHT_DECAY = 5e-4


@dataclass
class KDMTLOptions(WeightingOptions):
    """KD-MTL's options with the paper's defaults (Li and Bilen, ECCV-W 2020)."""

    teachers: tuple[str, ...] = option((), "Frozen single-task teachers: stl_<task>.safetensors files or the run "
                                       "folder of an stl run.", metavar="PATH")
    kd_layers: str = option("last", "Distilled blocks: last (the OKD paper's reading) or mid+last (NYUv2, Table 4).",
                            choices=KD_LAYERS, metavar="LAYERS")
    kd_weights: dict[str, float] = option(
        help="Per-task distillation weights lambda_t as task=w pairs; tasks not named keep the paper's NYUv2 "
        f"values ({','.join(f'{t}={w:g}' for t, w in PAPER_KD_WEIGHTS.items())}).", metavar="TASK=W,...",
        factory=dict)
    adaptor_optimizer: str = option("own", f"own: the paper's Adam at a constant {PAPER_ADAPTOR_LR:g}, weight decay "
                                    f"{PAPER_ADAPTOR_WEIGHT_DECAY:g}; shared: a group of the network's AdamW + "
                                    "OneCycle.", choices=ADAPTOR_OPTIMIZERS, metavar="WHICH")
    adaptor_lr: float | None = option(None, f"Adaptor learning rate (own: {PAPER_ADAPTOR_LR:g}; shared: peak, "
                                      f"{ADAPTOR_LR_RATIO:g} x --lr).", metavar="LR")


class FeatureAdaptor(nn.Module):
    """A linear map of the channels, no bias (the paper's 1 x 1 x C x C convolution): applied to
    B x N x E tokens as a linear layer and to B x C x h x w maps as a 1x1 convolution, with the same
    weight. Xavier-normal initialised (the authors' implementation; the paper does not say)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.conv2d(x, self.weight[:, :, None, None])
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}"


def layer_indices(depth: int, kd_layers: str) -> list[int]:
    """Which of `depth` blocks are distilled: the last, or the middle and the last."""
    if kd_layers == "last" or depth < 2:
        return [depth - 1]
    return [(depth - 1) // 2, depth - 1]


def find_teachers(paths: list[str] | str | None, tasks: list[str]) -> dict[str, Path]:
    """task -> single-task checkpoint, from files (`stl_<task>.safetensors`) and run folders of an stl or
    okd run holding them; the task is read from each checkpoint's metadata."""
    hint = ("train single-task teachers first (mtl-train DATASET --method stl --out runs/stl) "
            "and pass --teachers runs/stl")
    if not paths:
        raise ConfigError(f"kd-mtl needs frozen single-task teachers: {hint}")
    found: dict[str, Path] = {}
    for value in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(value)
        if path.is_dir():
            files = sorted(path.glob("stl_*.safetensors"))
            if not files:
                raise CheckpointError(f"--teachers {path}: no stl_<task>.safetensors in this folder; {hint}")
        elif path.is_file():
            files = [path]
        else:
            raise CheckpointError(f"--teachers {path}: no such file or folder; {hint}")
        for file in files:
            meta_tasks = list(read_metadata(file).get("tasks") or [])
            if len(meta_tasks) != 1:
                raise CheckpointError(
                    f"--teachers {file}: a network for {len(meta_tasks)} tasks ({', '.join(meta_tasks)}); "
                    "KD-MTL's teachers are single-task networks (stl_<task>.safetensors)"
                )
            task = meta_tasks[0]
            if task in found and found[task].resolve() != file.resolve():
                raise ConfigError(f"two teachers for {task}: {found[task]} and {file}; pass one")
            found[task] = file
    missing = [t for t in tasks if t not in found]
    if missing:
        raise ConfigError(f"no single-task teacher for {', '.join(missing)} in --teachers; {hint}")
    return {t: found[t] for t in tasks}


def encoder_features(net: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The per-block backbone features of a network at its own input size (no heads run)."""
    net = unwrap(net)
    size = input_size(net.config)
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return net.features(images)


def align_to(teacher: torch.Tensor, student: torch.Tensor, teacher_grid: tuple[int, int] | None,
             student_grid: tuple[int, int] | None) -> torch.Tensor:
    """Resize a teacher feature to the student's spatial layout (bilinear); channels are left alone."""
    if teacher.dim() == 4:
        if teacher.shape[-2:] != student.shape[-2:]:
            teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
        return teacher
    if teacher.shape[1] == student.shape[1]:
        return teacher
    if not teacher_grid or not student_grid:
        raise ValueError(f"teacher has {teacher.shape[1]} tokens, student {student.shape[1]}, and no grid to resize")
    b, _, e = teacher.shape
    maps = teacher.transpose(1, 2).reshape(b, e, *teacher_grid)
    maps = F.interpolate(maps, size=tuple(student_grid), mode="bilinear", align_corners=False)
    return maps.flatten(2).transpose(1, 2)


@register_method("kd-mtl", help="frozen single-task teachers through feature adaptors (Li and Bilen)")
class KDMTLMethod(StudentMethod):
    Options = KDMTLOptions

    def __init__(self, ctx: MethodContext):
        parsed = self.read_options(ctx.options)  # parsed once: super().__init__ takes them as they are
        options = parsed.method
        unknown = [t for t in options.kd_weights if t not in ctx.tasks]
        if unknown:
            raise ConfigError(f"--kd-weights names {', '.join(unknown)}, not trained here ({', '.join(ctx.tasks)})")
        # Frozen teachers first (a missing one is the likeliest mistake): a plain dict, outside self.nets (the
        # optimiser and DDP never see them).
        teacher_paths = find_teachers(list(options.teachers), list(ctx.tasks))
        super().__init__(dataclasses.replace(ctx, options=parsed))
        self.kd_layers = options.kd_layers
        self.kd_weights = {t: float(options.kd_weights.get(t, PAPER_KD_WEIGHTS.get(t, 1.0))) for t in self.tasks}
        self.adaptor_lr_option = options.adaptor_lr
        self.adaptor_optimizer = options.adaptor_optimizer
        self.teacher_paths = teacher_paths
        self.teachers: dict[str, nn.Module] = {}
        for task, path in self.teacher_paths.items():
            self.teachers[task], _ = load_frozen(path, ctx.device)

        s_dims = unwrap(self.student).feature_dims
        self.student_layers = layer_indices(len(s_dims), self.kd_layers)
        self.teacher_layers: dict[str, list[int]] = {}
        adaptors = nn.ModuleDict()
        for task, teacher in self.teachers.items():
            t_dims = teacher.feature_dims
            self.teacher_layers[task] = layer_indices(len(t_dims), self.kd_layers)
            adaptors[task] = nn.ModuleList(
                FeatureAdaptor(s_dims[i], t_dims[j])
                for i, j in zip(self.student_layers, self.teacher_layers[task], strict=True)
            )
        self.extra["adaptors"] = adaptors

    # -- optimiser ----------------------------------------------------------------------------------
    def adaptor_lr(self, lr: float) -> float:
        """The adaptors' (peak) learning rate: `adaptor_lr` if set; else 0.1 with their own optimiser, or the
        paper's ratio x the network's peak in the shared schedule."""
        if self.adaptor_lr_option is not None:
            return float(self.adaptor_lr_option)
        return PAPER_ADAPTOR_LR if self.adaptor_optimizer == "own" else ADAPTOR_LR_RATIO * lr

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        network = [p for p in list(self.nets.parameters()) + list(self.extra["weighting"].parameters())
                   if p.requires_grad]
        groups = [{"params": network, "lr": lr, "name": "network"}]
        if self.adaptor_optimizer == "shared":
            adaptors = [p for p in self.extra["adaptors"].parameters() if p.requires_grad]
            groups.append({"params": adaptors, "lr": self.adaptor_lr(lr), "name": "adaptors"})
        return groups

    def extra_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.adaptor_optimizer != "own":
            return []
        if not hasattr(self, "_adaptor_optimizer"):  # one instance: the trainer steps and saves this one
            self._adaptor_optimizer = torch.optim.Adam(self.extra["adaptors"].parameters(), lr=self.adaptor_lr(0.0),
                                                       weight_decay=PAPER_ADAPTOR_WEIGHT_DECAY)
        return [self._adaptor_optimizer]

    # -- training -----------------------------------------------------------------------------------
    def training_step(self, batch, step, epoch):
        images = batch["image"]
        preds, losses, l_task, weights = self.student_losses(images, batch, return_features=True)
        s_feats = preds["features"]
        s_grid = unwrap(self.student).feature_grid
        kd_losses = {}
        for task, teacher in self.teachers.items():
            with torch.no_grad():
                t_feats = encoder_features(teacher, images)
            t_grid = teacher.feature_grid
            terms = []
            for adaptor, i, j in zip(self.extra["adaptors"][task], self.student_layers, self.teacher_layers[task],
                                     strict=True):
                mapped = adaptor(s_feats[i])
                target = align_to(t_feats[j].detach(), mapped, t_grid, s_grid)
                terms.append(normalized_feature_loss(mapped, target))
            kd_losses[task] = sum(terms)
        l_kd = sum(self.kd_weights[t] * v for t, v in kd_losses.items())
        logs = {
            "mtl_loss": {t: v.item() for t, v in losses.items()},
            "kd_loss": {t: v.item() for t, v in kd_losses.items()},
            "task_weights": weights,
        }
        return l_task + l_kd, logs


    def to(self, device: torch.device) -> KDMTLMethod:
        super().to(device)
        for teacher in self.teachers.values():
            teacher.to(device)
        return self
