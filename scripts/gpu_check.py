"""One GPU check (`make gpu-check`): what this machine's GPU gives mtlkd, measured in a few minutes.

It runs from the checkout in place (`PYTHONPATH=.`, no install), so it needs only what a CUDA machine with
torch has; every path whose package is missing is a row that says "not installed", not a failure.

1. trains vit-micro (96x128) briefly on synthetic scenes on the GPU, so its outputs are not near-ties;
2. torch on CUDA at fp32, TF32, bf16 and fp16 (autocast), eager and replayed as a CUDA graph: latency from
   CUDA events, and each output judged against fp32 eager by mtlkd's accuracy policy (mtlkd/accuracy.py);
3. MTL (one network, three tasks) against three single-task networks, timed the same way, batch 1 and 8;
4. `Predictor` through its torch backend on CUDA against the same checkpoint on the CPU;
5. TensorRT engines (fp32, fp16, int8, through the export pipeline) and ONNX Runtime's CUDA provider,
   when they are installed.

The table is printed and written to OUT/gpu-check.txt (and .json). Exit 1 when a check fails. Without an
NVIDIA GPU it prints one line and exits 0; `--stand-in-cpu` runs every step that can run on the CPU build of
torch instead (the tests use it), with wall-clock timing in place of CUDA events.
Run: `python scripts/gpu_check.py [--out runs/gpu-check]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, run in place

TASKS = ["seg", "depth", "normal"]
MODES = ("fp32", "tf32", "bf16", "fp16")  # torch compute modes; tf32 is judged by fp16's tolerance (10 bits)
Row = tuple[str, str, str]  # (check, result, detail); result: ok, FAIL, not installed, n/a


def gpu_problem() -> str | None:
    """None when torch sees an NVIDIA GPU, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed to look for one"
    return None if torch.cuda.is_available() else "torch.cuda finds none"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def train(folder: Path, device: str, steps: int, preset: str) -> Path:
    """A briefly trained MTL checkpoint (seconds on any GPU)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.data.synthetic import render_scene
    from mtlkd.models import create_model, preset_config
    from mtlkd.tasks import get_task

    config = preset_config(preset, TASKS, num_classes=13)
    height, width = config["backbone"]["img_size"]
    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, height, width) for _ in range(min(128, 16 * steps))]

    def stack(key: str, channels_last: bool) -> torch.Tensor:
        array = np.stack([s[key] for s in scenes])
        return torch.from_numpy(array.transpose(0, 3, 1, 2).copy() if channels_last else array).to(device)

    x = stack("image", True)
    targets = {"seg": stack("label", False), "depth": stack("depth", True), "normal": stack("normal", True)}
    torch.manual_seed(0)
    model = create_model(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(scenes), (16,), device=device)
        out = model(x[idx])
        loss = sum(get_task(t).loss(out[t], targets[t][idx]) for t in TASKS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(folder / "mtl" / "model.safetensors", state, model_metadata(config))


def single_task_nets(device: str, preset: str) -> list:
    """Three single-task networks of the same preset (random weights: latency does not depend on them)."""
    import torch

    from mtlkd.models import create_model, preset_config

    torch.manual_seed(1)
    return [create_model(preset_config(preset, [t], num_classes=13, arch="stl")).to(device).eval() for t in TASKS]


class Runner:
    """One network in one compute mode, called eagerly or replayed from a captured CUDA graph."""

    def __init__(self, model, mode: str, batch, graph: bool = False):
        import torch

        self.model, self.mode, self.graph = model, mode, None
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.device = batch.device.type
        self.static = batch.clone()
        if graph:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up on a side stream, as capture requires
                    self.eager(self.static)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.eager(self.static)

    def eager(self, x):
        import torch

        tf32 = self.mode == "tf32"
        with torch.inference_mode(), torch.autocast(self.device, self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):  # fmt: skip
            old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            try:
                return self.model(x)
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

    def __call__(self):
        if self.graph is None:
            return self.eager(self.static)
        self.graph.replay()
        return self.out


def median_ms(run: Callable[[], object], device: str, runs: int) -> float:
    """Median time of one call: CUDA events around it on a GPU, the wall clock on the CPU stand-in."""
    import torch

    for _ in range(3):
        run()
    times = []
    for _ in range(runs):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times))


def judged(reference: dict, outputs: dict, precision: str) -> tuple[bool, str]:
    """mtlkd's accuracy policy on raw outputs (numpy, N x C x h x w): kept?, and the worst figures."""
    from mtlkd.accuracy import compare_outputs, verdict

    errors = compare_outputs(reference, outputs)
    result = verdict(errors, "fp16" if precision == "tf32" else precision, trained=True)
    text = ", ".join(f"{t} err {e.raw_rel_err:.1e}" + "".join(f" {k} {v:.3g}" for k, v in e.agreement.items())
                     for t, e in errors.items())  # fmt: skip
    return result.kept, text + ("" if result.kept else " | " + "; ".join(result.failures))


