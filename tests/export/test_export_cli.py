"""`mtl-export` end to end on a random-weight vit-nano checkpoint, plus the pieces without a network:
batch-profile arithmetic, calibration folders and the validation verdicts."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.cli.export import app
from mtlkd.errors import BackendUnavailable
from mtlkd.export import validate as val
from mtlkd.export.onnx import read_onnx_metadata
from mtlkd.export.options import parse_batch_profile
from mtlkd.export.precision import load_calibration_images
from mtlkd.export.tensorrt import profile_shapes, require_tensorrt
from mtlkd.models import create_model, preset_config

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    names = ["wall", "floor", "chair", "table"]
    config = preset_config("vit-nano", ["seg", "depth", "normal"], class_names=names)
    model = create_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, model.state_dict(), model_metadata(config))


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_help_lists_options_and_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("--trt", "--openvino", "--precision", "--calib-data", "--tasks", "--triton", "--out",
                 "--batch-size", "--workspace", "--opset", "--device", "--json", "--quiet", "Examples",
                 "mtl-export runs/"):  # fmt: skip
        assert word in result.output
    rows = [line for line in result.output.splitlines() if "--" in line and "--help" not in line]
    assert rows and not any(p in line for line in rows for p in ("<bool>", "<path>", "<int", "x>="))


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.safetensors"], "no such checkpoint"),
        (["{bad}"], "not a safetensors file"),
        (["{ckpt}", "--precision", "int4"], "--precision"),
        (["{ckpt}", "--tasks", "edges"], "unknown task"),
        (["{ckpt}", "--batch-size", "8,4,1"], "MIN <= OPT <= MAX"),
        (["{ckpt}", "--batch-size", "2,4,8"], "MIN must be 1"),  # the engine and Triton would refuse 1 image
        (["{ckpt}", "--opset", "11"], "--opset"),
        (["{ckpt}", "--precision", "int8", "--calib-data", "{missing}"], "--calib-data"),
    ],
)
def test_user_errors_exit_2_with_one_line(checkpoint, tmp_path, args, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    args = [a.format(ckpt=checkpoint, bad=bad, missing=tmp_path / "nope") for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_refused_in_one_line_and_onnx_still_written(checkpoint, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, [str(checkpoint), "--trt", "--tasks", "seg", "--out", str(out), "--quiet"])
    assert result.exit_code not in (0, 2), result.output
    lines = _error_lines(result.stderr)  # --quiet: no progress lines, only the error
    assert len(lines) == 1 and "TensorRT" in lines[0] and "model.onnx" in lines[0]
    assert read_onnx_metadata(out / "model.onnx")["tasks"] == ["seg"]
    assert not (out / "model.engine").exists()
    with pytest.raises(BackendUnavailable, match="not installed"):
        require_tensorrt()


def test_fp16_onnx_openvino_and_triton_in_one_run(checkpoint, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out, repo = tmp_path / "out", tmp_path / "triton"
    args = [str(checkpoint), "--onnx", "--openvino", "--precision", "fp16", "--tasks", "seg,depth",
            "--triton", str(repo), "--out", str(out), "--batch-size", "1,2,4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "pixel agreement" in result.output and "raw err" in result.output and "written to" in result.output
    meta = read_onnx_metadata(out / "model.fp16.onnx")
    assert meta["precision"] == "fp16" and meta["tasks"] == ["seg", "depth"]
    assert meta["class_names"] == ["wall", "floor", "chair", "table"] and len(meta["source_sha256"]) == 64
    assert (out / "openvino" / "model.fp16.xml").is_file() and (out / "model.onnx").is_file()
    assert not (out / "openvino" / "model.xml").exists()  # the fp32 IR name is not taken by fp16
    report = json.loads((out / "export.json").read_text())
    assert {a["precision"] for a in report["artifacts"]} == {"fp32", "fp16"}
    config = text_format.Parse((repo / "mtlkd_onnx" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 4 and [o.name for o in config.output] == ["seg", "depth"]
    stride = meta["output_stride"]  # the heads' grid by default; the runtime resizes once
    assert stride == 8 and list(config.output[0].dims) == [4, 32 // stride, 32 // stride]
    assert (repo / "mtlkd_openvino" / "1" / "model.bin").is_file()
    assert f"1/{stride} of the input's size" in (repo / "README.md").read_text()


# ------------------------------------------------------------------------------------- no network


def test_parse_batch_profile():
    assert parse_batch_profile("1,4,8") == (1, 4, 8)
    assert parse_batch_profile(" 1, 2 ,16 ") == (1, 2, 16)
    assert parse_batch_profile("4") == (1, 4, 4)  # one number: the opt and max batch
    assert parse_batch_profile((1, 1, 1)) == (1, 1, 1)
    for bad in ("0,1,2", "4,2,8", "1,8,4", "1,2", "a,b,c", "1,2,3,4", "", "2,2,16", (4, 4, 4)):
        with pytest.raises(ValueError):
            parse_batch_profile(bad)


def test_profile_shapes_use_the_input_size():
    shapes = profile_shapes((1, 4, 8), (384, 384))
    assert shapes == {"min": (1, 3, 384, 384), "opt": (4, 3, 384, 384), "max": (8, 3, 384, 384)}
    assert profile_shapes("1,2,2", [96, 128])["opt"] == (2, 3, 96, 128)


def test_calibration_from_dataset_image_folder_and_synthetic(tmp_path):
    from PIL import Image

    dataset = tmp_path / "data"
    (dataset / "train" / "image").mkdir(parents=True)
    for i in range(5):
        np.save(dataset / "train" / "image" / f"{i}.npy", np.full((40, 48, 3), i / 10, np.float32))
    images, source = load_calibration_images(dataset, (32, 32), n=3)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32 and "train" in source
    assert np.allclose(images[:, 0, 0, 0], [0.0, 0.2, 0.4])  # evenly spread over the folder, in order
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(pictures / "a.png")
    images, _ = load_calibration_images(pictures, (16, 24))
    assert images.shape == (1, 3, 16, 24) and np.allclose(images, 1.0)
    synthetic, source = load_calibration_images(None, (32, 32), n=4)
    assert synthetic.shape == (4, 3, 32, 32) and synthetic.min() >= 0.0 and synthetic.max() <= 1.0
    assert synthetic.std() > 0.05  # rendered rooms, not a constant
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy"):
        load_calibration_images(tmp_path / "empty", (32, 32))


def test_validation_flags_outputs_beyond_tolerance():
    rng = np.random.default_rng(0)
    ref = {3: {"seg": rng.normal(size=(3, 5, 8, 8)).astype(np.float32),
               "depth": rng.uniform(1, 5, (3, 1, 8, 8)).astype(np.float32)}}  # fmt: skip
    same = {3: {k: v + 1e-6 for k, v in ref[3].items()}}
    val.ensure_ok(val.compare("a", "fp32", "pytorch", ref, same))
    broken = {3: {"seg": -ref[3]["seg"], "depth": ref[3]["depth"] * 1.2}}
    checks = val.compare("a", "int8", "fp32 onnx", ref, broken)
    assert {c.task for c in checks if not c.ok} == {"seg", "depth"}
    with pytest.raises(val.ValidationError, match="failed"):
        val.ensure_ok(checks)
    nan = {3: {"seg": ref[3]["seg"] * np.nan, "depth": ref[3]["depth"]}}
    assert not val.compare("a", "fp16", "fp32 onnx", ref, nan)[0].ok
