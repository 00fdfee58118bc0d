"""Single-task learning: one network per task, each with its own backbone (the baseline every
distillation method is measured against, and the teachers KD-MTL distils from)."""

from __future__ import annotations

from mtlkd.train.methods import register_method
from mtlkd.train.methods.base import Method, MethodContext, Trained, forward, task_losses


@register_method("stl", help="one network per task (the single-task baseline, KD-MTL's teachers)")
class STLMethod(Method):
    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        for task in self.tasks:
            self.nets[task] = ctx.create_network(ctx.task_config(task), f"stl_{task}")

    def training_step(self, batch, step, epoch):
        # The networks share nothing, so the sum of their losses trains each one as if alone.
        losses = {}
        for task in self.tasks:
            losses.update(task_losses(forward(self.nets[task], batch["image"], [task]), batch, [task]))
        return sum(losses.values()), {"stl_loss": {t: v.item() for t, v in losses.items()}}

    def networks(self):
        return {f"stl_{task}": Trained(self.nets[task], [task], f"stl_{task}") for task in self.tasks}
