"""All-or-nothing file writes with the user's umask: the one writer behind checkpoints, metrics, exports and
pictures.

A file is written under a temporary name in its own folder and renamed over the target, so a crash or a
full disk never leaves half a file and never damages the file it was replacing. The temporary file is made
with `open(..., "x")` rather than `mkstemp`, because mkstemp creates mode 0600 whatever the umask: a model
a serving container running as another user must read would be unreadable. Imports nothing of mtlkd.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path


def temporary_beside(path: str | Path, suffix: str = "") -> Path:
    """A new empty file in `path`'s folder (same file system, so a rename is atomic), created with the
    umask applied. `suffix` keeps an extension writers choose the format by (".png" for OpenCV)."""
    path = Path(path)
    for i in range(1000):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{i}.tmp{suffix}")
        try:
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: cannot create a temporary file beside it")


def atomic_write(path: str | Path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Call `write(temporary_path)`, then rename the temporary file over `path`; on any failure the
    temporary file is removed and `path` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, suffix)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask gives a new file
    try:
        write(str(tmp))
        if stat.S_IMODE(tmp.stat().st_mode) != mode:  # writers that replace the file (safetensors) make 0600
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def cannot_write(path: str | Path) -> str | None:
    """Why a file could not be written at `path` (a folder there, a parent that is a file or read-only), or
    None when it can: checked before a long run, so that its result is not lost at the end."""
    path = Path(path)
    if path.is_dir():
        return "is a folder; pass a file name"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path if path.exists() else parent} is not writable"
    return None


def make_out_folder(out: str | Path, what: str) -> Path:
    """Create the folder `--out` names (for `what`: "the pictures", "the run"), or raise one UserError line
    when it is a file or cannot be created."""
    from mtlkd.errors import UserError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; pass a folder for {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); pass another --out") from None
    return out
