"""The benchmark's pieces without a full run: FLOP counts against hand counts, the matrix-product ceiling,
machine information, timing statistics, the configuration plan, the summary's targets and the
auto-backend cache it writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlkd.bench.autocache import update_auto_cache
from mtlkd.bench.ceiling import (
    compute_precision,
    measure_ceiling,
    measure_shape_ceiling,
    model_shapes,
    shape_flops,
)
from mtlkd.bench.flops import count_flops, flops_of, model_flops
from mtlkd.bench.machine import PeakMemory, machine_info, native_precisions
from mtlkd.bench.plan import plan
from mtlkd.bench.run import default_precisions
from mtlkd.bench.stats import measure, median_ci, merge_rounds
from mtlkd.bench.summary import make_row, summarise
from mtlkd.models import create_model, preset_config


def test_flops_of_a_linear_layer_is_the_hand_count():
    assert flops_of(torch.nn.Linear(64, 32), torch.rand(10, 64)) == 2 * 10 * 64 * 32


def test_flops_of_a_convolution_is_the_hand_count():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert flops_of(conv, torch.rand(1, 3, 16, 16)) == 2 * (16 * 16) * 8 * (3 * 3 * 3)


def test_flops_of_attention_count_both_products():
    from timm.models.vision_transformer import Attention

    attn = Attention(dim=32, num_heads=2)
    n, d = 10, 32
    expected = 2 * n * d * 3 * d + 2 * (2 * n * n * d) + 2 * n * d * d  # qkv, QK^T and AV, proj
    assert flops_of(attn, torch.rand(1, n, d)) == expected


def test_model_flops_split_into_backbone_and_heads():
    model = create_model(preset_config("vit-nano", ["seg", "depth", "normal"], num_classes=5))
    result = model_flops(model, (32, 32))
    assert sum(result["parts"].values()) == result["flops"]
    assert count_flops(model, (32, 32), ["seg"]) == result["parts"]["backbone"] + result["parts"]["heads.seg"]


def test_ceiling_is_positive():
    ceiling = measure_ceiling("fp32", threads=1, sizes=(64, 128), budget_s=0.05)
    assert ceiling.gflops > 0 and ceiling.size in (64, 128) and ceiling.native
    int8 = measure_ceiling("int8", threads=1, sizes=(64,), budget_s=0.05)
    assert int8.gflops > 0 and ("emulated" in int8.note) != int8.native


def test_fp16_rows_use_the_fp32_ceiling_without_native_fp16():
    assert compute_precision("fp16", {"fp16": False}) == "fp32"
    assert compute_precision("fp16", {"fp16": True}) == "fp16"
    assert compute_precision("bf16", {"bf16": False}) == "bf16"


def test_machine_info_has_a_name_and_features():
    info = machine_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert isinstance(info["features"], list)
    assert info["native"]["fp32"] is True and info["physical_cores"] >= 1
    assert set(native_precisions()) == {"fp32", "bf16", "int8", "fp16"}


def test_peak_memory_sees_an_allocation():
    memory = PeakMemory().start()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    peak = memory.peak_mb()
    del block
    assert peak >= 60


def test_median_ci_brackets_the_median_and_measure_stops():
    samples = list(np.random.default_rng(0).normal(10, 1, 100))
    lo, hi = median_ci(samples)
    assert lo <= np.median(samples) <= hi and hi - lo < 1
    timing = measure(lambda: None, repeats=3, budget_s=0.0)
    assert len(timing.samples_ms) >= 3 and timing.p50 >= 0


def test_rounds_pool_their_samples():
    one = {"samples_ms": [1.0, 2.0, 3.0], "converged": True, "load_s": 1.0, "throughput_ips": 10.0,
           "batch_p50_ms": 5.0, "batch_repeats": 2, "peak_mem_mb": 100.0, "peak_mem_batch_mb": 120.0,
           "accuracy": {"seg_agreement": 99.0}}  # fmt: skip
    two = {**one, "samples_ms": [4.0, 5.0], "converged": False, "throughput_ips": 20.0, "peak_mem_mb": 150.0}
    merged = merge_rounds([one, two])
    assert merged["samples_ms"] == [1.0, 2.0, 3.0, 4.0, 5.0] and merged["p50_ms"] == 3.0
    assert merged["rounds"] == 2 and merged["converged"] is False and merged["throughput_ips"] == 15.0
    assert merged["peak_mem_mb"] == 150.0 and merged["batch_repeats"] == 4 and merged["accuracy"] == one["accuracy"]
    assert merge_rounds([one, {"error": "boom"}]) == {"error": "boom"}


def test_plan_skips_what_cannot_run_here():
    configs, skipped = plan(["torch", "onnxruntime", "openvino", "tensorrt"], ["fp32", "int8", "bf16"],
                            ["ort-opt", "torch-compile"], "cpu", {"fp32": True, "bf16": False, "int8": True})
    labels = {c.label for c in configs}
    assert {"torch fp32", "onnxruntime int8", "openvino int8", "onnxruntime fp32 ort-opt",
            "torch fp32 torch-compile"} <= labels  # fmt: skip
    assert "torch bf16" not in labels and "openvino bf16" not in labels
    reasons = {(s["backend"], s["precision"]): s["reason"] for s in skipped}
    assert "native bf16" in reasons[("torch", "bf16")] and "GPU" in reasons[("tensorrt", "fp32")]


def _row(label, model, p50, params=100, mb=1.0, gflop=1.0, **extra):
    backend, precision, *variant = label.split()
    return {
        "label": label, "backend": backend, "precision": precision, "variant": variant[0] if variant else "default",
        "model": model, "p50_ms": p50, "p90_ms": p50, "params": params, "file_mb": mb, "gflop": gflop,
        "throughput_ips": 1000 / p50, "fraction_of_ceiling": 0.5, "options": {}, "file": "x.onnx", **extra,
    }  # fmt: skip


def test_summary_ratios_and_fastest_kept():
    rows = []
    for label, scale, kept in (("torch fp32", 1.0, True), ("onnxruntime int8", 0.4, False)):
        rows += [_row(label, "mtl", 40 * scale, params=120, accuracy_kept=kept, accuracy_basis="raw outputs"),
                 *(_row(label, t, 30 * scale) for t in ("seg", "depth", "normal"))]
    summary = summarise(rows)
    by = {c["label"]: c for c in summary["configs"]}
    assert by["torch fp32"]["latency_ratio"] == pytest.approx(40 / 90, rel=1e-3)
    assert by["torch fp32"]["params_ratio"] == pytest.approx(120 / 300)
    assert by["onnxruntime int8"]["speedup_vs_torch_fp32"] == pytest.approx(2.5)
    assert by["onnxruntime int8"]["accuracy_kept"] is False and by["torch fp32"]["accuracy_kept"] is True
    assert summary["fastest"] == "onnxruntime int8" and summary["fastest_kept"] == "torch fp32"
    assert summary["e2e_config"] == "torch fp32"


def test_configs_without_stl_rows_have_no_ratio():
    rows = [_row("torch fp32", "mtl", 40), *(_row("torch fp32", t, 30) for t in ("seg", "depth", "normal")),
            _row("openvino bf16", "mtl", 10)]  # the STL models were not timed on openvino bf16
    by = {c["label"]: c for c in summarise(rows)["configs"]}
    assert by["openvino bf16"]["latency_ratio"] is None and by["openvino bf16"]["speedup_vs_torch_fp32"] == 4.0


class _Config:
    backend, precision, variant, label, options = "openvino", "bf16", "default", "openvino bf16", {}


class _Model:
    def __init__(self, random_weights):
        self.name, self.tasks, self.params = "mtl", ["seg", "depth"], 100
        self.flops = {"flops": 2e9, "gflop": 2.0}
        self.metadata = {"random_weights": random_weights}


class _Ceiling:
    precision, gflops = "bf16", 1000.0


def _result(raw_seg, agreement):
    return {"p50_ms": 10.0, "accuracy": {
        "seg": {"task": "seg", "raw_rel_err": raw_seg, "max_abs_err": 0.1, "agreement": {"seg_agreement": agreement}},
        "depth": {"task": "depth", "raw_rel_err": 1e-3, "max_abs_err": 0.01, "agreement": {"depth_rel_err": 0.1}},
    }}  # fmt: skip


def test_row_verdict_uses_task_agreement_only_for_trained_models(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    # random weights: near-tie logits flip (60% agreement) but the raw outputs are within bf16's tolerance
    random_row = make_row(_Config(), _Model(True), path, _result(0.01, 60.0), _Ceiling(), 1, shape_ceiling=500.0)
    assert random_row["accuracy_kept"] is True and random_row["accuracy_basis"] == "raw outputs"
    trained = make_row(_Config(), _Model(False), path, _result(0.01, 60.0), _Ceiling(), 1, shape_ceiling=500.0)
    assert trained["accuracy_kept"] is False and any("seg_agreement" in f for f in trained["accuracy_failures"])
    broken = make_row(_Config(), _Model(True), path, _result(0.4, 99.9), _Ceiling(), 1)
    assert broken["accuracy_kept"] is False and "raw relative error" in broken["accuracy_failures"][0]
    # 2 GFLOP in 10 ms = 200 GFLOP/s: 20% of the square ceiling, 40% of the model-shape ceiling
    assert trained["achieved_gflops"] == pytest.approx(200.0)
    assert trained["fraction_of_ceiling"] == pytest.approx(0.2) and trained["fraction_of_shape_ceiling"] == 0.4
    assert broken["fraction_of_shape_ceiling"] is None


def test_default_precisions_are_what_the_cpu_computes_natively():
    assert default_precisions({"fp32": True, "bf16": False, "int8": False, "fp16": False}) == ["fp32"]
    assert default_precisions({"fp32": True, "bf16": True, "int8": True, "fp16": False}) == ["fp32", "bf16", "int8"]
    everything = {"fp32": True, "bf16": True, "int8": True, "fp16": True}
    assert default_precisions(everything) == ["fp32", "bf16", "int8"]  # fp16 gains nothing on a CPU
    assert default_precisions(everything, "cuda") == ["fp32", "bf16", "int8", "fp16"]


def test_model_shapes_are_the_backbones_matrix_products():
    """Every product the shape ceiling times is one the backbone computes: their FLOPs add up to the
    backbone's counted FLOPs less the patch embedding (a convolution, not a matrix product here)."""
    config = preset_config("vit-nano", ["seg"], num_classes=5)
    model = create_model(config)
    size = tuple(config["backbone"]["img_size"])
    _, parts = count_flops(model, size, by_module=True)
    b = config["backbone"]
    grid = (size[0] // b["patch_size"]) * (size[1] // b["patch_size"])
    patch_embed = 2 * grid * b["embed_dim"] * 3 * b["patch_size"] ** 2
    shapes = model_shapes(config)
    assert sum(count * shape_flops(shape) for shape, count in shapes) == parts["backbone"] - patch_embed
    assert model_shapes({"backbone": {"name": "resnet18"}}) == []


def test_shape_ceiling_is_positive_and_per_shape():
    config = preset_config("vit-nano", ["seg"], num_classes=5)
    ceiling = measure_shape_ceiling("fp32", model_shapes(config), threads=1, budget_s=0.05)
    assert ceiling is not None and ceiling.gflops > 0
    assert len(ceiling.per_shape) == len(model_shapes(config))
    slowest = min(s["gflops"] for s in ceiling.per_shape)
    fastest = max(s["gflops"] for s in ceiling.per_shape)
    assert slowest <= ceiling.gflops <= fastest  # a FLOP-weighted harmonic mean lies between them


def test_auto_cache_gets_the_measured_winner(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from mtlkd.runtime import auto

    cache = tmp_path / "auto.json"
    monkeypatch.setenv("MTLKD_CACHE", str(cache))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a graph; the cache key only reads size and mtime")
    rows = [{**_row("onnxruntime fp32", "mtl", 9.0), "file": str(model)},
            {**_row("openvino fp32", "mtl", 7.0), "file": str(model)},
            {**_row("openvino bf16", "mtl", 5.0), "file": str(model), "options": {"precision": "bf16"}}]
    written = update_auto_cache(rows, "cpu")
    assert [w["backend"] for w in written] == ["openvino"]
    name, loaded = auto.select_backend(model, "cpu")  # read from the cache: nothing is measured or loaded
    assert (name, loaded) == ("openvino", None)
    assert auto.read_cache(cache)["entries"]


def test_random_weight_stl_rows_do_not_decide_a_configs_accuracy():
    """A trained MTL with random-weight STL counterparts: only the trained model's verdict counts."""
    stl = ("seg", "depth", "normal")
    rows = [_row("openvino bf16", "mtl", 20, accuracy_kept=True, accuracy_basis="raw outputs and task agreement"),
            *(_row("openvino bf16", t, 15, accuracy_kept=False, accuracy_basis="raw outputs", random_weights=True)
              for t in stl),
            _row("torch fp32", "mtl", 40, accuracy_kept=True, accuracy_basis="raw outputs and task agreement"),
            *(_row("torch fp32", t, 30, random_weights=True) for t in stl)]  # fmt: skip
    summary = summarise(rows)
    by = {c["label"]: c for c in summary["configs"]}
    assert by["openvino bf16"]["accuracy_kept"] is True and summary["fastest_kept"] == "openvino bf16"
    rows[0]["accuracy_kept"] = False
    assert summarise(rows)["fastest_kept"] == "torch fp32"


def test_profile_categories_and_an_onnxruntime_profile(tmp_path):
    """The engine's own per-node times, grouped: shares add up to one and the matrix products are there."""
    pytest.importorskip("onnxruntime")
    from mtlkd.bench.profile import category, profile_onnxruntime
    from mtlkd.checkpoint import model_metadata
    from mtlkd.export.onnx import export_onnx

    assert category("FullyConnected") == "matrix products" and category("Reorder") == "layout"
    assert category("FullyConnectedQuantizedLegacy") == "matrix products"  # OpenVINO's int8 kernels
    assert category("Subgraph", "node_matmul,node_softmax,node_matmul_1") == "attention"
    assert category("Subgraph", "node_add_27") == "element-wise" and category("SomethingNew") == "other"
    config = preset_config("vit-nano", ["seg", "depth"], num_classes=5)
    path = tmp_path / "nano.onnx"
    export_onnx(create_model(config).eval(), model_metadata(config), path, ["seg", "depth"])
    image = np.random.default_rng(0).random((1, 3, *config["backbone"]["img_size"]), dtype=np.float32)
    profile = profile_onnxruntime(path, image, threads=1, runs=3)
    assert profile.total_ms > 0 and sum(profile.shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert profile.shares.get("matrix products", 0) > 0 and profile.top_nodes
