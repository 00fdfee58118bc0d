"""The export side of the serving stacks as they behave on a user's machine, with a stand-in TensorRT
(tests/export/conftest.py): the timing cache, TF32, the engine written with its sidecar, the engine
validated against PyTorch, Triton repositories that serve batch 1..max, the GPU install, and a missing
OpenVINO. Each test reproduces a failure of issue #14."""

from __future__ import annotations

import ast
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlkd.export.tensorrt import build_engine, engine_sidecar

ROOT = Path(__file__).resolve().parents[2]
META = {"input_size": [8, 8], "tasks": ["seg", "depth"], "num_classes": 3, "precision": "fp32"}


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph")
    return path


def _build(onnx_file, **kwargs) -> Path:
    return build_engine(onnx_file, onnx_file.parent / "model.engine", metadata=META, batch="1,2,4", **kwargs)


# ------------------------------------------------------------------------------------- TensorRT build


def test_timing_cache_from_another_gpu_is_rebuilt_with_a_warning(fake_tensorrt, onnx_file):
    cache = onnx_file.parent / "timing.cache"
    cache.write_bytes(b"other-gpu")
    with pytest.warns(UserWarning, match="rejected this timing cache"):
        engine = _build(onnx_file)
    assert fake_tensorrt.caches_set == [b"other-gpu", b""]  # refused, then a fresh one was really set
    assert cache.read_bytes() == b"fresh-timings"
    assert engine.read_bytes().startswith(b"ENGINE") and engine_sidecar(engine).is_file()


def test_no_timing_cache_after_the_build_still_leaves_engine_and_sidecar(fake_tensorrt, onnx_file):
    fake_tensorrt.cache_after_build = False
    with pytest.warns(UserWarning, match="no timing cache"):
        engine = _build(onnx_file)
    sidecar = json.loads(engine_sidecar(engine).read_text())
    import hashlib

    assert sidecar["tensorrt"]["engine_sha256"] == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert sidecar["tasks"] == META["tasks"] and sidecar["tensorrt"]["batch_profile"] == {"min": 1, "opt": 2, "max": 4}


