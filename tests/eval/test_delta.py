"""Delta (eq. 4 of OKD-MTL) must give back the Delta column the paper prints for its own tables."""

from __future__ import annotations

import pytest

from mtlkd.eval.delta import delta, per_task_delta

# OKD-MTL (WACV 2023), Table 1, NYUv2, ViT-tiny. Column order as in the paper's header:
# mIoU, pAcc, depth abs, depth rel, <11.25°, <22.5°, <30°, normal mean, normal median, printed Delta.
NYUV2 = {
    "Single Task": (51.29, 72.23, 0.4423, 0.1789, 34.88, 55.19, 63.27, 31.65, 21.14, 4.19),
    "Baseline (MTL)": (50.47, 73.20, 0.4431, 0.1904, 29.98, 50.83, 59.94, 33.20, 23.87, 0.0),
    "DWA": (51.58, 73.76, 0.4137, 0.1743, 32.56, 53.49, 62.03, 32.33, 22.25, 4.79),
    "GradNorm": (51.28, 73.63, 0.4179, 0.1757, 33.17, 53.83, 62.33, 32.26, 22.02, 4.67),
    "UW": (51.21, 73.64, 0.4126, 0.1724, 32.27, 52.97, 61.59, 32.50, 22.46, 4.57),
    "RLW": (50.85, 73.63, 0.4158, 0.1744, 32.16, 53.34, 61.98, 32.30, 22.28, 4.32),
    # Computes to 0.547 against the printed 0.58: inside the tolerance, but more than rounding of the
    # printed inputs explains (the other rows agree to 0.005); probably rounded differently in the paper.
    "Cross Stitch": (47.98, 71.14, 0.4310, 0.1824, 31.46, 51.86, 60.55, 33.17, 23.35, 0.58),
    "KD-MTL": (51.07, 73.82, 0.4102, 0.1717, 32.47, 53.31, 61.87, 32.35, 22.29, 4.92),
    "OKD-MTL": (51.99, 73.75, 0.4112, 0.1701, 33.58, 54.74, 63.20, 31.82, 21.50, 6.22),
}

# Table 2, Cityscapes (2 tasks): mIoU, pAcc, depth abs, depth rel, printed Delta.
CITYSCAPES = {
    "Single Task": (74.93, 93.03, 0.0092, 0.1422, 7.56),
    "Baseline (MTL)": (72.12, 92.76, 0.0110, 0.1575, 0.0),
    "DWA": (73.90, 93.46, 0.0092, 0.1432, 7.17),
    "GradNorm": (73.65, 93.35, 0.0099, 0.1483, 4.65),
    "UW": (74.86, 93.72, 0.0095, 0.1413, 7.19),
    "RLW": (73.84, 93.36, 0.0092, 0.1396, 7.69),
    "Cross Stitch": (71.09, 92.56, 0.0101, 0.1551, 2.02),
    "KD-MTL": (73.81, 93.35, 0.0098, 0.1418, 5.96),
    "OKD-MTL": (75.40, 93.97, 0.0091, 0.1360, 9.19),
}


def nyuv2_metrics(row: tuple[float, ...]) -> dict[str, dict[str, float]]:
    miou, pacc, abs_err, rel_err, w11, w22, w30, mean, median = row[:9]
    return {
        "seg": {"miou": miou, "pixel_acc": pacc},
        "depth": {"abs_err": abs_err, "rel_err": rel_err},
        "normal": {"mean": mean, "median": median, "within_11.25": w11, "within_22.5": w22, "within_30": w30},
    }


def cityscapes_metrics(row: tuple[float, ...]) -> dict[str, dict[str, float]]:
    miou, pacc, abs_err, rel_err = row[:4]
    return {"seg": {"miou": miou, "pixel_acc": pacc}, "depth": {"abs_err": abs_err, "rel_err": rel_err}}


@pytest.mark.parametrize("method", list(NYUV2))
def test_paper_table1_nyuv2(method: str) -> None:
    baseline = nyuv2_metrics(NYUV2["Baseline (MTL)"])
    assert delta(nyuv2_metrics(NYUV2[method]), baseline) == pytest.approx(NYUV2[method][-1], abs=0.05)


@pytest.mark.parametrize("method", list(CITYSCAPES))
def test_paper_table2_cityscapes(method: str) -> None:
    baseline = cityscapes_metrics(CITYSCAPES["Baseline (MTL)"])
    value = delta(cityscapes_metrics(CITYSCAPES[method]), baseline)
    assert value == pytest.approx(CITYSCAPES[method][-1], abs=0.05)


def test_signs_follow_the_registry() -> None:
    base = {"seg": {"miou": 50.0}, "depth": {"abs_err": 0.5}}
    better = {"seg": {"miou": 55.0}, "depth": {"abs_err": 0.45}}  # +10 % both ways
    assert per_task_delta(better, base) == pytest.approx({"seg": 10.0, "depth": 10.0})
    assert delta(better, base) == pytest.approx(10.0)
    assert delta(base, better) < 0


def test_tasks_are_weighted_equally_not_metrics() -> None:
    base = {"seg": {"miou": 10.0}, "normal": dict.fromkeys(("mean", "median"), 10.0)}
    run = {"seg": {"miou": 12.0}, "normal": {"mean": 10.0, "median": 10.0}}
    assert delta(run, base) == pytest.approx(10.0)  # (20 + 0) / 2, not 20 / 3


def test_only_shared_tasks_and_metrics_count() -> None:
    base = {"seg": {"miou": 40.0, "pixel_acc": 60.0}, "depth": {"abs_err": 1.0}, "edges": {"f1": 1.0}}
    run = {"seg": {"miou": 44.0, "loss": 3.0}, "normal": {"mean": 20.0}, "edges": {"f1": 2.0}}
    assert per_task_delta(run, base) == pytest.approx({"seg": 10.0})


def test_baseline_against_itself_is_zero() -> None:
    base = nyuv2_metrics(NYUV2["OKD-MTL"])
    assert delta(base, base) == 0.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="no task"):
        delta({"seg": {"miou": 1.0}}, {"depth": {"abs_err": 1.0}})
    with pytest.raises(ValueError, match=r"seg\.miou.*0"):
        delta({"seg": {"miou": 1.0}}, {"seg": {"miou": 0.0}})
