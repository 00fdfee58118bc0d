"""The shared flags of mtl-infer and mtl-eval: help without typer's type placeholders (`--json [PATH]` and
stdout are tested with the commands, tests/runtime/test_infer_cli.py and tests/eval/test_evaluate_model.py)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.parametrize("module", ["mtlkd.cli.infer", "mtlkd.cli.evaluate"])
def test_help_has_no_type_placeholders(module):
    import importlib

    app = importlib.import_module(module).app
    text = runner.invoke(app, ["--help"], terminal_width=200).output
    body = "\n".join(line for line in text.splitlines() if "--help" not in line)  # typer's own option
    assert "MODEL" in body and ("--out" in body or "--data-dir" in body)
    for placeholder in ("<int", "<str", "<path", "<bool", "list[", "x>=", "<float"):
        assert placeholder not in body, placeholder
    assert not re.search(r"\[default: [^\]]*$", body, re.M)  # no default swallowed by rich markup
