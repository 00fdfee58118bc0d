"""A full or read-only disk is one line naming the path, and never leaves a damaged file under a final name
(issue 20, case 6). Tested on a small tmpfs (needs root and `mount`; skipped otherwise)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mtlkd.errors import StorageError
from mtlkd.files import atomic_write, atomic_write_bytes


@pytest.fixture
def small_disk(tmp_path):
    """A mount point of tmpfs; `mount(size)` makes it that small, `read_only()` remounts it read-only."""
    point = tmp_path / "disk"
    point.mkdir()
    mounted = []

    class Disk:
        path = point

        def mount(self, size: str) -> Path:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                  capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
            mounted.append(point)
            return point

        def read_only(self) -> None:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)

    yield Disk()
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_disk_full_keeps_the_old_file_and_names_the_path(small_disk):
    disk = small_disk.mount("64k")
    target = disk / "metrics.json"
    atomic_write_bytes(target, b'{"old": true}\n')
    with pytest.raises(StorageError, match=r"metrics.json: cannot write it: the disk is full"):
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert target.read_bytes() == b'{"old": true}\n'
    assert [p.name for p in disk.iterdir()] == ["metrics.json"]  # no temporary left


def test_safetensors_on_a_full_disk_is_one_line(small_disk):
    pytest.importorskip("torch")
    import torch

    from mtlkd.checkpoint import save_checkpoint

    disk = small_disk.mount("64k")
    with pytest.raises(StorageError, match=r"model.safetensors: cannot write it: the disk is full"):
        save_checkpoint(disk / "model.safetensors", {"w": torch.zeros(1 << 18)}, {"state": "x"})


def test_a_plot_on_a_full_disk_never_leaves_an_empty_png(small_disk):
    from mtlkd.train.plots import plot_history

    disk = small_disk.mount("16k")
    history = [{"epoch": e, "lr": 1e-3, "train": {"loss": 1.0 / e}} for e in (1, 2, 3)]
    (disk / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    with pytest.raises(StorageError, match="curves.png"):
        plot_history(disk)
    assert not (disk / "curves.png").exists()


def test_a_video_cut_short_by_a_full_disk_never_replaces_the_old_one(small_disk):
    from mtlkd.runtime.media import VideoWriter

    disk = small_disk.mount("512k")
    target = disk / "clip_panel.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(target, fps=10) as video:
        for _ in range(2):
            video.write(np.zeros((32, 32, 3), np.uint8))
    good = target.read_bytes()
    with pytest.raises(OSError, match="No space left") as info, VideoWriter(target, fps=10) as video:
        for _ in range(40):  # noise does not compress: far more than the disk holds
            video.write(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert info.value.filename == str(target)
    assert target.read_bytes() == good
    assert [p.name for p in disk.iterdir()] == [target.name]


def test_read_only_disk_is_one_line_through_the_command_layer(small_disk, capsys):
    from mtlkd import ui

    disk = small_disk.mount("64k")
    small_disk.read_only()
    with pytest.raises(SystemExit) as exit_info, ui.user_errors():
        atomic_write(disk / "out.json", lambda tmp: Path(tmp).write_text("{}"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {disk / 'out.json'}: ") and "read-only" in err
