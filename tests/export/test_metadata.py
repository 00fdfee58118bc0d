"""mtlkd.metadata: what each writer stores, each reader (and the runtime's backends) reads back; the schema
version; old files without it; versions(); all without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlkd.errors import MetadataError
from mtlkd.metadata import (
    METADATA_KEY,
    SCHEMA_VERSION,
    checkpoint_header,
    engine_sidecar,
    engine_sidecar_text,
    read_checkpoint_metadata,
    read_engine_metadata,
    read_model_file_metadata,
    read_onnx_metadata,
    read_openvino_metadata,
    schema_version,
    set_onnx_metadata,
    set_openvino_metadata,
    versions,
)

META = {"tasks": ["seg"], "input_size": [8, 8], "num_classes": 3, "class_names": ["a", "b", "c"]}
ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path, header: dict[str, str]) -> Path:
    from safetensors.numpy import save_file

    save_file({"w": np.ones(2, np.float32)}, str(path), metadata=header)
    return path


def _onnx(path: Path, meta: dict | None) -> Path:
    """A graph with input `image` (N x 3 x 8 x 8) and output `seg` = the image (3 channels, as META says)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])
    seg = helper.make_tensor_value_info("seg", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["seg"])], "g", [image], [seg])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if meta is not None:
        set_onnx_metadata(proto, meta)
    onnx.save(proto, str(path))
    return path


def test_checkpoint_header_carries_the_schema_and_old_files_read_as_version_1(tmp_path):
    new = read_checkpoint_metadata(_checkpoint(tmp_path / "new.safetensors", checkpoint_header(META)))
    assert new["schema_version"] == SCHEMA_VERSION and schema_version(new) == SCHEMA_VERSION
    assert new["mtlkd_version"] == versions()["mtlkd"] and new["tasks"] == META["tasks"]
    old_header = {METADATA_KEY: json.dumps({"format": 1, **META})}  # what mtlkd wrote before schema_version
    old = read_checkpoint_metadata(_checkpoint(tmp_path / "old.safetensors", old_header))
    assert "schema_version" not in old and schema_version(old) == 1 and old["num_classes"] == 3


@pytest.mark.parametrize("version, words", [(SCHEMA_VERSION + 1, "newer"), ("2", "schema_version"),
                                            (0, "schema_version")])
def test_a_schema_this_version_cannot_read_is_one_line(tmp_path, version, words):
    header = {METADATA_KEY: json.dumps({**META, "schema_version": version})}
    path = _checkpoint(tmp_path / "m.safetensors", header)
    with pytest.raises(MetadataError, match=words) as info:
        read_checkpoint_metadata(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_onnx_metadata_round_trip_and_the_runtime_reads_the_same(tmp_path):
    from mtlkd.runtime.backends import load_backend

    path = _onnx(tmp_path / "m.onnx", {**META, "precision": "fp32"})
    meta = read_onnx_metadata(path)
    assert meta == read_model_file_metadata(path)
    assert meta["schema_version"] == SCHEMA_VERSION and meta["precision"] == "fp32"
    assert load_backend("onnxruntime", path).metadata == meta
    import onnx

    proto = onnx.load(str(path))
    set_onnx_metadata(proto, {**META, "precision": "fp16"})  # replaces, never adds a second entry
    assert [e.key for e in proto.metadata_props].count(METADATA_KEY) == 1
    assert read_onnx_metadata(proto)["precision"] == "fp16"
    with pytest.raises(MetadataError, match="no mtlkd metadata"):
        read_onnx_metadata(_onnx(tmp_path / "bare.onnx", None))


def test_openvino_metadata_round_trip_and_the_runtime_reads_the_same(tmp_path):
    ov = pytest.importorskip("openvino")
    from mtlkd.runtime.backends import load_backend

    model = ov.convert_model(str(_onnx(tmp_path / "m.onnx", None)))
    set_openvino_metadata(model, {**META, "format": "openvino-ir"})
    xml = tmp_path / "ir" / "model.xml"
    xml.parent.mkdir()
    ov.save_model(model, str(xml))
    meta = read_openvino_metadata(xml)
    assert meta["format"] == "openvino-ir" and meta["schema_version"] == SCHEMA_VERSION
    assert read_model_file_metadata(xml) == meta and load_backend("openvino", xml).metadata == meta


def test_engine_sidecar_round_trip_in_both_layouts(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MetadataError, match="model.engine.json"):
        read_engine_metadata(engine)
    engine_sidecar(engine).write_text(engine_sidecar_text(META))
    meta = read_engine_metadata(engine)
    assert meta["schema_version"] == SCHEMA_VERSION and read_model_file_metadata(engine) == meta
    engine_sidecar(engine).write_text(json.dumps({METADATA_KEY: json.dumps(META)}))  # metadata as nested JSON text
    assert read_engine_metadata(engine)["tasks"] == META["tasks"] and schema_version(read_engine_metadata(engine)) == 1


def test_read_metadata_refuses_other_files(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(MetadataError, match="unknown model file type"):
        read_model_file_metadata(tmp_path / "model.pt")
    with pytest.raises(MetadataError, match="no such model file"):
        read_model_file_metadata(tmp_path / "missing.onnx")


def test_versions_come_from_the_installed_packages():
    import mtlkd

    found = versions(["mtlkd", "numpy", "onnxruntime", "no-such-package-xyz"])
    assert found["mtlkd"] == mtlkd.__version__ and found["numpy"] == np.__version__
    import onnxruntime

    assert found["onnxruntime"] == onnxruntime.__version__ and "no-such-package-xyz" not in found


def test_reading_needs_no_torch(tmp_path):
    checkpoint = _checkpoint(tmp_path / "m.safetensors", checkpoint_header(META))
    graph = _onnx(tmp_path / "m.onnx", META)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mtlkd.metadata import read_model_file_metadata\n"
            f"a = read_model_file_metadata({str(checkpoint)!r}); b = read_model_file_metadata({str(graph)!r})\n"
            "assert a['tasks'] == b['tasks'] == ['seg'], (a, b)\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
