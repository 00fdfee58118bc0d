"""The shared flags of every command: help without type placeholders, `--json [PATH|-]` read the same way,
and an unwritable `--json PATH` refused in one line before any work."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtlkd.cli.common import check_json_target, optional_values
from mtlkd.errors import ConfigError

runner = CliRunner()
CLI = Path(__file__).resolve().parents[2] / "mtlkd" / "cli"
PLACEHOLDER = re.compile(r"<bool>|<int|<path>|<str>|<float|range>|<text>")
COMMANDS = [  # (module, subcommand words): every console script of pyproject.toml, and `mtl` itself
    ("mtlkd.cli.train", []), ("mtlkd.cli.distill", []), ("mtlkd.cli.pretrain", []), ("mtlkd.cli.evaluate", []),
    ("mtlkd.cli.export", []),
    ("mtlkd.cli.infer", []), ("mtlkd.cli.bench", []), ("mtlkd.cli.report", []), ("mtlkd.cli.data", ["synthetic"]),
    ("mtlkd.cli.data", ["check"]), ("mtlkd.cli.main", []), ("mtlkd.cli.main", ["export"]),
    ("mtlkd.cli.main", ["train"]), ("mtlkd.cli.main", ["data", "check"]),
    ("mtlkd.cli.serve", []), ("mtlkd.cli.main", ["serve"]),
]


@pytest.mark.parametrize("module, words", COMMANDS, ids=lambda v: v if isinstance(v, str) else " ".join(v) or "-")
def test_help_shows_metavars_never_type_placeholders(module, words):
    result = runner.invoke(importlib.import_module(module).app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and "Usage" in result.output
    assert not PLACEHOLDER.findall(result.output), PLACEHOLDER.findall(result.output)


def test_every_cli_module_loads_the_shared_help():
    """The help fix lives in mtlkd.cli.common; a console script that did not import it would show `<bool>`
    again (the in-process test above cannot see that, since another module imported it first)."""
    for path in sorted(CLI.glob("*.py")):
        if path.name in ("__init__.py", "common.py"):
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "mtlkd.cli.common" in imported, f"{path.name} does not import mtlkd.cli.common"


def test_json_dash_means_stdout_not_a_positional():
    assert optional_values(["m.onnx", "--json", "-"]) == ["m.onnx", "--json=-"]
    assert optional_values(["--json", "-", "photo.jpg"]) == ["--json=-", "photo.jpg"]
    assert optional_values(["--json", "-", "--quiet"]) == ["--json=-", "--quiet"]
    assert optional_values(["--", "--json", "-"]) == ["--", "--json", "-"]  # after `--` nothing is read
    assert optional_values(["--json", "a.json", "--json"]) == ["--json", "a.json", "--json=-"]


def test_report_json_dash_prints_json_on_stdout(tmp_path):
    from mtlkd.cli.report import app

    metrics = {"seg": {"miou": 0.5, "pix_acc": 0.8}, "depth": {"abs_err": 0.3, "rel_err": 0.2}}
    for name in ("base", "run"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    # through the parser MtlCommand applies (CliRunner calls it too): `-` is the value of --json
    result = runner.invoke(app, [str(tmp_path / "run"), "--baseline", str(tmp_path / "base"), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert "rows" in json.loads(result.stdout)
    assert not (Path.cwd() / "-").exists()


def test_unwritable_json_target_is_one_config_error(tmp_path):
    check_json_target(None)
    check_json_target("-")
    check_json_target(tmp_path / "new" / "out.json")  # a missing folder is created when writing
    with pytest.raises(ConfigError, match=r"^--json .*folder"):
        check_json_target(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*not a folder"):
        check_json_target(tmp_path / "file" / "bench.json", "--out")


@pytest.mark.parametrize("module, args", [
    ("mtlkd.cli.export", ["{model}", "--json", "{folder}.json"]),
    ("mtlkd.cli.bench", ["{model}", "--json", "{folder}.json"]),
    ("mtlkd.cli.infer", ["{model}", "x.png", "--json", "{folder}.json"]),
    ("mtlkd.cli.evaluate", ["{model}", "--json", "{folder}.json"]),
])
def test_commands_refuse_an_unwritable_json_before_work(tmp_path, module, args):
    """Every command that writes --json PATH checks it first through the same helper: a folder named like
    the target is one line and exit 2, before the (missing) model is even opened."""
    folder = tmp_path / "taken"
    (tmp_path / "taken.json").mkdir()
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not read")
    words = [a.format(model=model, folder=folder) for a in args]
    result = runner.invoke(importlib.import_module(module).app, words)
    assert result.exit_code == 2, result.output
    assert "taken.json" in result.output and "folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("module, words", [
    ("mtlkd.cli.train", ["synthetic", "--img-size", "96by128"]),
    ("mtlkd.cli.pretrain", ["--img-size", "96by128"]),
    ("mtlkd.cli.train", ["synthetic", "--img-size", "4x4"]),
])
def test_img_size_is_read_by_the_one_shared_parser(module, words):
    """mtl-train and mtl-pretrain read --img-size with cli.common.parse_hw like every other command."""
    result = runner.invoke(importlib.import_module(module).app, words)
    assert result.exit_code == 2, result.output
    assert "--img-size" in result.output and "HEIGHTxWIDTH" in result.output
    assert "Traceback" not in result.output
