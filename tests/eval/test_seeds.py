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


def test_paired_delta_compares_seed_i_with_the_baselines_seed_i_by_hand():
    # mtl seeds 0, 1, 2 at mIoU 20, 22, 24; the row 2 points above mtl in each seed, but spread like mtl.
    # delta of seed i = 25 * 2 / m_i: +2/m_i of mIoU is half of seg (two metrics), seg half of Delta (depth 0)
    groups = {"mtl": [_metrics(20.0, 1.0), _metrics(22.0, 1.0), _metrics(24.0, 1.0)],
              "row": [_metrics(22.0, 1.0), _metrics(24.0, 1.0), _metrics(26.0, 1.0)]}
    seeds = {"mtl": [0, 1, 2], "row": [0, 1, 2]}
    row = aggregate(groups, "mtl", seeds)[1]
    d = [25 * 2 / 20, 25 * 2 / 22, 25 * 2 / 24]  # 2.5, 2.2727, 2.0833
    mean = sum(d) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 2)
    half = 4.303 * sd / math.sqrt(3)
    pair = row["paired"]
    assert pair["values"] == pytest.approx(d) and pair["seeds"] == [0, 1, 2]
    assert (pair["mean"], pair["std"]) == pytest.approx((mean, sd))
    assert (pair["low"], pair["high"]) == pytest.approx((mean - half, mean + half))
    assert pair["low"] > 0 and pair["verdict"] == "above"
    assert row["verdict"] == "level"  # unpaired: mtl's own spread hides the 2 points
    text = seeds_markdown(aggregate(groups, "mtl", seeds))
    assert f"{mean:+.2f} ± {sd:.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (n=3) | above |" in text


def test_paired_delta_uses_the_seeds_both_rows_have_in_any_order():
    groups = {"mtl": [_metrics(20.0, 1.0), _metrics(30.0, 1.0), _metrics(40.0, 1.0)],
              "row": [_metrics(36.0, 1.0), _metrics(18.0, 1.0), _metrics(99.0, 1.0)]}
    # row's seed 2 (mIoU 36) against mtl's seed 2 (40): -10% of mIoU; seed 0 (18) against 20: -10%; seed 7 unpaired
    pair = aggregate(groups, "mtl", {"mtl": [0, 1, 2], "row": [2, 0, 7]})[1]["paired"]
    assert pair["seeds"] == [0, 2] and pair["values"] == pytest.approx([-2.5, -2.5])
    assert pair["std"] == pytest.approx(0.0) and pair["verdict"] == "below"
    none = aggregate(groups, "mtl", {"mtl": [0, 1, 2], "row": [3, 4, 5]})[1]["paired"]
    assert none["n"] == 0 and none["verdict"] == "no pairs"
    from mtlkd.errors import ReportError

    with pytest.raises(ReportError, match="seed 0 appears twice"):
        aggregate(groups, "mtl", {"mtl": [0, 1, 2], "row": [0, 0, 1]})


def test_report_cli_pairs_seed_folders(tmp_path):
    from typer.testing import CliRunner

    from mtlkd.cli.report import app

    for seed, (base, mine) in enumerate(((20.0, 22.0), (24.0, 25.0), (28.0, 31.0))):
        for row, miou in (("mtl", base), ("kd", mine)):
            (tmp_path / row / f"seed{seed}").mkdir(parents=True)
            (tmp_path / row / f"seed{seed}" / "metrics.json").write_text(json.dumps(_metrics(miou, 1.0)))
    result = CliRunner().invoke(app, [str(tmp_path / "kd"), "--baseline", str(tmp_path / "mtl"), "--json"])
    assert result.exit_code == 0, result.output
    pair = json.loads(result.output)["rows"][1]["paired"]
    assert pair["values"] == pytest.approx([25 * 2 / 20, 25 * 1 / 24, 25 * 3 / 28])
    markdown = CliRunner().invoke(app, [str(tmp_path / "kd"), "--baseline", str(tmp_path / "mtl")])
    assert "paired verdict" in markdown.output
