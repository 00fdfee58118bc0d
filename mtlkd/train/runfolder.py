"""Run folders are never destroyed by accident: what a training may write into, one lock per folder, and the
options a run was started with (the options' own checks are `TrainOptions.check`, mtlkd.train.options).

* Training into a folder that already holds a run (saved state, checkpoints, metrics or history) is
  refused unless it continues it (`resume`) or replaces it (`overwrite`, which deletes the files a
  training writes, nothing else in the folder, and only once the dataset, the network and the options
  all proved usable: `check_run_folder` returns them, `clear_run` deletes them).
* `resume` continues after the last committed epoch (mtlkd.train.state), or starts again from epoch 1
  with run.json's options when a kill came before the first commit.
* One training per folder: an exclusive `flock` on RUN/.lock, held for the whole run; a second one gets
  one line naming the first one's process id. The lock dies with its process, so a crash never leaves
  a folder locked.
* `saved_options(RUN)` reads RUN/run.json, so `mtl-train --resume --out RUN` needs nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtlkd.errors import UserError

LOCK_FILE = ".lock"
# What a training writes: the files `overwrite` deletes, and those that mean "a run lives here".
RUN_FILES = ("run.json", "history.jsonl", "state.json", "state.safetensors", "metrics.json", "last_metrics.json",
             "selection.json", "curves.png", "task_weights.png", "mtl_vs_stl.png", "omega.png")
RUN_MARKERS = ("state.json", "metrics.json", "history.jsonl")


def diverged(loss: float, epoch: int, step: int, options: Any) -> UserError:
    """The one line for a loss that became inf or NaN: where, and what to change (the run up to the last
    committed epoch is kept)."""
    return UserError(f"the loss became {loss} at epoch {epoch + 1} step {step + 1} with --lr {options.lr:g}; "
                     f"lower --lr and train again (the epochs committed before are kept in {options.out})")


def holds_run(out: Path) -> bool:
    """Whether `out` holds something a training made that would be lost: saved state, metrics, a non-empty
    history or a checkpoint. (A run.json with an empty history, from a run stopped before its first epoch
    ended, holds nothing to lose.)"""
    if not out.is_dir():
        return False
    for name in RUN_MARKERS:
        path = out / name
        if path.is_file() and (name != "history.jsonl" or path.stat().st_size > 0):
            return True
    return any(out.glob("*.safetensors"))


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse what would destroy a run or cannot work, in one line each. Returns, with `overwrite`, the
    earlier run's files (only those a training writes), for `clear_run` once everything else is checked."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; pass a folder for the run")
    from mtlkd.files import clean_stale_temporaries

    clean_stale_temporaries(out)  # what a killed training left half-written (under the lock: none is ours)
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; pass one")
    stale: list[Path] = []
    if resume:
        if not (out / "state.safetensors").is_file() and not (out / "run.json").is_file():
            raise UserError(f"--resume: {out} has no saved training state (state.safetensors or run.json); "
                            f"nothing to resume. Train without --resume (and --overwrite to replace it)")
        return stale
    if holds_run(out):
        if not overwrite:
            raise UserError(f"--out {out} holds a run already; continue it with --resume, replace it with "
                            f"--overwrite, or pass another --out")
        stale = [p for p in [*(out / n for n in RUN_FILES), *out.glob("*.safetensors")] if p.is_file()]
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable; pass another --out")
    return stale


def clear_run(stale: list[Path]) -> None:
    """Delete what `check_run_folder` found of an earlier run (`--overwrite`), the tensor state last, so
    that a kill midway leaves a folder that still says what it held."""
    for path in sorted(stale, key=lambda p: p.name == "state.safetensors"):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold RUN/.lock exclusively for the block; another holder means another training writes here. A
    folder this call created is removed again, with the parents it created (`runs/` of the default
    `runs/NAME`), when the block fails before writing anything into it (a missing dataset must not leave an
    empty run folder behind)."""
    import fcntl

    from mtlkd.files import make_out_folder

    made = [folder for folder in (out, *out.absolute().parents) if not folder.exists()]  # innermost first
    created = bool(made)
    make_out_folder(out, "the run")
    try:
        handle = open(out / LOCK_FILE, "a+")  # noqa: SIM115 (closed below, after the lock is released)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write into it ({exc.strerror or exc}); pass another --out") from None
    failed = False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"--out {out}: another training (pid {holder}) is writing into this folder; wait "
                            f"for it to end or pass another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
            if failed and created and [p.name for p in out.iterdir()] == [LOCK_FILE]:
                (out / LOCK_FILE).unlink()
                for folder in made:
                    try:
                        folder.rmdir()
                    except OSError:  # something else wrote there meanwhile: it stays
                        break


def saved_options(out: Path) -> dict[str, Any]:
    """The options RUN/run.json holds (without the network config), for `--resume --out RUN` alone."""
    path = out / "run.json"
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: corrupt run options ({exc}); pass every option of the run with --resume") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: corrupt run options (not a JSON object)")
    saved.pop("config", None)
    return saved


def resumed_options(cls: type, out: Path, given: Any, explicit: set[str], may_differ: set[str]) -> Any:
    """`cls` (TrainOptions) from RUN/run.json, with the options given on the command line (`explicit`
    names the fields the user typed) checked against it: those in `may_differ` (device, workers) replace
    the saved ones, any other that differs is refused, since the run would not continue the same way."""
    if not (out / "run.json").is_file():  # nothing saved: the trainer says whether there is a state to resume
        return dataclasses.replace(given, out=str(out), resume=True, overwrite=False)
    saved = saved_options(out)
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {k: v for k, v in saved.items() if k in names}
    merged.update(out=str(out), resume=True, overwrite=False)
    differing = []
    for name in sorted(explicit & names - {"out", "resume", "method_options"}):
        value = getattr(given, name)
        if name in may_differ or name not in saved:  # not in run.json: an option newer than the run
            merged[name] = value
        elif _norm(saved[name]) != _norm(value):
            differing.append(f"--{name.replace('_', '-')} {value} (the run has {saved[name]})")
    saved_method = dict(saved.get("method_options") or {})
    for key, value in (getattr(given, "method_options", None) or {}).items():
        if key not in saved_method:
            saved_method[key] = value
        elif _norm(saved_method[key]) != _norm(value):
            differing.append(f"--{key.replace('_', '-')} {value} (the run has {saved_method[key]})")
    merged["method_options"] = saved_method
    if differing:
        raise UserError(f"--resume continues {out} with its own options; these differ: {'; '.join(differing)}. "
                        f"Drop them, or train anew into another --out")
    return cls(**merged)


def _norm(value: Any) -> Any:
    """Compare as run.json stores values: tuples as lists, paths as strings."""
    return json.loads(json.dumps(value, default=str))
