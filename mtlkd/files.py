"""All-or-nothing file writes with the user's umask: the one writer behind checkpoints, metrics, exports and
pictures.

A file is written under a temporary name in its own folder and renamed over the target, so a crash or a
full disk never leaves half a file and never damages the file it was replacing. The temporary file is made
with `open(..., "x")` rather than `mkstemp`, because mkstemp creates mode 0600 whatever the umask: a model
a serving container running as another user must read would be unreadable. Imports nothing of mtlkd.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

# Called as hook(operation, path) before each step of `atomic_write` ("create", "write", "replace") and after
# it ("done"): the seam through which tests kill the process at every file operation of a commit. None in use.
file_operation_hook: Callable[[str, Path], None] | None = None


def _step(operation: str, path: Path) -> None:
    if file_operation_hook is not None:
        file_operation_hook(operation, path)


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
    _step("create", path)
    try:
        tmp = temporary_beside(path, suffix)
    except OSError as exc:  # a read-only or full disk: say so about `path`, not about the temporary name
        message = storage_message(path, exc)
        if message is None:
            raise
        from mtlkd.errors import StorageError

        raise StorageError(message) from None
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask gives a new file
    try:
        try:
            _step("write", path)
            write(str(tmp))
        except Exception as exc:  # a full or read-only disk, however the writer words it: one line naming `path`
            message = written_where(path, exc)
            if message is None:
                raise
            from mtlkd.errors import StorageError

            raise StorageError(message) from None
        if stat.S_IMODE(tmp.stat().st_mode) != mode:  # writers that replace the file (safetensors) make 0600
            os.chmod(tmp, mode)
        _step("replace", path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _step("done", path)
    return path


def folder_beside(path: str | Path, label: str = "building") -> Path:
    """A new empty folder beside `path` (same file system, so renaming it to `path` is atomic), made with
    the umask applied (mkdtemp would make it private); its name says which process builds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        folder = path.with_name(f".{path.name}.{label}-{os.getpid()}.{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: cannot create a folder beside it")


def build_folder(target: str | Path, build: Callable[[Path], object]) -> Path:
    """Build a whole folder beside `target` with `build(folder)`, then rename it to `target`, which must not
    exist or be an empty folder: a kill or a full disk midway leaves no half folder under the name, and an
    earlier folder there is never mixed into. Raises FileExistsError when `target` holds anything."""
    import shutil

    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(errno.EEXIST, "holds files already", str(target))
    stage = folder_beside(target)
    try:
        try:
            build(stage)
        except Exception as exc:  # a full or read-only disk midway: one line naming the folder
            message = written_where(target, exc)
            if message is None:
                raise
            from mtlkd.errors import StorageError

            raise StorageError(f"{message}; nothing was written") from None
        os.replace(stage, target)  # onto an empty folder too; a folder filled meanwhile: ENOTEMPTY, nothing lost
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return target


SWAP_JOURNAL = ".swap.json"  # in a folder whose files are being replaced from a staging folder beside it


def swap_in(stage: Path, out: Path, files: list[Path], remove: list[str] = ()) -> None:
    """Move `files` (under `stage`, each complete) to the same places under `out`, then delete the folders
    `remove` (relative to `out`: what the new content no longer has), as a whole: the plan is journalled in
    OUT/.swap.json first and the journal removed last, so a kill midway leaves a swap that `finish_swap`
    completes (every staged file is whole, so it rolls forward) before anyone uses `out`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    journal = {"stage": stage.name, "files": [str(p.relative_to(stage)) for p in files], "remove": list(remove)}
    atomic_write_bytes(out / SWAP_JOURNAL, json.dumps(journal).encode())
    finish_swap(out)


def finish_swap(out: Path) -> bool:
    """Complete a swap into `out` that a kill interrupted (see `swap_in`); returns whether there was one."""
    import json
    import shutil

    path = out / SWAP_JOURNAL
    if not path.is_file():
        return False
    journal = json.loads(path.read_text())
    stage = out.parent / journal["stage"]
    for relative in journal["files"]:
        staged, target = stage / relative, out / relative
        _step("move", target)
        if staged.is_file():  # not moved yet
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    for relative in journal.get("remove", []):
        _step("remove", out / relative)
        shutil.rmtree(out / relative, ignore_errors=True)
    _step("finish", path)
    path.unlink()
    shutil.rmtree(stage, ignore_errors=True)
    return True


def clean_stale_folders(out: Path, label: str = "building") -> list[Path]:
    """Remove the staging folders beside `out` (`folder_beside`) of processes that no longer run: what a
    killed export left. Folders of live processes (a concurrent export) stay. Returns those removed."""
    import shutil

    removed = []
    for folder in out.parent.glob(f".{out.name}.{label}-*"):
        pid = folder.name.rsplit("-", 1)[-1].split(".")[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (`temporary_beside`) a killed writer left in `folder`: a checkpoint's can be
    as large as the checkpoint. Those of live processes (a write under way) stay. Returns those removed."""
    removed = []
    for path in folder.glob(".*.tmp*") if folder.is_dir() else []:
        parts = path.name.split(".")
        pid = next((parts[i - 2] for i, part in enumerate(parts)
                    if part == "tmp" and i >= 3 and parts[i - 1].isdigit()), "")
        if path.is_file() and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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


