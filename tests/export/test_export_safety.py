"""A failed export never touches the export folder; each precision has its own files; options out of range
are one line before anything is built; mtl-eval says which precision it scored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.cli.export import app
from mtlkd.export import validate as val
from mtlkd.models import create_model, preset_config

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(2)
    config = preset_config("vit-nano", ["seg", "depth", "normal"], class_names=["a", "b", "c"])
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, words", [(["--tasks", "seg,seg"], "twice"), (["--opset", "99"], "--opset 99"),
                                         (["--tasks", "depth,seg,depth"], "twice")])
def test_bad_options_are_one_line(checkpoint, tmp_path, args, words):
    result = runner.invoke(app, [str(checkpoint), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert not (tmp_path / "out").exists()


def test_read_only_out_is_refused_before_the_export(checkpoint, tmp_path, monkeypatch):
    import mtlkd.export.options as export_options

    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(export_options.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    result = runner.invoke(app, [str(checkpoint), "--out", str(locked / "export")])
    assert result.exit_code == 2 and "not writable" in result.stderr
    assert "exporting" not in result.stdout


def test_failed_export_leaves_the_folder_as_it_was(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "export"
    result = runner.invoke(app, [str(checkpoint), "--openvino", "--out", str(out)])
    assert result.exit_code == 0, result.output
    before = _snapshot(out)
    assert "model.onnx" in before and "openvino/model.xml" in before

    def failing(checks):
        raise val.ValidationError("model.onnx: seg pixel agreement 12.00% < 99.00%")

    monkeypatch.setattr(val, "ensure_ok", failing)
    torch.manual_seed(3)  # other weights: a successful export would change every file
    config = preset_config("vit-nano", ["seg", "depth", "normal"], class_names=["a", "b", "c"])
    other = save_checkpoint(tmp_path / "other.safetensors", create_model(config).state_dict(), model_metadata(config))
    result = runner.invoke(app, [str(other), "--openvino", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "left as it was" in result.stderr
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_nan_weights_do_not_replace_a_good_export(checkpoint, tmp_path):
    out = tmp_path / "export"
    assert runner.invoke(app, [str(checkpoint), "--out", str(out)]).exit_code == 0
    before = _snapshot(out)
    config = preset_config("vit-nano", ["seg", "depth", "normal"], class_names=["a", "b", "c"])
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in create_model(config).state_dict().items()}
    nan = save_checkpoint(tmp_path / "nan.safetensors", state, model_metadata(config))
    result = runner.invoke(app, [str(nan), "--out", str(out)])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_eval_says_which_precision_it_read(checkpoint, tmp_path):
    import json

    from mtlkd.cli.main import app as mtl

    data, out = tmp_path / "data", tmp_path / "export"
    assert runner.invoke(mtl, ["data", "synthetic", "--out", str(data), "--train", "2", "--val", "2", "--img-size",
                               "32x32", "--quiet"]).exit_code == 0
    assert runner.invoke(app, [str(checkpoint), "--precision", "fp16", "--out", str(out)]).exit_code == 0
    for name, precision in (("model.onnx", "fp32"), ("model.fp16.onnx", "fp16")):
        result = runner.invoke(mtl, ["eval", str(out / name), "synthetic", "--data-dir", str(data), "--json",
                                     "--backend", "onnxruntime"])
        assert result.exit_code == 0, result.output
        assert f"({precision}, onnxruntime)" in result.stderr
        assert set(json.loads(result.stdout)) == {"seg", "depth", "normal"}  # stdout stays the metrics only


def test_eval_batch_size_zero_is_one_line(checkpoint):
    from mtlkd.cli.evaluate import app as eval_app

    result = runner.invoke(eval_app, [str(checkpoint), "synthetic", "--batch-size", "0"])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == ["error: --batch-size 0: must be 1 or more"]
