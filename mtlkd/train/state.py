"""Resumable training state: every tensor (networks, method extras, optimiser moments) in one
safetensors file, every scalar (optimiser groups, schedule, epoch, best scores) in JSON. No pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mtlkd.checkpoint import save_checkpoint, write_json
from mtlkd.train.methods.base import unwrap

STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"


def save(out: Path, method, optimizer, scheduler, epochs_done: int, best: dict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, net in method.nets.items():
        tensors.update({f"nets.{name}.{k}": v for k, v in unwrap(net).state_dict().items()})
    tensors.update({f"extra.{k}": v for k, v in method.extra.state_dict().items()})
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, slot in opt["state"].items():
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    meta = {
        "epochs_done": epochs_done,
        "best": best,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(),
    }
    # The tensor file first, then the JSON that names it done: a crash between them resumes one epoch earlier.
    save_checkpoint(out / STATE_FILE, tensors, {"state": "training"})
    write_json(out / STATE_JSON, meta)


def load(out: Path, method, optimizer, scheduler) -> tuple[int, dict]:
    """Restore everything `save` wrote; returns (epochs done, best scores so far)."""
    tensors = load_file(str(out / STATE_FILE))
    meta = json.loads((out / STATE_JSON).read_text())
    for name, net in method.nets.items():
        prefix = f"nets.{name}."
        unwrap(net).load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    method.extra.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    for key, value in meta["optim_scalars"].items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    _truncate_history(out, meta["epochs_done"])
    return meta["epochs_done"], meta["best"]


def _truncate_history(out: Path, epochs_done: int) -> None:
    """Drop history lines of an epoch that ran after the last saved state."""
    path = out / "history.jsonl"
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        path.write_text("".join(ln + "\n" for ln in lines if json.loads(ln)["epoch"] <= epochs_done))
