"""Every export is checked against a reference on realistic images before anything is called done.

Images: synthetic rooms from `mtlkd.data.synthetic.render_scene` at the model's input size (not noise:
noise puts every activation in an unusual range and hides or exaggerates quantisation error). Each
artifact runs at batch 1 and batch 3, so a graph whose batch axis is not really dynamic fails here.

References and tolerances: one policy, `mtlkd.accuracy` (the benchmark's too). fp32 graphs (ONNX,
OpenVINO IR, engines) are compared with PyTorch, fp16 and int8 files with the fp32 graph. Every output's
raw relative error must be within the precision's tolerance; for a trained checkpoint (its metadata does
not say `random_weights`) the task agreement must be too (seg pixels with the same class, depth relative
error, normal angle). Random-weight networks are judged on raw outputs only: their class logits are
near-ties everywhere, so whether an argmax flips says nothing about the file.

OpenVINO IRs are run with INFERENCE_PRECISION_HINT f32: by default the CPU plugin computes in bf16 on
CPUs that have it (avx512_bf16, AMX), which by itself flips the segmentation of several percent of an
untrained network's pixels; that is a run-time choice, not a property of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.errors import ValidationError

BATCHES = (1, 3)


@dataclass
class Check:
    """One output of one artifact at one batch size, compared with its reference."""

    artifact: str
    precision: str
    reference: str
    batch: int
    task: str
    max_abs_err: float
    rel_err: float  # raw relative error, mtlkd.accuracy.raw_rel_err
    kept: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        kept = "  ".join(_fmt_kept(k, v) for k, v in self.kept.items())
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.failures)
        return (f"{self.artifact} [{self.precision} vs {self.reference}] batch {self.batch} {self.task:<6} "
                f"raw err {self.rel_err:.1e}  {kept}  {status}")  # fmt: skip


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

    from mtlkd.runtime.backends.onnxruntime_backend import session_options

    if session is None:
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
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


def compare(
    artifact: str,
    precision: str,
    reference: str,
    refs: dict[int, dict[str, np.ndarray]],
    outs: dict[int, dict[str, np.ndarray]],
    trained: bool = True,
) -> list[Check]:
    """Compare outputs per batch size and task (mtlkd.accuracy); each Check lists what broke its tolerance."""
    from mtlkd.accuracy import compare_outputs, verdict

    checks = []
    for batch, ref_batch in refs.items():
        for task, error in compare_outputs(ref_batch, outs[batch]).items():
            check = Check(artifact, precision, reference, batch, task, error.max_abs_err, error.raw_rel_err,
                          dict(error.agreement))  # fmt: skip
            if error.raw_rel_err == float("inf") and outs[batch][task].shape != ref_batch[task].shape:
                check.failures.append(f"shape {outs[batch][task].shape} != {ref_batch[task].shape}")
            else:
                check.failures += [f.split(": ", 1)[1] for f in verdict({task: error}, precision, trained).failures]
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
    """Per task, the worst value over batch sizes: errors and accuracy kept (for tables and JSON)."""
    out: dict[str, Any] = {}
    for c in checks:
        entry = out.setdefault(c.task, {"max_abs_err": 0.0, "raw_rel_err": 0.0})
        entry["max_abs_err"] = max(entry["max_abs_err"], c.max_abs_err)
        entry["raw_rel_err"] = max(entry["raw_rel_err"], c.rel_err)
        for key, value in c.kept.items():
            worse = min if key == "seg_agreement" else max
            entry[key] = worse(entry.get(key, value), value)
    return out
