"""Loading metrics.json files, report rows, the table, and `mtl-report` end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mtlkd.cli.report import app
from mtlkd.errors import ReportError
from mtlkd.eval.report import build_report, load_metrics, render_table

# The paper's tables live in test_delta.py; loaded by path so this works under any pytest import mode.
_spec = importlib.util.spec_from_file_location("okd_tables", Path(__file__).with_name("test_delta.py"))
paper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper)
NYUV2, CITYSCAPES = paper.NYUV2, paper.CITYSCAPES
nyuv2_metrics, cityscapes_metrics = paper.nyuv2_metrics, paper.cityscapes_metrics

runner = CliRunner()


def write_run(root: Path, name: str, metrics: dict) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_load_metrics_names(tmp_path: Path) -> None:
    metrics = nyuv2_metrics(NYUV2["DWA"])
    run = write_run(tmp_path, "run_x", metrics)
    assert load_metrics(run) == ("run_x", metrics)
    assert load_metrics(run / "metrics.json") == ("run_x", metrics)
    other = tmp_path / "stl_merged.json"
    other.write_text(json.dumps(metrics))
    assert load_metrics(other) == ("stl_merged", metrics)


def test_load_metrics_keeps_registry_keys(tmp_path: Path) -> None:
    data = {"seg": {"pixel_acc": 70, "miou": 50.5, "loss": 0.3}, "epoch": 200, "edges": {"f1": 1.0}}
    file = tmp_path / "m.json"
    file.write_text(json.dumps(data))
    name, metrics = load_metrics(file)
    assert metrics == {"seg": {"miou": 50.5, "pixel_acc": 70.0}}
    assert list(metrics["seg"]) == ["miou", "pixel_acc"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no metrics.json"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"epoch": 3, "edges": {"f1": 1}}', "no known task"),
        ('{"seg": {"miou": "high"}}', "seg.miou is not a number"),
        ('{"seg": 3}', "should be an object"),
    ],
)
def test_load_metrics_errors(tmp_path: Path, content: str | None, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.json").write_text(content)
    with pytest.raises(ReportError, match=message) as info:
        load_metrics(run)
    assert "\n" not in str(info.value)


def test_load_metrics_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such file"):
        load_metrics(tmp_path / "nope")


def test_build_report_rows() -> None:
    base = ("mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    rows = build_report([("okd", cityscapes_metrics(CITYSCAPES["OKD-MTL"]))], base)
    assert [r["name"] for r in rows] == ["mtl", "okd"]
    assert rows[0]["delta"] == 0.0
    assert rows[1]["delta"] == pytest.approx(9.19, abs=0.05)
    assert set(rows[1]) == {"name", "delta", "metrics"}
    with pytest.raises(ReportError, match="okd against baseline mtl"):
        build_report([("okd", {"normal": {"mean": 30.0}})], base)


def test_render_table() -> None:
    base = ("Baseline (MTL)", nyuv2_metrics(NYUV2["Baseline (MTL)"]))
    rows = build_report([("OKD-[MTL]", nyuv2_metrics(NYUV2["OKD-MTL"]))], base)
    console = Console(record=True, width=60, color_system=None)  # narrower than the table: nothing cut
    render_table(rows, console, baseline=base[0])
    text = console.export_text()
    for header in ("mIoU ↑", "pAcc ↑", "abs ↓", "rel ↓", "mean ↓", "median ↓", "<11.25° ↑", "<30° ↑", "Δ ↑"):
        assert header in text
    assert text.index("mIoU") < text.index("abs") < text.index("median") < text.index("Δ ↑")
    for cell in ("51.99", "73.75", "0.4112", "0.1701", "31.82", "21.50", "33.58", "+6.22", "+0.00"):
        assert cell in text
    assert "OKD-[MTL]" in text  # names are not read as rich markup
    assert console.width == 60


def test_cli_json_reproduces_paper_table1(tmp_path: Path) -> None:
    runs = {
        name: write_run(tmp_path, name.replace(" ", "_"), nyuv2_metrics(row)) for name, row in NYUV2.items()
    }
    baseline = runs.pop("Baseline (MTL)")
    result = runner.invoke(app, [*map(str, runs.values()), "--baseline", str(baseline), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert rows[0] == {
        "name": "Baseline_(MTL)",
        "delta": 0.0,
        "metrics": nyuv2_metrics(NYUV2["Baseline (MTL)"]),
    }
    assert len(rows) == len(NYUV2)
    for row in rows[1:]:
        assert row["delta"] == pytest.approx(NYUV2[row["name"].replace("_", " ")][-1], abs=0.05)


def test_cli_json_cityscapes_baseline_listed_once(tmp_path: Path) -> None:
    base = write_run(tmp_path, "mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    okd = write_run(tmp_path, "okd", cityscapes_metrics(CITYSCAPES["OKD-MTL"]))
    result = runner.invoke(
        app, [str(base), str(okd / "metrics.json"), "--baseline", str(base / "metrics.json"), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["name"] for r in rows] == ["mtl", "okd"]
    assert rows[1]["delta"] == pytest.approx(9.19, abs=0.05)


def test_cli_table(tmp_path: Path) -> None:
    base = write_run(tmp_path, "mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    okd = write_run(tmp_path, "okd", cityscapes_metrics(CITYSCAPES["OKD-MTL"]))
    result = runner.invoke(app, [str(okd), "--baseline", str(base)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "+9.19" in result.stdout and "0.0091" in result.stdout


@pytest.mark.parametrize("bad", ["missing", "invalid"])
def test_cli_errors_are_one_line(tmp_path: Path, bad: str) -> None:
    base = write_run(tmp_path, "mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    target = tmp_path / "run"
    if bad == "invalid":
        target.mkdir()
        (target / "metrics.json").write_text("{")
    result = runner.invoke(app, [str(target), "--baseline", str(base)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and result.stdout == ""


def test_cli_help_has_examples() -> None:
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "mtl-report runs/okd runs/kdam --baseline runs/mtl_uniform" in result.stdout
    assert "--json" in result.stdout


def test_cli_markdown(tmp_path: Path) -> None:
    base = write_run(tmp_path, "mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    okd = write_run(tmp_path, "okd", cityscapes_metrics(CITYSCAPES["OKD-MTL"]))
    result = runner.invoke(app, [str(okd), "--baseline", str(base), "--markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| method | mIoU ↑") and lines[0].endswith("Δ ↑ |")
    assert set(lines[1]) <= {"|", "-"} and lines[1].count("---") == lines[0].count("|") - 1
    assert lines[2].startswith("| mtl |") and lines[2].endswith("+0.00 |")
    assert lines[3].startswith("| okd |") and lines[3].endswith("| **+9.19** |")  # the best Delta is bold
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_markdown_extra_columns_and_bold_best() -> None:
    from mtlkd.eval.report import markdown_table

    base = ("mtl", cityscapes_metrics(CITYSCAPES["Baseline (MTL)"]))
    rows = build_report([("okd", cityscapes_metrics(CITYSCAPES["OKD-MTL"]))], base)
    text = markdown_table(rows, {"s/epoch": {"mtl": "9", "okd": "26"}})
    header, _, mtl, okd = text.strip().splitlines()
    assert header.endswith("| s/epoch |") and mtl.endswith("| 9 |") and okd.endswith("| 26 |")
    assert okd.count("**") >= 2  # OKD beats the baseline somewhere: that cell is bold
