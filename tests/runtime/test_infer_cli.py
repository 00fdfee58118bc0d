"""mtl-infer end to end: folders with a broken file, videos, the default model, and a torch-free run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mtlkd.cli.infer import app
from mtlkd.tasks import colourise_normal

runner = CliRunner()


def _images(folder: Path, image_factory) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_factory(45, 61, seed=1)).save(folder / "first.png")
    Image.fromarray(image_factory(70, 50, seed=2)).save(folder / "second.jpg")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "readme.txt").write_text("ignored: not an image extension")


def test_folder_with_a_corrupt_file(tmp_path, nano_onnx, image_factory):
    _images(tmp_path / "in", image_factory)
    out = tmp_path / "out"
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "in"), "--backend", "onnxruntime",
                                 "--out", str(out), "--save-raw"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    assert sum("broken.jpg" in line for line in result.stderr.splitlines()) == 1
    for stem, shape in [("first", (45, 61)), ("second", (70, 50))]:
        for kind in ("seg", "depth", "normal", "panel"):
            assert (out / f"{stem}_{kind}.png").is_file(), f"{stem}_{kind}.png"
        assert np.load(out / f"{stem}_seg.npy").shape == shape
        assert np.load(out / f"{stem}_depth.npy").dtype == np.float32
        assert np.load(out / f"{stem}_normal.npy").shape == (*shape, 3)
        picture = cv2.imread(str(out / f"{stem}_normal.png"))[..., ::-1]  # the map at its own size, key beside
        normal = np.load(out / f"{stem}_normal.npy")
        np.testing.assert_array_equal(picture[: shape[0], : shape[1]], colourise_normal(normal))
        assert picture.shape[1] > shape[1] + 40
        for kind in ("overlay",):
            assert (out / f"{stem}_{kind}.png").is_file()
    assert "per image: decode" in result.stdout and "network" in result.stdout
    assert str(out) in result.stdout
    assert not list(out.glob("broken*"))


def test_task_subset_and_batches(tmp_path, nano_checkpoint, image_factory):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(image_factory(20 + i, 30, seed=i)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    result = runner.invoke(app, [str(nano_checkpoint), str(folder / "*.png"), "--tasks", "depth",
                                 "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"im{i}_{k}.png" for i in range(3) for k in ("depth", "panel")])


def test_video_round_trip(tmp_path, nano_onnx):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 8.0, (52, 40))
    for i in range(5):
        frame = np.zeros((40, 52, 3), np.uint8)
        frame[:, : 10 * (i + 1)] = (30 * i, 200, 90)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    result = runner.invoke(app, [str(nano_onnx), str(clip), "--out", str(out)])
    assert result.exit_code == 0, result.output
    video = out / "clip_panel.mp4"
    assert video.is_file() and str(video) in result.stdout
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 5
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) > 4 * 52  # the side-by-side panel


def test_missing_inputs_and_model(tmp_path, nano_onnx, image_factory):
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "nope.png"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "nope.png" in result.stderr
    result = runner.invoke(app, [str(tmp_path / "missing.onnx"), "x.png"])
    assert result.exit_code == 2 and result.stderr.startswith("error:") and "missing.onnx" in result.stderr
    assert "Traceback" not in result.output
    Image.fromarray(image_factory(20, 20)).save(tmp_path / "photo.png")
    swapped = runner.invoke(app, [str(tmp_path / "photo.png"), str(nano_onnx), "--out", str(tmp_path / "o")])
    assert swapped.exit_code == 2 and "photo.png" in swapped.stderr and ".onnx" in swapped.stderr  # says what MODEL is
    assert not (tmp_path / "o").exists()  # nothing written before the model was read


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def test_runtime_runs_without_torch(tmp_path, nano_onnx, image_factory):
    """An exported model runs (Predictor, auto backend choice, and the mtl-infer CLI) where torch cannot
    even be imported."""
    _images(tmp_path / "in", image_factory)
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        import numpy as np
        try:
            import torch
            raise SystemExit("torch was importable")
        except ImportError:
            pass
        from mtlkd.runtime import Predictor
        report = {{}}
        for backend in ("auto", "onnxruntime", "openvino"):
            p = Predictor.load({str(nano_onnx)!r}, backend=backend)
            r = p.predict(np.zeros((21, 34, 3), np.uint8))
            report[backend] = [p.backend_name, list(r["seg"].shape), list(r["normal"].shape)]
        from mtlkd.cli.infer import app
        sys.argv = ["mtl-infer", {str(nano_onnx)!r}, {str(tmp_path / "in")!r},
                    "--out", {str(tmp_path / "out")!r}]
        try:
            app()
        except SystemExit as exc:
            report["exit"] = exc.code
        report["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm"))
        print("REPORT" + json.dumps(report))
    """)
    env = {**os.environ, "MTLKD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT")]
    assert lines, done.stdout + done.stderr
    report = json.loads(lines[0][len("REPORT"):])
    assert report["torch_loaded"] == []
    assert report["onnxruntime"] == ["onnxruntime", [21, 34], [21, 34, 3]]
    assert report["openvino"] == ["openvino", [21, 34], [21, 34, 3]]
    assert report["auto"][0] in ("onnxruntime", "openvino")
    assert report["exit"] == 1  # the broken file
    assert (tmp_path / "out" / "first_panel.png").is_file() and (tmp_path / "out" / "second_seg.png").is_file()
    assert sum("broken.jpg" in line for line in done.stderr.splitlines()) == 1


@pytest.mark.parametrize("module", ["mtlkd.runtime", "mtlkd.cli.infer", "mtlkd.runtime.auto",
                                    "mtlkd.runtime.visualize", "mtlkd.runtime.media", "mtlkd.runtime.infer",
                                    "mtlkd.cli.evaluate", "mtlkd.eval.evaluate", "mtlkd.data",
                                    "mtlkd.runtime.triton_model", "mtlkd.serve.bench", "mtlkd.cli.serve",
                                    "mtlkd.runtime.teachers", "mtlkd.runtime.foreign", "mtlkd.eval.agreement"])
def test_modules_import_without_torch(module):
    script = BLOCK_TORCH + f"import {module}\nimport sys\nassert 'torch' not in sys.modules\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_infer_json_goes_to_stdout_alone_or_into_a_file(tmp_path, nano_onnx, image_factory):
    Image.fromarray(image_factory(20, 24)).save(tmp_path / "a.png")
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--json",
                                 "--quiet", "--depth-range", "0.5,4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["images"] == 1 and data["depth_range"] == [0.5, 4.0] and data["failures"] == []
    assert all((tmp_path / "o" / name.split("/")[-1]).is_file() for name in data["written"])
    target = tmp_path / "run.json"
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--json",
                                 str(target), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["images"] == 1 and "1 image(s)" in result.stdout
    folder = tmp_path / "taken.json"
    folder.mkdir()
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"),
                                 f"--json={folder}"])
    assert result.exit_code == 2 and "--json" in result.stderr and not (tmp_path / "p").exists()


def test_infer_bad_depth_range_is_one_line(tmp_path, nano_onnx):
    result = runner.invoke(app, [str(nano_onnx), "x.png", "--depth-range", "5,1", "--out", str(tmp_path / "o")])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--depth-range" in lines[0]
