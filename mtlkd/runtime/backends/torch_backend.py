"""PyTorch backend: runs a `.safetensors` checkpoint directly (no export step).

The only runtime module that imports torch (and, through mtlkd.models, timm); it does so inside `load`.
The network computes only the requested heads, so asking for one task skips the other heads' cost. Like
the exported graphs, it returns each head's map at its own grid (`full_resolution` off, `output_stride` in
its metadata), so that every backend gives the same answer after the runtime's one resize.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime.backends import Backend, physical_cores


def available(device: str = "cpu") -> bool:
    if device == "cpu":
        return True
    if device == "cuda":
        import torch

        return torch.cuda.is_available()
    return False


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path, device: str, model: Any, metadata: dict[str, Any]):
        super().__init__(path, device, metadata)
        self.model = model

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        import torch

        tasks = self.check_tasks(tasks)
        x = torch.from_numpy(self.check_batch(batch))
        if self.device != "cpu":
            x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model(x, tasks=tasks)
        return {t: out[t].float().cpu().numpy() for t in tasks}


def load(path: str | Path, device: str = "cpu", threads: int | None = None, **_: Any) -> TorchBackend:
    """Build the network from the checkpoint's own config and load its weights (never unpickles).

    CPU threads: `threads`, else OMP_NUM_THREADS when the user set it, else one per physical core.
    """
    try:
        import torch

        from mtlkd.models import load_model
    except ImportError as exc:
        raise BackendUnavailable(f"the torch backend needs torch and timm ({exc}); "
                                 f"pip install 'mtlkd[train]'") from None
    if device not in ("cpu", "cuda"):
        raise BackendError(f"the torch backend runs on cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if device == "cpu":
        wanted = threads or (None if os.environ.get("OMP_NUM_THREADS") else physical_cores())
        if wanted and torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
    model, metadata = load_model(str(path), device=device)
    if hasattr(model, "full_resolution"):  # as the exports: the heads' grid, one resize in the runtime
        model.full_resolution = False
        metadata = {**metadata, "output_stride": int(model.output_stride)}
    return TorchBackend(path, device, model, metadata)
