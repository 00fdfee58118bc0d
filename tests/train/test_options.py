"""Typed method and weighting options: strict keys, JSON round trip through run.json, the CLI flags made
from the registries, TrainOptions' own checks, and the shared flags of mtl-train and mtl-pretrain."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mtlkd.cli.train import METHOD_PANEL
from mtlkd.cli.train import app as train_app
from mtlkd.errors import ConfigError
from mtlkd.train.methods import METHODS, method_class, method_flags, method_names, parse_method_options
from mtlkd.train.methods.base import MethodOptions, WeightingOptions
from mtlkd.train.methods.kd_mtl import KDMTLOptions
from mtlkd.train.methods.okd import OKDOptions
from mtlkd.train.options import TrainOptions, options_to_json, parse_options
from mtlkd.train.weighting import WEIGHTINGS

runner = CliRunner()


def _variant(name: str) -> dict:
    """Options of method `name` as one flat mapping, every field of its own off its default (and, with a task
    weighting, another weighting with its option off its default)."""
    cls = METHODS[name].Options
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
    return values


@pytest.mark.parametrize("method", method_names())
def test_every_method_options_round_trip_through_the_run_json(method):
    cls = method_class(method)
    for values in ({}, _variant(method)):
        options = cls.read_options(values)
        stored = json.loads(json.dumps({"method_options": options.to_json()}))  # what run.json holds
        assert cls.read_options(stored["method_options"]) == options
        assert cls.read_options(options) is options  # parsed once: a MethodOptions is taken as it is
    assert cls.read_options(_variant(method)) != cls.read_options({}) or not dataclasses.fields(cls.Options)


def test_the_chosen_weightings_options_sit_beside_the_methods():
    options = parse_method_options("okd", {"task_weighting": "dwa", "dwa_temperature": 3.0, "warmup": 0})
    assert options.method == OKDOptions(task_weighting="dwa", warmup=0)
    assert options.weighting == WEIGHTINGS["dwa"].Options(dwa_temperature=3.0)
    assert options.to_json() == {**options_to_json(OKDOptions(task_weighting="dwa", warmup=0)), "dwa_temperature": 3.0}
    # a run.json that stored every weighting's options at their defaults still reads
    old = {**options.to_json(), "gradnorm_alpha": 1.5, "otw_temperature": 0.1}
    assert parse_method_options("okd", old) == options
    assert parse_method_options("stl", {}) == MethodOptions(METHODS["stl"].Options())


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
        parse_method_options("mtl", {"task_weighting": "dwa", "gradnorm_alpha": 2.0})
    with pytest.raises(ConfigError, match="--task-weighting nope: unknown task weighting; known: equal, dwa"):
        parse_method_options("mtl", {"task_weighting": "nope"})
    otw = "otw needs single-task losses, which --method mtl does not train: use --method okd"
    with pytest.raises(ConfigError, match=otw):
        parse_method_options("mtl", {"task_weighting": "otw"})
    with pytest.raises(ConfigError, match="--method nope: unknown method; known methods: .*kdam"):
        parse_method_options("nope", {})


def test_every_method_and_weighting_is_registered_with_its_help_and_options():
    for registry in (METHODS, WEIGHTINGS):
        for name, cls in registry.items():
            assert cls.name == name and cls.help and dataclasses.is_dataclass(cls.Options), name
    with pytest.raises(ValueError, match="registered twice"):
        from mtlkd.train.methods import register_method

        register_method("mtl", help="again")(type("Again", (METHODS["mtl"],), {}))


def test_the_cli_flags_are_the_dataclass_fields():
    command = typer.main.get_command(train_app)
    params = command.get_params(command.make_context("mtl-train", ["--help"], resilient_parsing=True))
    panel = {p.name for p in params if getattr(p, "rich_help_panel", None) == METHOD_PANEL}
    fields = {f.name for cls in [*METHODS.values(), *WEIGHTINGS.values()] for f in dataclasses.fields(cls.Options)}
    assert panel == fields == set(method_flags())
    by_name = {p.name: p for p in params}
    for name in fields:
        assert f"--{name.replace('_', '-')}" in by_name[name].opts
    assert by_name["same_init"].secondary_opts == ["--no-same-init"]  # a default-on option can be switched off


def test_help_lists_every_method_and_preset_without_type_placeholders():
    from mtlkd.models import list_models

    output = runner.invoke(train_app, ["--help"], env={"COLUMNS": "400"}).output
    text = " ".join(output.replace("│", " ").split())  # wrapped help lines read on
    for name in [*METHODS, *WEIGHTINGS, *list_models()]:
        assert name in text
    assert all(cls.help in text for cls in [*METHODS.values(), *WEIGHTINGS.values()])  # the registries' lines
    assert "okd (default otw)" in text and "seg=1,depth=1,normal=2" in text  # defaults from the dataclasses
    assert "dwa (default 2.0)" in text  # a weighting's option says which weighting takes it
    options_part = text.split("Options")[1]
    for placeholder in ("<int", "<float", "<str>", "<path>", "list[", "[x>="):
        assert placeholder not in options_part.split("--help")[0], placeholder


def test_shared_flags_of_train_and_pretrain():
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
    expected = parse_method_options("okd", {"warmup": 0, "same_init": False}).to_json()
    assert saved == expected and saved["otw_temperature"] == 0.1  # complete, the weighting's defaults included


def test_train_command_imports_no_torch():
    code = ("import sys, mtlkd.cli.train, mtlkd.cli.pretrain, mtlkd.cli.distill, mtlkd.cli.main; "
            "print(sorted(m for m in sys.modules if m == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_without_torch_mtl_lists_train_and_its_help_says_what_is_missing():
    """The method flags come from the registries, which need torch: `mtl --help` does not build them, and
    `mtl train --help` on a runtime-only install is one line naming what to install."""
    script = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from mtlkd.cli.main import app
sys.argv = ["mtl", *sys.argv[1:]]
app()
"""
    listing = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and " train " in listing.stdout, listing.stderr
    help_ = subprocess.run([sys.executable, "-c", script, "train", "--help"], capture_output=True, text=True,
                           timeout=120)
    assert help_.returncode == 2 and help_.stdout == ""
    assert help_.stderr.strip().splitlines() == ["error: torch is not installed: this needs the training stack, "
                                                 "pip install 'mtlkd[train,cpu]'"]


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
    fields = set(method_flags())
    for row in experiment.ROWS:
        job = experiment.Job(row, 0, tmp_path / row / "seed0")
        argv = experiment._command(job, args, tmp_path / "data")
        assert argv[1:3] == ["-m", "mtlkd.cli.train"]
        ctx = command.make_context("mtl-train", argv[3:])
        given = method_options({k: v for k, v in ctx.params.items() if k in fields})
        parsed = parse_method_options(ctx.params["method"], given).method
        if row.startswith("okd"):  # the paper's 2.5%, none, one epoch: 256 of 288 images in batches of 16
            expected = {"okd-warmup-none": 0, "okd-warmup-epoch": 16}.get(row, 5 / 200)
            assert parsed.warmup == expected, row
        assert ctx.params["epochs"] == (24 if row == "kdam-teacher" else 8), row


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "--epochs 0: must be 1 or more"),
    ("batch_size", 2.5, "--batch-size 2.5: must be 1 or more"),
    ("lr", 5.0, "--lr 5.0: the learning rate must be a number in (0, 1]"),
    ("seed", -1, "--seed -1: a seed is a whole number"),
    ("select_seed", 2**40, "--select-seed 1099511627776: a seed"),
    ("weight_decay", float("nan"), "--weight-decay nan: must be 0 or more"),
    ("workers", -2, "--workers -2: must be 0 or more"),
    ("max_steps_per_epoch", 0, "--max-steps 0: must be 1 or more"),  # the flag, not the field
    ("select_fraction", 1.0, "--select-fraction 1.0: must be in [0, 1)"),
    ("img_size", [4, 96], "--img-size 4x96: expected HxW of at least 8x8"),
    ("img_size", [96, 100_000], "--img-size 96x100000: at most"),
    ("device", "tpu", "--device tpu: use auto, cpu or cuda"),
])
def test_train_options_check_themselves_naming_the_flag(field, value, message):
    assert TrainOptions().check() == TrainOptions()  # the defaults pass
    with pytest.raises(ConfigError) as caught:
        TrainOptions(**{field: value}).check()
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(("method", "values"), [
    ("kdam", {"kd_temperature": 0.0}),
    ("distill", {"seg_temperature": -1.0}),
    ("mtl", {"task_weighting": "dwa", "dwa_temperature": 0.0}),
    ("okd", {"otw_temperature": 0.0}),
])
def test_a_positive_option_at_or_below_zero_is_one_line_naming_its_flag(method, values):
    name, value = list(values.items())[-1]
    with pytest.raises(ConfigError, match=f"^--{name.replace('_', '-')} {value}: must be > 0$"):
        parse_method_options(method, values)
