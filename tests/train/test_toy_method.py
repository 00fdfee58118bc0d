"""The worked proof that a method and a task weighting are each one class and one registration: a fixture
registers a toy method (its Options with one field, its help line) and a toy weighting (likewise), and
nothing else is edited; mtl-train lists them in --help, parses their flags and trains one epoch with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from mtlkd.checkpoint import read_metadata
from mtlkd.cli.train import app as train_app
from mtlkd.data.synthetic import write_synthetic
from mtlkd.train.methods import METHODS, method_names, register_method
from mtlkd.train.methods.base import WeightingOptions
from mtlkd.train.methods.mtl import MultiTaskMethod
from mtlkd.train.options import Options, option
from mtlkd.train.weighting import WEIGHTINGS, Weighting, register_weighting

runner = CliRunner()


@pytest.fixture
def toy_registered():
    """A toy method and a toy weighting, registered in this one place; unregistered afterwards."""
    method_names()  # the real methods first, as any command finds them

    @dataclass
    class ToyWeightingOptions(Options):
        toy_weight: float = option(1.0, "The toy weighting's weight for every task.", metavar="W")

    @register_weighting("toy-weighting", help="every task weighted by --toy-weight")
    class ToyWeighting(Weighting):
        Options = ToyWeightingOptions

        def combine(self, losses, shared=None, **context):
            weights = dict.fromkeys(self.tasks, self.options.toy_weight)
            return sum(w * losses[t] for t, w in weights.items()), weights

    @dataclass
    class ToyOptions(WeightingOptions):
        toy_scale: float = option(1.0, "What the toy method multiplies its loss by.", metavar="S")

    @register_method("toy", help="the multi-task baseline with its loss scaled by --toy-scale")
    class ToyMethod(MultiTaskMethod):
        Options = ToyOptions

        def training_step(self, batch, step, epoch):
            total, logs = super().training_step(batch, step, epoch)
            return self.options.toy_scale * total, logs

        def extra_metadata(self):
            return {"trained_by": self.name}

    yield ToyMethod, ToyWeighting
    del METHODS["toy"], WEIGHTINGS["toy-weighting"]


def test_a_registered_method_and_weighting_are_everywhere_mtl_train_looks(toy_registered, tmp_path):
    output = runner.invoke(train_app, ["--help"], env={"COLUMNS": "400"}).output
    text = " ".join(output.replace("│", " ").split())
    assert "toy: the multi-task baseline with its loss scaled by --toy-scale" in text
    assert "toy-weighting: every task weighted by --toy-weight" in text
    assert "--toy-scale S What the toy method multiplies its loss by. toy (default 1.0)" in text
    assert "--toy-weight W The toy weighting's weight for every task. toy-weighting (default 1.0)" in text

    data = write_synthetic(tmp_path / "syn", 8, 4, size=(32, 32), seed=3, progress=False)
    run = tmp_path / "run"
    result = runner.invoke(train_app, [
        "synthetic", "--data-dir", str(data), "--out", str(run), "--preset", "vit-nano", "--epochs", "1",
        "--batch-size", "4", "--max-steps", "1", "--device", "cpu", "--select-fraction", "0", "--quiet",
        "--method", "toy", "--toy-scale", "0.5", "--task-weighting", "toy-weighting", "--toy-weight", "2"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "run.json").read_text())
    assert saved["method"] == "toy"
    assert saved["method_options"] == {"task_weighting": "toy-weighting", "toy_scale": 0.5, "toy_weight": 2.0}
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[0]["task_weights"] == {"seg": 2.0, "depth": 2.0, "normal": 2.0}  # the toy weighting combined
    assert read_metadata(run / "model.safetensors")["trained_by"] == "toy"


def test_the_toy_options_are_checked_like_any_others(toy_registered, tmp_path):
    result = runner.invoke(train_app, ["synthetic", "--out", str(tmp_path / "r"), "--method", "mtl",
                                       "--toy-scale", "2"])
    assert result.exit_code == 2
    assert "--method mtl: unknown option --toy-scale; its options: --task-weighting" in result.output
    result = runner.invoke(train_app, ["synthetic", "--out", str(tmp_path / "r"), "--method", "toy",
                                       "--toy-weight", "3"])
    assert result.exit_code == 2
    assert "--toy-weight applies to another task weighting than equal" in result.output


def test_unregistered_they_are_gone(toy_registered):
    assert "toy" in method_names()
    METHODS.pop("toy")
    WEIGHTINGS.pop("toy-weighting")
    try:
        output = runner.invoke(train_app, ["--help"], env={"COLUMNS": "400"}).output
        assert "--toy-scale" not in output and "toy-weighting" not in output
    finally:
        METHODS["toy"], WEIGHTINGS["toy-weighting"] = toy_registered  # for the fixture's teardown
