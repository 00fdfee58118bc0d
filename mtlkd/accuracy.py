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

Agreement is a statistic over pixels, and two facts decide when it can judge a file:

* **Sample size.** The share of pixels that keep their class is an estimate from n pixels: 15 of 16 is
  93.75%, and says little about whether the true share is above 95%. A file fails the agreement bound only
  when the bound is beyond the Wilson score interval of the observed share (one-sided, z = 3.09, 99.9%):
  `agreement_upper_bound`. Pixels of one image are correlated, so the interval is if anything narrow; it
  still makes 1 flip in 16 a pass and 16 in 16 a failure, and over the thousands of pixels of a real
  model's output it is within a fraction of a percent of the observed share.
* **Ties.** A pixel whose two best classes are closer than the file's own logit error flips by chance,
  whatever the precision's quality. `decision_margin` is the median, over pixels, of the reference's
  top-two margin in units of the file's logit error (sqrt(2) times the per-logit RMS error that
  `raw_rel_err` measures, capped at the precision's tolerance so that a broken file cannot pass as ties).
  Below `MIN_DECISION_MARGIN` (3: Gaussian errors of that size flip a pixel of median margin 0.1% of the
  time) the model's decisions are mostly ties, as in a random-weight or nearly untrained model: its
  segmentation is then judged on its raw output alone, as for random weights, and the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from mtlkd.tasks import LOGITS, get_task


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


AGREEMENT_Z = 3.09  # one-sided 99.9%: how sure the evidence must be before a share of pixels fails a file
MIN_DECISION_MARGIN = 3.0  # median top-two margin, in logit-error units, below which seg decisions are ties


def agreement_upper_bound(share: float, pixels: int, z: float = AGREEMENT_Z) -> float:
    """The upper end (%, one-sided) of the Wilson score interval of an agreement `share` (%) over `pixels`:
    the highest true share the observation is consistent with; the share itself when the count is unknown
    (results recorded before counts were kept)."""
    if pixels <= 0:
        return share
    p, n = share / 100.0, float(pixels)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(100.0, 100.0 * (centre + spread) / (1 + z * z / n))


def margin_stats(ref: np.ndarray) -> tuple[float, float]:
    """A segmentation reference's median top-two class margin over pixels, and the RMS of its centred logits."""
    b = np.asarray(ref, np.float64)
    centred = b - b.mean(axis=1, keepdims=True)
    top = np.sort(b, axis=1)
    margin = float(np.median(top[:, -1] - top[:, -2])) if b.shape[1] > 1 else float("inf")
    return margin, float(np.sqrt((centred * centred).mean()))


def decision_margin(err: OutputError, precision: str) -> float:
    """The reference's median top-two margin in units of the logit error of this file (sqrt(2) x the per-logit
    RMS error), that error capped at what the precision is allowed, so that a grossly wrong file cannot make
    the model's decisions look like ties; inf for outputs that are not class logits."""
    if err.median_margin is None or err.logit_rms is None:
        return float("inf")
    error = math.sqrt(2.0) * min(err.raw_rel_err, tolerance_for(precision).raw_rel_err) * err.logit_rms
    return err.median_margin / error if error > 0 else float("inf")


def raw_rel_err(task: str, ref: np.ndarray, out: np.ndarray) -> float:
    """||out - ref|| / ||ref|| over a whole N x C x H x W output (logits centred over classes first)."""
    a, b = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if get_task(task).output == LOGITS:
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
    scale = float(np.sqrt((b * b).sum()))
    return float(np.sqrt(((a - b) ** 2).sum())) / max(scale, 1e-12)


def task_agreement(task: str, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """What a user sees change (both N x C x H x W), as the task's `agreement` says (seg_agreement %,
    depth_rel_err %, normal_angle deg: fields of `Tolerance`); nothing for a task without one."""
    agreement = get_task(task).agreement
    return agreement(ref, out) if agreement is not None else {}


@dataclass
class OutputError:
    """How one output of a candidate differs from the reference's."""

    task: str
    raw_rel_err: float
    max_abs_err: float
    agreement: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    pixels: int = 0  # pixels the agreement is taken over (N x H x W)
    median_margin: float | None = None  # segmentation: the reference's median top-two margin (margin_stats)
    logit_rms: float | None = None  # segmentation: RMS of the reference's centred logits

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
        pixels = int(np.prod(reference.shape)) // max(int(reference.shape[1]), 1) if reference.ndim == 4 else 0
        margin, rms = (margin_stats(reference) if reference.ndim == 4 and get_task(task).output == LOGITS
                       else (None, None))  # fmt: skip
        errors[task] = OutputError(task, raw_rel_err(task, reference, candidate) if finite else float("inf"),
                                   float(diff.max()) if diff.size else 0.0,
                                   task_agreement(task, reference, candidate) if finite else {}, finite,
                                   pixels, margin, rms)  # fmt: skip
    return errors


@dataclass
class Verdict:
    """Whether a precision kept the accuracy, on what evidence, and what broke its tolerance."""

    kept: bool
    basis: str  # "raw outputs" (random weights) or "raw outputs and task agreement" (trained)
    failures: list[str] = field(default_factory=list)


def verdict(errors: Mapping[str, OutputError], precision: str, trained: bool) -> Verdict:
    """Kept when every raw output is within the precision's tolerance and, on a trained checkpoint, every
    task agreement too. On random weights task agreement is reported but does not decide; nor does the
    segmentation agreement of a model whose decisions are ties at the file's error level (`decision_margin`),
    and a share of pixels fails only when its Wilson bound over the pixels counted does."""
    tol = tolerance_for(precision)
    failures, ties = [], []
    for task, err in errors.items():
        if not err.finite:
            failures.append(f"{task}: non-finite values or wrong shape")
            continue
        if err.raw_rel_err > tol.raw_rel_err:
            failures.append(f"{task}: raw relative error {err.raw_rel_err:.2e} > {tol.raw_rel_err:.0e}")
        if not trained:
            continue
        for key, value in err.agreement.items():
            bound = getattr(tol, key)
            if key == "seg_agreement":
                if decision_margin(err, precision) < MIN_DECISION_MARGIN:
                    ties.append(task)
                elif agreement_upper_bound(value, err.pixels) < bound:
                    failures.append(f"{task}: {key} {value:.3f} beyond {bound:g} (over {err.pixels} pixels)")
            elif value > bound:
                failures.append(f"{task}: {key} {value:.3f} beyond {bound:g}")
    basis = "raw outputs and task agreement" if trained else "raw outputs"
    if ties:
        basis += f" ({', '.join(ties)}: raw outputs, its decisions are ties at this error level)"
    return Verdict(not failures, basis, failures)