def as_numpy(out: dict) -> dict:
    return {t: out[t].float().cpu().numpy() for t in TASKS}


def torch_rows(checkpoint: Path, device: str, runs: int, preset: str) -> list[Row]:
    """Every compute mode, eager and as a CUDA graph: accuracy against fp32 eager, latency; MTL vs 3 STL."""
    import torch

    from mtlkd.models import load_model

    model, meta = load_model(str(checkpoint), device=device)
    model.eval().full_resolution = False
    stl = single_task_nets(device, preset)
    for net in stl:
        net.full_resolution = False
    images = check_images(meta["input_size"], 8)
    rows: list[Row] = []
    for batch in (1, 8):
        x = torch.from_numpy(images[:batch]).to(device)
        reference = as_numpy(Runner(model, "fp32", x)())
        for mode in MODES:
            for graph in (False, True):
                name = f"torch {mode} {'CUDA graph' if graph else 'eager'} batch {batch}"
                if graph and device != "cuda":
                    rows.append((name, "n/a", "CUDA graphs need a GPU (CPU stand-in)"))
                    continue
                try:
                    runner = Runner(model, mode, x, graph)
                    kept, detail = judged(reference, as_numpy(runner()), mode)
                    mtl_ms = median_ms(runner, device, runs)
                    stl_ms = sum(median_ms(Runner(net, mode, x, graph), device, runs) for net in stl)
                except Exception as exc:  # one line per failed check; the table still prints
                    rows.append((name, "FAIL", f"{type(exc).__name__}: {exc}"))
                    continue
                rows.append((name, "ok" if kept else "FAIL",
                             f"MTL {mtl_ms:.3f} ms, 3 STL {stl_ms:.3f} ms (MTL/STL {mtl_ms / stl_ms:.2f}); {detail}"))
                print(f"gpu-check: {name}: {rows[-1][1]}", file=sys.stderr, flush=True)
    return rows


def check_images(input_size, n: int) -> np.ndarray:
    from mtlkd.export.validate import validation_images

    return validation_images(input_size, n=n, seed=7)


def predictor_row(checkpoint: Path, device: str) -> Row:
    """The Predictor's torch backend on `device` against the same checkpoint on the CPU, raw outputs."""
    import torch

    from mtlkd.runtime import Predictor

    name = f"Predictor torch {device} vs cpu, batch 1/3/9"
    on_device = Predictor.load(checkpoint, backend="torch", device=device)
    on_cpu = Predictor.load(checkpoint, backend="torch", device="cpu")
    precision = "tf32" if device == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"  # torch's default
    images = check_images(on_cpu.input_size, 9)
    parts, ok = [], True
    for n in (1, 3, 9):
        kept, detail = judged(on_cpu.run_raw(images[:n]), on_device.run_raw(images[:n]), precision)
        ok &= kept
        parts.append(f"{n}: {detail}")
    return name, "ok" if ok else "FAIL", f"as {precision}; " + " / ".join(parts)


