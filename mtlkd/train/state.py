"""Resumable state of a training or a pretraining run: every tensor (networks, method extras, optimiser
moments) in one safetensors file, every scalar (optimiser groups, schedule, epoch, best scores) in JSON.
No pickle.

One epoch commits as a whole with one rename (`commit`): state.safetensors carries its tensors and, in its
header, the scalars and the history up to that epoch. state.json and history.jsonl are readable copies
written after it (`publish`); a kill before they are written (or while they are) is finished on resume,
which rewrites both from the committed file (`read_commit`, then `publish`). So a kill at any instant
resumes after the last committed epoch, with every epoch once in the history. Files an epoch writes before
its commit (checkpoints of networks it improved) are written again, to the same bytes, when a kill before
the commit makes the resumed run repeat that epoch (every epoch is seeded on its own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mtlkd.checkpoint import write_json
from mtlkd.errors import CheckpointError
from mtlkd.train.methods.base import unwrap

STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
HISTORY_FILE = "history.jsonl"
STATE_HEADER = "mtlkd.training_state"  # the header entry of STATE_FILE holding the scalars and the history


def _prefix(k: int) -> str:
    """The trainer's optimiser is `optim`, a method's own ones `optim1`, `optim2`, ..."""
    return "optim" if k == 0 else f"optim{k}"


def optimizer_state(optimizers: list) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(tensors, scalars, param groups) of optimisers: the tensors for safetensors, the rest for JSON."""
    tensors: dict[str, torch.Tensor] = {}
    groups, scalars = {}, {}
    for k, optimizer in enumerate(optimizers):
        opt = optimizer.state_dict()
        groups[_prefix(k)] = opt["param_groups"]
        for index, slot in opt["state"].items():
            for key, value in slot.items():
                if torch.is_tensor(value):
                    tensors[f"{_prefix(k)}.{index}.{key}"] = value
                else:
                    scalars[f"{_prefix(k)}.{index}.{key}"] = value
    return tensors, scalars, groups


def restore_optimizers(optimizers: list, tensors: dict[str, torch.Tensor], scalars: dict[str, Any],
                       groups: dict[str, Any]) -> None:
    """Load what `optimizer_state` returned back into the same optimisers."""
    for k, optimizer in enumerate(optimizers):
        prefix = _prefix(k)
        slots: dict[int, dict[str, Any]] = {}
        for key, value in list(tensors.items()) + list(scalars.items()):
            if key.startswith(prefix + "."):
                _, index, name = key.split(".", 2)
                slots.setdefault(int(index), {})[name] = value
        own = groups[prefix]
        for group in own:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        optimizer.load_state_dict({"state": slots, "param_groups": own})


