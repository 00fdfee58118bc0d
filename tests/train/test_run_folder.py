"""A run folder is never destroyed: refused without --resume/--overwrite, one training per folder, resume
from run.json alone to the same weights, Ctrl-C says how to resume, bad options and state are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mtlkd.cli.main import app
from mtlkd.data.synthetic import write_synthetic
from mtlkd.errors import UserError
from mtlkd.train.runfolder import run_lock
from mtlkd.train.trainer import TrainOptions, train

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 16, 4, size=(32, 32), seed=3, progress=False)


def _options(data, out, **kw) -> TrainOptions:
    base = dict(dataset="synthetic", data_dir=str(data), out=str(out), preset="vit-nano", epochs=1, batch_size=4,
                max_steps_per_epoch=1, seed=1, device="cpu")
    return TrainOptions(**{**base, **kw})


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_a_finished_run_is_never_replaced_silently(tiny_data, tmp_path):
    run = train(_options(tiny_data, tmp_path / "run"))
    before = _snapshot(run)
    assert {"run.json", "history.jsonl", "model.safetensors", "metrics.json"} <= set(before)
    with pytest.raises(UserError, match="holds a run already"):
        train(_options(tiny_data, run, lr=2e-3))
    assert _snapshot(run) == before
    train(_options(tiny_data, run, lr=2e-3, overwrite=True))
    assert json.loads((run / "run.json").read_text())["lr"] == 2e-3
    assert len((run / "history.jsonl").read_text().splitlines()) == 1


def test_resume_without_saved_state_leaves_the_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.jsonl").write_text('{"epoch": 1}\n')
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(UserError, match="no saved training state"):
        train(_options(tiny_data, out, resume=True))
    assert _snapshot(out) == before


def test_one_training_per_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    with run_lock(out), pytest.raises(UserError, match="another training"):
        train(_options(tiny_data, out))
    assert not (out / "history.jsonl").exists()
    train(_options(tiny_data, out))  # the lock is gone with its holder


def test_ctrl_c_then_resume_from_run_json_alone_gives_the_same_weights(tiny_data, tmp_path, monkeypatch):
    common = ["train", "synthetic", "--data-dir", tiny_data, "--preset", "vit-nano", "--epochs", 2,
              "--batch-size", 4, "--max-steps", 3, "--seed", 1, "--device", "cpu", "--select-fraction", 0.25]
    straight = tmp_path / "straight"
    assert _cli(*common, "--out", straight).exit_code == 0

    import mtlkd.train.plots as plots

    def ctrl_c(run):
        raise KeyboardInterrupt  # after epoch 1's state is saved

    monkeypatch.setattr(plots, "plot_history", ctrl_c)
    resumed = tmp_path / "resumed"
    result = _cli(*common, "--out", resumed)
    assert result.exit_code == 130, result.output
    assert f"mtl-train --resume --out {resumed}" in result.stderr
    monkeypatch.undo()

    result = _cli("train", "--resume", "--out", resumed, "--epochs", 3)
    assert result.exit_code == 2 and "--epochs 3 (the run has 2)" in _one_line(result)
    result = _cli("train", "--resume", "--out", resumed, "--method", "stl")
    assert result.exit_code == 2 and "--method stl" in _one_line(result)

    result = _cli("train", "--resume", "--out", resumed)
    assert result.exit_code == 0, result.output
    a, b = load_file(str(straight / "state.safetensors")), load_file(str(resumed / "state.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [json.loads(ln)["epoch"] for ln in (resumed / "history.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("args, words", [
    (["--batch-size", 0], "--batch-size 0"),
    (["--lr", -0.001], "--lr -0.001"),
    (["--epochs", 0], "--epochs 0"),
    (["--img-size", "big"], "--img-size"),
])
def test_bad_options_are_one_line_before_anything_is_written(tiny_data, tmp_path, args, words):
    out = tmp_path / "run"
    result = _cli("train", "synthetic", "--data-dir", tiny_data, "--out", out, "--preset", "vit-nano", *args)
    assert result.exit_code == 2, result.output
    assert words in _one_line(result)
    assert not out.exists()


def test_out_that_is_a_file_is_one_line(tiny_data, tmp_path):
    a_file = tmp_path / "run"
    a_file.write_text("keep")
    result = _cli("train", "synthetic", "--data-dir", tiny_data, "--out", a_file, "--preset", "vit-nano")
    assert result.exit_code == 2 and "is a file" in _one_line(result)
    assert a_file.read_text() == "keep"


def test_corrupt_or_foreign_state_is_one_line_naming_the_file(tiny_data, tmp_path):
    run = train(_options(tiny_data, tmp_path / "run", epochs=2, select_fraction=0.0))
    state = run / "state.safetensors"  # the commit; state.json is its readable copy, rewritten on resume
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    result = _cli("train", "--resume", "--out", run)
    assert result.exit_code == 2 and str(state) in _one_line(result)
    state.write_bytes(good)
    saved = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**saved, "method": "stl", "method_options": {}}))  # an stl run.json
    result = _cli("train", "--resume", "--out", run)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert "state.safetensors" in line and "stl" in line


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path):
    """A dataset that cannot be read fails before anything is written: the run folder this call created
    is gone again (it used to stay behind, empty but for its lock); a folder that existed stays."""
    from mtlkd.errors import DatasetError
    from mtlkd.train.trainer import TrainOptions, train

    out = tmp_path / "runs" / "nyuv2-mtl"
    with pytest.raises(DatasetError):
        train(TrainOptions(dataset="nyuv2", out=str(out), epochs=1))
    assert not out.exists()
    out.mkdir(parents=True)
    with pytest.raises(DatasetError):
        train(TrainOptions(dataset="nyuv2", out=str(out), epochs=1))
    assert out.is_dir()
