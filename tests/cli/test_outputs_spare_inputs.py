"""No command writes over one of its own inputs, whatever flag names the output (issue 20, case 1).

Every check runs before the model is opened, so the models here are a few bytes that are never parsed;
what is checked is that the input keeps its bytes and the command says which input in one line, exit 2."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtlkd.cli.common import check_not_input
from mtlkd.errors import ConfigError

runner = CliRunner()


def _files(tmp_path):
    (tmp_path / "img.png").write_bytes(b"\x89PNG not decoded")
    (tmp_path / "m.onnx").write_bytes(b"onnx bytes")
    (tmp_path / "model.xml").write_bytes(b"<xml/>")
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "ckpt.safetensors").write_bytes(b"checkpoint bytes")
    for run in ("R", "B"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text(json.dumps({"depth": {"abs_err": 0.5}}))
    (tmp_path / "E").mkdir()
    (tmp_path / "E" / "model.onnx").write_bytes(b"an earlier export")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")


CASES = [  # module, words (paths relative to tmp_path), the input that must survive
    ("mtlkd.cli.infer", ["m.onnx", "img.png", "--json=img.png"], "img.png"),
    ("mtlkd.cli.infer", ["m.onnx", ".", "--json=img.png"], "img.png"),  # a folder's image
    ("mtlkd.cli.infer", ["model.xml", "img.png", "--json=model.bin"], "model.bin"),  # the IR's weights
    ("mtlkd.cli.evaluate", ["m.onnx", "synthetic", "--json=m.onnx"], "m.onnx"),
    ("mtlkd.cli.evaluate", ["m.onnx", "synthetic", "--data-dir", "data", "--json=data/meta.json"], "data/meta.json"),
    ("mtlkd.cli.export", ["ckpt.safetensors", "--json=ckpt.safetensors"], "ckpt.safetensors"),
    ("mtlkd.cli.export", ["ckpt.safetensors", "--out", "ckpt.safetensors"], "ckpt.safetensors"),
    ("mtlkd.cli.export", ["ckpt.safetensors", "--triton", "ckpt.safetensors"], "ckpt.safetensors"),
    ("mtlkd.cli.report", ["R", "--baseline", "R", "--json=R/metrics.json"], "R/metrics.json"),
    ("mtlkd.cli.report", ["R", "--baseline", "B", "--json=./B/../B/metrics.json"], "B/metrics.json"),
    ("mtlkd.cli.bench", ["ckpt.safetensors", "--json=ckpt.safetensors"], "ckpt.safetensors"),
    ("mtlkd.cli.export", ["ckpt.safetensors", "--out", "E", "--json=E/model.onnx"], "E/model.onnx"),  # its own
]


@pytest.mark.parametrize("module, words, survivor", CASES, ids=[" ".join(w) for _, w, _ in CASES])
def test_an_output_onto_an_input_is_refused_and_the_input_kept(tmp_path, monkeypatch, module, words, survivor):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = (tmp_path / survivor).read_bytes()
    result = runner.invoke(importlib.import_module(module).app, words)
    assert result.exit_code == 2, result.output
    assert "one of this command's" in result.output and "Traceback" not in result.output
    assert (tmp_path / survivor).read_bytes() == before


def test_a_link_to_an_input_is_the_input(tmp_path):
    (tmp_path / "img.png").write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(tmp_path / "img.png")
    with pytest.raises(ConfigError, match="inputs"):
        check_not_input(tmp_path / "link.png", "--json", [tmp_path / "img.png"])
    check_not_input(tmp_path / "other.json", "--json", [tmp_path / "img.png"])  # a new name passes
    check_not_input(tmp_path / "other.json", "--json", [], [tmp_path / "elsewhere"])


def test_training_refuses_backbone_weights_inside_its_run_folder(tmp_path):
    from mtlkd.train.options import TrainOptions

    weights = tmp_path / "run" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"pretrained")
    options = TrainOptions(dataset="synthetic", out=str(tmp_path / "run"), backbone_weights=str(weights),
                           overwrite=True)
    with pytest.raises(ValueError, match="backbone-weights"):
        options.check()
    options = TrainOptions(dataset="synthetic", out=str(tmp_path / "data" / "run"), data_dir=str(tmp_path / "data"))
    with pytest.raises(ValueError, match="inside --data-dir"):
        options.check()


def test_a_killed_runs_hidden_temporaries_are_not_read_as_inputs(tmp_path):
    """A killed mtl-infer leaves `.x_seg.png.123.0.tmp.png` in --out; the next run over that folder must not
    take it for a picture of the user's (issue 20, case 8)."""
    from mtlkd.runtime.media import expand_sources

    (tmp_path / "photo.png").write_bytes(b"x")
    (tmp_path / ".photo_seg.png.4242.0.tmp.png").write_bytes(b"")
    assert [Path(s.path).name for s in expand_sources([tmp_path])] == ["photo.png"]


