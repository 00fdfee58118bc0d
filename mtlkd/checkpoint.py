"""Checkpoints: safetensors weights with the JSON metadata that rebuilds the network.

This is the only place where weight files a user hands us are opened, and it never unpickles: tensors
come from safetensors, everything else from JSON stored in the safetensors header under the key
`mtlkd` (written and read by `mtlkd.metadata`, like every other format). A checkpoint is therefore one
file that cannot lose its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mtlkd.errors import CheckpointError
from mtlkd.metadata import METADATA_KEY, checkpoint_header, read_checkpoint_metadata

__all__ = ["METADATA_KEY", "CheckpointError", "load_checkpoint", "model_metadata", "read_metadata", "save_checkpoint",
           "tensor_shapes", "write_json"]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename, so a crash never leaves half a file;
    the file gets the user's umask (mtlkd.files)."""
    from mtlkd.files import atomic_write

    atomic_write(path, write)


def save_checkpoint(path: str | Path, state: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Save a state dict (torch tensors) and JSON-serialisable metadata atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    header = checkpoint_header(metadata)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (.safetensors), without loading its tensors (and without torch); a
    missing file is a CheckpointError. Any model file's: `mtlkd.metadata.read_model_file_metadata`."""
    return read_checkpoint_metadata(_existing(path), error=CheckpointError)


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor, from the safetensors header alone (nothing is loaded)."""
    from safetensors import safe_open

    with safe_open(str(_existing(path)), framework="numpy") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict of torch tensors, metadata)."""
    from safetensors.torch import load_file

    path = _existing(path)
    metadata = read_metadata(path)
    return load_file(str(path), device=device), metadata


def write_json(path: str | Path, data: Any) -> Path:
    """Atomic JSON write (metrics, sidecars, training state)."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        hint = " (a run folder? pass its model.safetensors)" if path.is_dir() else ""
        raise CheckpointError(f"{path}: no such checkpoint file{hint}")
    return path


def model_metadata(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The metadata every artifact carries (checkpoint, ONNX, IR, engine sidecar): enough to rebuild the
    network and to pre- and postprocess without any side file."""
    from mtlkd.tasks import get_task

    size = config["backbone"]["img_size"]
    return {
        "config": config,
        "tasks": list(config["tasks"]),
        "class_names": config.get("class_names"),
        "num_classes": config.get("num_classes"),
        "input_size": [int(size[0]), int(size[1])],
        "normalization": {
            "mean": config["mean"],
            "std": config["std"],
            "input": "RGB, float32 in [0, 1], N x 3 x H x W; mean/std are applied inside the network",
        },
        "outputs": {t: get_task(t).output for t in config["tasks"]},
        **extra,
    }
