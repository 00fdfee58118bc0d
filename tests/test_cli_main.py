"""`mtl`: the umbrella command."""

from typer.testing import CliRunner

from mtlkd import __version__
from mtlkd.cli.main import app


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mtlkd {__version__}"


def test_train_help_names_every_method_and_preset():
    from mtlkd.models import list_models
    from mtlkd.train.methods import method_names

    text = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=400).output.split())
    for name in method_names() + list_models():
        assert name in text, name
