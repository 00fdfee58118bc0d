"""Every export is checked against a reference on realistic images before anything is called done.

Images: synthetic rooms from `mtlkd.data.synthetic.render_scene` at the model's input size (not noise:
noise puts every activation in an unusual range and hides or exaggerates quantisation error). Each
artifact runs at batch 1 and batch 3, so a graph whose batch axis is not really dynamic fails here.

References and tolerances (`TOLERANCES`):
- fp32 graphs (ONNX, OpenVINO IR) against PyTorch: max |error| <= 1e-3 x max(1, max |reference|) for
  every output (float32 re-association alone stays near 1e-5), and >= 99.5% seg pixels with the same
  argmax (only near-ties may flip).
- fp16 (mixed-precision graph, or OpenVINO IR with fp16 weights) against the fp32 graph: seg argmax
  agreement >= 98%, mean depth relative error <= 1%, mean normal angle <= 1 degree.
- int8 (Q/DQ graph or int8 IR) against the fp32 graph: seg agreement >= 90%, depth relative error
  <= 5%, normal angle <= 5 degrees. Measured on a briefly trained vit-nano: 97-99% seg agreement, depth
  0.3-1.1%, normals 1.2-1.3 degrees. An untrained network fails the seg bound by nature (56-81%): its
  class logits are near-ties everywhere, so int8 rounding flips them; the files are still written.

OpenVINO IRs are run with INFERENCE_PRECISION_HINT f32: by default the CPU plugin computes in bf16 on
CPUs that have it (avx512_bf16, AMX), which by itself costs an untrained vit-nano 7% of seg agreement
(0.3% trained); that is a run-time choice, not a property of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ValidationError

BATCHES = (1, 3)


@dataclass(frozen=True)
class Tolerance:
    max_rel_err: float | None  # max |a - b| / max(1, max |b|), per output; None: not checked
    seg_agreement: float  # minimum % of pixels with the same argmax
    depth_rel_err: float  # maximum mean relative error of depth, %
    normal_angle: float  # maximum mean angle between normals, degrees


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_err=1e-3, seg_agreement=99.5, depth_rel_err=0.1, normal_angle=0.1),
    "fp16": Tolerance(max_rel_err=None, seg_agreement=98.0, depth_rel_err=1.0, normal_angle=1.0),
    "int8": Tolerance(max_rel_err=None, seg_agreement=90.0, depth_rel_err=5.0, normal_angle=5.0),
}


@dataclass
class Check:
    """One output of one artifact at one batch size, compared with its reference."""

    artifact: str
    precision: str
    reference: str
    batch: int
    task: str
    max_abs_err: float
    rel_err: float
    kept: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        kept = "  ".join(_fmt_kept(k, v) for k, v in self.kept.items())
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.failures)
        return (f"{self.artifact} [{self.precision} vs {self.reference}] batch {self.batch} {self.task:<6} "
                f"max|err| {self.max_abs_err:.2e}  {kept}  {status}")  # fmt: skip


def _fmt_kept(key: str, value: float) -> str:
    if key == "seg_agreement":
        return f"pixel agreement {value:.2f}%"
    if key == "depth_rel_err":
        return f"depth rel. error {value:.3f}%"
    return f"normal angle {value:.3f} deg"


# --------------------------------------------------------------------------------------------- images


def validation_images(input_size: Sequence[int], n: int = 3, seed: int = 12345) -> np.ndarray:
    """n synthetic scenes at the model's input size, as an n x 3 x H x W float32 batch in [0, 1]."""
    from mtlkd.data.synthetic import render_scene

    height, width = (int(v) for v in input_size)
    images = [render_scene(np.random.default_rng([seed, i]), height, width)["image"] for i in range(n)]
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


# -------------------------------------------------------------------------------------------- runners


def run_torch(model, images: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
    """The network's outputs on the device it sits on, as float32 arrays."""
    import torch

    device = next(iter(model.parameters())).device
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(images).to(device), tasks=list(tasks))
    return {t: out[t].float().cpu().numpy() for t in tasks}


