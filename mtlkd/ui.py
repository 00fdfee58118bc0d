"""What every command shows a person: progress bars with rate and ETA, and one-line errors.

A user mistake (a missing file, a malformed dataset, a bad option) is reported as one line on stderr
and a non-zero exit, never a traceback; a bug still raises.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)
EXIT_USER_ERROR = 2
TRAIN_EXTRA = {"torch", "timm", "onnx", "onnxscript", "onnxconverter_common", "torchvision"}


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong and what to do."""


class RateColumn(ProgressColumn):
    """Items per second, from rich's own moving estimate."""

    def __init__(self, unit: str = "it"):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"-- {self.unit}/s", style="cyan")


def progress_bar(unit: str = "it", transient: bool = False) -> Progress:
    """A bar with count, rate and ETA; live numbers (loss, fps) go in the task's `info` field:
    `bar.add_task("train", total=n, info="")`, then `bar.update(task, advance=1, info="loss 0.42")`."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
    )


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the ValueErrors our readers raise for bad input (UserError, DatasetError, CheckpointError...)
    and missing files into one line and exit 2."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_EXTRA:
            raise
        fail(f"{exc.name} is not installed: this needs the training stack, pip install 'mtlkd[train,cpu]'")