def save(out: Path, method, optimizers: list, scheduler, epochs_done: int, selection: dict,
         record: dict[str, Any]) -> None:
    """Commit epoch `epochs_done` (its history line `record` included) with one rename, then write the
    readable copies (state.json, history.jsonl)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, net in method.nets.items():
        tensors.update({f"nets.{name}.{k}": v for k, v in unwrap(net).state_dict().items()})
    tensors.update({f"extra.{k}": v for k, v in method.extra.state_dict().items()})
    optim_tensors, scalars, groups = optimizer_state(optimizers)
    tensors.update(optim_tensors)
    history = [r for r in committed_history(out) if r["epoch"] < epochs_done] + [record]
    meta = {
        "epochs_done": epochs_done,
        "selection": selection,
        "param_groups": groups,
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        "history": history,
    }
    commit(out, tensors, meta)


def commit(out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], kind: str = "training") -> None:
    """Commit one epoch: `tensors` with `meta` (its scalars and the whole history) in one rename, then the
    readable copies. `kind` ("training", "pretraining") is recorded in the header and named in errors."""
    commit_state(out / STATE_FILE, tensors, meta, kind)
    publish(out, meta)


def commit_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                 kind: str = "training") -> None:
    """Write `tensors` with `meta` (JSON scalars) in the header, atomically: the one rename of a commit."""
    from safetensors.torch import save_file

    from mtlkd.files import atomic_write
    from mtlkd.metadata import checkpoint_header

    header = checkpoint_header({"state": kind}) | {STATE_HEADER: json.dumps(meta)}
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=header))


def committed(out: Path, kind: str = "training") -> dict[str, Any] | None:
    """The scalars and history of the last committed epoch (from STATE_FILE's header), or None without a
    state, or for a state written before commits carried them (its state.json holds them then)."""
    from safetensors import safe_open

    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(STATE_HEADER)
        return json.loads(raw) if raw is not None else None
    except Exception as exc:  # noqa: BLE001  safetensors raises its own types for a damaged file
        raise CheckpointError(f"{path}: corrupt {kind} state ({_first_line(exc)}); start again in a new "
                              f"--out") from None


def read_commit(out: Path, kind: str = "training", device: str = "cpu") -> tuple[dict[str, torch.Tensor],
                                                                                  dict[str, Any] | None]:
    """The tensors of the last commit on `device`, and its scalars and history (None for a state written
    before commits carried them); a damaged file is one CheckpointError line."""
    state_file = out / STATE_FILE
    try:
        tensors = load_file(str(state_file), device=device)
    except Exception as exc:  # noqa: BLE001  safetensors raises its own types for a damaged file
        raise CheckpointError(f"{state_file}: corrupt {kind} state ({_first_line(exc)}); start again in a new "
                              f"--out") from None
    return tensors, committed(out, kind)


def committed_history(out: Path) -> list[dict[str, Any]]:
    meta = committed(out)
    return list(meta["history"]) if meta else []


def publish(out: Path, meta: dict[str, Any]) -> None:
    """state.json (the scalars) and history.jsonl (one line per committed epoch), each written whole, from
    a commit: after every commit, and again on resume to finish one a kill interrupted."""
    from mtlkd.files import atomic_write_bytes

    write_json(out / STATE_JSON, {k: v for k, v in meta.items() if k != "history"})
    atomic_write_bytes(out / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in meta["history"]).encode())


def load(out: Path, method, optimizers: list, scheduler) -> tuple[int, dict]:
    """Restore everything `save` wrote; returns (epochs done, the epoch selection's state). A damaged state,
    or one of another method or other options, is one ValueError naming the file."""
    state_file, state_json = out / STATE_FILE, out / STATE_JSON
    tensors, meta = read_commit(out)
    if meta is None:  # a state from before commits carried their scalars: they are in state.json
        try:
            meta = json.loads(state_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{state_json}: corrupt training state ({exc}); train again into a new "
                                  f"--out") from None
        if not isinstance(meta, dict) or not set(meta) >= STATE_KEYS:
            raise CheckpointError(f"{state_json}: corrupt training state (not what mtl-train writes); "
                                  "train again into a new --out")
        meta["history"] = _old_history(out, meta["epochs_done"])
    elif not isinstance(meta, dict) or not set(meta) >= STATE_KEYS | {"history"}:
        raise CheckpointError(f"{state_file}: corrupt training state (not what mtl-train writes); "
                              "train again into a new --out")
    saved_steps, steps = meta["scheduler"].get("total_steps"), getattr(scheduler, "total_steps", None)
    if saved_steps is not None and steps is not None and saved_steps != steps:
        raise CheckpointError(f"{state_json}: the run was saved for {saved_steps} steps but these options make "
                              f"{steps}; resume with the run's own --epochs, --batch-size and --max-steps "
                              f"(`mtl-train --resume --out {out}` alone uses them)")
    try:
        _restore(tensors, meta, method, optimizers, scheduler)
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise CheckpointError(f"{state_file}: the saved state does not fit this run's {method.name} networks "
                         f"({_first_line(exc)}); was it written by another method? see {out / 'run.json'}") from None
    publish(out, meta)  # finishes a commit a kill interrupted: state.json and history.jsonl as committed
    return meta["epochs_done"], meta["selection"]


STATE_KEYS = {"epochs_done", "selection", "param_groups", "optim_scalars", "scheduler"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _restore(tensors: dict, meta: dict, method, optimizers: list, scheduler) -> None:
    for name, net in method.nets.items():
        prefix = f"nets.{name}."
        unwrap(net).load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    method.extra.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    restore_optimizers(optimizers, tensors, meta["optim_scalars"], meta["param_groups"])
    scheduler.load_state_dict(meta["scheduler"])


def _old_history(out: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The history lines of a state written before commits carried them, up to its last saved epoch."""
    path = out / HISTORY_FILE
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    return [r for r in map(json.loads, lines) if r["epoch"] <= epochs_done]
