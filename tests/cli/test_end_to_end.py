"""The whole pipe through the commands a user types: data -> train -> eval -> infer -> report."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mtlkd.cli.main import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_data_train_eval_infer_report(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert invoke("data", "synthetic", "--out", data, "--train", 8, "--val", 4, "--img-size", "32x32", "--seed", 1,
                  "--quiet").exit_code == 0
    result = invoke("train", "synthetic", "--data-dir", data, "--out", run, "--preset", "vit-nano", "--epochs", 1,
                    "--batch-size", 4, "--max-steps", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (run / "model.safetensors").exists()

    result = invoke("eval", run / "model.safetensors", "synthetic", "--data-dir", data, "--json", "--backend", "torch")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    saved = json.loads((run / "metrics.json").read_text())
    assert abs(metrics["seg"]["miou"] - saved["seg"]["miou"]) < 1e-6  # the same model, the same split

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        array = np.load(data / "val" / "image" / f"{i}.npy")
        Image.fromarray((array * 255).astype(np.uint8)).resize((50, 40)).save(images / f"im{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    result = invoke("infer", run / "model.safetensors", images, "--out", out, "--save-raw",
                    "--backend", "torch")
    assert result.exit_code == 1  # one unreadable file: the others are still done, the exit code says so
    assert "broken.png" in result.output
    seg = np.load(out / "im0_seg.npy")
    assert seg.shape == (40, 50) and (out / "im1_panel.png").exists()

    result = invoke("report", run, "--baseline", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"][0]["delta"] == 0


def test_missing_dataset_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out, runs/nyuv2-mtl, is relative
    result = invoke("train", "nyuv2", "--data-dir", tmp_path / "nowhere", "--epochs", 1)
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nowhere" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # neither the run folder nor the runs/ it was made in


def test_pickle_checkpoint_is_refused(tmp_path):
    import torch

    torch.save({"w": torch.ones(1)}, tmp_path / "model.pt")
    result = invoke("eval", tmp_path / "model.pt", "synthetic", "--backend", "torch")
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
