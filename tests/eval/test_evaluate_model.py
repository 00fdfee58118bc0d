"""`evaluate_model`: any model file scored on a dataset read with numpy; an ONNX export scored where torch
cannot be imported gives the checkpoint's scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

TASKS = ["seg", "depth", "normal"]
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic dataset, a random-weight vit-nano checkpoint with its classes, and its ONNX export."""
    import onnx

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.data.synthetic import CLASS_NAMES, write_synthetic
    from mtlkd.models import create_model, preset_config

    root = tmp_path_factory.mktemp("eval")
    write_synthetic(root / "data", 1, 6, size=(32, 32), seed=3, progress=False)
    config = preset_config("vit-nano", TASKS, class_names=list(CLASS_NAMES))
    torch.manual_seed(0)
    model = create_model(config).eval()
    metadata = model_metadata(config)
    checkpoint = save_checkpoint(root / "model.safetensors", model.state_dict(), metadata)

    class Outputs(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return tuple(out[t] for t in TASKS)

    path = root / "model.onnx"
    model.full_resolution = False  # the heads' grid, as every backend (the torch one included) puts it out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Outputs(model), torch.rand(1, 3, 32, 32), str(path), input_names=["image"],
                          output_names=TASKS, dynamic_axes={"image": {0: "batch"}}, opset_version=18, dynamo=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "mtlkd", json.dumps({**metadata, "input_name": "image", "precision": "fp32",
                                                  "output_stride": model.output_stride})
    onnx.save(proto, str(path))
    return {"data": root / "data", "checkpoint": checkpoint, "onnx": path}


@pytest.mark.numerics
def test_onnx_scored_without_torch_equals_the_checkpoint(files, tmp_path):
    from mtlkd.eval.evaluate import EvalOptions, evaluate_model

    reference = evaluate_model(files["checkpoint"], "synthetic",
                               EvalOptions(data_dir=files["data"], backend="torch", batch_size=4, progress=False))
    assert reference.samples == 6 and reference.backend == "torch" and reference.tasks == TASKS
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import io, json, contextlib
        from mtlkd.eval.evaluate import EvalOptions, evaluate_model
        scores = evaluate_model({str(files["onnx"])!r}, "synthetic",
                                EvalOptions(data_dir={str(files["data"])!r}, backend="onnxruntime", batch_size=4,
                                            progress=False))
        from mtlkd.cli.evaluate import app
        sys.argv = ["mtl-eval", {str(files["onnx"])!r}, "synthetic", "--data-dir", {str(files["data"])!r},
                    "--backend", "onnxruntime", "--json", "--quiet"]
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            try:
                app()
            except SystemExit as exc:
                code = exc.code
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm"))
        print("REPORT" + json.dumps({{"scores": scores.to_json(), "cli": json.loads(stdout.getvalue()),
                                      "code": code, "torch": loaded}}))
    """)
    env = {**os.environ, "MTLKD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT")]
    assert lines, done.stdout + done.stderr
    report = json.loads(lines[0][len("REPORT"):])
    assert report["torch"] == [] and report["code"] in (0, None)
    assert report["scores"]["backend"] == "onnxruntime" and report["scores"]["precision"] == "fp32"
    for scores in (report["scores"]["metrics"], report["cli"]):
        assert set(scores) == set(TASKS)
        for task, values in reference.metrics.items():
            for name, value in values.items():
                # argmax ties and the 0.01-degree histogram allow a small difference; a wrong resize, target
                # layout or class count would move these by far more
                assert scores[task][name] == pytest.approx(value, rel=1e-3, abs=0.05), (task, name)


def test_batches_equal_samples_read_one_by_one(files):
    from mtlkd.data import open_dataset

    dataset = open_dataset("synthetic", files["data"], "val", TASKS)
    batches = list(dataset.batches(4))
    assert [len(b["image"]) for b in batches] == [4, 2]
    for i in range(6):
        sample = dataset.read(i)
        for key, value in sample.items():
            np.testing.assert_array_equal(batches[i // 4][key][i % 4], value)
    assert batches[0]["seg"].dtype == np.int64 and batches[0]["depth"].shape == (4, 1, 32, 32)


def test_bad_input_is_one_line(files):
    from mtlkd.errors import ConfigError, DatasetError, UserError
    from mtlkd.eval.evaluate import EvalOptions, evaluate_model

    with pytest.raises(ConfigError, match="--batch-size"):
        EvalOptions(batch_size=0)
    with pytest.raises(DatasetError, match="unknown dataset"):
        evaluate_model(files["onnx"], "mnist", EvalOptions(backend="onnxruntime", progress=False))
    with pytest.raises(UserError, match="no such model file"):
        evaluate_model(files["data"] / "missing.onnx", "synthetic", EvalOptions(data_dir=files["data"]))


def test_cli_results_on_stdout_and_json_file(files, tmp_path):
    from typer.testing import CliRunner

    from mtlkd.cli.evaluate import app
    from mtlkd.cli.main import app as mtl

    runner = CliRunner()
    target = tmp_path / "scores.json"
    result = runner.invoke(mtl, ["eval", str(files["onnx"]), "synthetic", "--data-dir", str(files["data"]),
                                 "--json", str(target), "--backend", "onnxruntime"])  # through the umbrella
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert set(written) == set(TASKS)
    assert "miou" in result.stdout and "(fp32, onnxruntime)" in result.stderr  # the table on stdout, header on stderr
    assert "evaluated" not in result.stdout
    result = runner.invoke(app, [str(files["onnx"]), "synthetic", "--data-dir", str(files["data"]), "--backend",
                                 "onnxruntime", "--json", "--quiet"])
    assert result.exit_code == 0 and json.loads(result.stdout) == written and result.stderr == ""
    result = runner.invoke(app, [str(files["onnx"]), "synthetic", "--data-dir", str(files["data"]),
                                 f"--json={tmp_path}", "--quiet"])  # a folder for the file: refused before the run
    assert result.exit_code == 2 and result.stderr.startswith("error: --json") and result.stdout == ""
