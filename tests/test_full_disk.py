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
    for path in mounted:  # lazily when a file there is still open (a library's mapping): never left mounted
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


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


def _nano_checkpoint(path: Path) -> Path:
    torch = pytest.importorskip("torch")
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config

    torch.manual_seed(0)
    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b"])
    return save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    pytest.importorskip("openvino")
    from typer.testing import CliRunner

    from mtlkd.cli.export import app

    ckpt = _nano_checkpoint(tmp_path / "model.safetensors")
    disk = small_disk.mount(f"{ckpt.stat().st_size * 5 // 4 // 1024}k")  # room for the ONNX graph, not the IR
    result = CliRunner().invoke(app, [str(ckpt), "--out", str(disk / "export"), "--openvino", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "disk is full" in lines[0] and str(disk / "export") in lines[0]
    assert "Traceback" not in result.output
    assert list(disk.iterdir()) == []  # no staging, no half export


def test_training_onto_a_full_disk_is_one_line_and_keeps_what_was_committed(small_disk, tmp_path):
    from typer.testing import CliRunner

    from mtlkd.cli.main import app
    from mtlkd.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "syn", 8, 4, size=(32, 32), seed=3, progress=False)
    disk = small_disk.mount("1m")  # the run's first checkpoints fit, not the state of its optimiser too
    result = CliRunner().invoke(app, ["train", "synthetic", "--data-dir", str(data), "--out", str(disk / "run"),
                                      "--preset", "vit-nano", "--epochs", "3", "--batch-size", "4",
                                      "--max-steps", "1", "--select-fraction", "0", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disk is full" in lines[0] and str(disk / "run") in lines[0], result.output
    run = disk / "run"
    committed = (run / "state.safetensors").is_file()
    for path in run.iterdir():
        assert ".tmp" not in path.name, path  # no temporaries left
        empty_allowed = {".lock"} | (set() if committed else {"history.jsonl"})  # a run not yet committed
        assert path.name in empty_allowed or path.stat().st_size > 0, path  # nothing empty under a final name
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed: resume
    result = CliRunner().invoke(app, ["train", "--resume", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    history = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3]


def test_a_dataset_render_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk):
    from typer.testing import CliRunner

    from mtlkd.cli.main import app

    disk = small_disk.mount("256k")
    result = CliRunner().invoke(app, ["data", "synthetic", "--out", str(disk / "syn"), "--train", "200",
                                      "--val", "10", "--img-size", "32x32", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "disk is full" in lines[0] and str(disk / "syn") in lines[0], result.output
    assert list(disk.iterdir()) == []