def test_a_failed_write_keeps_the_previous_engine_and_sidecar(fake_tensorrt, onnx_file, monkeypatch):
    engine = onnx_file.parent / "model.engine"
    engine.write_bytes(b"OLD")
    engine_sidecar(engine).write_text('{"old": true}')
    real = os.replace

    def refuse_sidecar(src, dst):
        if str(dst).endswith(".engine.json"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr("mtlkd.export.tensorrt.os.replace", refuse_sidecar)
    with pytest.raises(OSError, match="disk full"):
        _build(onnx_file)
    assert engine.read_bytes() == b"OLD" and engine_sidecar(engine).read_text() == '{"old": true}'
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["model.engine", "model.engine.json", "model.onnx"]


def test_engine_files_respect_the_umask(fake_tensorrt, onnx_file):
    old = os.umask(0o022)
    try:
        engine = _build(onnx_file)
    finally:
        os.umask(old)
    assert stat.S_IMODE(engine.stat().st_mode) == 0o644
    assert stat.S_IMODE(engine_sidecar(engine).stat().st_mode) == 0o644


def test_tf32_is_off_unless_asked(fake_tensorrt, onnx_file):
    engine = _build(onnx_file)
    assert "TF32" not in fake_tensorrt.flags and engine.read_bytes() == b"ENGINE-fp32"
    assert json.loads(engine_sidecar(engine).read_text())["tensorrt"]["tf32"] is False
    _build(onnx_file, tf32=True)
    assert "TF32" in fake_tensorrt.flags


def test_profile_starts_at_batch_one(fake_tensorrt, onnx_file):
    _build(onnx_file)
    name, low, opt, high = fake_tensorrt.profile
    assert (low[0], opt[0], high[0]) == (1, 2, 4) and low[1:] == (3, 8, 8)
    with pytest.raises(ValueError, match="MIN must be 1"):
        build_engine(onnx_file, onnx_file.parent / "x.engine", metadata=META, batch="2,4,8")


# ---------------------------------------------------------------------------------------- GPU install


def _imports(path: Path) -> set[str]:
    """Top-level names of every module the file imports (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_gpu_extra_installs_everything_the_gpu_runtime_imports():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["dependencies"]}
    gpu = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["optional-dependencies"]["gpu"]}
    providers = {"tensorrt": "tensorrt", "cuda": "cuda-python", "onnxruntime": "onnxruntime-gpu", "numpy": "numpy"}
    backends = ROOT / "mtlkd" / "runtime" / "backends"
    needed = set()
    for module in ("tensorrt_backend.py", "onnxruntime_backend.py"):
        needed |= {n for n in _imports(backends / module) if n not in sys.stdlib_module_names and n != "mtlkd"}
    assert {"tensorrt", "cuda", "onnxruntime"} <= needed
    missing = sorted(n for n in needed if providers.get(n, n) not in gpu | base)
    assert not missing, f"the gpu extra does not install {missing}"


# -------------------------------------------------------------------------------------------- Triton


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture
def artifacts(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("model.onnx", "model.xml", "model.bin", "model.engine"):
        (folder / name).write_bytes(name.encode())
    (folder / "model.engine.json").write_text(json.dumps(META))
    return {"onnx": folder / "model.onnx", "openvino": folder / "model.xml", "tensorrt": folder / "model.engine"}


def test_triton_repository_serves_every_batch_and_holds_every_file(artifacts, tmp_path):
    from tritonclient.grpc import model_config_pb2

    from mtlkd.export.triton import write_triton_repo
    from mtlkd.metadata import engine_sidecar, read_engine_metadata

    repo = tmp_path / "repo"
    write_triton_repo(repo, artifacts, META, max_batch_size=4, gpu=True)
    gpu, cpu = model_config_pb2.ModelInstanceGroup.KIND_GPU, model_config_pb2.ModelInstanceGroup.KIND_CPU
    ov = _parse(repo / "mtlkd_openvino" / "config.pbtxt")
    assert ov.parameters["ENABLE_BATCH_PADDING"].string_value == "YES"  # else batch < 4 is refused
    assert ov.instance_group[0].kind == cpu
    text = (repo / "mtlkd_openvino" / "config.pbtxt").read_text()
    assert "bf16" in text and "f32" in text  # the precision the backend will compute in is stated
    assert _parse(repo / "mtlkd_onnx" / "config.pbtxt").instance_group[0].kind == gpu
    assert _parse(repo / "mtlkd_tensorrt" / "config.pbtxt").instance_group[0].kind == gpu
    plan = repo / "mtlkd_tensorrt" / "1" / "model.plan"
    # the sidecar is what the Predictor reads
    assert engine_sidecar(plan).is_file() and read_engine_metadata(plan)["tasks"] == META["tasks"]
    readme = (repo / "README.md").read_text()
    assert "model.plan.json" in readme and "model.engine.json" not in readme
    assert "ENABLE_BATCH_PADDING" in readme and "bf16" in readme and "--gpus=all" in readme


def test_triton_cpu_export_keeps_cpu_instances(artifacts, tmp_path):
    from tritonclient.grpc import model_config_pb2

    from mtlkd.export.triton import config_text, write_triton_repo

    repo = tmp_path / "repo"
    write_triton_repo(repo, {"onnx": artifacts["onnx"]}, META, max_batch_size=4)
    cpu = model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert _parse(repo / "mtlkd_onnx" / "config.pbtxt").instance_group[0].kind == cpu
    with pytest.raises(ValueError, match="CPU only"):
        config_text("m", "openvino", META, device="KIND_GPU")


def test_triton_keeps_the_old_version_when_a_file_is_missing(artifacts, tmp_path):
    from mtlkd.export.triton import write_triton_model

    repo = tmp_path / "repo"
    write_triton_model(repo, "tensorrt", artifacts["tensorrt"], META, "trt")
    Path(f"{artifacts['tensorrt']}.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.engine.json"):
        write_triton_model(repo, "tensorrt", artifacts["tensorrt"], META, "trt")
    assert sorted(p.name for p in (repo / "trt" / "1").iterdir()) == ["model.plan", "model.plan.json"]
    assert sorted(p.name for p in (repo / "trt").iterdir()) == ["1", "config.pbtxt"]


# ------------------------------------------------------------------------------- mtl-export end to end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config

    torch.manual_seed(1)
    config = preset_config("vit-nano", ["seg", "depth", "normal"], class_names=["wall", "floor", "chair"])
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))


def test_openvino_missing_is_one_line_and_writes_nothing(checkpoint, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mtlkd.cli.export import app

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails as if not installed
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(checkpoint), "--openvino", "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "needs OpenVINO" in lines[0] and "pip install openvino" in lines[0]
    assert not out.exists()


class _EngineStandIn:
    """What the runtime's TensorRT backend returns for the engine: here the ONNX graph it was built from,
    run by ONNX Runtime, optionally with the drift an engine computing in TF32 or a broken build shows."""

    def __init__(self, onnx_path: Path, drift: float):
        from mtlkd.export.onnx import read_onnx_metadata

        self.onnx_path, self.drift = onnx_path, drift
        self.tasks = list(read_onnx_metadata(onnx_path)["tasks"])

    def run(self, batch, tasks):
        from mtlkd.export.validate import run_onnxruntime

        out = run_onnxruntime(self.onnx_path, batch, list(tasks))
        rng = np.random.default_rng(0)
        return {t: v + self.drift * rng.standard_normal(v.shape).astype(np.float32) for t, v in out.items()}


@pytest.mark.parametrize("drift, code", [(0.0, 0), (0.5, 1)])
def test_engine_is_validated_against_pytorch(checkpoint, tmp_path, monkeypatch, fake_tensorrt, drift, code):
    from typer.testing import CliRunner

    import mtlkd.runtime.backends as backends
    from mtlkd.cli.export import app

    out = tmp_path / "out"
    opened = []

    def load_backend(name, path, device="cpu", **_):
        opened.append((name, Path(path).name, device))
        return _EngineStandIn(Path(path).with_name("model.onnx"), drift)  # the graph beside the engine

    monkeypatch.setattr(backends, "load_backend", load_backend)
    result = CliRunner().invoke(app, [str(checkpoint), "--trt", "--tasks", "seg,depth", "--out", str(out),
                                      "--batch-size", "1,2,4"])  # fmt: skip
    assert opened == [("tensorrt", "model.engine", "cuda")]
    assert result.exit_code == code, result.output + result.stderr
    assert "model.engine [fp32 vs pytorch] batch 3 seg" in result.output  # the export's own images, batch 1 and 3
    if code:
        assert "model.engine batch" in result.stderr and "failed" in result.stderr
    else:
        report = json.loads((out / "export.json").read_text())
        engine_row = next(a for a in report["artifacts"] if a["file"].endswith("model.engine"))
        assert engine_row["checks"]["seg"]["seg_agreement"] == 100.0