def engine_rows(checkpoint: Path, out: Path, device: str) -> list[Row]:
    """TensorRT engines through the export pipeline and ONNX Runtime's CUDA provider, where installed (on the
    CPU stand-in, what is installed is said but nothing runs)."""
    import onnxruntime as ort

    rows: list[Row] = []
    if not (installed("tensorrt") and installed("cuda")):
        rows.append(("TensorRT engines", "not installed", "pip install -e '.[gpu]' (tensorrt, cuda-python)"))
    elif device != "cuda":
        rows.append(("TensorRT engines", "n/a", "installed; the CPU stand-in builds no engine"))
    else:
        for precision in ("fp32", "fp16", "int8"):
            passed, detail = export(checkpoint, out / precision, precision)
            rows.append((f"TensorRT engine {precision}, validated by mtl-export", "ok" if passed else "FAIL",
                         detail))  # fmt: skip
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return rows + [("ONNX Runtime CUDA", "not installed", "onnxruntime has no CUDAExecutionProvider here "
                                                              "(pip install onnxruntime-gpu, alone)")]  # fmt: skip
    if device != "cuda":
        return rows + [("ONNX Runtime CUDA", "n/a", "installed; the CPU stand-in does not run it")]
    from mtlkd.runtime import Predictor

    onnx = out / "fp32" / "model.onnx"
    if not onnx.is_file():
        passed, detail = export(checkpoint, out / "fp32", "fp32", formats=["onnx"])
        if not passed:
            return rows + [("ONNX Runtime CUDA", "FAIL", detail)]
    cpu = Predictor.load(checkpoint, backend="torch")
    gpu = Predictor.load(onnx, backend="onnxruntime", device="cuda")
    images = check_images(cpu.input_size, 9)
    kept, detail = judged(cpu.run_raw(images), gpu.run_raw(images), "fp32")
    return rows + [("ONNX Runtime CUDA vs torch cpu, batch 9", "ok" if kept else "FAIL", detail)]


BATCH_PROFILE = "1,4,9"  # mtl-export --batch-size MIN,OPT,MAX


def export(checkpoint: Path, out: Path, precision: str, formats: list[str] | None = None) -> tuple[bool, str]:
    """What `mtl-export --trt --precision P --batch-size 1,4,9` does, through the export pipeline (each file
    validated against PyTorch or the fp32 graph); (passed, worst accuracy kept or the error line)."""
    from mtlkd.errors import UserError
    from mtlkd.export.pipeline import ExportOptions, export_model

    formats = formats or ["onnx", "tensorrt"]
    options = ExportOptions(formats=formats, precisions=[precision], batch_profile=BATCH_PROFILE)
    try:
        result = export_model(checkpoint, out, options)
    except UserError as exc:  # a failed check (ValidationError) or a refused option: its one line
        return False, str(exc).splitlines()[0]
    if result.problems:  # e.g. an engine built but not runnable here
        return False, "; ".join(result.problems)
    row = next(a.to_dict() for a in result.artifacts if a.format == formats[-1])
    text = ", ".join(f"{task} " + ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "max_abs_err")
                     for task, values in row["checks"].items())  # fmt: skip
    return True, text


def table(rows: list[Row], header: str) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [header, "", f"{'check':<{width}}  {'result':<13}  detail"]
    lines += [f"{check:<{width}}  {result:<13}  {detail}" for check, result, detail in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--stand-in-cpu", action="store_true", help="run on torch's CPU build (tests)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the checked model")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--preset", default="vit-micro", help="the network checked (vit-nano for a quick test)")
    args = parser.parse_args(argv)
    device = "cpu" if args.stand_in_cpu else "cuda"
    problem = None if args.stand_in_cpu else gpu_problem()
    if problem:
        print(f"gpu-check: no usable NVIDIA GPU here ({problem}); nothing to check")
        return 0
    import torch

    from mtlkd.runtime.cpu import cpu_name

    began = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU stand-in: {cpu_name()}"
    header = f"gpu-check on {name}, torch {torch.__version__}, {args.preset}"
    checkpoint = train(args.out, device, args.steps, args.preset)
    rows: list[Row] = [("train", "ok", f"{args.preset}, {args.steps} steps on {device}")]
    rows += torch_rows(checkpoint, device, args.runs, args.preset)
    try:
        rows.append(predictor_row(checkpoint, device))
    except Exception as exc:
        rows.append(("Predictor torch", "FAIL", f"{type(exc).__name__}: {exc}"))
    rows += engine_rows(checkpoint, args.out, device)
    header += f"; {time.perf_counter() - began:.0f} s"
    text = table(rows, header)
    args.out.mkdir(parents=True, exist_ok=True)
    from mtlkd.files import atomic_write

    record = {"header": header, "rows": [{"check": c, "result": r, "detail": d} for c, r, d in rows]}
    atomic_write(args.out / "gpu-check.txt", lambda tmp: Path(tmp).write_text(text))
    atomic_write(args.out / "gpu-check.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    print(text + f"gpu-check: table in {args.out / 'gpu-check.txt'}")
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
