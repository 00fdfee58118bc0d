"""One accuracy policy: does a file at a lower precision keep the model's accuracy?

The export's validation and the benchmark's verdicts both ask this, so both use this module, with the
tolerances stated once (`TOLERANCES`), per precision.

Two kinds of evidence, compared with the fp32 reference on the same images:

* **Raw outputs** (`raw_rel_err`): the relative RMS error of each raw output, ||out - ref|| / ||ref||,
  over every pixel and channel. Segmentation logits are centred over classes first (adding a constant
  to every class changes nothing a user sees). This means the same thing with random weights as with
  trained ones, so it is the verdict of a random-weight benchmark: with random weights the class logits
  are near-ties everywhere, so whether their argmax flips says nothing about the precision.
* **Task agreement** (`task_agreement`): the share of pixels with the same class, the mean relative
  depth error, the mean angle between normals. This is what a user sees, and it counts only on a trained
  checkpoint (`trained=True`).

Tolerances: fp32 graphs differ from PyTorch by re-association alone (relative error near 1e-6), so a
bound of 1e-3 catches every real bug. fp16 and bf16 round each activation to 11 and 8 significant bits
(relative 5e-4 and 4e-3 per value), which a network's dozens of layers compound to about 1e-2 and 3e-2
on the outputs; int8 rounds weights and activations to 256 levels and loses more. Measured on the demo's
vit-micro (8 scenes; README, "Accuracy of the precisions"): trained, fp16 8e-4, bf16 8e-3, int8 2.5e-2
(seg logits, the worst output); with random weights the seg logits amplify the same rounding about 9x
(bf16 7.2e-2), because a random head's output is a small sum of large terms of both signs. The bounds
leave room for that and for other seeds and datasets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from mtlkd.tasks import LOGITS, POSITIVE, UNIT, get_task


@dataclass(frozen=True)
class Tolerance:
    """The most a precision may change a model's outputs and still count as keeping its accuracy."""

    raw_rel_err: float  # relative RMS error of each raw output, at most
    seg_agreement: float  # % of pixels with the fp32 class, at least (trained checkpoints)
    depth_rel_err: float  # mean relative depth error against fp32, %, at most (trained checkpoints)
    normal_angle: float  # mean angle to the fp32 normal, degrees, at most (trained checkpoints)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(raw_rel_err=1e-3, seg_agreement=99.5, depth_rel_err=0.1, normal_angle=0.1),
    "fp16": Tolerance(raw_rel_err=2e-2, seg_agreement=98.0, depth_rel_err=1.0, normal_angle=1.0),
    "bf16": Tolerance(raw_rel_err=1e-1, seg_agreement=97.0, depth_rel_err=2.0, normal_angle=2.0),
    "int8": Tolerance(raw_rel_err=1.5e-1, seg_agreement=95.0, depth_rel_err=5.0, normal_angle=5.0),
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance of a precision name as files and rows spell it (f16 = fp16, i8 = int8...)."""
    aliases = {"f32": "fp32", "f16": "fp16", "i8": "int8", "u8": "int8"}
    return TOLERANCES[aliases.get(precision, precision)]


def raw_rel_err(task: str, ref: np.ndarray, out: np.ndarray) -> float:
    """||out - ref|| / ||ref|| over a whole N x C x H x W output (logits centred over classes first)."""
    a, b = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if get_task(task).output == LOGITS:
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
    scale = float(np.sqrt((b * b).sum()))
    return float(np.sqrt(((a - b) ** 2).sum())) / max(scale, 1e-12)


def task_agreement(task: str, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """What a user sees change (both N x C x H x W): seg_agreement %, depth_rel_err %, normal_angle deg."""
    kind = get_task(task).output
    if kind == LOGITS:
        return {"seg_agreement": float((ref.argmax(1) == out.argmax(1)).mean() * 100)}
    if kind == POSITIVE:
        rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
        return {"depth_rel_err": float(rel.mean() * 100)}
    if kind == UNIT:
        a = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
        b = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-6)
        cos = np.clip((a * b).sum(1), -1.0, 1.0)
        return {"normal_angle": float(np.degrees(np.arccos(cos)).mean())}
    return {}


@dataclass
class OutputError:
    """How one output of a candidate differs from the reference's."""

    task: str
    raw_rel_err: float
    max_abs_err: float
    agreement: dict[str, float] = field(default_factory=dict)
    finite: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_outputs(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> dict[str, OutputError]:
    """Each task of `ref` compared with `out` (same shapes; a shape mismatch is infinite error)."""
    errors = {}
    for task, reference in ref.items():
        candidate = np.asarray(out[task])
        if candidate.shape != reference.shape:
            errors[task] = OutputError(task, float("inf"), float("inf"), finite=False)
            continue
        finite = bool(np.isfinite(candidate).all())
        diff = np.abs(candidate.astype(np.float64) - reference)
        errors[task] = OutputError(task, raw_rel_err(task, reference, candidate) if finite else float("inf"),
                                   float(diff.max()) if diff.size else 0.0,
                                   task_agreement(task, reference, candidate) if finite else {}, finite)  # fmt: skip
    return errors


@dataclass
class Verdict:
    """Whether a precision kept the accuracy, on what evidence, and what broke its tolerance."""

    kept: bool
    basis: str  # "raw outputs" (random weights) or "raw outputs and task agreement" (trained)
    failures: list[str] = field(default_factory=list)


def verdict(errors: Mapping[str, OutputError], precision: str, trained: bool) -> Verdict:
    """Kept when every raw output is within the precision's tolerance and, on a trained checkpoint, every
    task agreement too. On random weights task agreement is reported but does not decide."""
    tol = tolerance_for(precision)
    failures = []
    for task, err in errors.items():
        if not err.finite:
            failures.append(f"{task}: non-finite values or wrong shape")
            continue
        if err.raw_rel_err > tol.raw_rel_err:
            failures.append(f"{task}: raw relative error {err.raw_rel_err:.2e} > {tol.raw_rel_err:.0e}")
        if trained:
            for key, value in err.agreement.items():
                bound = getattr(tol, key)
                if (value < bound) if key == "seg_agreement" else (value > bound):
                    failures.append(f"{task}: {key} {value:.3f} beyond {bound:g}")
    basis = "raw outputs and task agreement" if trained else "raw outputs"
    return Verdict(not failures, basis, failures)
