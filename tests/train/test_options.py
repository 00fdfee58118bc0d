"""Typed method and weighting options: strict keys, JSON round trip through run.json, the CLI flags made
from them, and the house vocabulary of mtl-train and mtl-pretrain."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import typer
from mtlkd.train.method_options import (
    METHOD_OPTIONS,
    WEIGHTING_NAMES,
    WEIGHTING_OPTIONS,
    KDMTLOptions,
    OKDOptions,
    WeightingOptions,
)
from typer.testing import CliRunner

from mtlkd.cli.train import app as train_app
from mtlkd.errors import ConfigError
from mtlkd.train.options import options_to_json, parse_options

runner = CliRunner()


def _variant(cls: type):
    """An instance of `cls` with every field of the method's own (not the weighting's) off its default."""
    weighting_fields = {f.name for f in dataclasses.fields(WeightingOptions)}
    values = {"task_weighting": "dwa", "dwa_temperature": 3.5} if issubclass(cls, WeightingOptions) else {}
    for f in dataclasses.fields(cls):
        if f.name in weighting_fields:
            continue
        kind = str(f.type).replace(" ", "")
        choices = f.metadata.get("choices")
        if choices:
            values[f.name] = choices[-1]
        elif kind.startswith("bool"):
            values[f.name] = not f.default
        elif kind.startswith(("float", "int")):
            values[f.name] = 3 if kind.startswith("int") else 0.25
        elif kind.startswith("tuple"):
            values[f.name] = ("a/stl", "b/stl_seg.safetensors")
        elif kind.startswith("dict"):
            values[f.name] = {"seg": 2.0, "depth": 6.0}
        elif kind.startswith("str"):
            values[f.name] = "runs/teacher"
    return cls(**values)


@pytest.mark.parametrize("method", sorted(METHOD_OPTIONS))
def test_every_method_options_round_trip_through_the_run_json(method):
    cls = METHOD_OPTIONS[method]
    for options in (cls(), _variant(cls)):
        stored = json.loads(json.dumps({"method_options": options_to_json(options)}))  # what run.json holds
        assert parse_options(cls, stored["method_options"], "run.json") == options
    assert _variant(cls) != cls() or not dataclasses.fields(cls)


def test_a_misspelt_option_fails_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown option --warmup-epochs;") as caught:
        parse_options(OKDOptions, {"warmup_epochs": 2}, "--method okd")
    assert all(f"--{f.name.replace('_', '-')}" in str(caught.value) for f in dataclasses.fields(OKDOptions))
    from train_helpers import nano_context

    from mtlkd.train.methods import create_method

    with pytest.raises(ConfigError, match="--method mtl: unknown option --afd; its options: .*--task-weighting"):
        create_method("mtl", nano_context(afd="none"))


def test_values_are_checked_against_their_choices_and_types():
    with pytest.raises(ConfigError, match="--kd-layers first: expected one of last, mid\\+last"):
        KDMTLOptions(kd_layers="first")
    with pytest.raises(ConfigError, match="'warmup' is 'five', expected float"):
        parse_options(OKDOptions, {"warmup": "five"}, "run.json")
    with pytest.raises(ConfigError, match="--gradnorm-alpha applies to another task weighting than dwa"):
        WeightingOptions(task_weighting="dwa", gradnorm_alpha=2.0)


def test_method_and_weighting_registries_name_the_same_dataclasses():
    from mtlkd.train.methods import METHODS, method_names
    from mtlkd.train.weighting import WEIGHTINGS

    assert set(method_names()) == set(METHOD_OPTIONS)
    assert all(METHODS[name].Options is METHOD_OPTIONS[name] for name in METHOD_OPTIONS)
    assert tuple(WEIGHTINGS) == WEIGHTING_NAMES
    assert all(WEIGHTINGS[name].Options is WEIGHTING_OPTIONS[name] for name in WEIGHTINGS)


def test_the_cli_flags_are_the_dataclass_fields():
    command = typer.main.get_command(train_app)
    panel = {p.name for p in command.params if getattr(p, "rich_help_panel", None) == "Method options"}
    fields = {f.name for cls in METHOD_OPTIONS.values() for f in dataclasses.fields(cls)}
    assert panel == fields
    by_name = {p.name: p for p in command.params}
    for name in fields:
        assert f"--{name.replace('_', '-')}" in by_name[name].opts
    assert by_name["same_init"].secondary_opts == ["--no-same-init"]  # a default-on option can be switched off


def test_help_lists_every_method_and_preset_without_type_placeholders():
    from mtlkd.models import list_models

    text = " ".join(runner.invoke(train_app, ["--help"], env={"COLUMNS": "400"}).output.split())
    for name in [*METHOD_OPTIONS, *list_models()]:
        assert name in text
    assert "okd (default otw)" in text and "seg=1,depth=1,normal=2" in text  # defaults from the dataclasses
    options_part = text.split("Options")[1]
    for placeholder in ("<int", "<float", "<str>", "<path>", "list[", "[x>="):
        assert placeholder not in options_part.split("--help")[0], placeholder


def test_house_vocabulary_of_train_and_pretrain():
    from mtlkd.cli.pretrain import app as pretrain_app

    for app in (train_app, pretrain_app):
        opts = {o for p in typer.main.get_command(app).params for o in p.opts}
        assert {"--out", "--batch-size", "--img-size", "--device", "--quiet"} <= opts


def test_an_option_of_another_method_is_refused_before_anything_is_read(tmp_path):
    result = runner.invoke(train_app, ["nyuv2", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"),
                                       "--method", "mtl", "--afd", "none"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--afd" in lines[0] and "--task-weighting" in lines[0]


def test_quiet_run_prints_only_its_result(tmp_path):
    from mtlkd.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "syn", 8, 4, size=(32, 32), seed=3, progress=False)
    done = subprocess.run(
        [sys.executable, "-m", "mtlkd.cli.train", "synthetic", "--data-dir", str(data), "--out", str(tmp_path / "run"),
         "--preset", "vit-nano", "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--device", "cpu",
         "--select-fraction", "0", "--quiet", "--method", "okd", "--warmup", "0", "--no-same-init"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run folder: {tmp_path / 'run'}"
    assert "epoch 1" not in done.stderr
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["method_options"]
    assert saved == options_to_json(OKDOptions(warmup=0, same_init=False))  # complete, defaults included


def test_train_command_imports_no_torch():
    code = "import sys, mtlkd.cli.train, mtlkd.cli.pretrain; print(sorted(m for m in sys.modules if m == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_experiment_script_speaks_mtl_trains_flags(tmp_path, monkeypatch):
    """Every row of scripts/experiment.py parses with mtl-train, and its method options are the method's."""
    import argparse
    import importlib.util
    from pathlib import Path

    from mtlkd.cli.train import method_options

    path = Path(__file__).parents[2] / "scripts" / "experiment.py"
    spec = importlib.util.spec_from_file_location("experiment", path)
    experiment = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "experiment", experiment)  # its dataclasses look themselves up there
    spec.loader.exec_module(experiment)
    args = argparse.Namespace(teacher_preset="vit-micro-wide", preset="vit-micro", epochs=8, teacher_epochs=24,
                              batch_size=16, train_images=288, select_fraction=1 / 9, no_pretrained=False)
    command = typer.main.get_command(train_app)
    fields = {f.name for cls in METHOD_OPTIONS.values() for f in dataclasses.fields(cls)}
    for row in experiment.ROWS:
        job = experiment.Job(row, 0, tmp_path / row / "seed0")
        argv = experiment._command(job, args, tmp_path / "data")
        assert argv[1:3] == ["-m", "mtlkd.cli.train"]
        ctx = command.make_context("mtl-train", argv[3:])
        given = method_options({k: v for k, v in ctx.params.items() if k in fields})
        parsed = parse_options(METHOD_OPTIONS[ctx.params["method"]], given, f"row {row}")
        if row.startswith("okd"):  # the paper's 2.5%, none, one epoch: 256 of 288 images in batches of 16
            expected = {"okd-warmup-none": 0, "okd-warmup-epoch": 16}.get(row, 5 / 200)
            assert parsed.warmup == expected, row
        assert ctx.params["epochs"] == (24 if row == "kdam-teacher" else 8), row
