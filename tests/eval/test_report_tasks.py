"""mtl-report refuses a Delta between runs scored on different tasks (a depth-only run against a
three-task baseline): one line, exit 2, instead of a Delta over depth alone that looks comparable."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mtlkd.cli.report import app

THREE = {"seg": {"miou": 30.0, "pixel_acc": 70.0}, "depth": {"abs_err": 1.0, "rel_err": 0.3},
         "normal": {"mean": 40.0, "median": 35.0, "within_11.25": 10.0, "within_22.5": 30.0, "within_30": 45.0}}


def _run(folder, metrics):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_depth_only_run_against_three_task_baseline_is_one_line(tmp_path):
    base = _run(tmp_path / "base", THREE)
    depth = _run(tmp_path / "depth", {"depth": {"abs_err": 0.9, "rel_err": 0.28}})
    for extra in ([], ["--json"], ["--markdown"]):
        result = CliRunner().invoke(app, [depth, "--baseline", base, *extra])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "depth" in lines[0] and "seg, depth, normal" in lines[0]
        assert result.stdout == ""


def test_same_tasks_still_give_a_delta(tmp_path):
    base = _run(tmp_path / "base", THREE)
    better = {**THREE, "depth": {"abs_err": 0.9, "rel_err": 0.27}}
    result = CliRunner().invoke(app, [_run(tmp_path / "better", better), "--baseline", base, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert rows[1]["delta"] > 0
