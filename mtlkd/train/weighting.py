"""Task weightings: given the current per-task losses, the total loss and one weight per task.

`combine(losses, shared=...) -> (total, {task: weight})`. A weighting is an nn.Module so that learned
weights (UW's log-variances, GradNorm's weights) are optimised and checkpointed with the method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

WEIGHTINGS: dict[str, type[Weighting]] = {}


def register_weighting(name: str):
    def wrap(cls):
        cls.name = name
        WEIGHTINGS[name] = cls
        return cls

    return wrap


class Weighting(nn.Module):
    name = "base"

    def __init__(self, tasks: list[str], options: dict[str, Any] | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.options = dict(options or {})

    def combine(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter] | None = None,
                **context: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def epoch_end(self, epoch_losses: dict[str, float]) -> None:
        """Called with the epoch's mean loss per task (DWA reads these)."""

    def after_step(self) -> None:
        """Called after each optimiser step (GradNorm renormalises here)."""


@register_weighting("equal")
class EqualWeighting(Weighting):
    """The MTL baseline: every task weight 1."""

    def combine(self, losses, shared=None, **context):
        return sum(losses[t] for t in self.tasks), dict.fromkeys(self.tasks, 1.0)


def create_weighting(name: str, tasks: list[str], options: dict[str, Any] | None = None) -> Weighting:
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown task weighting {name!r}; known: {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](tasks, options)
