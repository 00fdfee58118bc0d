"""`mtl-bench`: MTL vs the chain of STL models on every backend and precision, against the machine's own
matrix-product ceiling, with accuracy against PyTorch fp32, end-to-end overhead and the issue's targets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mtlkd.errors import UserError
from mtlkd.ui import progress_bar, user_errors

app = typer.Typer(add_completion=False)


def _list(text: str | None, known: tuple[str, ...] | list[str], option: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in known]
    if unknown or not items:
        what = ", ".join(unknown) or "empty list"
        raise UserError(f"{option} {text!r}: unknown {what}; choose from {', '.join(known)}")
    return list(dict.fromkeys(items))


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`--size HxW` with mtl-data's parser, as this command's one-line user error."""
    from mtlkd.cli.data import parse_size as parse_hw

    if text is None:
        return None
    try:
        return parse_hw(text)
    except typer.BadParameter:
        raise UserError(f"--size {text!r}: expected HxW with both sides at least 8 pixels, e.g. 384x384") from None


def command(
    preset: str = typer.Option("vit-tiny", "--preset", metavar="NAME",
                               help="Build this preset with random weights (latency does not depend on them): an "
                                    "MTL model (seg, depth, normal) and one STL model per task."),
    mtl: Path | None = typer.Option(None, "--mtl", metavar="CKPT", help="A multi-task model.safetensors instead."),
    stl: list[Path] = typer.Option([], "--stl", metavar="CKPT",
                                   help="A single-task model.safetensors (repeat once per task)."),
    size: str | None = typer.Option(None, "--size", metavar="HxW", help="Input size of the preset [default: its own]."),
    backends: str | None = typer.Option(None, "--backends", metavar="LIST",
                                        help="torch,onnxruntime,openvino,tensorrt [default: every one installed]."),
    precisions: str = typer.Option("fp32,fp16,int8,bf16", "--precisions", metavar="LIST",
                                   help="fp16/int8: graphs from mtlkd.export; bf16 where the backend and CPU can."),
    variants: str | None = typer.Option(None, "--variants", metavar="LIST",
                                        help="Extra rows: ort-opt, ort-spin, ov-throughput, ov-int8-bf16, ov-nncf, "
                                             "torch-compile, torch-spin."),
    batch: int = typer.Option(8, "--batch", min=1, help="Batch size of the throughput measurement."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR",
                                         help="MTAN-layout dataset for accuracy (val) and int8 calibration (train) "
                                              "[default: synthetic scenes]."),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help="Write every row and the summary."),
    plot: Path | None = typer.Option(None, "--plot", metavar="PATH", help="Write a PNG chart of the latencies."),
    repeats: int = typer.Option(10, "--repeats", min=1,
                                help="Minimum timed runs; more follow until the median's 95% CI is within "
                                     "+-2% or --budget is spent."),
    rounds: int = typer.Option(1, "--rounds", min=1,
                               help="Measure every configuration this many times, in alternating order, and pool "
                                    "the samples (evens out a machine whose load drifts during the run)."),
    budget: float = typer.Option(20.0, "--budget", min=0.0, metavar="SECONDS",
                                 help="Time budget per measurement after the minimum runs."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads [default: physical cores]."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda"),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate",
                                 help="A fresh process per configuration (honest peak memory, no shared state)."),
    work_dir: Path | None = typer.Option(None, "--work-dir", metavar="DIR",
                                         help="Where exports are cached [default: ~/.cache/mtlkd/bench]."),
    accuracy_images: int = typer.Option(4, "--accuracy-images", min=1, help="Images for the accuracy columns."),
    calib_size: int = typer.Option(16, "--calib-size", min=1, help="Calibration images of the int8 graphs."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Measure mtl-infer per image against the network."),
    auto_cache: bool = typer.Option(True, "--auto-cache/--no-auto-cache",
                                    help="Write the measured winner into the runtime's backend=auto cache."),
    ceiling_budget: float = typer.Option(1.0, "--ceiling-budget", min=0.0, metavar="SECONDS",
                                         help="Time per precision for the matrix-product ceiling (before and "
                                              "after the rows; the higher is kept)."),
) -> None:  # fmt: skip
    """Benchmark one multi-task model against its single-task models on every backend and precision.

    Per row: latency p50/p90 at batch 1, throughput at --batch, parameters, file size, peak memory, GFLOP
    per image, the achieved rate as a fraction of this machine's matrix-product ceiling of that precision
    (measured in the same run), and accuracy against PyTorch fp32. The summary gives MTL / sum of STL
    (latency, parameters, size) per backend+precision, speed-ups against PyTorch fp32 eager, the per-image
    overhead of mtl-infer, and a pass/fail line per target. Exports are cached in --work-dir.

    Examples:
      mtl-bench --preset vit-tiny --json bench.json --plot bench.png
      mtl-bench --preset vit-micro --backends torch,onnxruntime --precisions fp32,int8 --repeats 5
      mtl-bench --mtl runs/okd/model.safetensors --stl runs/seg/model.safetensors --stl runs/depth/model.safetensors
      mtl-bench --preset vit-tiny --variants ort-opt,ov-throughput,torch-compile --data-dir data/synthetic
    """
    from mtlkd.bench import BACKENDS, PRECISIONS, VARIANTS
    from mtlkd.bench.run import BenchOptions
    from mtlkd.files import cannot_write
    from mtlkd.models.presets import PRESETS
    from mtlkd.runtime.backends import INSTALL_HINTS, available, installed

    with user_errors():
        if preset not in PRESETS:
            raise UserError(f"--preset {preset!r}: unknown; known presets: {', '.join(PRESETS)}")
        if stl and mtl is None:
            raise UserError("--stl needs --mtl (the multi-task model they are compared with)")
        for path in [p for p in [mtl, *stl] if p is not None]:
            if not path.is_file():
                raise UserError(f"{path}: no such checkpoint file")
        if device not in ("cpu", "cuda"):
            raise UserError(f"--device {device!r}: use cpu or cuda")
        backend_list = _list(backends, BACKENDS, "--backends")
        for name in backend_list or []:
            if not installed(name):
                raise UserError(f"--backends {name}: not installed ({INSTALL_HINTS[name]})")
        if device == "cuda" and not any(installed(n) and available(n, "cuda") for n in backend_list or BACKENDS):
            raise UserError("--device cuda: no backend here can run on a CUDA GPU (none found, or no GPU build "
                            "of torch/onnxruntime/TensorRT installed); use --device cpu")
        for option, path in (("--json", json_path), ("--plot", plot)):
            problem = cannot_write(path) if path is not None else None
            if problem:  # checked before the run, so that the measurements are not lost at its end
                raise UserError(f"{option} {path}: {problem}")
        if data_dir is not None and not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir}: no such folder")
        options = BenchOptions(
            preset=preset, mtl=mtl, stl=list(stl), size=parse_size(size), backends=backend_list,
            precisions=_list(precisions, PRECISIONS, "--precisions") or [],
            variants=_list(variants, tuple(VARIANTS), "--variants") or [], batch=batch, data_dir=data_dir,
            repeats=repeats, rounds=rounds, budget=budget, threads=threads, device=device, isolate=isolate,
            work_dir=work_dir,
            accuracy_images=accuracy_images, calib_size=calib_size, e2e=e2e, auto_cache=auto_cache,
            ceiling_budget=ceiling_budget,
        )  # fmt: skip
        result = _run(options)
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out.width = 200  # logs and pipes: do not wrap the tables
    render(result, out)
    if json_path is not None:
        from mtlkd.checkpoint import write_json

        write_json(json_path, result)
        out.print(f"wrote {json_path}")
    if plot is not None:
        from mtlkd.bench.plot import plot_result

        plot_result(result, plot)
        out.print(f"wrote {plot}")


