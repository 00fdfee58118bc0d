"""The error family: user mistakes are one line and exit 2, bugs keep their traceback."""

import ast
import contextlib
import pathlib
import subprocess
import sys

import pytest

import mtlkd
from mtlkd import errors, ui

PACKAGE = pathlib.Path(mtlkd.__file__).parent


def test_user_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info, ui.user_errors():
        raise errors.DatasetError("data/nyuv2: no train split; pass the folder holding train/ and val/")
    assert exit_info.value.code == errors.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: data/nyuv2: no train split; pass the folder holding train/ and val/\n"


def test_a_plain_value_error_is_a_bug_and_keeps_its_traceback():
    # numpy raising on bad shapes inside the library is not the user's mistake: it must not become exit 2
    import numpy as np

    with pytest.raises(ValueError, match="broadcast"), ui.user_errors():
        np.zeros(3) + np.zeros(4)


def test_missing_file_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit), ui.user_errors():
        (tmp_path / "nope.json").read_text()
    assert "nope.json" in capsys.readouterr().err


def test_traceback_env_keeps_the_exception(monkeypatch):
    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    with pytest.raises(errors.ConfigError), ui.user_errors():
        raise errors.ConfigError("--epochs -1: must be at least 1")


def test_every_exception_class_lives_in_errors_module():
    """One module defines the family: an exception class anywhere else is a second taxonomy."""
    stray = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Error", "Exception", "Unavailable")) for b in bases):
                    stray.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert stray == []


def test_errors_module_imports_nothing_heavy():
    # the torch-free runtime raises these: the module must not pull in torch, rich or mtlkd's UI
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imported)


def test_user_error_family_shares_one_base():
    family = [getattr(errors, name) for name in dir(errors) if name.endswith(("Error", "Unavailable"))]
    assert len(family) >= 10
    assert all(issubclass(cls, errors.UserError) for cls in family)


def test_line_progress_logs_when_not_a_terminal(monkeypatch):
    lines = []
    monkeypatch.setattr(ui.console, "print", lambda text, **_: lines.append(text))
    monkeypatch.setattr(ui, "LOG_EVERY_SECONDS", 0.0)
    bar = ui.LineProgress("img")
    task = bar.add_task("train", total=4, info="")
    for step in range(4):
        bar.update(task, advance=1, info=f"loss {1 / (step + 1):.2f}")
    assert len(lines) == 4
    assert lines[-1].startswith("train 4/4 (100%)") and lines[-1].endswith("loss 0.25")
    assert "img/s" in lines[0] and "eta" in lines[0]


def test_quiet_progress_shows_nothing(capsys):
    with ui.progress_bar("img", quiet=True) as bar:
        task = bar.add_task("train", total=3, info="")
        bar.update(task, advance=3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_sigterm_turned_into_an_import_error_is_still_a_sigterm(capsys):
    # a C extension's init (`import onnxruntime`) turns the Terminated of the SIGTERM handler into its own
    # ImportError: the command must still exit 143 with one line, not a traceback and exit 1
    with pytest.raises(SystemExit) as exit_info, ui.user_errors():
        try:
            raise errors.Terminated("signal 15")
        except errors.Terminated as terminated:
            raise ImportError("initialization failed") from terminated
    assert exit_info.value.code == errors.EXIT_TERMINATED
    assert capsys.readouterr().err == "error: interrupted\n"


def test_an_error_after_a_received_sigterm_is_the_termination(capsys):
    import signal

    with pytest.raises(SystemExit) as exit_info, ui.user_errors():
        with contextlib.suppress(errors.Terminated):  # C code that swallowed it and failed its own way
            signal.raise_signal(signal.SIGTERM)
        raise ImportError("initialization failed")
    assert exit_info.value.code == errors.EXIT_TERMINATED


def test_a_plain_import_error_is_a_bug_and_keeps_its_traceback():
    with pytest.raises(ImportError, match="initialization failed"), ui.user_errors():
        raise ImportError("initialization failed")


def test_a_sigterm_swallowed_by_a_destructor_still_stops_the_command(capsys):
    # the signal may land in a weakref callback or __del__, where Python only prints the exception
    import time

    class RaisesInDestructor:
        def __del__(self):
            raise errors.Terminated("signal 15")

    with pytest.raises(SystemExit) as exit_info, ui.user_errors():
        RaisesInDestructor()
        time.sleep(10)  # the SIGTERM sent again interrupts this
    assert exit_info.value.code == errors.EXIT_TERMINATED
    assert "Traceback" not in capsys.readouterr().err


DANGLING_SIGNAL_STACK = """
import ctypes, signal
from mtlkd import ui

class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
size = 1 << 16
memory = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
assert libc.sigaltstack(ctypes.byref(Stack(memory, 0, size)), None) == 0
assert libc.munmap(ctypes.c_void_p(memory), ctypes.c_size_t(size)) == 0  # what OpenVINO's CPU plugin leaves
with ui.user_errors():
    signal.raise_signal(signal.SIGTERM)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack through glibc")
def test_sigterm_is_a_termination_when_the_signal_stack_was_unmapped():
    # delivered onto an alternate stack that a library unmapped, SIGTERM would be a segmentation fault
    result = subprocess.run([sys.executable, "-c", DANGLING_SIGNAL_STACK], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == errors.EXIT_TERMINATED, result.stderr
    assert result.stderr.strip().endswith("error: interrupted")
