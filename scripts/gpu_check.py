"""One GPU check (`make gpu-check`): every GPU path of mtlkd on this machine, in a few minutes.

1. trains vit-micro (96x128) briefly on synthetic scenes on the GPU, so outputs are not near-ties;
2. the export pipeline (what `mtl-export --trt` runs) at fp32, fp16 and int8: each engine is built and
   compared with PyTorch (fp32) or the fp32 graph (fp16, int8) by the exporter itself, with the tolerances of
   mtlkd/export/validate.py;
3. `Predictor` on 1, 3 and 9 images through TensorRT and ONNX Runtime's CUDA provider, against torch;
4. MTL (one engine, three tasks) against three STL engines (one task each), timed with CUDA events;
5. prints one table. Exit 1 when any check fails.

Without an NVIDIA GPU it prints one line saying so and exits 0; on a GPU without TensorRT or cuda-python
it says what to install and exits 1. Run: `python scripts/gpu_check.py [--out runs/gpu-check]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

PRESET, TASKS, STEPS, RUNS = "vit-micro", ["seg", "depth", "normal"], 300, 50


def gpu_problem() -> str | None:
    """None when an NVIDIA GPU is usable, else why not (CUDA's own words)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            import torch
        except ImportError:
            return "neither cuda-python nor torch is installed to look for one"
        return None if torch.cuda.is_available() else "torch.cuda finds none"
    from mtlkd.runtime.backends.tensorrt_backend import gpu_status

    count, problem = gpu_status(cudart)
    return None if count else problem


def train(folder: Path) -> Path:
    """A briefly trained MTL checkpoint (a few seconds on any GPU)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.data.synthetic import render_scene
    from mtlkd.models import create_model, preset_config
    from mtlkd.tasks import get_task

    config = preset_config(PRESET, TASKS, num_classes=13)
    height, width = config["backbone"]["img_size"]
    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, height, width) for _ in range(128)]
    x = torch.from_numpy(np.stack([s["image"] for s in scenes]).transpose(0, 3, 1, 2).copy()).cuda()
    targets = {"seg": torch.from_numpy(np.stack([s["label"] for s in scenes])).cuda(),
               "depth": torch.from_numpy(np.stack([s["depth"] for s in scenes]).transpose(0, 3, 1, 2).copy()).cuda(),
               "normal": torch.from_numpy(np.stack([s["normal"] for s in scenes]).transpose(0, 3, 1, 2).copy()).cuda()}
    torch.manual_seed(0)
    model = create_model(config).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(STEPS):
        idx = torch.randint(0, len(scenes), (16,), device="cuda")
        out = model(x[idx])
        loss = sum(get_task(t).loss(out[t], targets[t][idx]) for t in TASKS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(folder / "mtl" / "model.safetensors", state, model_metadata(config))


def stl_checkpoint(folder: Path, task: str) -> Path:
    """A single-task model of the same preset (random weights: latency does not depend on them)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config

    config = preset_config(PRESET, [task], num_classes=13, arch="stl")
    torch.manual_seed(1)
    return save_checkpoint(folder / f"stl-{task}" / "model.safetensors", create_model(config).state_dict(),
                           model_metadata(config, random_weights=True))  # fmt: skip


BATCH_PROFILE = "1,4,9"  # mtl-export --batch-size MIN,OPT,MAX: the Predictor checks below run 1, 3 and 9 images


def export(checkpoint: Path, out: Path, precision: str) -> tuple[bool, str]:
    """What `mtl-export --trt --precision P --batch-size 1,4,9` does, through the export pipeline it is a thin
    layer over (the engine is validated against PyTorch or the fp32 graph); (passed, worst accuracy kept or
    the error line)."""
    from mtlkd.errors import UserError
    from mtlkd.export.pipeline import ExportOptions, export_model

    options = ExportOptions(formats=["onnx", "tensorrt"], precisions=[precision], batch_profile=BATCH_PROFILE)
    try:
        result = export_model(checkpoint, out, options)
    except UserError as exc:  # a failed check (ValidationError) or a refused option: its one line
        return False, str(exc).splitlines()[0]
    if result.problems:  # e.g. an engine built but not runnable here
        return False, "; ".join(result.problems)
    row = next(a.to_dict() for a in result.artifacts if a.format == "tensorrt")  # model[.fp16|.int8].engine
    text = ", ".join(f"{task} " + ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "max_abs_err")
                     for task, values in row["checks"].items())  # fmt: skip
    return True, text


