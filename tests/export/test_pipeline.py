"""`export_model` driven as a library (no command line): what it writes, what it measures, the benchmark's
way of calling it (own names, no validation, reuse), options refused by name, the resolution switch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.errors import ConfigError, ExportError
from mtlkd.export.pipeline import DEFAULT_NAMES, ExportOptions, export_model
from mtlkd.files import sha256_of
from mtlkd.metadata import SCHEMA_VERSION, read_model_file_metadata
from mtlkd.models import create_model, preset_config

TASKS = ["seg", "depth", "normal"]


@pytest.fixture(scope="module")
def config():
    return preset_config("vit-nano", TASKS, class_names=["wall", "floor", "chair"])


@pytest.fixture(scope="module")
def checkpoint(config, tmp_path_factory):
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))


def _building(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".building-" in p.name]


@pytest.mark.numerics
def test_export_model_writes_checks_and_reports(checkpoint, tmp_path):
    out = tmp_path / "export"
    lines: list[str] = []
    result = export_model(checkpoint, out, ExportOptions(formats=["onnx", "openvino"], precisions=["fp32", "fp16"],
                                                         tasks=["seg", "depth"]), progress=lines.append)
    assert [a.key for a in result.artifacts] == ["onnx", "onnx.fp16", "openvino", "openvino.fp16"]
    for artifact in result.artifacts:
        assert artifact.path == out / DEFAULT_NAMES[artifact.key] and artifact.path.is_file() and artifact.bytes > 0
        assert {(c.batch, c.task) for c in artifact.checks} == {(b, t) for b in (1, 3) for t in ("seg", "depth")}
        assert all(c.ok and np.isfinite(c.max_abs_err) and c.kept for c in artifact.checks)
        assert {c.reference for c in artifact.checks} == {"pytorch" if artifact.precision == "fp32" else "fp32 onnx"}
    assert result.ok and not result.problems and result.path("openvino.fp16") == out / "openvino/model.fp16.xml"
    assert (out / "openvino" / "model.fp16.bin").is_file()
    assert json.loads(result.report.read_text()) == json.loads(json.dumps(result.to_dict()))
    assert len(lines) == 1 + len(result.checks) and lines[0].startswith("exporting")
    meta = read_model_file_metadata(out / "model.fp16.onnx")
    assert meta["tasks"] == ["seg", "depth"] and meta["precision"] == "fp16"
    assert meta["schema_version"] == SCHEMA_VERSION and meta["source_sha256"] == sha256_of(checkpoint)
    assert meta["output_stride"] == 8 and not _building(tmp_path)  # the heads' grid by default


def test_benchmark_call_own_names_no_checks_and_reuse(config, tmp_path):
    torch.manual_seed(5)
    net = create_model(config)
    calibration = (np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32), "4 test images")
    names = {"onnx": "cache/net.onnx", "onnx.int8": "cache/net.int8-abc.onnx"}
    options = ExportOptions(precisions=["int8"], tasks=["seg"], validate=False, reuse=True, report=False,
                            names=names, calibration=calibration)  # fmt: skip
    first = export_model((net, config), tmp_path, options)
    assert {a.key: a.path for a in first.artifacts} == {k: tmp_path / v for k, v in names.items()}
    assert not first.checks and not any(a.reused for a in first.artifacts)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["net.int8-abc.onnx", "net.onnx"]
    stored = read_model_file_metadata(tmp_path / names["onnx.int8"])["quantization"]["calibration"]
    assert stored == {"method": "minmax", "images": 4, "source": "4 test images"}
    stamps = {k: (tmp_path / v).stat().st_mtime_ns for k, v in names.items()}
    again = export_model((net, config), tmp_path, options)
    assert all(a.reused for a in again.artifacts)
    assert {k: (tmp_path / v).stat().st_mtime_ns for k, v in names.items()} == stamps
    rebuilt = export_model((net, config), tmp_path, options, reuse=False)  # keyword overrides of the options
    assert not any(a.reused for a in rebuilt.artifacts) and (tmp_path / names["onnx"]).stat().st_mtime_ns != \
        stamps["onnx"]


@pytest.mark.parametrize("overrides, named", [
    ({"precisions": ["int4"]}, "--precision int4:"), ({"formats": ["tflite"]}, "ExportOptions.formats tflite:"),
    ({"opset": 11}, "--opset 11:"), ({"names": {"onnx": "../model.onnx"}}, "ExportOptions.names ../model.onnx:"),
    ({"names": {"model": "m.onnx"}}, "ExportOptions.names model:"),
    ({"precisions": ["fp32", "int8"], "triton": Path("repo")}, "--triton repo:"),
    ({"calib_data": Path(".")}, "--calib-data .:"), ({"calib_data": Path("no-such"), "precisions": ["int8"]},
                                                     "--calib-data no-such:"),
    ({"tasks": ["seg", "seg"]}, "--tasks seg,seg:"), ({"batch_profile": "2,4,8"}, "--batch-size 2,4,8:"),
    ({"precisions": ["fp16", "fp16"]}, "--precision fp16,fp16:"), ({"triton_backend": "grpc"}, "--triton-backend"),
    ({"workspace_mb": 0}, "--workspace 0:"), ({"device": "tpu"}, "--device tpu:"),
])  # fmt: skip
def test_bad_options_name_the_flag_before_anything_is_built(config, tmp_path, overrides, named):
    """Each option names the mtl-export flag that sets it (Python-only ones as ExportOptions.<field>), in one
    line, whether it is refused when the options are made or when the export starts."""
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        export_model((create_model(config), config), out, **overrides)
    assert str(info.value).startswith(named) and "\n" not in str(info.value)
    assert not out.exists() and not _building(tmp_path)


def test_every_flag_an_option_names_is_a_flag_of_mtl_export():
    import dataclasses

    from typer.main import get_command

    from mtlkd.cli.export import app

    spelled = {opt for param in get_command(app).params for opt in param.opts}
    named = {f.metadata["flag"] for f in dataclasses.fields(ExportOptions) if f.metadata.get("flag")}
    assert named and named <= spelled, named - spelled


@pytest.mark.numerics
def test_low_resolution_export_records_its_stride_and_is_checked_at_that_size(config, tmp_path):
    import onnxruntime as ort

    from mtlkd.export.triton import output_dims

    torch.manual_seed(6)
    net = create_model(config)
    result = export_model((net, config), tmp_path / "low", full_resolution=False, tasks=["seg", "depth"])
    stride = net.output_stride
    assert stride > 1 and net.full_resolution is True  # switched for the export only
    meta = read_model_file_metadata(result.path("onnx"))
    assert meta["output_stride"] == stride
    session = ort.InferenceSession(str(result.path("onnx")), providers=["CPUExecutionProvider"])
    seg, depth = session.run(["seg", "depth"], {"image": np.zeros((2, 3, 32, 32), np.float32)})
    assert seg.shape == (2, 3, 32 // stride, 32 // stride) and depth.shape == (2, 1, 32 // stride, 32 // stride)
    assert result.ok and all(c.ok for c in result.checks)  # PyTorch's reference was taken at the same size
    assert output_dims(meta) == {"seg": [3, 32 // stride, 32 // stride], "depth": [1, 32 // stride, 32 // stride]}
    full = export_model((net, config), tmp_path / "full", tasks=["seg"], validate=False, full_resolution=True)
    assert "output_stride" not in read_model_file_metadata(full.path("onnx"))


def test_a_network_without_the_switch_is_refused_at_low_resolution(config, tmp_path):
    net = create_model(config)
    del net.full_resolution  # a network class that predates the switch
    with pytest.raises(ExportError, match="full resolution"):
        export_model((net, config), tmp_path / "a", full_resolution=False, validate=False)
    assert not (tmp_path / "a").exists() and not _building(tmp_path)


def test_cli_json_to_stdout_or_a_file_and_quiet(checkpoint, tmp_path):
    from mtlkd.cli.export import app

    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, [str(checkpoint), "--out", str(out), "--tasks", "depth", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON only
    assert [a["key"] for a in report["artifacts"]] == ["onnx"] and report["artifacts"][0]["checks"]["depth"]
    assert result.stderr.strip() == ""  # --quiet: no progress or check lines
    saved = tmp_path / "result.json"
    result = runner.invoke(app, [str(checkpoint), "--out", str(out), "--tasks", "depth", "--json", str(saved)])
    assert result.exit_code == 0, result.output
    assert "written to" in result.stdout and "model.onnx [fp32 vs pytorch]" in result.stderr
    assert json.loads(saved.read_text())["artifacts"][0]["file"] == str(out / "model.onnx")
