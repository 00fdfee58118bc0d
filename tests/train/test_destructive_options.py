"""Destructive options check everything first (issue 20, cases 2, 3 and the training mistakes of 8):
`--overwrite` deletes the old run only once the dataset and the network proved usable; a generated dataset
is a whole folder or nothing; seeds, learning rates, image sizes and devices are one line before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtlkd.cli.main import app
from mtlkd.data.synthetic import write_synthetic
from mtlkd.errors import StorageError
from mtlkd.train.trainer import TrainOptions, train

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 16, 4, size=(32, 32), seed=3, progress=False)


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def test_overwrite_with_a_mistyped_data_dir_keeps_the_old_run(tiny_data, tmp_path):
    run = train(TrainOptions(dataset="synthetic", data_dir=str(tiny_data), out=str(tmp_path / "run"),
                             preset="vit-nano", epochs=1, batch_size=4, max_steps_per_epoch=1, device="cpu"))
    before = _snapshot(run)
    assert {"model.safetensors", "state.safetensors", "metrics.json", "history.jsonl"} <= set(before)
    result = _cli("train", "synthetic", "--data-dir", tmp_path / "mistyped", "--out", run, "--preset", "vit-nano",
                  "--overwrite")
    assert result.exit_code == 2, result.output
    assert "mistyped" in _one_line(result)
    assert _snapshot(run) == before


def test_synthetic_over_an_existing_folder_is_refused_and_a_new_one_is_whole(tmp_path):
    old = tmp_path / "old"
    assert _cli("data", "synthetic", "--out", old, "--train", 6, "--val", 2, "--img-size", "16x16",
                "--quiet").exit_code == 0
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    result = _cli("data", "synthetic", "--out", old, "--train", 3, "--val", 1, "--img-size", "16x16", "--seed", 1)
    assert result.exit_code == 2 and "holds files already" in _one_line(result)
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before

    new = tmp_path / "new"
    assert _cli("data", "synthetic", "--out", new, "--train", 3, "--val", 1, "--img-size", "16x16",
                "--quiet").exit_code == 0
    meta = json.loads((new / "meta.json").read_text())
    assert len(list((new / "train" / "image").iterdir())) == meta["train"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_failed_render_leaves_no_folder(tmp_path, monkeypatch):
    import mtlkd.data.synthetic as synthetic
    from mtlkd.data import create_synthetic

    def fail(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic, "render_scene", fail)
    with pytest.raises(StorageError, match="disk is full"):
        create_synthetic(tmp_path / "set", 2, 1, size=(16, 16), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--select-seed", -1], "--select-seed -1"),
    (["--seed", "99999999999999999999"], "--seed 99999999999999999999"),
    (["--lr", "1e30"], "--lr 1e+30"),
    (["--img-size", "100000x100000"], "--img-size 100000x100000"),
    (["--device", "cuda:7"], "--device cuda:7"),
])
def test_training_mistakes_are_one_line_before_any_work(tiny_data, tmp_path, args, words):
    import torch

    if "cuda:7" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    result = _cli("train", "synthetic", "--data-dir", tiny_data, "--out", out, "--preset", "vit-nano",
                  "--epochs", 1, "--max-steps", 1, "--batch-size", 4, *args)
    assert result.exit_code == 2, result.output
    assert words in _one_line(result)
    assert not (out / "model.safetensors").exists()


def test_synthetic_refuses_an_image_size_no_model_takes(tmp_path):
    result = _cli("data", "synthetic", "--out", tmp_path / "big", "--img-size", "100000x100000")
    assert result.exit_code == 2 and "--img-size" in _one_line(result)
    assert not (tmp_path / "big").exists()


def test_a_killed_writers_temporaries_are_removed_and_others_kept(tmp_path):
    import subprocess

    from mtlkd.files import clean_stale_temporaries

    child = subprocess.Popen(["true"])  # a finished child: its pid belongs to no process
    child.wait()
    stale = tmp_path / f".model.safetensors.{child.pid}.0.tmp"
    live = tmp_path / f".curves.png.{__import__('os').getpid()}.0.tmp.png"
    mine = tmp_path / ".notes.tmp"
    for path in (stale, live, mine):
        path.write_bytes(b"x")
    assert clean_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and mine.exists()
