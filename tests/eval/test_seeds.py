"""Seeds of one row: mean, std and the 95% interval against hand-computed values; rows and verdicts."""

from __future__ import annotations

import json
import math

import pytest

from mtlkd.eval.seeds import aggregate, load_rows, row_name, seeds_markdown, summary


def test_summary_matches_hand_computed_values():
    s = summary([1.0, 2.0, 6.0])
    assert s["mean"] == pytest.approx(3.0)
    # sample variance: (4 + 1 + 9) / 2 = 7
    assert s["std"] == pytest.approx(math.sqrt(7.0))
    half = 4.303 * math.sqrt(7.0) / math.sqrt(3.0)  # t(0.975, 2) = 4.303
    assert (s["low"], s["high"]) == pytest.approx((3.0 - half, 3.0 + half))
    one = summary([5.0])
    assert one["std"] == 0.0 and one["low"] == one["high"] == 5.0


def _metrics(miou: float, abs_err: float) -> dict:
    return {"seg": {"miou": miou, "pixel_acc": 50.0}, "depth": {"abs_err": abs_err, "rel_err": 0.2}}


def test_delta_of_each_seed_is_against_the_baselines_mean_and_verdicts_follow_the_intervals():
    groups = {
        "mtl": [_metrics(20.0, 1.0), _metrics(22.0, 1.0), _metrics(24.0, 1.0)],  # mean mIoU 22
        "better": [_metrics(33.0, 1.0), _metrics(33.0, 1.0), _metrics(33.0, 1.0)],
        "noisy": [_metrics(10.0, 1.0), _metrics(22.0, 1.0), _metrics(34.0, 1.0)],
        "worse": [_metrics(11.0, 1.0), _metrics(11.0, 1.0), _metrics(11.0, 1.0)],
    }
    rows = {row["name"]: row for row in aggregate(groups, "mtl")}
    # seg delta of mIoU 33 vs 22 is +50% on one of seg's two metrics -> seg +25; depth 0; mean over tasks 12.5
    assert rows["better"]["delta"]["mean"] == pytest.approx(12.5)
    assert rows["better"]["delta"]["std"] == pytest.approx(0.0)
    assert rows["mtl"]["delta"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert rows["better"]["verdict"] == "above" and rows["worse"]["verdict"] == "below"
    assert rows["noisy"]["verdict"] == "level" and rows["mtl"]["verdict"] == "baseline"
    assert rows["mtl"]["metrics"]["seg"]["miou"]["mean"] == pytest.approx(22.0)
    assert rows["mtl"]["metrics"]["seg"]["miou"]["std"] == pytest.approx(2.0)
    text = seeds_markdown(list(rows.values()))
    assert "| better | 3 | 33.00 ± 0.00 |" in text and "above" in text


def test_rows_come_from_seed_folders_and_suffixes(tmp_path):
    for run in ("mtl/seed0", "mtl/seed1", "okd-s0", "okd-s1"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "metrics.json").write_text(json.dumps(_metrics(20.0, 1.0)))
    (tmp_path / "mtl" / "seed2").mkdir()  # still training: no metrics.json yet, left out
    assert row_name(tmp_path / "mtl" / "seed1") == "mtl" and row_name(tmp_path / "okd-s1") == "okd"
    groups = load_rows([tmp_path / "mtl", tmp_path / "okd-s0", tmp_path / "okd-s1", tmp_path / "mtl" / "seed0"])
    assert list(groups) == ["mtl", "okd"]
    assert len(groups["mtl"]) == 2 and len(groups["okd"]) == 2  # the repeated seed0 counts once


def test_report_cli_aggregates_seeds(tmp_path):
    from typer.testing import CliRunner

    from mtlkd.cli.report import app

    for seed, miou in enumerate((20.0, 22.0, 24.0)):
        for row, shift in (("mtl", 0.0), ("kd", 10.0)):
            (tmp_path / row / f"seed{seed}").mkdir(parents=True)
            (tmp_path / row / f"seed{seed}" / "metrics.json").write_text(json.dumps(_metrics(miou + shift, 1.0)))
    result = CliRunner().invoke(app, [str(tmp_path / "kd"), "--baseline", str(tmp_path / "mtl"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [r["name"] for r in rows] == ["mtl", "kd"] and rows[1]["n"] == 3
    assert rows[1]["delta"]["values"] == pytest.approx([25 * (m + 10 - 22) / 22 for m in (20, 22, 24)])


def test_a_row_on_other_tasks_than_the_baseline_has_no_delta():
    from mtlkd.errors import ReportError

    depth_only = {"depth": {"abs_err": 1.0, "rel_err": 0.2}}
    with pytest.raises(ReportError, match="same tasks"):
        aggregate({"mtl": [_metrics(20.0, 1.0)] * 2, "depth": [depth_only] * 2}, "mtl")


def test_one_seed_has_no_interval_and_no_verdict():
    rows = aggregate({"mtl": [_metrics(20.0, 1.0), _metrics(22.0, 1.0)], "single": [_metrics(40.0, 1.0)]}, "mtl")
    assert rows[1]["verdict"] == "one seed"
    assert "one seed, no interval" in seeds_markdown(rows)
