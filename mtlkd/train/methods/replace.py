"""The student of mtl-distill: one multi-task network trained on teachers' predictions, no labels.

Each batch holds frames and, per task, the target its teacher gave (mtlkd.train.teacher_cache); the losses
are mtlkd.train.soft_targets', combined by the task weighting mtl-train has. The trainer's held-out share
of the frames measures agreement with each teacher every epoch (the targets as class ids, relative depth
aligned to the teacher's by scale and shift), and the labelled evaluation split, when given, the true
metrics (relative depth aligned to the ground truth, MiDaS's protocol; mtlkd.eval.align).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mtlkd.errors import ConfigError
from mtlkd.eval.align import align_batch, aligned_depth
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import StudentMethod, WeightingOptions, forward, unwrap
from mtlkd.train.options import option
from mtlkd.train.soft_targets import resize_target, target_loss

TEACHER_BATCH = "teacher_targets"  # the key that marks a batch of teacher targets (not labels)
SEG_TARGET_LOSSES = ("kl", "ce")


@dataclass
class DistillOptions(WeightingOptions):
    """mtl-distill's student (mtlkd.train.methods.replace, losses in mtlkd.train.soft_targets)."""

    seg_loss: str = option("kl", "Segmentation against the teacher: kl (Hinton's soft targets at --seg-temperature) "
                           "or ce (cross-entropy on the teacher's classes).", choices=SEG_TARGET_LOSSES, metavar="LOSS")
    seg_temperature: float = option(1.0, "Temperature T of the soft targets (1: the teacher's own distribution; the "
                                    "loss is scaled by T^2, as Hinton et al.).", metavar="T", positive=True)


@register_method("distill", help="a student of teachers' predictions on unlabeled frames (run it with mtl-distill)")
class DistillStudent(StudentMethod):
    Options = DistillOptions

    def __init__(self, ctx):
        if ctx.teachers is None:
            raise ConfigError("--method distill learns from teachers' predictions on unlabeled frames; run "
                              "mtl-distill SOURCE --teacher TASK=MODEL ... instead of mtl-train")
        super().__init__(ctx)
        self.depth_meaning = ctx.teachers.get("depth_meaning")

    def training_step(self, batch, step, epoch):
        images = batch["image"]
        preds = forward(self.student, images, self.tasks)
        size = tuple(images.shape[-2:])
        losses = {t: target_loss(t, preds[t].float(), resize_target(t, batch[t], size), self.depth_meaning,
                                 self.options.seg_loss, self.options.seg_temperature) for t in self.tasks}
        total, weights = self.extra["weighting"].combine(losses, shared=unwrap(self.student).shared_parameters())
        return total, {"mtl_loss": {t: v.item() for t, v in losses.items()}, "task_weights": weights}

    def metric_inputs(self, preds: dict[str, Any], batch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        relative = self.depth_meaning in ("relative", "relative-inverse") and "depth" in preds
        if TEACHER_BATCH not in batch:  # labelled data: relative depth is aligned to the ground truth
            if relative:
                depth = aligned_depth(_numpy(preds["depth"]), _numpy(batch["depth"]), self.depth_meaning)
                preds = {**preds, "depth": torch.from_numpy(depth).to(preds["depth"].device)}
            return preds, batch
        size = tuple(batch["image"].shape[-2:])
        batch = dict(batch)
        for task in preds:
            if task == "seg":  # log-probabilities resized pick the class resized logits would (targets_at)
                batch[task] = resize_target(task, batch[task].float().clamp_min(1e-12).log(), size).argmax(dim=1)
            else:
                batch[task] = resize_target(task, batch[task], size)
        if relative:  # agreement with the teacher, in the teacher's own space
            target = _numpy(batch["depth"])
            depth = align_batch(_numpy(preds["depth"]), target, valid=target == target)
            preds = {**preds, "depth": torch.from_numpy(depth).to(preds["depth"].device)}
        return preds, batch

    def extra_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"distilled_from": self.ctx.teachers.get("teachers", [])}
        if self.depth_meaning:
            meta["depth_meaning"] = self.depth_meaning
        return meta


def _numpy(x: torch.Tensor):
    return x.detach().float().cpu().numpy()