def predictor_agreement(model_path: Path, backend: str, reference, images: list[np.ndarray]) -> str:
    """Predictor through `backend` on cuda vs torch on the same images: worst seg agreement, depth error."""
    from mtlkd.runtime import Predictor

    predictor = Predictor.load(model_path, backend=backend, device="cuda")
    if predictor.device != "cuda":
        raise RuntimeError(f"{backend} reports device {predictor.device}")
    parts = []
    for n in (1, 3, 9):
        got, want = predictor.predict_batch(images[:n]), reference.predict_batch(images[:n])
        seg = min(float((g["seg"] == w["seg"]).mean()) for g, w in zip(got, want, strict=True)) * 100
        depth = max(float(np.abs(g["depth"] - w["depth"]).mean() / np.abs(w["depth"]).mean())
                    for g, w in zip(got, want, strict=True)) * 100  # fmt: skip
        parts.append(f"{n}: seg {seg:.2f}% depth {depth:.3f}%")
        if seg < 99.0 or depth > 1.0:
            raise RuntimeError(f"{backend} disagrees with torch at {n} images: " + parts[-1])
    return "; ".join(parts)


def cuda_event_ms(engine: Path, batch: int) -> float:
    """Median GPU time of one pass (copies included) at `batch`, from CUDA events on the backend's stream."""
    from cuda.bindings import runtime as cudart

    from mtlkd.runtime.backends import load_backend
    from mtlkd.runtime.backends.tensorrt_backend import _check

    backend = load_backend("tensorrt", engine, "cuda")
    x = np.random.default_rng(0).random((batch, 3, *backend.input_size), dtype=np.float32)
    start, end = _check(cudart.cudaEventCreate(), "cudaEventCreate", cudart), _check(cudart.cudaEventCreate(),
                                                                                     "cudaEventCreate", cudart)
    times = []
    for i in range(RUNS + 5):
        _check(cudart.cudaEventRecord(start, backend.stream), "cudaEventRecord", cudart)
        backend.run(x, backend.tasks)
        _check(cudart.cudaEventRecord(end, backend.stream), "cudaEventRecord", cudart)
        _check(cudart.cudaEventSynchronize(end), "cudaEventSynchronize", cudart)
        if i >= 5:  # warm-up
            times.append(float(_check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime", cudart)))
    backend.close()
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    args = parser.parse_args()
    problem = gpu_problem()
    if problem:
        print(f"gpu-check: no usable NVIDIA GPU here ({problem}); nothing to check")
        return 0
    import importlib.util

    missing = [m for m in ("tensorrt", "cuda.bindings", "torch", "onnxruntime")
               if importlib.util.find_spec(m.split(".")[0]) is None]  # fmt: skip
    if missing:
        print(f"gpu-check: a GPU is here but {', '.join(missing)} is missing: pip install -e '.[train,gpu]'")
        return 1
    began = time.perf_counter()
    rows: list[tuple[str, str, str]] = []  # (check, result, detail)
    checkpoint = train(args.out)
    rows.append(("train", "ok", f"{PRESET}, {STEPS} steps"))
    for precision in ("fp32", "fp16", "int8"):
        passed, detail = export(checkpoint, args.out / precision, precision)
        rows.append((f"engine {precision} vs PyTorch", "ok" if passed else "FAIL", detail))

    from mtlkd.data.synthetic import render_scene
    from mtlkd.runtime import Predictor

    rng = np.random.default_rng(7)
    images = [(render_scene(rng, 120, 160)["image"] * 255).astype(np.uint8) for _ in range(9)]
    reference = Predictor.load(checkpoint, backend="torch")
    fp32 = args.out / "fp32"
    for backend, path in (("tensorrt", fp32 / "model.engine"), ("onnxruntime", fp32 / "model.onnx")):
        try:
            rows.append((f"Predictor {backend} cuda 1/3/9", "ok", predictor_agreement(path, backend, reference,
                                                                                     images)))  # fmt: skip
        except Exception as exc:  # one line per failed check; the table still prints
            rows.append((f"Predictor {backend} cuda 1/3/9", "FAIL", f"{type(exc).__name__}: {exc}"))

    try:
        mtl = {b: cuda_event_ms(fp32 / "model.engine", b) for b in (1, 8)}
        stl_engines = []
        for task in TASKS:
            passed, detail = export(stl_checkpoint(args.out, task), args.out / f"stl-{task}" / "export", "fp32")
            if not passed:
                raise RuntimeError(f"STL {task}: {detail}")
            stl_engines.append(args.out / f"stl-{task}" / "export" / "model.engine")
        stl = {b: sum(cuda_event_ms(e, b) for e in stl_engines) for b in (1, 8)}
        for b in (1, 8):
            rows.append((f"MTL vs 3 STL, fp32, batch {b}", "ok",
                         f"MTL {mtl[b]:.2f} ms, STL sum {stl[b]:.2f} ms, ratio {mtl[b] / stl[b]:.2f}"))  # fmt: skip
    except Exception as exc:
        rows.append(("MTL vs 3 STL (CUDA events)", "FAIL", f"{type(exc).__name__}: {exc}"))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}}  result  detail")
    for check, result, detail in rows:
        print(f"{check:<{width}}  {result:<6}  {detail}")
    print(f"\ngpu-check: {time.perf_counter() - began:.0f} s, files in {args.out}")
    return 1 if any(r[1] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
