"""What a careless or hostile user hands the runtime: repeated tasks, files a decoder chokes on, images of
absurd aspect ratio, model files whose metadata lies, an --out that is the input folder, a full disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mtlkd.cli.infer import app
from mtlkd.errors import BackendError
from mtlkd.metadata import parse_metadata
from mtlkd.runtime import Predictor
from mtlkd.tasks import parse_tasks

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_repeated_task_is_refused_by_parser_predictor_backend_and_cli(tmp_path, nano_ir, image_factory):
    with pytest.raises(ValueError, match="twice"):
        parse_tasks("seg,seg")
    predictor = Predictor.load(nano_ir, backend="openvino")
    image = image_factory(20, 20)
    with pytest.raises(ValueError, match="twice"):  # used to kill the process (OpenVINO segfault)
        predictor.predict(image, "seg,seg")
    with pytest.raises(ValueError, match="twice"):
        predictor.predict(image, ["depth", "seg", "depth"])
    batch = np.zeros((1, 3, *predictor.input_size), np.float32)
    with pytest.raises(BackendError, match="twice"):
        predictor.backend.run(batch, ["seg", "seg"])
    Image.fromarray(image).save(tmp_path / "a.png")
    result = runner.invoke(app, [str(nano_ir), str(tmp_path / "a.png"), "--backend", "openvino",
                                 "--tasks", "seg,seg", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "twice" in _one_error_line(result)
    assert predictor.predict(image, "seg")["seg"].shape == (20, 20)  # still alive and usable


@pytest.mark.parametrize("raised", [ZeroDivisionError("division by zero"), IndexError("tuple index"),
                                    MemoryError(), RuntimeError("decoder state")])
def test_any_decoder_exception_is_one_line_and_the_batch_goes_on(tmp_path, nano_onnx, image_factory, monkeypatch,
                                                                  raised):
    from PIL import Image as PILImage

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "evil.png", "z.png"):
        PILImage.fromarray(image_factory(24, 30)).save(folder / name)
    real_open = PILImage.open

    def hostile_open(path, *args, **kwargs):
        if Path(path).name == "evil.png":
            raise raised
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(PILImage, "open", hostile_open)
    out = tmp_path / "out"
    result = runner.invoke(app, [str(nano_onnx), str(folder), "--backend", "onnxruntime",
                                 "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "evil.png" in errors[0] and type(raised).__name__ in errors[0]
    assert "Traceback" not in result.output
    assert (out / "a_panel.png").is_file() and (out / "z_panel.png").is_file()
    assert not list(out.glob("evil*"))


@pytest.mark.parametrize("shape", [(1, 200_000), (200_000, 1), (3, 90_000)])
def test_pictures_are_capped_in_both_dimensions(shape):
    from mtlkd.runtime import visualize

    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    result = {"seg": np.zeros((h, w), np.int32), "depth": np.ones((h, w), np.float32),
              "normal": np.dstack([np.zeros((h, w, 2), np.float32), np.ones((h, w, 1), np.float32)])}
    names = ["a", "b"]
    decoded = image.nbytes + sum(a.nbytes for a in result.values())
    panel = visualize.panel(image, result, names)
    assert panel.shape[0] <= 600 and panel.shape[1] <= 4 * (4 * 540 + 400)
    for picture in (visualize.seg_image(result["seg"], names), visualize.depth_image(result["depth"]),
                    visualize.normal_image(result["normal"])):
        assert max(picture.shape[:2]) <= visualize.MAX_SIDE + 400
        assert picture.nbytes <= max(decoded, 4096 * 600 * 3)  # bounded by the decoded image, not its aspect


def _meta(**override):
    meta = {"tasks": ["seg", "depth"], "input_size": [32, 32], "num_classes": 2, "class_names": ["a", "b"]}
    meta.update(override)
    return json.dumps(meta)


@pytest.mark.parametrize("override, field", [
    ({"input_size": [100_000, 100_000]}, "input_size"),
    ({"input_size": "32x32"}, "input_size"),
    ({"num_classes": 10**9, "class_names": None}, "num_classes"),
    ({"num_classes": 3}, "class_names"),
    ({"tasks": ["seg", "seg"]}, "tasks"),
    ({"tasks": ["seg", "x" * 10_000]}, "tasks"),
    ({"tasks": []}, "tasks"),
    ({"class_names": [1, 2]}, "class_names"),
    ({"normalization": {"std": [0, 1, 1]}}, "normalization.std"),
    ({"config": {"backbone": {"embed_dim": 10**9}}}, "config.backbone.embed_dim"),
])
def test_lying_metadata_is_one_line_before_any_allocation(override, field):
    with pytest.raises(BackendError, match=field.replace(".", r"\.")) as info:
        parse_metadata(_meta(**override), "model.onnx", error=BackendError)
    assert "model.onnx" in str(info.value) and "\n" not in str(info.value)


def _onnx_with_metadata(src: Path, dst: Path, **override) -> Path:
    import onnx

    proto = onnx.load(str(src))
    entry = next(p for p in proto.metadata_props if p.key == "mtlkd")
    meta = json.loads(entry.value)
    meta.update(override)
    entry.value = json.dumps(meta)
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("override, words", [({"input_size": [64, 64]}, "input_size"),
                                              ({"num_classes": 7, "class_names": None}, "channels")])
def test_onnx_metadata_must_agree_with_the_graph(tmp_path, nano_onnx, override, words):
    meta = json.loads(next(p.value for p in __import__("onnx").load(str(nano_onnx)).metadata_props
                           if p.key == "mtlkd"))
    if "input_size" in override:
        override = {**override, "config": {**meta["config"], "backbone": {**meta["config"]["backbone"],
                                                                          "img_size": override["input_size"]}}}
    else:
        override = {**override, "config": {**meta["config"], "num_classes": override["num_classes"]}}
    bad = _onnx_with_metadata(nano_onnx, tmp_path / "bad.onnx", **override)
    if "input_size" in words:  # the exporter's graph has a dynamic H x W? then the lie is caught by range only
        import onnx

        dims = onnx.load(str(bad)).graph.input[0].type.tensor_type.shape.dim
        if not dims[2].HasField("dim_value"):
            pytest.skip("graph input H x W are dynamic")
    with pytest.raises(BackendError, match=words):
        Predictor.load(bad, backend="onnxruntime")


def test_checkpoint_config_must_fit_its_tensors(tmp_path, nano_model):
    from safetensors.torch import save_file

    from mtlkd.checkpoint import METADATA_KEY, read_metadata, save_checkpoint
    from mtlkd.errors import CheckpointError
    from mtlkd.models import load_model

    model, meta = nano_model
    forged = json.loads(json.dumps(meta))
    forged["config"]["backbone"]["embed_dim"] = 4096  # in range, but not what the tensors hold
    path = save_checkpoint(tmp_path / "forged.safetensors", model.state_dict(), forged)
    with pytest.raises(CheckpointError, match="shape"):
        load_model(str(path))
    huge = json.loads(json.dumps(meta))
    huge["config"]["backbone"]["embed_dim"] = 10**8
    path = tmp_path / "huge.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={METADATA_KEY: json.dumps(huge)})
    with pytest.raises(CheckpointError, match="embed_dim"):
        read_metadata(path)


def test_openvino_error_keeps_its_cause(tmp_path):
    pytest.importorskip("openvino")
    (tmp_path / "model.xml").write_text("<net><layers></net>")
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(BackendError) as info:
        Predictor.load(tmp_path / "model.xml", backend="openvino")
    text = str(info.value)
    assert "Unable to read the model" in text and "\n" not in text


def test_out_in_the_input_folder_never_overwrites_an_input(tmp_path, nano_onnx, image_factory):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(image_factory(24, 30, seed=1)).save(folder / "x.png")
    Image.fromarray(image_factory(24, 30, seed=2)).save(folder / "x_seg.png")  # an input named like an output
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = runner.invoke(app, [str(nano_onnx), str(folder), "--backend", "onnxruntime",
                                 "--out", str(folder)])
    assert result.exit_code == 0, result.output
    for name, data in before.items():
        assert (folder / name).read_bytes() == data, f"{name} was overwritten"
    assert (folder / "x_2_panel.png").is_file() and (folder / "x_seg_panel.png").is_file()


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    import cv2

    from mtlkd.runtime import visualize

    target = tmp_path / "x_panel.png"
    target.write_bytes(b"the earlier, complete picture")

    def full_disk(path, image, params=None):
        Path(path).write_bytes(b"\x89PNG half")
        return False

    monkeypatch.setattr(cv2, "imwrite", full_disk)
    with pytest.raises(OSError):
        visualize.save_png(target, np.zeros((4, 4, 3), np.uint8))
    assert target.read_bytes() == b"the earlier, complete picture"
    assert [p.name for p in tmp_path.iterdir()] == ["x_panel.png"]


def test_out_that_is_a_file_or_read_only_is_one_line(tmp_path, nano_onnx, image_factory, monkeypatch):
    Image.fromarray(image_factory(24, 30)).save(tmp_path / "a.png")
    a_file = tmp_path / "out.txt"
    a_file.write_text("keep me")
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "a.png"), "--out", str(a_file)])
    assert result.exit_code == 2 and "is a file" in _one_error_line(result)
    assert a_file.read_text() == "keep me"
    import mtlkd.runtime.infer as infer

    monkeypatch.setattr(infer, "_writable", lambda *_: False)  # tests run as root, which ignores modes
    result = runner.invoke(app, [str(nano_onnx), str(tmp_path / "a.png"), "--out", str(tmp_path / "ro")])
    assert result.exit_code == 2 and "not writable" in _one_error_line(result)


def test_files_are_created_with_the_umask(tmp_path, nano_model, nano_onnx):
    import onnx

    from mtlkd.checkpoint import save_checkpoint, write_json
    from mtlkd.export.onnx import save_onnx
    from mtlkd.runtime import visualize

    model, meta = nano_model
    old = os.umask(0o022)
    try:
        written = [save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), meta),
                   write_json(tmp_path / "metrics.json", {"a": 1}),
                   save_onnx(onnx.load(str(nano_onnx)), tmp_path / "model.onnx")]
        visualize.save_png(tmp_path / "p.png", np.zeros((4, 4, 3), np.uint8))
        written.append(tmp_path / "p.png")
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_openvino_model_without_metadata_names_its_file(tmp_path):
    """The backend reads rt_info through mtlkd.metadata and still names the file in its one line."""
    ov = pytest.importorskip("openvino")
    from openvino import opset13 as ops

    from mtlkd.runtime.backends.openvino_backend import read_metadata

    image = ops.parameter([1, 3, 8, 8], np.float32, name="image")
    model = ov.Model([ops.relu(image)], [image], "bare")
    with pytest.raises(BackendError, match="bare.xml: no mtlkd metadata") as info:
        read_metadata(model, tmp_path / "bare.xml")
    assert "\n" not in str(info.value)
    model.set_rt_info('{"tasks": ["seg"]}', ["mtlkd", "metadata"])  # found, but lacking input_size
    with pytest.raises(BackendError, match="bare.xml: .*input_size"):
        read_metadata(model, tmp_path / "bare.xml")
