"""int8 by node group: the attention products are found by structure and stay float by default."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def nano_onnx(tmp_path_factory):
    from mtlkd.checkpoint import model_metadata
    from mtlkd.export.onnx import export_onnx
    from mtlkd.models import create_model, preset_config

    config = preset_config("vit-nano", ["seg", "depth"], num_classes=5)
    path = tmp_path_factory.mktemp("int8") / "nano.onnx"
    export_onnx(create_model(config).eval(), model_metadata(config), path, ["seg", "depth"])
    return path, config


def test_attention_products_are_two_per_block(nano_onnx):
    from mtlkd.export.precision import int8_groups

    path, config = nano_onnx
    groups = int8_groups(path)
    # Q K^T and A V in every block, and the heads' own products of patches with their queries
    assert len(groups["attention"]) >= 2 * config["backbone"]["depth"]
    assert len(groups["convolutions"]) == 1  # the patch embedding
    assert len(groups["weights"]) >= 4 * config["backbone"]["depth"]  # qkv, proj, fc1, fc2 at least


def test_kept_groups_get_no_quantize_nodes(nano_onnx, tmp_path):
    import onnx

    from mtlkd.export.precision import int8_groups, quantize_int8
    from mtlkd.export.validate import validation_images

    path, config = nano_onnx
    calibration = validation_images(config["backbone"]["img_size"], n=2)
    attention = set(int8_groups(path)["attention"])

    def dequantized_inputs(model_path):
        proto = onnx.load(str(model_path))
        producers = {out: node.op_type for node in proto.graph.node for out in node.output}
        return {node.name: sum(producers.get(i) == "DequantizeLinear" for i in node.input)
                for node in proto.graph.node if node.name in attention}  # fmt: skip

    kept = dequantized_inputs(quantize_int8(path, tmp_path / "kept.onnx", calibration))
    assert kept and all(count == 0 for count in kept.values())
    everything = dequantized_inputs(quantize_int8(path, tmp_path / "all.onnx", calibration, keep_float=()))
    assert everything.keys() == kept.keys() and all(count == 2 for count in everything.values())
    with pytest.raises(ValueError, match="known groups"):
        quantize_int8(path, tmp_path / "x.onnx", calibration, keep_float=("softmax",))


@pytest.mark.numerics
def test_sensitivity_reports_every_group(nano_onnx):
    from mtlkd.export.precision import int8_sensitivity
    from mtlkd.export.validate import validation_images

    path, config = nano_onnx
    images = validation_images(config["backbone"]["img_size"], n=2, seed=3)
    from mtlkd.export.validate import run_onnxruntime

    reference = run_onnxruntime(path, images, ["seg", "depth"])
    result = int8_sensitivity(path, validation_images(config["backbone"]["img_size"], n=2), images, reference)
    assert set(result) == {"none", "attention", "convolutions", "weights"}
    for entry in result.values():
        assert set(entry["errors"]) == {"seg", "depth"}
        assert all(np.isfinite(e["raw_rel_err"]) for e in entry["errors"].values())
    # each group kept float is another graph: its outputs differ from the all-quantised one's. (Not that its
    # error is smaller: rounding errors of different groups partly cancel, so one fewer group quantised can
    # leave a larger error, as it did with 7-bit weights under MKL's AVX2 kernels on an AMD EPYC.)
    for kept in ("attention", "convolutions", "weights"):
        assert result[kept]["nodes"] > 0
        assert result[kept]["errors"]["depth"] != result["none"]["errors"]["depth"], kept
