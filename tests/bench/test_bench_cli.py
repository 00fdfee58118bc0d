"""`mtl-bench` end to end on the vit-nano preset (torch + onnxruntime, few repeats, in-process, STL on
every configuration): the JSON's structure and fields, the ratio and speed-up arithmetic recomputed from the
rows, the chart, and the command line's user errors. Timings are never asserted (the machine may be busy)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mtlkd.accuracy import TOLERANCES
from mtlkd.cli.bench import app

runner = CliRunner()
ROW_FIELDS = ("backend", "precision", "variant", "model", "batch", "p50_ms", "p90_ms", "params", "gflop",
              "ceiling_gflops", "fraction_of_ceiling", "shape_ceiling_gflops", "fraction_of_shape_ceiling",
              "throughput_ips", "file_mb", "peak_mem_mb", "accuracy_kept", "accuracy_basis")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTLKD_CACHE", str(tmp / "cache"))  # never the user's ~/.cache
        result = runner.invoke(app, [
            "--preset", "vit-nano", "--backends", "torch,onnxruntime", "--precisions", "fp32,int8",
            "--repeats", "2", "--budget", "0", "--batch-size", "2", "--threads", "1", "--no-isolate",
            "--accuracy-images", "1", "--cache", str(tmp / "work"), "--out", str(tmp), "--stl-on", "all",
            "--train-steps", "2",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((tmp / "bench.json").read_text()), tmp, result.output


@pytest.mark.numerics
def test_json_rows_have_every_field(bench):
    data, _, _ = bench
    rows = data["rows"]
    labels = {(r["backend"], r["precision"]) for r in rows}
    assert {("torch", "fp32"), ("onnxruntime", "fp32")} <= labels
    for row in rows:
        assert not row.get("error"), row.get("error")
        for key in (*ROW_FIELDS, *(f"{t}_raw_err" for t in row["tasks"])):
            assert key in row, key
        assert row["model"] in ("mtl", "seg", "depth", "normal")
        assert row["batch"] == 2 and row["p50_ms"] > 0 and row["p90_ms"] >= row["p50_ms"] * 0.999
        assert row["gflop"] > 0 and row["ceiling_gflops"] > 0 and row["params"] > 0 and row["file_mb"] > 0
    mtl = [r for r in rows if r["model"] == "mtl"]
    assert all("seg_agreement" in r and "depth_rel_err" in r and "normal_angle" in r for r in mtl)
    onnx_fp32 = next(r for r in mtl if (r["backend"], r["precision"]) == ("onnxruntime", "fp32"))
    assert onnx_fp32["accuracy_kept"] and onnx_fp32["seg_raw_err"] < TOLERANCES["fp32"].raw_rel_err
    # the preset's MTL model was trained (task agreement counts, unless a file's error makes its briefly trained
    # class decisions ties, which the basis then says); its STL counterparts are random weights
    assert all(r["accuracy_basis"].startswith("raw outputs and task agreement") for r in mtl)
    assert all(r["accuracy_basis"] == "raw outputs" for r in rows if r["model"] != "mtl")


def test_json_machine_ceilings_models_and_summary(bench):
    data, _, output = bench
    assert data["machine"]["cpu"] and isinstance(data["machine"]["features"], list)
    assert data["ceilings"]["fp32"]["gflops"] > 0
    for row in data["rows"]:
        assert row["ceiling_precision"] in data["ceilings"]
    assert set(data["models"]) == {"mtl", "seg", "depth", "normal"}
    parts = data["models"]["mtl"]["gflop_parts"]
    assert set(parts) == {"backbone", "heads.seg", "heads.depth", "heads.normal"}
    assert sum(parts.values()) == pytest.approx(data["models"]["mtl"]["gflop"], rel=1e-3)
    summary = data["summary"]
    assert summary["reference"] == "torch fp32"
    assert summary["fastest_kept"] in {c["label"] for c in summary["configs"]}
    assert data["name"] == "vit-nano 32x32" or data["name"].startswith("vit-nano ")
    assert data["shape_ceilings"]["fp32"]["gflops"] > 0
    assert any(s["backend"] == "torch" and s["precision"] == "int8" for s in data["skipped"])
    e2e = data["end_to_end"]
    assert e2e["total_ms"] > 0 and e2e["network_alone_ms"] > 0 and e2e["image_size"] == [480, 640]
    stages = e2e["decode_ms"] + e2e["preprocess_ms"] + e2e["postprocess_ms"]
    assert e2e["stages_overhead_ms"] == pytest.approx(stages, abs=1e-2)
    assert e2e["overhead_pct"] == pytest.approx(100 * e2e["overhead_ms"] / e2e["network_alone_ms"], rel=1e-2)
    for word in ("MTL / sum of STL", "fastest with the accuracy kept", "end to end", "ceilings"):
        assert word in output


def test_ratios_recomputed_from_rows(bench):
    data, _, _ = bench
    rows, configs = data["rows"], data["summary"]["configs"]
    ref = next(c for c in configs if c["label"] == "torch fp32")
    for config in configs:
        group = [r for r in rows if r["label"] == config["label"]]
        mtl = next(r for r in group if r["model"] == "mtl")
        stl = [r for r in group if r["model"] != "mtl"]
        assert len(stl) == 3
        assert config["latency_ratio"] == pytest.approx(mtl["p50_ms"] / sum(r["p50_ms"] for r in stl), rel=1e-3)
        assert config["params_ratio"] == pytest.approx(mtl["params"] / sum(r["params"] for r in stl), rel=1e-3)
        assert config["size_ratio"] == pytest.approx(mtl["file_mb"] / sum(r["file_mb"] for r in stl), rel=1e-3)
        assert config["speedup_vs_torch_fp32"] == pytest.approx(ref["mtl_p50_ms"] / mtl["p50_ms"], rel=1e-3)
        assert config["params_ratio"] < 1  # one backbone instead of three
    for row in rows:
        achieved = row["gflop"] / (row["p50_ms"] / 1000)
        assert row["achieved_gflops"] == pytest.approx(achieved, rel=2e-3)
        assert row["fraction_of_ceiling"] == pytest.approx(achieved / row["ceiling_gflops"], rel=2e-3)


def test_plot_is_a_png(bench):
    _, tmp, _ = bench
    assert (tmp / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp / "bench.json").read_text())["rows"]


def test_help_lists_options_and_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("MODEL", "--preset", "--stl", "--img-size", "--backends", "--precisions", "--batch-size",
                 "--data-dir", "--json", "--out", "--repeats", "--threads", "--quiet", "Examples"):  # fmt: skip
        assert word in result.output
    assert "<path>" not in result.output and "range" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "vit-huge"], "unknown; known presets"),
        (["--img-size", "384by384"], "expected HEIGHTxWIDTH"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--stl-on", "some"], "best or all"),
        (["--backends", "torch,tflite"], "unknown tflite"),
        (["--precisions", "fp64"], "unknown fp64"),
        (["--stl", "pyproject.toml"], "--stl needs a multi-task MODEL"),
        (["missing.safetensors"], "no such checkpoint"),
        (["--data-dir", "no/such/folder"], "no such folder"),
        (["--device", "tpu"], "use cpu or cuda"),
    ],
)
def test_user_errors_are_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_mtl_checkpoint_alone_gets_random_stl_counterparts(tmp_path, monkeypatch):
    """`mtl-bench CKPT` without `--stl`: the STL rows are the same architecture with one head and random
    weights (latency only), and the rows say so."""
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config

    config = preset_config("vit-nano", ["seg", "depth", "normal"], num_classes=5)
    checkpoint = tmp_path / "mtl.safetensors"
    save_checkpoint(checkpoint, create_model(config).state_dict(), model_metadata(config))
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, [
        str(checkpoint), "--backends", "torch", "--precisions", "fp32", "--repeats", "2", "--budget", "0",
        "--batch-size", "1", "--threads", "1", "--no-isolate", "--accuracy-images", "1", "--no-e2e",
        "--cache", str(tmp_path / "work"), "--json", str(tmp_path / "bench.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {r["model"]: r["random_weights"] for r in rows} == {"mtl": False, "seg": True, "depth": True,
                                                                 "normal": True}  # fmt: skip
    mtl = next(r for r in rows if r["model"] == "mtl")
    assert sum(r["params"] for r in rows if r["model"] != "mtl") > mtl["params"]


def test_unwritable_json_or_out_is_refused_before_the_run(tmp_path, monkeypatch):
    import os

    import mtlkd.bench as bench

    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("the run started"))
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) else real(p, mode, **kw))
    for args, words in ((["--json=" + str(tmp_path)], "is a folder"),
                        (["--json", str(locked / "bench.json")], "not writable"),
                        (["--out", str(locked / "sub")], "not writable"),
                        (["--json", str(tmp_path / "a-file" / "bench.json")], "not a folder")):
        (tmp_path / "a-file").write_text("x")
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], result.output


def test_cuda_without_a_gpu_is_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    result = runner.invoke(app, ["--device", "cuda", "--backends", "torch,onnxruntime"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--device cuda" in lines[0] and "--device cpu" in lines[0]


def test_bare_json_prints_json_on_stdout(tmp_path, monkeypatch):
    """`--json` without a path: the JSON is stdout and the tables go to stderr, so `mtl-bench --json | jq`
    works; `optional_values` is what the console script applies to argv."""
    from mtlkd.cli.common import optional_values

    assert optional_values(["--json"]) == ["--json=-"]
    assert optional_values(["--json", "--quiet"]) == ["--json=-", "--quiet"]
    assert optional_values(["--json", "out.json"]) == ["--json", "out.json"]
    assert optional_values(["--json", "photo.jpg"]) == ["--json=-", "photo.jpg"]  # a positional, not the path
    assert optional_values(["--json=results"]) == ["--json=results"]
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "--preset", "vit-nano", "--backends", "torch", "--precisions", "fp32", "--repeats", "2", "--budget", "0",
        "--batch-size", "1", "--threads", "1", "--no-isolate", "--accuracy-images", "1", "--no-e2e", "--quiet",
        "--train-steps", "0", "--cache", str(tmp_path / "work"), "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(result.stdout)
    assert data["rows"] and "MTL / sum of STL" in result.stderr
    assert all(r["accuracy_basis"] == "raw outputs" for r in data["rows"])  # random weights: raw outputs only
