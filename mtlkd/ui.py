"""What every command shows a person: progress bars with rate and ETA, and one-line errors.

Progress and logs go to stderr, results to stdout. A user mistake (any `mtlkd.errors.UserError`, or a
path the OS refuses) is reported as one line on stderr and exit 2, never a traceback; every other
exception is a bug and keeps its traceback. When stderr is not a terminal (a log file, CI), lines are
never wrapped and a bar becomes a plain line every few seconds, so piped runs still show progress.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, NoReturn

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

from mtlkd.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    TRACEBACK_ENV,
    USER_OS_ERRORS,
    Terminated,
    UserError,
)

console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # a log keeps one line per line
TRAIN_EXTRA = {"torch", "timm", "onnx", "onnxscript", "onnxconverter_common", "torchvision"}
LOG_EVERY_SECONDS = 10.0


class RateColumn(ProgressColumn):
    """Items per second, from rich's own moving estimate."""

    def __init__(self, unit: str = "it"):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"-- {self.unit}/s", style="cyan")


def progress_bar(unit: str = "it", transient: bool = False, quiet: bool = False) -> Any:
    """A bar with count, rate and ETA; live numbers (loss, fps) go in the task's `info` field:
    `bar.add_task("train", total=n, info="")`, then `bar.update(task, advance=1, info="loss 0.42")`.

    `quiet` gives a bar that shows nothing; when stderr is not a terminal, a `LineProgress` logs a line
    every few seconds instead of redrawing."""
    if quiet:
        return SilentProgress()
    if not console.is_terminal:
        return LineProgress(unit)
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


class SilentProgress:
    """The bar of `--quiet`: the same calls, nothing shown (`bar.console` still prints)."""

    console: Console = console

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def update(self, *_: Any, **__: Any) -> None:
        return None

    def advance(self, *_: Any, **__: Any) -> None:
        return None


class LineProgress(SilentProgress):
    """A bar for a log file: `description 120/720 (17%) 45.2 img/s eta 0:13 info`, at most every
    LOG_EVERY_SECONDS and once at the end, so a piped or nohup'd run still shows how far it is."""

    def __init__(self, unit: str = "it"):
        self.unit = unit
        self.tasks: dict[int, dict[str, Any]] = {}

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        now = time.monotonic()
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": 0.0,
                                      "start": now, "logged": now, "info": fields.get("info", "")}
        return len(self.tasks) - 1

    def update(self, task_id: int, advance: float = 0.0, completed: float | None = None,
               total: float | None = None, description: str | None = None, **fields: Any) -> None:
        task = self.tasks[task_id]
        task["completed"] = completed if completed is not None else task["completed"] + advance
        for key, value in (("total", total), ("description", description), ("info", fields.get("info"))):
            if value is not None:
                task[key] = value
        now = time.monotonic()
        done = task["total"] is not None and task["completed"] >= task["total"]
        if done or now - task["logged"] >= LOG_EVERY_SECONDS:
            task["logged"] = now
            console.print(self.line(task, now), highlight=False, markup=False)

    def advance(self, task_id: int, advance: float = 1.0) -> None:
        self.update(task_id, advance=advance)

    def line(self, task: dict[str, Any], now: float) -> str:
        elapsed = max(now - task["start"], 1e-9)
        rate = task["completed"] / elapsed
        count, total = task["completed"], task["total"]
        text = f"{task['description']} {count:g}"
        if total:
            eta = (total - count) / rate if rate > 0 else float("nan")
            eta_text = f"{int(eta // 60)}:{int(eta % 60):02d}" if eta == eta else "--"
            text += f"/{total:g} ({100 * count / total:.0f}%) {rate:.1f} {self.unit}/s eta {eta_text}"
        else:
            text += f" {rate:.1f} {self.unit}/s"
        return f"{text} {task['info']}".rstrip()


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _warnings_folded(caught: list, error: str = "") -> None:
    """Library warnings of a command as one `warning:` line each, without Python's source line, after the
    work; those an error line repeats (the auto backend's reasons) are left to it."""
    for entry in dict.fromkeys(str(w.message).strip() for w in caught):
        if entry and entry.split(": ", 2)[-1] not in error:
            print(f"warning: {entry}", file=sys.stderr)
    caught.clear()


def tracebacks_always() -> bool:
    """`MTLKD_TRACEBACK=1`: show the traceback of user errors too (for bug reports)."""
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


_sigterms_received = 0  # counted by the handler: an exception after one is the termination, whatever its type


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    global _sigterms_received
    _sigterms_received += 1
    raise Terminated(f"signal {signum}")


