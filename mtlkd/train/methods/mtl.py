"""Plain multi-task learning: one shared backbone, one head per task, losses combined by a task
weighting (equal by default; DWA, UW, GradNorm, RLW as the tables' baselines)."""

from __future__ import annotations

from mtlkd.models import create_model
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import Method, MethodContext, forward, task_losses, unwrap
from mtlkd.train.weighting import create_weighting


@register_method("mtl")
class MTLMethod(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.nets["mtl"] = create_model({**ctx.config, "arch": "mtl"}, ctx.backbone_weights)
        weighting = ctx.options.get("task_weighting") or "equal"
        self.extra["weighting"] = create_weighting(weighting, self.tasks, ctx.options)

    def training_step(self, batch, step, epoch):
        preds = forward(self.nets["mtl"], batch["image"], self.tasks)
        losses = task_losses(preds, batch, self.tasks)
        weighting = self.extra["weighting"]
        total, weights = weighting.combine(losses, shared=unwrap(self.nets["mtl"]).shared_parameters())
        return total, {"mtl_loss": {t: v.item() for t, v in losses.items()}, "task_weights": weights}

