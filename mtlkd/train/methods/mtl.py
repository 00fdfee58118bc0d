"""Multi-task learning of one network on its task losses combined by a task weighting (equal by default;
DWA, UW, GradNorm, RLW as the tables' baselines). One family, two architectures:

- `mtl`: one shared backbone, one head per task.
- `cross-stitch` (Misra et al., CVPR 2016), the OKD paper's feature-fusion baseline: one backbone per task,
  mixed after every transformer block by learned cross-stitch units (mtlkd.models.cross_stitch), one head
  per task; its mixing matrices are logged every epoch.
"""

from __future__ import annotations

from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import StudentMethod, unwrap


@register_method("mtl", help="one backbone, one head per task, a task weighting")
class MultiTaskMethod(StudentMethod):
    arch = "mtl"

    def training_step(self, batch, step, epoch):
        _, losses, total, weights = self.student_losses(batch["image"], batch)
        return total, {"mtl_loss": {t: v.item() for t, v in losses.items()}, "task_weights": weights}


@register_method("cross-stitch", help="one backbone per task, mixed after every block (Misra et al.)")
class CrossStitchMethod(MultiTaskMethod):
    arch = "cross_stitch"

    def on_epoch_end(self, epoch, epoch_logs):
        return {**super().on_epoch_end(epoch, epoch_logs), "cross_stitch": unwrap(self.student).stitch_matrices()}
