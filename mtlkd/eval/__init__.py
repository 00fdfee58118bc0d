"""Evaluation: streaming dataset metrics, the Delta score and comparison tables against a baseline."""

from mtlkd.eval.delta import delta, per_task_delta

__all__ = ["delta", "per_task_delta"]