def _run(options: Any) -> dict[str, Any]:
    import warnings

    from mtlkd.bench.run import run_benchmark

    with progress_bar("step") as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter and converter chatter; failures are reported per row
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int, info: str) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=done, total=total, info=info)

        return run_benchmark(options, progress, argv=_argv())


def _argv() -> list[str] | None:
    """The command line as typed, for the JSON (None under a test runner, whose argv is not ours)."""
    name = Path(sys.argv[0]).name
    if name == "mtl" and sys.argv[1:2] == ["bench"]:
        return ["mtl", *sys.argv[1:]]
    return ["mtl-bench", *sys.argv[1:]] if name in ("mtl-bench", "bench.py") else None


# ------------------------------------------------------------------------------------------ render


def _f(value: Any, fmt: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def render(result: dict[str, Any], out: Any) -> None:
    """The rich tables: rows, the MTL / STL summary, end to end, targets."""
    from rich.table import Table

    machine = result["machine"]
    out.print(f"[bold]{machine['cpu']}[/], {machine['physical_cores']} cores, {machine['threads']} threads, "
              f"features: {' '.join(machine['features'])}; load average {machine['load_avg']}")  # fmt: skip
    ceilings = ", ".join(f"{p} {c['gflops']:.0f} GFLOP/s ({c['method']}{'' if c['native'] else ', emulated'})"
                         for p, c in result["ceilings"].items())  # fmt: skip
    out.print(f"ceilings: {ceilings}")
    table = Table(title="rows (latency at batch 1; accuracy against PyTorch fp32)", show_lines=False)
    for col in ("configuration", "model", "p50 ms", "p90 ms", f"img/s @{result['options']['batch']}", "params M",
                "GFLOP", "GFLOP/s", "% ceil", "MB", "mem MB", "seg %", "depth %", "normal °"):
        table.add_column(col, justify="left" if col in ("configuration", "model") else "right")
    weights = {bool(r.get("random_weights")) for r in result["rows"]}
    mixed = len(weights) == 2  # a trained MTL beside random-weight STL counterparts
    for r in result["rows"]:
        if r.get("error"):
            table.add_row(r["label"], r["model"], f"[red]{r['error'][:90]}[/]")
            continue
        model = r["model"] + ("*" if r.get("random_weights") and mixed else "")
        table.add_row(r["label"], model, _f(r["p50_ms"], ".2f"), _f(r["p90_ms"], ".2f"),
                      _f(r["throughput_ips"], ".2f"), _f(r["params"] / 1e6, ".3f"), _f(r["gflop"], ".3f"),
                      _f(r["achieved_gflops"], ".1f"), _f(100 * r["fraction_of_ceiling"], ".0f"),
                      _f(r["file_mb"], ".2f"), _f(r["peak_mem_mb"], ".0f"), _f(r.get("seg_agreement"), ".2f"),
                      _f(r.get("depth_rel_err"), ".3f"), _f(r.get("normal_angle"), ".3f"))  # fmt: skip
    out.print(table)
    if mixed:
        out.print("* random weights (the same architecture with one head): latency, not accuracy; a configuration's "
                  "accuracy verdict is the trained model's")  # fmt: skip
    summary = result["summary"]
    table = Table(title=f"MTL / sum of STL, and speed-ups against {summary['reference'] or 'torch fp32'} eager")
    for col in ("configuration", "MTL ms", "ΣSTL ms", "latency", "params", "size", "GFLOP", "MTL speed-up",
                "STL speed-up", "MTL vs torch ΣSTL", "% ceil", "accuracy"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for c in summary["configs"]:
        kept = {True: "[green]kept[/]", False: "[red]lost[/]", None: "-"}[c["accuracy_kept"]]
        table.add_row(c["label"], _f(c["mtl_p50_ms"], ".2f"), _f(c["stl_sum_p50_ms"], ".2f"),
                      _f(c["latency_ratio"], ".3f"), _f(c["params_ratio"], ".3f"), _f(c["size_ratio"], ".3f"),
                      _f(c["gflop_ratio"], ".3f"), _f(c["speedup_vs_torch_fp32"], ".2f"),
                      _f(c["stl_speedup_vs_torch_fp32"], ".2f"), _f(c["mtl_vs_torch_stl_chain"], ".2f"),
                      _f(c["fraction_of_ceiling"] and 100 * c["fraction_of_ceiling"], ".0f"), kept)  # fmt: skip
    out.print(table)
    e2e = result.get("end_to_end")
    if e2e and not e2e.get("error"):
        h, w = e2e["image_size"]
        out.print(f"end to end ({e2e['label']}, {h}x{w} JPEG through Predictor): {e2e['total_ms']:.2f} ms = decode "
                  f"{e2e['decode_ms']:.2f} + preprocess {e2e['preprocess_ms']:.2f} + network {e2e['network_ms']:.2f} + "
                  f"postprocess {e2e['postprocess_ms']:.2f}; network alone (paired) {e2e['network_alone_ms']:.2f} ms; "
                  f"overhead {e2e['overhead_ms']:.2f} ms = {e2e['overhead_pct']:.1f}% of the network "
                  f"(decode+pre+post {e2e['stages_overhead_ms']:.2f} ms)")  # fmt: skip
    elif e2e:
        out.print(f"end to end ({e2e['label']}): [red]{e2e['error']}[/]")
    for t in summary["targets"]:
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]n/a [/]"}[t["passed"]]
        value = "not measured" if t["value"] is None else f"{t['value']:.3g}"
        if t["name"] == "accuracy" and t["passed"] is not None:
            value = "kept" if t["passed"] else "lost"
        where = f" ({t['config']})" if t.get("config") else ""
        out.print(f"{mark} {t['description']}: {value}{where}")
    if summary.get("targets_note"):
        out.print(f"[dim]note: {summary['targets_note']}[/]")
    for s in result["skipped"]:
        out.print(f"[dim]skipped {s['backend']} {s['precision']} {s['variant']}: {s['reason']}[/]")
    for entry in result.get("auto_cache") or []:
        out.print(f"[dim]auto backend for {Path(entry['file']).name}: {entry['backend']} {entry['timings_ms']}[/]")


app.command()(command)

if __name__ == "__main__":
    app()