def resolved(path: str | Path) -> Path:
    """`path` with links and `..` followed (as written when a link loops), so two spellings compare equal."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).absolute()


def lands_on_input(target: str | Path, files: Iterable[str | Path] = (),
                   folders: Iterable[str | Path] = ()) -> Path | None:
    """The input that writing `target` would replace: one of `files` (another spelling or a link included),
    or, for `folders` (a dataset, calibration images), any path inside one. None when it is none of them."""
    where = resolved(target)
    for path in files:
        if resolved(path) == where:
            return Path(path)
    for folder in folders:
        base = resolved(folder)
        if where == base or base in where.parents:
            return Path(folder)
    return None


# errno of a write the disk refused, and what the user can do about it
STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "permission denied; write elsewhere or fix the folder's permissions",
    errno.EPERM: "not permitted; write elsewhere or fix the folder's permissions",
}
# the same refusals as the Rust and C++ libraries word them (safetensors, OpenVINO) when they do not raise OSError
STORAGE_TEXTS = {"os error 28": errno.ENOSPC, "no space left": errno.ENOSPC, "os error 30": errno.EROFS,
                 "read-only file system": errno.EROFS, "os error 13": errno.EACCES}
# what a C++ writer says for any failed stream (OpenVINO's save_model): a full disk only when the disk is full
STREAM_FAILURES = ("basic_ios::clear", "iostream error")


def storage_errno(exc: BaseException) -> int | None:
    """The errno of STORAGE_ERRNOS an exception stands for (an OSError's own, or one read from a library's
    message), else None."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc.errno
    if isinstance(exc, OSError) and exc.errno is not None:
        return None
    text = str(exc).lower()
    return next((code for words, code in STORAGE_TEXTS.items() if words in text), None)


def written_where(path: str | Path, exc: BaseException) -> str | None:
    """`storage_message` for a writer into `path` that may word a full disk only as a failed stream (C++
    libraries) or a short write without errno (numpy): that counts as a full disk when the disk holding `path`
    has no room left."""
    message = storage_message(path, exc)
    vague = any(words in str(exc) for words in STREAM_FAILURES) or (isinstance(exc, OSError) and exc.errno is None)
    if message is None and vague and disk_full(path):  # numpy: "3072 requested and 3040 written"
        message = f"{path}: cannot write it: {STORAGE_ERRNOS[errno.ENOSPC]} ({os.strerror(errno.ENOSPC)})"
    return message


def storage_message(path: str | Path, exc: BaseException) -> str | None:
    """One line for a write the disk refused (naming `path`), or None when `exc` is something else."""
    code = storage_errno(exc)
    if code is None:
        return None
    return f"{path}: cannot write it: {STORAGE_ERRNOS[code]} ({os.strerror(code)})"


def disk_full(path: str | Path, margin: int = 1 << 20) -> bool:
    """Whether the file system holding `path` has less than `margin` bytes free: what a writer that only says
    "failed" (OpenCV, a C++ library) most likely ran into."""
    import shutil

    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return False
    return usage.free < min(margin, usage.total // 20)  # a small disk: 5% of it


def check_written(path: str | Path, min_bytes: int = 1) -> None:
    """Raise OSError(ENOSPC) naming `path` when a writer that reports no errors (OpenCV, matplotlib on a full
    disk) left fewer than `min_bytes`: checked before the file is renamed into place."""
    size = Path(path).stat().st_size
    if size < min_bytes:
        raise OSError(errno.ENOSPC, f"wrote {size} bytes, expected at least {min_bytes}", str(path))


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
