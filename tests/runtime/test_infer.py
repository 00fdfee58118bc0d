"""`mtlkd.runtime.infer.infer` driven as a library call: outputs, failures, names, and one depth colour range
per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlkd.errors import ConfigError, UserError
from mtlkd.runtime import visualize
from mtlkd.runtime.infer import STAGES, InferOptions, infer, parse_depth_range
from mtlkd.tasks import colourise_depth, colourise_inverse_depth, get_task

QUIET = {"progress": False, "report_failures": False}


def test_infer_writes_every_output_and_reports_failures(tmp_path, nano_onnx, image_factory):
    folder, other = tmp_path / "in", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    Image.fromarray(image_factory(30, 41, seed=1)).save(folder / "x.png")
    Image.fromarray(image_factory(22, 35, seed=2)).save(folder / "y.jpg")
    Image.fromarray(image_factory(25, 25, seed=3)).save(other / "x.png")  # the same stem as in/x.png
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = infer(nano_onnx, [folder, other / "x.png", tmp_path / "absent.png"], out,
                   InferOptions(backend="onnxruntime", save_raw=True, batch_size=2, **QUIET))
    assert result.images == 3 and result.frames == 0
    assert len(result.failures) == 2
    assert any("broken.png" in f for f in result.failures) and any("absent.png" in f for f in result.failures)
    names = {p.name for p in out.iterdir()}
    assert {p.name for p in result.written} == names  # everything written is reported, nothing else is there
    for stem, shape in (("x", (30, 41)), ("x_2", (25, 25)), ("y", (22, 35))):
        for kind in ("seg.png", "overlay.png", "depth.png", "normal.png", "panel.png"):
            assert f"{stem}_{kind}" in names
        assert np.load(out / f"{stem}_seg.npy").shape == shape
    assert not any(name.startswith("broken") for name in names)
    assert set(result.seconds) == set(STAGES) and result.seconds["network"] > 0
    data = json.loads(json.dumps(result.to_json()))
    assert data["images"] == 3 and len(data["failures"]) == 2 and data["backend"] == "onnxruntime"
    assert data["depth_range"] == list(result.depth_range) and result.depth_range_source == "from the first image"


class FakePredictor:
    """A predictor whose depth maps the test chooses: image i of value v gives a depth ramp from v to 2v."""

    def __init__(self, metadata: dict | None = None):
        self.metadata = {"tasks": ["depth"], **(metadata or {})}
        self.path, self.backend_name, self.device = Path("fake.onnx"), "fake", "cpu"
        self.class_names: list[str] = []
        self.timings = {"preprocess": 0.0, "network": 0.0, "postprocess": 0.0}

    def resolve_tasks(self, tasks):
        return ["depth"]

    def predict_batch(self, images, tasks=None):
        out = []
        for image in images:
            v = float(image[0, 0, 0]) / 10.0 + 0.5
            out.append({"depth": np.linspace(v, 2 * v, image.shape[0] * image.shape[1],
                                             dtype=np.float32).reshape(image.shape[:2])})
        return out

    def predict(self, image, tasks=None):
        return self.predict_batch([image])[0]


def _grey_images(folder: Path, values: list[int]) -> None:
    folder.mkdir()
    for i, value in enumerate(values):
        Image.fromarray(np.full((24, 32, 3), value, np.uint8)).save(folder / f"im{i}.png")


def test_depth_colours_are_one_range_for_the_whole_run(tmp_path, monkeypatch):
    _grey_images(tmp_path / "in", [10, 30])  # depths 1.5-3 m, then 3.5-7 m
    seen: list[tuple[float, float] | None] = []
    real = visualize.depth_image

    def recording(depth, with_bar=True, value_range=None, **task):
        seen.append(value_range)
        return real(depth, with_bar, value_range, **task)

    monkeypatch.setattr(visualize, "depth_image", recording)
    result = infer(FakePredictor(), [tmp_path / "in"], tmp_path / "out", InferOptions(**QUIET))
    assert len(seen) == 2 and seen[0] == seen[1] == result.depth_range
    near, far = result.depth_range
    assert near <= 1.5 and far >= 3.0  # it covers the first image's depths
    # the same depth gets the same colour in both pictures, which per-image ranges would not give
    first = np.asarray(Image.open(tmp_path / "out" / "im0_depth.png"))[:24, :32]
    second = np.asarray(Image.open(tmp_path / "out" / "im1_depth.png"))[:24, :32]
    depth_a = FakePredictor().predict(np.full((24, 32, 3), 10, np.uint8))["depth"]
    depth_b = FakePredictor().predict(np.full((24, 32, 3), 30, np.uint8))["depth"]
    a, b = np.unravel_index(np.abs(depth_a - 3.0).argmin(), depth_a.shape), (0, 0)  # ~3 m and 3.5 m
    assert np.abs(first[a].astype(int) - colourise_depth(np.float32([[depth_a[a]]]), near, far)[0, 0]).max() <= 1
    assert np.abs(second[b].astype(int) - colourise_depth(np.float32([[depth_b[b]]]), near, far)[0, 0]).max() <= 1
    per_image = [visualize.depth_range(d) for d in (depth_a, depth_b)]
    assert per_image[0] != per_image[1]  # the property above is not trivially true


@pytest.mark.parametrize("meaning", [None, "relative", "relative-inverse"])
def test_a_relative_depth_is_drawn_without_metres_and_inverse_depth_near_warm(tmp_path, monkeypatch, meaning):
    _grey_images(tmp_path / "in", [10])
    titles, bar_units = [], []
    real_titled, real_bar = visualize.titled, visualize.colour_bar

    def titled(tile, title, size):
        titles.append(title)
        return real_titled(tile, title, size)

    def colour_bar(*args, task="depth", **kwargs):
        bar_units.append(get_task(task).unit)
        return real_bar(*args, task=task, **kwargs)

    monkeypatch.setattr(visualize, "titled", titled)
    monkeypatch.setattr(visualize, "colour_bar", colour_bar)
    metadata = {"depth_meaning": meaning} if meaning else {}
    result = infer(FakePredictor(metadata), [tmp_path / "in"], tmp_path / "out", InferOptions(**QUIET))
    expected = {None: ("Depth (m)", "m"), "relative": ("Relative depth", ""),
                "relative-inverse": ("Relative inverse depth", "")}[meaning]
    assert expected[0] in titles and set(bar_units) == {expected[1]} and result.depth_unit == expected[1]
    picture = np.asarray(Image.open(tmp_path / "out" / "im0_depth.png"))[:24, :32].astype(int)
    values = FakePredictor().predict(np.full((24, 32, 3), 10, np.uint8))["depth"]
    near, far = result.depth_range
    colours = {"inverse": colourise_inverse_depth(values, near, far), "depth": colourise_depth(values, near, far)}
    drawn = "inverse" if meaning == "relative-inverse" else "depth"
    assert np.abs(picture - colours[drawn]).max() <= 1
    assert np.abs(picture - colours[{"inverse": "depth", "depth": "inverse"}[drawn]]).max() > 50


def test_depth_range_from_option_then_model_metadata(tmp_path):
    _grey_images(tmp_path / "in", [10])
    chosen = infer(FakePredictor({"depth_range": [1, 3]}), [tmp_path / "in"], tmp_path / "a",
                   InferOptions(depth_range=(0.5, 9.0), **QUIET))
    assert chosen.depth_range == (0.5, 9.0) and chosen.depth_range_source == "--depth-range"
    recorded = infer(FakePredictor({"depth_range": [1, 3]}), [tmp_path / "in"], tmp_path / "b", InferOptions(**QUIET))
    assert recorded.depth_range == (1.0, 3.0) and recorded.depth_range_source == "the model's metadata"
    with pytest.raises(ConfigError, match="fake.onnx"):
        infer(FakePredictor({"depth_range": [3, 1]}), [tmp_path / "in"], tmp_path / "c", InferOptions(**QUIET))


def test_video_frames_share_one_depth_range(tmp_path, monkeypatch):
    from mtlkd.runtime.media import VideoWriter

    with VideoWriter(tmp_path / "clip.mp4", fps=5) as writer:
        for value in (10, 40, 80):
            writer.write(np.full((24, 32, 3), value, np.uint8))
    ranges = []
    real = visualize.panel

    def recording(image, result, class_names, **kwargs):
        ranges.append(kwargs.get("depth_range"))
        return real(image, result, class_names, **kwargs)

    monkeypatch.setattr(visualize, "panel", recording)
    result = infer(FakePredictor(), [tmp_path / "clip.mp4"], tmp_path / "out", InferOptions(**QUIET))
    assert result.frames == 3 and (tmp_path / "out" / "clip_panel.mp4").is_file()
    assert len(ranges) == 3 and ranges[0] is not None and len(set(ranges)) == 1  # no flicker
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"max_frames": -1}, {"depth_range": (3.0, 1.0)},
                                     {"depth_range": (float("nan"), 1.0)}, {"overlay_alpha": 2.0}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        InferOptions(**options)


def test_parse_depth_range():
    assert parse_depth_range("0.5,10") == (0.5, 10.0)
    for text in ("10", "a,b", "5,5", "-1,3"):
        with pytest.raises(ConfigError, match="--depth-range"):
            parse_depth_range(text)


def test_bad_out_is_refused_before_anything_is_read(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(UserError, match="is a file"):
        infer(FakePredictor(), ["whatever.png"], tmp_path / "file", InferOptions(**QUIET))
    assert (tmp_path / "file").read_text() == "keep"
