"""Cross-stitch networks (Misra et al., CVPR 2016), the OKD paper's feature-fusion baseline: one
backbone per task, mixed after every transformer block by learned cross-stitch units
(mtlkd.models.cross_stitch), one head per task. Trained like plain MTL: the task losses combined by a
task weighting, equal by default (`task_weighting` chooses another; otw needs `--method okd`)."""

from __future__ import annotations

from mtlkd.models import create_model
from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import Method, MethodContext, forward, task_losses, unwrap
from mtlkd.train.weighting import create_weighting


@register_method("cross-stitch")
class CrossStitchMethod(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.nets["mtl"] = create_model({**ctx.config, "arch": "cross_stitch"}, ctx.backbone_weights)
        weighting = ctx.options.get("task_weighting") or "equal"
        self.extra["weighting"] = create_weighting(weighting, self.tasks, ctx.options)

    def training_step(self, batch, step, epoch):
        net = self.nets["mtl"]
        losses = task_losses(forward(net, batch["image"], self.tasks), batch, self.tasks)
        total, weights = self.extra["weighting"].combine(losses, shared=unwrap(net).shared_parameters())
        return total, {"mtl_loss": {t: v.item() for t, v in losses.items()}, "task_weights": weights}

    def on_epoch_end(self, epoch, epoch_logs):
        return {**super().on_epoch_end(epoch, epoch_logs), "cross_stitch": unwrap(self.nets["mtl"]).stitch_matrices()}
