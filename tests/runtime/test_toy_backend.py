"""A new backend is one module and one registration: a toy backend, registered by a fixture, is seen by
`--help`, suffix dispatch, the Predictor, mtl-infer, the benchmark plan and the install hint.

This file is the toy backend's module (`load` and `available` below); its spec is the one registration.
A `.toy` file is the mtlkd metadata as JSON; the toy engine computes its outputs with numpy: every pixel
of an image gets the class of the image's mean brightness, a depth of 1 + that brightness, and normals
facing the camera.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mtlkd.errors import BackendError, BackendUnavailable
from mtlkd.runtime import backends
from mtlkd.runtime.backends import (
    Backend,
    BackendSpec,
    BenchPrecision,
    BenchVariant,
    register_backend,
    unregister_backend,
)

CLASSES = ["dark", "middle", "bright"]
METADATA = {"tasks": ["seg", "depth", "normal"], "input_size": [16, 24], "num_classes": len(CLASSES),
            "class_names": CLASSES, "output_stride": 4}
TOY = BackendSpec(name="toy", title="Toy", module=__name__, suffixes=(".toy",), packages=("numpy",),
                  install_hint="pip install numpy", bench_precisions={"fp32": BenchPrecision("toy")},
                  bench_variants=(BenchVariant("toy-wide", ("fp32",), "wider", options={"wide": True}),))
MISSING = BackendSpec(name="toy-missing", title="Toy (missing)", module=__name__, suffixes=(".toyx",),
                      packages=("mtlkd_toy_engine_not_installed",), install_hint="pip install mtlkd-toy-engine")


# ----------------------------------------------------------------------- the toy backend's module contract
class ToyBackend(Backend):
    name = "toy"

    def run(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        tasks = self.check_tasks(tasks)
        batch = self.check_batch(batch)
        n, stride = batch.shape[0], self.metadata["output_stride"]
        h, w = self.input_size[0] // stride, self.input_size[1] // stride
        brightness = batch.mean(axis=(1, 2, 3))
        winner = np.minimum((brightness * len(CLASSES)).astype(int), len(CLASSES) - 1)
        seg = np.zeros((n, len(CLASSES), h, w), np.float32)
        seg[np.arange(n), winner] = 1.0
        depth = np.broadcast_to((1.0 + brightness)[:, None, None, None], (n, 1, h, w)).astype(np.float32)
        normal = np.zeros((n, 3, h, w), np.float32)
        normal[:, 2] = 1.0
        outputs = {"seg": seg, "depth": depth, "normal": normal}
        return {t: outputs[t] for t in tasks}


def available(device: str = "cpu") -> bool:
    return device == "cpu"


def load(path: str | Path, device: str = "cpu", **_: Any) -> ToyBackend:
    from mtlkd.metadata import parse_metadata

    if device != "cpu":
        raise BackendUnavailable(f"the toy backend runs on the CPU only, not {device}; use --device cpu")
    return ToyBackend(path, device, parse_metadata(Path(path).read_text(), str(path), error=BackendError))


# ------------------------------------------------------------------------------------------------ the proof
@contextmanager
def registered(*specs: BackendSpec):
    for spec in specs:
        register_backend(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister_backend(spec.name)


@pytest.fixture
def toy(tmp_path) -> Path:
    """The toy backends registered for one test, and a `.toy` model file."""
    path = tmp_path / "model.toy"
    path.write_text(json.dumps(METADATA))
    with registered(TOY, MISSING):
        yield path


def _images() -> list[np.ndarray]:
    return [np.full((30, 40, 3), value, np.uint8) for value in (10, 128, 250)]


def test_the_toy_backend_is_known_everywhere_while_registered(toy):
    from mtlkd.bench.plan import plan
    from mtlkd.cli.infer import app

    assert "toy" in backends.backend_names() and backends.backends_for(toy) == ("toy",)
    assert backends.default_device(toy) == "cpu"
    assert backends.available("toy", "cpu") and not backends.available("toy", "cuda")
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", CliRunner().invoke(app, ["--help"]).output).split())
    assert "onnxruntime, openvino, tensorrt, toy, toy-missing." in help_text
    configs, skipped = plan(["toy"], ["fp32", "int8"], [], "cpu", {"fp32": True})
    assert [(c.label, c.artifact) for c in configs] == [("toy fp32", "toy")]
    assert skipped == [{"backend": "toy", "precision": "int8", "variant": "default", "reason": "toy has no int8 path"}]


def test_bench_options_and_help_see_a_backend_registered_after_import(toy):
    # mtlkd.bench was imported long before the fixture registered the toy: its names must not be a snapshot
    from mtlkd.bench import BenchOptions
    from mtlkd.cli.bench import app

    options = BenchOptions(backends=["toy"], variants=["toy-wide"])
    assert options.backends == ["toy"] and options.variants == ["toy-wide"]
    help_text = " ".join(re.sub("[│╭╮╰╯─]", " ", CliRunner().invoke(app, ["--help"]).output).split())
    assert "ov-nncf, toy-wide." in help_text


def test_unregistered_the_toy_is_gone(tmp_path):
    path = tmp_path / "model.toy"
    path.write_text(json.dumps(METADATA))
    with registered(TOY):
        assert backends.backends_for(path) == ("toy",)
    assert "toy" not in backends.backend_names()
    with pytest.raises(BackendError, match="unknown model file type .toy"):
        backends.backends_for(path)


@pytest.mark.parametrize("backend", ["toy", "auto"])
def test_predictor_opens_a_toy_file_by_name_and_by_suffix(toy, backend):
    from mtlkd.runtime import Predictor

    predictor = Predictor.load(toy, backend=backend)
    assert predictor.backend_name == "toy" and predictor.class_names == CLASSES
    results = predictor.predict_batch(_images())
    assert [int(np.unique(r["seg"]).item()) for r in results] == [0, 1, 2]
    for result, value in zip(results, (10, 128, 250), strict=True):
        assert result["seg"].shape == (30, 40) and result["normal"].shape == (30, 40, 3)
        np.testing.assert_allclose(result["depth"], 1 + value / 255, rtol=1e-5)
        np.testing.assert_allclose(result["normal"][..., 2], 1.0, rtol=1e-6)


def test_mtl_infer_runs_the_toy_backend(toy, tmp_path):
    from PIL import Image

    from mtlkd.cli.infer import app

    Image.fromarray(_images()[1]).save(tmp_path / "grey.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(toy), str(tmp_path / "grey.png"), "--backend", "toy", "--out", str(out),
                                      "--save-raw"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "on toy (cpu)" in result.stdout
    assert (out / "grey_panel.png").is_file() and np.unique(np.load(out / "grey_seg.npy")).tolist() == [1]


def test_a_missing_package_gives_the_specs_install_hint_in_one_line(toy, tmp_path):
    from mtlkd.cli.infer import app
    from mtlkd.runtime import Predictor

    other = tmp_path / "model.toyx"
    other.write_text(json.dumps(METADATA))
    assert not backends.available("toy-missing")
    with pytest.raises(BackendUnavailable, match=r"not installed \(pip install mtlkd-toy-engine\)"):
        Predictor.load(other, backend="toy-missing")
    with pytest.raises(BackendUnavailable, match=r"toy-missing: pip install mtlkd-toy-engine"):
        Predictor.load(other)  # auto: no installed backend opens .toyx
    result = CliRunner().invoke(app, [str(other), str(tmp_path), "--backend", "toy-missing", "--out",
                                      str(tmp_path / "out")])  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2
    assert errors == ["error: the toy-missing backend is not installed (pip install mtlkd-toy-engine)"]
