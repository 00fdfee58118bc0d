"""Every error mtlkd raises for something a user can fix, in one family.

The library raises only these (and the OS's own file errors) for bad input: a wrong option, a malformed
dataset, a checkpoint or model file it cannot use, a backend that is not installed, a video it cannot
read. Their message is one line: what is wrong, which file, what to do. The command line turns them into
that line and exit 2; any other exception is a bug and keeps its traceback (`MTLKD_TRACEBACK=1` keeps
the traceback for these too). This module imports nothing, so the torch-free runtime can use it.

`UserError` is a `ValueError`, so code that already catches ValueError for bad input still does.
"""

from __future__ import annotations

TRACEBACK_ENV = "MTLKD_TRACEBACK"  # set to 1: every error shows its traceback, user errors included
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong and what to do."""


class ConfigError(UserError):
    """An option, preset or config that is unknown, out of range or inconsistent."""


class DatasetError(UserError):
    """A dataset that is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint or model file that cannot be read or does not fit the model asked for."""


class MetadataError(CheckpointError):
    """Metadata inside a model file that is not what mtlkd writes; the message names the field."""


class BackendError(UserError):
    """A model file a backend cannot use, or a backend that fails on this machine."""


class BackendUnavailable(BackendError):
    """A backend, or the device it needs, is not installed or not present on this machine."""


class CudaError(BackendError):
    """A CUDA runtime call failed; the message keeps CUDA's own error name."""


class StorageError(UserError):
    """The disk refused a write: full (ENOSPC, EDQUOT), read-only (EROFS) or not ours (EACCES, EPERM)."""


class MediaError(UserError):
    """An image, video or camera that cannot be read or written."""


class ReportError(UserError):
    """Run folders or metrics files a report cannot use."""


class ExportError(UserError):
    """An export that cannot be made from this input on this machine."""


class EngineBuildError(ExportError):
    """TensorRT could not parse the graph or build the engine."""


class ValidationError(ExportError):
    """An exported graph disagrees with its reference beyond the documented tolerance."""


class InferError(UserError):
    """A Triton server answered a request with an error: its HTTP status and the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and `kill` send), raised where Ctrl-C would be, so that both stop a
    command the same way: a training says how to resume, an export removes its staging folder."""


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


# The OS's own errors about a path the user gave: their message already names the file.
USER_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
)