def run_onnxruntime(path: str | Path, images: np.ndarray, outputs: list[str] | None = None, session=None):
    """Outputs of an ONNX graph on the CPU execution provider, as a dict name -> array."""
    import onnxruntime as ort

    if session is None:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: images})
    return dict(zip(names, values, strict=True))


def run_openvino(path: str | Path, images: np.ndarray, compiled=None, config: dict | None = None):
    """Outputs of an OpenVINO IR on the CPU; compiled with f32 compute unless `config` says otherwise
    (the CPU plugin's default is bf16 on CPUs that have it)."""
    import openvino as ov

    if compiled is None:
        config = {"INFERENCE_PRECISION_HINT": "f32"} if config is None else config
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    result = compiled(images)
    return {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}


# ----------------------------------------------------------------------------------------- comparison


def accuracy_kept(task: str, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """The task-level agreement of `out` with `ref` (both N x C x H x W)."""
    from mtlkd.tasks import LOGITS, POSITIVE, UNIT, get_task

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


def compare(
    artifact: str,
    precision: str,
    reference: str,
    refs: dict[int, dict[str, np.ndarray]],
    outs: dict[int, dict[str, np.ndarray]],
    tolerance: Tolerance | None = None,
) -> list[Check]:
    """Compare outputs per batch size and task; each Check lists what broke its tolerance."""
    tol = tolerance or TOLERANCES[precision]
    checks = []
    for batch, ref_batch in refs.items():
        for task, ref in ref_batch.items():
            out = outs[batch][task]
            if out.shape != ref.shape:
                checks.append(Check(artifact, precision, reference, batch, task, float("inf"), float("inf"),
                                    failures=[f"shape {out.shape} != {ref.shape}"]))  # fmt: skip
                continue
            err = float(np.abs(out.astype(np.float64) - ref).max()) if ref.size else 0.0
            rel = err / max(1.0, float(np.abs(ref).max()))
            check = Check(artifact, precision, reference, batch, task, err, rel, accuracy_kept(task, ref, out))
            if not np.isfinite(out).all():
                check.failures.append("non-finite values")
            if tol.max_rel_err is not None and rel > tol.max_rel_err:
                check.failures.append(f"relative error {rel:.2e} > {tol.max_rel_err:.0e}")
            for key, value in check.kept.items():
                bound = getattr(tol, key)
                bad = value < bound if key == "seg_agreement" else value > bound
                if bad:
                    check.failures.append(f"{key} {value:.3f} beyond {bound}")
            checks.append(check)
    return checks


def run_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], images: np.ndarray,
                batches: Sequence[int] = BATCHES) -> dict[int, dict[str, np.ndarray]]:  # fmt: skip
    """{batch: outputs} for the first `batch` images, for each batch size."""
    return {b: run(np.ascontiguousarray(images[:b])) for b in batches if b <= len(images)}


def ensure_ok(checks: list[Check]) -> None:
    """Raise ValidationError naming every failed check."""
    failed = [c for c in checks if not c.ok]
    if failed:
        worst = "; ".join(f"{c.artifact} batch {c.batch} {c.task}: {', '.join(c.failures)}" for c in failed[:4])
        raise ValidationError(f"{len(failed)} output check(s) failed: {worst}")


def summary(checks: list[Check]) -> dict[str, Any]:
    """Per task, the worst value over batch sizes: max error and accuracy kept (for tables and JSON)."""
    out: dict[str, Any] = {}
    for c in checks:
        entry = out.setdefault(c.task, {"max_abs_err": 0.0})
        entry["max_abs_err"] = max(entry["max_abs_err"], c.max_abs_err)
        for key, value in c.kept.items():
            worse = min if key == "seg_agreement" else max
            entry[key] = worse(entry.get(key, value), value)
    return out