def test_a_triton_batch_beyond_int32_is_one_line_before_work(tmp_path):
    torch = pytest.importorskip("torch")
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import preset_config

    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b"])
    save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.zeros(1)}, model_metadata(config))  # header only
    result = runner.invoke(importlib.import_module("mtlkd.cli.export").app,
                           [str(tmp_path / "ckpt.safetensors"), "--batch-size", "1,1,3000000000",
                            "--triton", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "--batch-size" in result.output and "2147483647" in result.output
    assert not (tmp_path / "repo").exists()


def test_library_warnings_fold_into_the_one_error_line(capsys):
    import warnings

    from mtlkd import ui
    from mtlkd.errors import BackendError

    with pytest.raises(SystemExit), ui.user_errors():
        warnings.warn("backend auto: onnxruntime skipped on cpu: BackendError: m.onnx: cannot open it", stacklevel=1)
        warnings.warn("an unrelated library note", stacklevel=1)
        raise BackendError("m.onnx: no backend could run it: onnxruntime: BackendError: m.onnx: cannot open it")
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: an unrelated library note",
                   "error: m.onnx: no backend could run it: onnxruntime: BackendError: m.onnx: cannot open it"]


def test_a_missing_onnx_external_data_file_is_named(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from mtlkd.errors import MetadataError
    from mtlkd.metadata import read_onnx_metadata

    graph = helper.make_graph([helper.make_node("Mul", ["image", "w"], ["depth"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w")])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"), save_as_external_data=True,
              location="m.weights", size_threshold=0)
    (tmp_path / "m.weights").unlink()
    with pytest.raises(MetadataError, match="m.weights"):
        read_onnx_metadata(tmp_path / "m.onnx")
    (tmp_path / "img.png").write_bytes(b"x")
    result = runner.invoke(importlib.import_module("mtlkd.cli.infer").app,
                           [str(tmp_path / "m.onnx"), str(tmp_path / "img.png"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "m.weights" in result.output


def test_export_on_cuda_without_a_gpu_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import preset_config

    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b"])
    save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.zeros(1)}, model_metadata(config))  # header only
    result = runner.invoke(importlib.import_module("mtlkd.cli.export").app,
                           [str(tmp_path / "ckpt.safetensors"), "--device", "cuda", "--out", str(tmp_path / "e")])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and lines == [lines[0]] and "--device cuda" in lines[0], result.output
    assert not (tmp_path / "e").exists()


def test_an_unusable_triton_folder_is_one_line_before_the_export(tmp_path):
    torch = pytest.importorskip("torch")
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import preset_config

    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b"])
    save_checkpoint(tmp_path / "ckpt.safetensors", {"w": torch.zeros(1)}, model_metadata(config))  # header only
    (tmp_path / "repo").write_text("a file, not a folder")
    result = runner.invoke(importlib.import_module("mtlkd.cli.export").app,
                           [str(tmp_path / "ckpt.safetensors"), "--triton", str(tmp_path / "repo"),
                            "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "--triton" in result.output, result.output
    assert not (tmp_path / "e").exists()