def _masks_termination(exc: BaseException) -> bool:
    """Whether `exc` has `Terminated` in its `__cause__`/`__context__` chain: C code that was running when
    SIGTERM arrived (an extension module's init inside `import onnxruntime`) may turn it into its own
    error, such as `ImportError: initialization failed`."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, Terminated):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


@contextlib.contextmanager
def terminations_unmasked() -> Iterator[None]:
    """Inside the block, an exception that stands for a SIGTERM (one with `Terminated` in its chain, or any
    raised after the handler counted a SIGTERM) is raised again as `Terminated`, so it stops the command as
    SIGTERM does (exit 143, every Ctrl-C handler run) instead of reading as a bug; others pass unchanged."""
    received_before = _sigterms_received
    try:
        yield
    except Exception as exc:
        if not (_sigterms_received > received_before or _masks_termination(exc)):
            raise
        raise Terminated(f"SIGTERM, surfaced as {type(exc).__name__}: {exc}") from exc


def _resend_swallowed_terminations(previous_hook: Any) -> Any:
    """An unraisable-exception hook: a `Terminated` raised where Python can only print it (a destructor or a
    weakref callback that the signal happened to interrupt) is not printed but sent again as SIGTERM a
    moment later, when the main thread runs ordinary code that it can stop; others go to `previous_hook`."""
    import signal
    import threading

    def on_unraisable(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Terminated):
            previous_hook(unraisable)
            return
        resend = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        resend.daemon = True
        resend.start()

    return on_unraisable


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread for the block, so every `finally`
    and every Ctrl-C handler runs for it as for Ctrl-C: also where C code turned it into another exception
    (`terminations_unmasked`) or a destructor swallowed it (`_resend_swallowed_terminations`). The previous
    handlers are put back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        with terminations_unmasked():
            yield
        return
    previous, previous_hook = signal.signal(signal.SIGTERM, _raise_terminated), sys.unraisablehook
    _handlers_on_the_thread_stack(signal.SIGTERM, signal.SIGINT)
    sys.unraisablehook = _resend_swallowed_terminations(previous_hook)
    try:
        with terminations_unmasked():
            yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


_SA_ONSTACK = 0x08000000


def _handlers_on_the_thread_stack(*signals: int) -> None:
    """Run these signals' handlers on the interrupted thread's own stack, not the alternate signal stack
    that Python asks for (SA_ONSTACK). OpenVINO's CPU plugin sets the main thread's alternate stack to one
    of its own and can leave it pointing at memory it has unmapped: the next signal delivered onto it is a
    segmentation fault instead of Ctrl-C or SIGTERM. Linux (glibc's struct sigaction) only; elsewhere, or if
    libc cannot be reached, the handlers stay as Python installed them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    class SigAction(ctypes.Structure):  # glibc, x86-64 and aarch64: handler, 1024-bit mask, flags, restorer
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                    ("restorer", ctypes.c_void_p)]  # fmt: skip

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return
    for signum in signals:
        action = SigAction()
        if libc.sigaction(signum, None, ctypes.byref(action)) == 0 and action.flags & _SA_ONSTACK:
            action.flags &= ~_SA_ONSTACK
            libc.sigaction(signum, ctypes.byref(action), None)


def interrupted_code(exc: BaseException) -> int:
    """The exit status a shell reports for the signal behind `exc`: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the user-error family (mtlkd.errors) and the OS's refusals of a user's path (a full or read-only
    disk included) into one line and exit 2; Ctrl-C and SIGTERM into one line and exit 130 or 143. Any other
    exception, a ValueError from numpy or torch included, is a bug: it propagates with its traceback.
    Library warnings become one `warning:` line each after the work (`_warnings_folded`)."""
    import warnings

    from mtlkd.files import storage_message

    with warnings.catch_warnings(record=True) as caught:
        try:
            with sigterm_as_interrupt():
                yield
        except (UserError, *USER_OS_ERRORS) as exc:
            if tracebacks_always():
                raise
            _warnings_folded(caught, str(exc))
            fail(str(exc))
        except KeyboardInterrupt as exc:
            if tracebacks_always():
                raise
            _warnings_folded(caught)
            fail("interrupted", code=interrupted_code(exc))
        except OSError as exc:  # ENOSPC, EROFS, EDQUOT from anywhere: the path and what to do
            message = storage_message(exc.filename, exc) if exc.filename else None
            if message is None or tracebacks_always():
                raise
            _warnings_folded(caught)
            fail(message)
        except ModuleNotFoundError as exc:
            if exc.name not in TRAIN_EXTRA or tracebacks_always():
                raise
            fail(f"{exc.name} is not installed: this needs the training stack, pip install 'mtlkd[train,cpu]'")
        finally:
            _warnings_folded(caught)
