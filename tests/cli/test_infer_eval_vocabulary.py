"""The house vocabulary of mtl-infer and mtl-eval: `--json [PATH]`, results on stdout, help without typer's
type placeholders."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mtlkd.cli.json_option import split_json_path

runner = CliRunner()


def test_split_json_path():
    assert split_json_path(["m", "--json"]) == ["m", "--json"]
    assert split_json_path(["--json", "out.JSON", "x"]) == ["--json", "--json-path", "out.JSON", "x"]
    assert split_json_path(["--json=any/where.txt"]) == ["--json", "--json-path", "any/where.txt"]
    assert split_json_path(["--json", "photo.png"]) == ["--json", "photo.png"]  # a source, not the JSON's path
    assert split_json_path(["--json", "--quiet"]) == ["--json", "--quiet"]
    assert split_json_path(["--", "--json", "a.json"]) == ["--", "--json", "a.json"]
    assert split_json_path(["m", "--json=-"]) == ["m", "--json"]  # what mtlkd.cli.common.run makes of a bare --json


@pytest.mark.parametrize("module", ["mtlkd.cli.infer", "mtlkd.cli.evaluate"])
def test_help_has_no_type_placeholders(module):
    import importlib

    app = importlib.import_module(module).app
    text = runner.invoke(app, ["--help"], terminal_width=200).output
    body = "\n".join(line for line in text.splitlines() if "--help" not in line)  # typer's own option
    assert "MODEL" in body and "--out" in body or "--data-dir" in body
    for placeholder in ("<int", "<str", "<path", "<bool", "list[", "x>=", "<float"):
        assert placeholder not in body, placeholder
    assert not re.search(r"\[default: [^\]]*$", body, re.M)  # no default swallowed by rich markup
