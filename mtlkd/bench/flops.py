"""Model FLOPs, counted once per model with `torch.utils.flop_counter.FlopCounterMode`.

What is counted: the matrix products and convolutions (2 FLOPs per multiply-add), which are what the
ceiling measures and nearly all of a ViT's arithmetic; element-wise ops, LayerNorm, softmax and the final
bilinear upsampling are not counted. Attention is counted as the two explicit batched products (Q K^T
and A V): timm's fused scaled-dot-product attention is switched off while counting, because the CPU
SDPA kernel has no FLOP formula and would otherwise count as zero; the exported graphs compute exactly
these explicit products.

Reported per image: the count at batch 1 (FLOPs scale linearly with the batch).
"""

from __future__ import annotations

import contextlib
from typing import Any


def flop_counter(module: Any, *inputs: Any, **kwargs: Any) -> Any:
    """The `FlopCounterMode` after one call of `module(*inputs, **kwargs)` with explicit attention."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mtlkd.models import explicit_attention

    attention = explicit_attention(module) if hasattr(module, "modules") else contextlib.nullcontext()
    counter = FlopCounterMode(display=False, depth=3)
    with attention, torch.no_grad(), counter:
        module(*inputs, **kwargs)
    return counter


def flops_of(module: Any, *inputs: Any, **kwargs: Any) -> int:
    """FLOPs of `module(*inputs, **kwargs)` (any nn.Module or callable), e.g. 2*10*64*32 for a
    Linear(64, 32) on 10 tokens."""
    return int(flop_counter(module, *inputs, **kwargs).get_total_flops())


def count_flops(model: Any, input_size: tuple[int, int], tasks: list[str] | None = None,
                by_module: bool = False) -> int | tuple[int, dict[str, int]]:  # fmt: skip
    """FLOPs of one forward pass on one image of `input_size` (H, W) computing `tasks` (default: all).

    With `by_module`, also {top-level child: FLOPs} (backbone, heads.seg, ...)."""
    import torch

    device = next(iter(model.parameters())).device
    x = torch.rand(1, 3, int(input_size[0]), int(input_size[1]), device=device)
    was_training = model.training
    model.eval()
    try:
        counter = flop_counter(model, x, **({} if tasks is None else {"tasks": tasks}))
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    if not by_module:
        return total
    parts: dict[str, int] = {}
    root = type(model).__name__
    for name, ops in counter.get_flop_counts().items():
        pieces = name.split(".")
        if pieces[0] != root or len(pieces) < 2:
            continue
        key = ".".join(pieces[1:3]) if pieces[1] == "heads" and len(pieces) >= 3 else pieces[1]
        if ".".join(pieces[1:]) == key:  # the outermost module of that part, counted once
            parts[key] = int(sum(ops.values()))
    return total, parts


def model_flops(model: Any, input_size: tuple[int, int], tasks: list[str] | None = None) -> dict[str, Any]:
    """{"flops": per image, "gflop": per image, "parts": {backbone / heads.<task>: FLOPs}}."""
    total, parts = count_flops(model, input_size, tasks, by_module=True)
    return {"flops": total, "gflop": round(total / 1e9, 6), "parts": parts}
