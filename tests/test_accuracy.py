"""The accuracy policy: raw errors that mean the same with random and trained weights, and verdicts."""

import numpy as np
import pytest

from mtlkd.accuracy import (
    MIN_DECISION_MARGIN,
    TOLERANCES,
    agreement_upper_bound,
    compare_outputs,
    decision_margin,
    raw_rel_err,
    task_agreement,
    tolerance_for,
    verdict,
)


def _outputs(rng, n=2, classes=5, size=(8, 8)):
    normal = rng.standard_normal((n, 3, *size)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return {"seg": rng.standard_normal((n, classes, *size)).astype(np.float32),
            "depth": rng.uniform(0.5, 5.0, (n, 1, *size)).astype(np.float32), "normal": normal}


def test_identical_outputs_have_zero_error_and_keep_everything():
    ref = _outputs(np.random.default_rng(0))
    errors = compare_outputs(ref, ref)
    assert all(e.raw_rel_err == 0.0 and e.max_abs_err == 0.0 for e in errors.values())
    assert errors["seg"].agreement == {"seg_agreement": 100.0}
    assert errors["normal"].agreement["normal_angle"] == pytest.approx(0.0, abs=1e-3)
    assert verdict(errors, "fp32", trained=True).kept


def test_a_constant_added_to_every_class_is_no_error():
    ref = _outputs(np.random.default_rng(1))["seg"]
    assert raw_rel_err("seg", ref, ref + 3.0) < 1e-6  # float32 rounding of the sum only
    assert raw_rel_err("depth", ref, ref + 3.0) > 1.0  # for depth a shift is an error


def test_raw_error_is_relative():
    ref = _outputs(np.random.default_rng(2))["depth"]
    assert raw_rel_err("depth", ref, ref * 1.01) == pytest.approx(0.01, rel=1e-4)
    assert raw_rel_err("depth", 100 * ref, 100 * ref * 1.01) == pytest.approx(0.01, rel=1e-4)


def test_task_agreement_on_hand_cases():
    ref = np.zeros((1, 2, 1, 4), np.float32)
    ref[0, 0] = 1.0  # class 0 everywhere
    out = ref.copy()
    out[0, 1, 0, 0] = 2.0  # one pixel of four becomes class 1
    assert task_agreement("seg", ref, out) == {"seg_agreement": 75.0}
    depth = np.full((1, 1, 1, 2), 2.0, np.float32)
    assert task_agreement("depth", depth, depth * np.array([1.0, 1.1], np.float32))["depth_rel_err"] == \
        pytest.approx(5.0, rel=1e-5)  # fmt: skip
    a = np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    b = np.array([0.0, 1.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    assert task_agreement("normal", a, b)["normal_angle"] == pytest.approx(90.0, rel=1e-5)


def test_verdict_reads_agreement_only_for_trained_models():
    rng = np.random.default_rng(3)
    ref = _outputs(rng)
    noisy = dict(ref, seg=ref["seg"] + 0.3 * rng.standard_normal(ref["seg"].shape).astype(np.float32))
    errors = compare_outputs(ref, noisy)
    assert errors["seg"].raw_rel_err == pytest.approx(0.3, rel=0.1)
    assert not verdict(errors, "int8", trained=False).kept  # beyond int8's raw tolerance
    slight = dict(ref, seg=ref["seg"] + 0.02 * rng.standard_normal(ref["seg"].shape).astype(np.float32))
    errors = compare_outputs(ref, slight)
    assert verdict(errors, "int8", trained=False).kept  # raw outputs within tolerance: kept on random weights
    errors["seg"].agreement["seg_agreement"] = 80.0  # a trained model whose classes flip: lost
    judged = verdict(errors, "int8", trained=True)
    assert not judged.kept and judged.basis == "raw outputs and task agreement"


def test_wrong_shape_or_nan_is_never_kept():
    ref = _outputs(np.random.default_rng(4))
    bad = dict(ref, depth=ref["depth"][:, :, :4])
    assert not verdict(compare_outputs(ref, bad), "int8", trained=False).kept
    nan = dict(ref, normal=np.full_like(ref["normal"], np.nan))
    assert not verdict(compare_outputs(ref, nan), "int8", trained=False).kept


def test_tolerances_loosen_with_fewer_bits():
    order = ["fp32", "fp16", "bf16", "int8"]
    raw = [TOLERANCES[p].raw_rel_err for p in order]
    seg = [TOLERANCES[p].seg_agreement for p in order]
    assert raw == sorted(raw) and seg == sorted(seg, reverse=True)
    assert tolerance_for("f16") == TOLERANCES["fp16"] and tolerance_for("i8") == TOLERANCES["int8"]


def test_agreement_bound_is_the_wilson_interval():
    # by hand: p = 0.5, n = 100, z = 3.09: (0.5 + z^2/200 + z sqrt(0.0025 + z^2/40000)) / (1 + z^2/100)
    assert agreement_upper_bound(50.0, 100) == pytest.approx(64.761, abs=1e-3)
    assert agreement_upper_bound(93.75, 16) == pytest.approx(99.452, abs=1e-3)  # 15 of 16: consistent with 95%
    assert agreement_upper_bound(0.0, 16) == pytest.approx(37.373, abs=1e-3)
    assert agreement_upper_bound(99.0, 1_000_000) == pytest.approx(99.03, abs=0.01)  # many pixels: the share


def _decided_logits(rng, n, classes=4, size=(4, 4), margin=6.0):
    """Logits whose true class leads every other by `margin`."""
    seg = rng.standard_normal((n, classes, *size)).astype(np.float32) * 0.1
    labels = rng.integers(0, classes, (n, *size))
    np.put_along_axis(seg, labels[:, None], margin, axis=1)
    return seg


def test_one_flip_in_sixteen_pixels_is_no_evidence_but_many_flips_are():
    rng = np.random.default_rng(5)
    ref = {"seg": _decided_logits(rng, 1)}
    out = {"seg": ref["seg"].copy()}
    out["seg"][0, :, 0, 0] = out["seg"][0, ::-1, 0, 0]  # one pixel of 16 changes class
    errors = compare_outputs(ref, out)
    assert errors["seg"].pixels == 16 and errors["seg"].agreement["seg_agreement"] == 93.75
    assert not any("seg_agreement" in f for f in verdict(errors, "int8", trained=True).failures)
    many = {"seg": _decided_logits(np.random.default_rng(6), 16)}
    flipped = {"seg": many["seg"].copy()}
    flipped["seg"][:, :, :2] = flipped["seg"][:, ::-1, :2]  # half of 256 pixels change class
    judged = verdict(compare_outputs(many, flipped), "int8", trained=True)
    assert any("seg_agreement" in f and "over 256 pixels" in f for f in judged.failures)


def test_near_ties_are_judged_on_raw_outputs():
    rng = np.random.default_rng(7)
    ref = {"seg": (1e-3 * rng.standard_normal((2, 13, 8, 8))).astype(np.float32)}  # an untrained head
    out = {"seg": ref["seg"] + (1.2e-4 * rng.standard_normal(ref["seg"].shape)).astype(np.float32)}
    errors = compare_outputs(ref, out)
    assert decision_margin(errors["seg"], "int8") < MIN_DECISION_MARGIN
    assert errors["seg"].agreement["seg_agreement"] < 95.0  # many argmaxes flip...
    judged = verdict(errors, "int8", trained=True)
    assert judged.kept and "ties" in judged.basis  # ...and say nothing about the file
    decided = {"seg": _decided_logits(rng, 2, size=(8, 8))}
    wrong = compare_outputs(decided, {"seg": decided["seg"][:, ::-1].copy()})["seg"]  # every class swapped
    assert wrong.raw_rel_err > 1.0 and decision_margin(wrong, "int8") > MIN_DECISION_MARGIN  # no tie: judged
    assert decision_margin(compare_outputs(decided, decided)["seg"], "int8") == float("inf")
