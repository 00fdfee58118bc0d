"""ONNX export, reduced-precision graphs, OpenVINO IR and Triton configs on a briefly trained vit-nano.

The network is trained for a few seconds on synthetic scenes so that its outputs are not near-ties
everywhere (an untrained seg head's logits differ by ~1e-3, so any rounding flips the argmax and the
agreement numbers say little). Measured on this network (seed 0), worst over batch 1 and 3:
- fp16 graph: seg agreement 99.9%, depth error 0.02-0.03%, normals 0.03-0.04 deg (onnxconverter-common
  and ModelOpt AutoCast alike; ModelOpt writes 74 Casts, onnxconverter-common 125);
- int8 Q/DQ in ONNX Runtime: seg 99.2%, depth 0.34%, normals 1.3 deg; the same graph as OpenVINO IR:
  99.3%, 0.40%, 1.2 deg; NNCF's IR: 99.5%, 0.45%, 3.6 deg.
Untrained, the int8 seg agreement is 79-81%, fp16 99.7%.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from numerics import SMALL_VIT

from mtlkd.checkpoint import model_metadata
from mtlkd.export import validate as val
from mtlkd.export.onnx import DEFAULT_OPSET, export_onnx, graph_stats, read_onnx_metadata
from mtlkd.export.openvino import export_openvino, read_openvino_metadata
from mtlkd.export.precision import (
    FP32_OPS,
    convert_fp16,
    count_qdq,
    fp16_converter,
    load_calibration_images,
    quantize_int8,
)
from mtlkd.export.triton import write_triton_repo
from mtlkd.models import create_model, preset_config

TASKS = ["seg", "depth", "normal"]
pytestmark = pytest.mark.numerics  # outputs of ONNX Runtime, OpenVINO and torch kernels compared


def _train_briefly(model, size, steps=150, seed=0):
    from mtlkd.data.synthetic import render_scene
    from mtlkd.tasks import get_task

    rng = np.random.default_rng(seed)
    scenes = [render_scene(rng, *size) for _ in range(48)]
    x = torch.from_numpy(np.stack([s["image"] for s in scenes]).transpose(0, 3, 1, 2).copy())
    targets = {
        "seg": torch.from_numpy(np.stack([s["label"] for s in scenes])),
        "depth": torch.from_numpy(np.stack([s["depth"] for s in scenes]).transpose(0, 3, 1, 2).copy()),
        "normal": torch.from_numpy(np.stack([s["normal"] for s in scenes]).transpose(0, 3, 1, 2).copy()),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronisation
    model.train()
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(scenes), (16,), generator=gen)
            out = model(x[idx])
            loss = sum(get_task(t).loss(out[t], targets[t][idx]) for t in TASKS)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    config = preset_config("vit-nano", TASKS, num_classes=13)
    model = _train_briefly(create_model(config), tuple(config["backbone"]["img_size"]))
    model.full_resolution = False  # what the exports put out: the heads' grid (the runtime resizes once)
    return model, model_metadata(config)


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    model, meta = net
    folder = tmp_path_factory.mktemp("onnx")
    full = export_onnx(model, meta, folder / "model.onnx", source_sha256="ab" * 32)
    seg_only = export_onnx(model, meta, folder / "seg.onnx", tasks=["seg"])
    return {"full": full, "seg": seg_only, "folder": folder}


@pytest.fixture(scope="module")
def images(net):
    return val.validation_images(net[1]["input_size"], n=3)


@pytest.fixture(scope="module")
def fp32_outputs(exported, images):
    return val.run_batches(lambda x: val.run_onnxruntime(exported["full"], x), images)


def test_round_trip_every_task_at_batch_1_and_3(net, exported, images, fp32_outputs):
    model, _ = net
    proto = onnx.load(str(exported["full"]))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == TASKS
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    assert {op.domain: op.version for op in proto.opset_import}[""] == DEFAULT_OPSET
    refs = val.run_batches(lambda x: val.run_torch(model, x, TASKS), images)
    checks = val.compare("model.onnx", "fp32", "pytorch", refs, fp32_outputs)
    assert {(c.batch, c.task) for c in checks} == {(b, t) for b in (1, 3) for t in TASKS}
    val.ensure_ok(checks)
    assert max(c.rel_err for c in checks) < SMALL_VIT  # fp32: re-association alone (tests/numerics.py)
    stride = model.output_stride
    assert fp32_outputs[3]["seg"].shape == (3, 13, 32 // stride, 32 // stride)
    assert fp32_outputs[1]["normal"].shape == (1, 3, 32 // stride, 32 // stride)


def test_graph_has_fusable_patterns(exported):
    ops = [n.op_type for n in onnx.load(str(exported["full"])).graph.node]
    assert "LayerNormalization" in ops and "Gelu" in ops  # single nodes, not Erf/ReduceMean sub-graphs
    assert ops.count("Softmax") == 5  # 2 backbone blocks + 3 heads x 1 layer: explicit attention
    assert "Attention" not in ops and "Erf" not in ops


def test_task_subset_has_fewer_nodes_and_parameters(net, exported, images):
    model, _ = net
    full, seg = graph_stats(exported["full"]), graph_stats(exported["seg"])
    assert seg["nodes"] < full["nodes"] and seg["parameters"] < full["parameters"]
    proto = onnx.load(str(exported["seg"]))
    assert [o.name for o in proto.graph.output] == ["seg"]
    meta = read_onnx_metadata(exported["seg"])
    assert meta["tasks"] == ["seg"] and list(meta["outputs"]) == ["seg"]
    refs = val.run_batches(lambda x: val.run_torch(model, x, ["seg"]), images)
    outs = val.run_batches(lambda x: val.run_onnxruntime(exported["seg"], x), images)
    val.ensure_ok(val.compare("seg.onnx", "fp32", "pytorch", refs, outs))


def test_metadata_round_trip(net, exported):
    from mtlkd import __version__

    _, meta = net
    stored = read_onnx_metadata(exported["full"])
    for key in ("config", "tasks", "class_names", "num_classes", "input_size", "normalization", "outputs"):
        assert stored[key] == meta[key], key
    assert stored["source_sha256"] == "ab" * 32
    assert stored["opset"] == DEFAULT_OPSET and stored["precision"] == "fp32" and stored["input_name"] == "image"
    assert stored["mtlkd_version"] == __version__
    assert stored["outputs"] == {"seg": "logits", "depth": "positive", "normal": "unit"}


def _elem_types(path):
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in (*proto.graph.value_info, *proto.graph.output)}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    return proto, types


@pytest.mark.parametrize("converter", ["onnxconverter-common", "modelopt"])
def test_fp16_graph_keeps_accuracy(exported, images, fp32_outputs, converter):
    if converter == "modelopt" and fp16_converter() != "modelopt":
        pytest.skip("nvidia-modelopt[onnx] is not installed (its extra pins onnxruntime-gpu; optional here)")
    path = convert_fp16(exported["full"], exported["folder"] / f"fp16-{converter}.onnx", converter=converter)
    proto, types = _elem_types(path)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    matmul_weights = [n.input[1] for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in types]
    assert any(types[w] == onnx.TensorProto.FLOAT16 for w in matmul_weights)
    kept = [n for n in proto.graph.node if n.op_type in FP32_OPS]
    assert kept and all(types.get(n.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in kept)
    assert read_onnx_metadata(path)["precision"] == "fp16"
    outs = val.run_batches(lambda x: val.run_onnxruntime(path, x), images)
    val.ensure_ok(val.compare(path.name, "fp16", "fp32 onnx", fp32_outputs, outs))  # mtlkd.accuracy's policy


@pytest.fixture(scope="module")
def calibration(net):
    return load_calibration_images(None, net[1]["input_size"], n=32)[0]


@pytest.fixture(scope="module")
def int8_graph(exported, calibration):
    return quantize_int8(exported["full"], exported["folder"] / "model.int8.onnx", calibration)


def test_int8_graph_is_symmetric_qdq_and_keeps_accuracy(int8_graph, images, fp32_outputs):
    from onnx import numpy_helper

    counts = count_qdq(int8_graph)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] >= counts["QuantizeLinear"]
    proto = onnx.load(str(int8_graph))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    zero_points = [inits[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric int8
    weights = [(inits[n.input[0]], inits[n.input[1]]) for n in dq if n.input[0] in inits]
    weights = [(w, s) for w, s in weights if w.dtype == np.int8]
    assert weights and any(s.size > 1 for _, s in weights)
    # per-channel: one scale per output channel (axis 1 of a MatMul weight, axis 0 of a Conv kernel)
    assert all(s.size == (w.shape[1] if w.ndim == 2 else w.shape[0]) for w, s in weights)
    # 7-bit weights: a CPU without VNNI sums two u8 x s8 products in a saturating int16 (precision.py)
    assert all(int(np.abs(w.astype(np.int32)).max()) <= 64 for w, _ in weights)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w, _ in weights) >= 60  # the range is used
    meta = read_onnx_metadata(int8_graph)
    assert meta["precision"] == "int8" and meta["quantization"]["calibration"]["images"] == 32
    outs = val.run_batches(lambda x: val.run_onnxruntime(int8_graph, x), images)
    val.ensure_ok(val.compare(int8_graph.name, "int8", "fp32 onnx", fp32_outputs, outs))  # mtlkd.accuracy's policy


def test_openvino_ir_round_trip(net, exported, images, tmp_path):
    import openvino as ov

    model, _ = net
    xml = export_openvino(exported["full"], tmp_path / "ir" / "model.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    meta = read_openvino_metadata(xml)
    onnx_meta = read_onnx_metadata(exported["full"])
    assert meta["precision"] == "fp32" and meta["format"] == "openvino-ir"
    assert {k: meta[k] for k in onnx_meta} == {k: v for k, v in onnx_meta.items() if k != "precision"} | {
        "precision": "fp32"
    }
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    refs = val.run_batches(lambda x: val.run_torch(model, x, TASKS), images)
    outs = val.run_batches(lambda x: val.run_openvino(xml, x, compiled), images)
    val.ensure_ok(val.compare("model.xml", "fp32", "pytorch", refs, outs))


def test_openvino_int8_from_qdq_graph(exported, int8_graph, images, fp32_outputs, tmp_path):
    xml = export_openvino(exported["full"], tmp_path / "model.xml", precision="int8", int8_source="qdq",
                          qdq_path=int8_graph)  # fmt: skip
    assert read_openvino_metadata(xml)["precision"] == "int8"
    outs = val.run_batches(lambda x: val.run_openvino(xml, x), images)
    val.ensure_ok(val.compare("model.xml", "int8", "fp32 onnx", fp32_outputs, outs))


def test_openvino_int8_with_nncf(exported, calibration, images, fp32_outputs, tmp_path):
    xml = export_openvino(exported["full"], tmp_path / "model.xml", precision="int8", calibration=calibration[:8],
                          int8_source="nncf")  # fmt: skip
    assert "NNCF" in read_openvino_metadata(xml)["int8"]
    outs = val.run_batches(lambda x: val.run_openvino(xml, x), images)
    val.ensure_ok(val.compare("model.xml", "int8", "fp32 onnx", fp32_outputs, outs))


def test_triton_configs_parse_with_tritons_schema(exported, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    xml = export_openvino(exported["full"], tmp_path / "ir" / "model.xml")
    repo = tmp_path / "repo"
    meta = read_onnx_metadata(exported["full"])
    folders = write_triton_repo(repo, {"onnx": exported["full"], "openvino": xml}, meta, max_batch_size=8)
    assert set(folders) == {"mtlkd_onnx", "mtlkd_openvino"}
    expected = {"seg": [13, 4, 4], "depth": [1, 4, 4], "normal": [3, 4, 4]}  # 32x32 at output stride 8
    for name, folder in folders.items():
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == name and config.max_batch_size == 8
        assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [
            ("image", [3, 32, 32], model_config_pb2.TYPE_FP32)
        ]
        assert {o.name: list(o.dims) for o in config.output} == expected
        assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in config.output)
        assert config.HasField("dynamic_batching") and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    onnx_cfg = text_format.Parse((repo / "mtlkd_onnx" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert onnx_cfg.platform == "onnxruntime_onnx" and (repo / "mtlkd_onnx" / "1" / "model.onnx").is_file()
    ov_cfg = text_format.Parse((repo / "mtlkd_openvino" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert ov_cfg.backend == "openvino"
    assert (repo / "mtlkd_openvino" / "1" / "model.xml").is_file()
    assert (repo / "mtlkd_openvino" / "1" / "model.bin").is_file()
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository" in readme and "tritonclient.http" in readme


def test_tensorrt_config_text_parses():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from mtlkd.export.triton import config_text

    meta = {"input_size": [96, 128], "tasks": ["seg"], "num_classes": 13}
    config = text_format.Parse(config_text("m", "tensorrt", meta, max_batch_size=16), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(config.output[0].dims) == [13, 96, 128]


def test_cli_int8_with_calib_data_and_openvino(net, tmp_path):
    from typer.testing import CliRunner

    from mtlkd.checkpoint import save_checkpoint
    from mtlkd.cli.export import app

    model, meta = net
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), meta)
    folder = tmp_path / "data" / "train" / "image"
    folder.mkdir(parents=True)
    for i, image in enumerate(load_calibration_images(None, meta["input_size"], n=8, seed=7)[0]):
        np.save(folder / f"{i}.npy", image.transpose(1, 2, 0))
    out = tmp_path / "out"
    fp32 = CliRunner().invoke(app, [str(checkpoint), "--openvino", "--tasks", "seg,normal", "--out", str(out)])
    assert fp32.exit_code == 0, fp32.output
    args = [str(checkpoint), "--precision", "int8", "--calib-data", str(tmp_path / "data"), "--openvino",
            "--tasks", "seg,normal", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # each precision has its own IR: the int8 export did not replace the fp32 one (#12)
    assert read_openvino_metadata(out / "openvino" / "model.xml")["precision"] == "fp32"
    assert read_onnx_metadata(out / "model.onnx")["precision"] == "fp32"
    stored = read_onnx_metadata(out / "model.int8.onnx")
    assert stored["tasks"] == ["seg", "normal"] and stored["precision"] == "int8"
    assert stored["quantization"]["calibration"]["images"] == 8
    assert "train" in stored["quantization"]["calibration"]["source"]
    assert read_openvino_metadata(out / "openvino" / "model.int8.xml")["precision"] == "int8"
    assert "Q/DQ" in read_openvino_metadata(out / "openvino" / "model.int8.xml")["int8"]
    assert (out / "openvino" / "model.int8.bin").is_file()
    assert "pixel agreement" in result.output and "normal angle" in result.output
