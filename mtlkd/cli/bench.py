"""`mtl-bench`: what one multi-task pass saves against the single-task models it replaces, on every backend
and precision this machine runs well, against the machine's own matrix-product limit, with the accuracy
each precision keeps. The command parses and prints; the benchmark is `mtlkd.bench.run_benchmark`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mtlkd.cli.common import (
    JSON_STDOUT,
    MtlCommand,
    backend_names_text,
    check_json_target,
    emit_json,
    late_help,
    parse_hw,
    parse_list,
)
from mtlkd.errors import ConfigError
from mtlkd.ui import progress_bar, user_errors


def variant_names() -> list[str]:
    """The benchmark's optional rows over the backends registered now (`mtlkd.bench.plan.variants`)."""
    from mtlkd.bench.plan import variants

    return list(variants())


app = typer.Typer(add_completion=False, rich_markup_mode="rich")


def command(
    model: Path | None = typer.Argument(None, metavar="MODEL", show_default=False,
                                        help="A trained multi-task model.safetensors (default: the --preset, "
                                             "trained briefly on synthetic scenes)."),
    stl: list[Path] = typer.Option([], "--stl", metavar="CKPT", show_default=False,
                                   help="A single-task model.safetensors, once per task (default: random-weight "
                                        "ones of MODEL's architecture); or TASKS=MODEL\\[,settings] (as mtl-distill's "
                                        "--teacher, any format): then MODEL, a distilled student, is timed against "
                                        "those models' sum, each on its fastest accurate backend, with agreement."),
    preset: str = typer.Option("vit-tiny", "--preset", metavar="NAME", help="The model when no MODEL is given."),
    img_size: str | None = typer.Option(None, "--img-size", metavar="HxW", help="Input size of the preset "
                                        "(default: its own)."),
    backends: str | None = late_help(typer.Option(None, "--backends", metavar="LIST"),
                                     lambda: f"{backend_names_text(',')} (default: every one installed)."),
    precisions: str | None = typer.Option(None, "--precisions", metavar="LIST",
                                          help="fp32,bf16,int8,fp16 (default: fp32, and bf16 and int8 where "
                                               "this CPU computes them natively; fp16 on a GPU)."),
    variants: str | None = late_help(typer.Option(None, "--variants", metavar="LIST"),
                                     lambda: f"Extra rows: {', '.join(variant_names())}."),
    stl_on: str = typer.Option("best", "--stl-on", metavar="best|all",
                               help="Time the single-task models on the reference and the fastest configuration "
                                    "that keeps accuracy (best), or on every configuration (all)."),
    batch_size: int = typer.Option(8, "--batch-size", metavar="N", help="Batch of the throughput measurement."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR",
                                         help="MTAN-layout dataset for accuracy (val) and int8 calibration (train) "
                                              "(default: synthetic scenes)."),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Write bench.json and the chart bench.png."),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="Every row and the summary as JSON: on stdout, or into PATH."),
    repeats: int = typer.Option(10, "--repeats", metavar="N",
                                help="Minimum timed runs; more follow until the median's 95% CI is within "
                                     "+-2% or --budget is spent."),
    rounds: int = typer.Option(1, "--rounds", metavar="N",
                               help="Measure everything N times in alternating order and pool the samples."),
    budget: float = typer.Option(3.0, "--budget", metavar="SECONDS", help="Time per measurement after the "
                                 "minimum runs."),
    train_steps: int = typer.Option(20, "--train-steps", metavar="N",
                                    help="Training steps of the preset's model for the accuracy verdicts (once, "
                                         "cached; 0: random weights, raw outputs only)."),
    threads: int | None = typer.Option(None, "--threads", metavar="N", help="CPU threads (default: physical "
                                       "cores)."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda"),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate",
                                 help="A fresh process per configuration (honest peak memory, no shared state)."),
    cache: Path | None = typer.Option(None, "--cache", metavar="DIR",
                                      help="Where models and exports are kept (default: ~/.cache/mtlkd/bench)."),
    accuracy_images: int = typer.Option(4, "--accuracy-images", metavar="N", help="Images for the accuracy."),
    calib_size: int = typer.Option(16, "--calib-size", metavar="N", help="Calibration images of int8."),
    e2e: bool = typer.Option(True, "--e2e/--no-e2e", help="Time mtl-infer per image against the network."),
    auto_cache: bool = typer.Option(True, "--auto-cache/--no-auto-cache",
                                    help="Write the measured winner into the runtime's backend=auto cache."),
    ceiling_budget: float = typer.Option(1.0, "--ceiling-budget", metavar="SECONDS",
                                         help="Time per precision for the matrix-product ceilings."),
    profile: bool = typer.Option(False, "--profile", help="Where the multi-task model's time goes, per kind of "
                                 "operation (ONNX Runtime and OpenVINO rows)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress; results only."),
) -> None:  # fmt: skip
    """Benchmark one multi-task model against its single-task models on every backend and precision.

    Per row: latency p50/p90 at batch 1, throughput at --batch-size, parameters, file size, peak memory,
    GFLOP per image, the achieved rate as a fraction of this machine's matrix-product ceiling (square
    products, and the model's own shapes, measured in the same run), and the accuracy against PyTorch
    fp32 with its verdict (mtlkd.accuracy). The summary gives MTL / sum of STL and speed-ups against
    PyTorch fp32 eager, and the per-image overhead of mtl-infer.

    [bold]Examples:[/bold]

      mtl-bench --out runs/bench

      mtl-bench runs/okd/model.safetensors --stl runs/seg/model.safetensors --stl runs/depth/model.safetensors

      mtl-bench --preset vit-micro --backends torch,onnxruntime --precisions fp32,int8 --json

      mtl-bench --variants ort-opt,ov-throughput,torch-compile --stl-on all --rounds 2
    """
    from mtlkd.bench import BenchOptions
    from mtlkd.runtime.backends import BACKENDS, available, install_hint, installed

    if any("=" in str(p) for p in stl):
        with user_errors():
            check_json_target(json_out)
            result = _replace(model, stl, backends, threads, device, data_dir, accuracy_images, repeats, budget,
                              rounds, quiet)
        _render_replace(result, json_out)
        emit_json(result, json_out)
        if out is not None:
            emit_json(result, out / "replace_bench.json")
        return
    with user_errors():
        options = BenchOptions(  # a bad value is one ConfigError line naming its flag
            model=model, stl=list(stl), preset=preset, img_size=parse_hw(img_size),
            backends=parse_list(backends, "--backends"), precisions=parse_list(precisions, "--precisions"),
            variants=parse_list(variants, "--variants") or [], batch_size=batch_size, data_dir=data_dir,
            repeats=repeats, rounds=rounds, budget=budget, threads=threads, device=device, isolate=isolate,
            cache=cache, accuracy_images=accuracy_images, calib_size=calib_size, e2e=e2e, auto_cache=auto_cache,
            ceiling_budget=ceiling_budget, stl_on=stl_on, train_steps=train_steps, profile=profile,
        )  # fmt: skip
        for name in options.backends or []:
            if not installed(name):
                raise ConfigError(f"--backends {name}: not installed ({install_hint(name)})")
        gpu_backends = [n for n, spec in BACKENDS.items() if "cuda" in spec.devices]
        if device == "cuda" and not any(installed(n) and available(n, "cuda") for n in options.backends or
                                        gpu_backends):  # fmt: skip
            raise ConfigError(f"--device cuda: no backend here can run on a CUDA GPU (none found, or no GPU build "
                              f"of {'/'.join(BACKENDS[n].title for n in gpu_backends)} installed); use --device cpu")
        # before the run, so that the measurements are not lost at its end, and never onto a model it reads
        models, folders = [*([model] if model else []), *stl], [data_dir] if data_dir else []
        check_json_target(json_out, inputs=models, input_folders=folders)
        for name in ("bench.json", "bench.png"):
            check_json_target(out / name if out is not None else None, "--out", models, folders)
        result = _run(options, quiet)
    from rich.console import Console

    show = Console(stderr=json_out == JSON_STDOUT, soft_wrap=True)  # JSON on stdout: the tables go to stderr
    if not show.is_terminal:
        show.width = 200  # logs and pipes: do not wrap the tables
    render(result, show)
    emit_json(result, json_out)
    if out is not None:
        from mtlkd.bench.plot import plot_result

        emit_json(result, out / "bench.json")
        plot_result(result, out / "bench.png")
        show.print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")


def _run(options: Any, quiet: bool) -> dict[str, Any]:
    import warnings

    from mtlkd.bench import run_benchmark

    with progress_bar("step", quiet=quiet) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter and converter chatter; failures are reported per row
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int, info: str) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=done, total=total, info=info)

        return run_benchmark(options, progress, argv=_argv())


def _replace(model: Path | None, stl: list[Path], backends: str | None, threads: int | None, device: str,
             data_dir: Path | None, images: int, repeats: int, budget: float, rounds: int,
             quiet: bool) -> dict[str, Any]:
    from mtlkd.bench.replace import ReplaceBenchOptions, run_replace_benchmark
    from mtlkd.runtime.teachers import parse_teacher

    if model is None:
        raise ConfigError("--stl TASKS=MODEL compares a student with its teachers: pass the student as MODEL")
    plain = [str(p) for p in stl if "=" not in str(p)]
    if plain:
        raise ConfigError(f"--stl {plain[0]}: give every --stl as TASKS=MODEL when one is (e.g. seg={plain[0]})")
    return run_replace_benchmark(ReplaceBenchOptions(
        student=model, teachers=[parse_teacher(str(p)) for p in stl], backends=parse_list(backends, "--backends"),
        threads=threads, device=device, data_dir=data_dir, images=images, repeats=repeats, budget=budget,
        rounds=rounds, quiet=quiet))


def _render_replace(result: dict[str, Any], json_out: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    show = Console(stderr=json_out == JSON_STDOUT, soft_wrap=True)
    table = Table(title=f"one student pass against its teachers (batch 1, {result['threads'] or 'all'} threads)")
    for col in ("model", "tasks", "backend", "p50 ms", "p90 ms", "other backends (p50 ms)"):
        table.add_column(col, justify="right" if "ms" in col and "other" not in col else "left")
    for entry in [result["student"], *result["teachers"]]:
        chosen = entry["chosen"]
        others = ", ".join(f"{r['backend']} {r['p50_ms']:.2f}" + ("" if r["kept_accuracy"] else " (accuracy lost)")
                           for r in entry["rows"] if r is not chosen and r["backend"] != chosen["backend"])
        table.add_row(entry["label"], ",".join(entry["tasks"]), chosen["backend"], f"{chosen['p50_ms']:.2f}",
                      f"{chosen['p90_ms']:.2f}", others or "-")
    show.print(table)
    show.print(f"student {result['student_p50_ms']:.2f} ms against the teachers' sum "
               f"{result['teachers_sum_p50_ms']:.2f} ms: ratio {result['ratio']:.3f}")
    for label, tasks in result["agreement"].items():
        parts = [f"{k.replace('_', ' ')} {v:.2f}" for values in tasks.values() for k, v in values.items()]
        show.print(f"agreement with {label} ({result['agreement_images']} images): " + ", ".join(parts))


def _argv() -> list[str] | None:
    """The command line as typed, for the JSON (None under a test runner, whose argv is not ours)."""
    name = Path(sys.argv[0]).name
    if name == "mtl" and sys.argv[1:2] == ["bench"]:
        return ["mtl", *sys.argv[1:]]
    return ["mtl-bench", *sys.argv[1:]] if name in ("mtl-bench", "bench.py") else None


# ------------------------------------------------------------------------------------------ render


def _f(value: Any, fmt: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def render(result: dict[str, Any], out: Any) -> None:
    """The rich tables: rows, the MTL / STL summary, end to end."""
    from rich.table import Table

    machine = result["machine"]
    out.print(f"[bold]{result['name']}[/] on {machine['cpu']}, {machine['physical_cores']} cores, "
              f"{machine['threads']} threads, features: {' '.join(machine['features'])}; "
              f"load average {machine['load_avg']}")  # fmt: skip
    shapes = result.get("shape_ceilings", {})
    ceilings = ", ".join(f"{p} {c['gflops']:.0f}" + ("" if c["native"] else " emulated")
                         + (f" (at the model's shapes {shapes[p]['gflops']:.0f})" if p in shapes else "")
                         for p, c in result["ceilings"].items())  # fmt: skip
    out.print(f"matrix-product ceilings, GFLOP/s: {ceilings}")
    table = Table(title="rows (latency at batch 1; accuracy against PyTorch fp32)", show_lines=False)
    for col in ("configuration", "model", "p50 ms", "p90 ms", f"img/s @{result['options']['batch_size']}",
                "GFLOP/s", "% ceil", "% shape", "MB", "mem MB", "raw err", "seg %", "depth %", "normal °",
                "accuracy"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("configuration", "model", "accuracy") else "right")
    weights = {bool(r.get("random_weights")) for r in result["rows"]}
    mixed = len(weights) == 2  # a trained MTL beside random-weight STL counterparts
    for r in result["rows"]:
        if r.get("error"):
            table.add_row(r["label"], r["model"], f"[red]{r['error'][:90]}[/]")
            continue
        model = r["model"] + ("*" if r.get("random_weights") and mixed else "")
        raw = max((r[f"{t}_raw_err"] for t in r["tasks"] if f"{t}_raw_err" in r), default=None)
        kept = {True: "[green]kept[/]", False: "[red]lost[/]", None: "-"}[r.get("accuracy_kept")]
        table.add_row(r["label"], model, _f(r["p50_ms"], ".2f"), _f(r["p90_ms"], ".2f"),
                      _f(r["throughput_ips"], ".2f"), _f(r["achieved_gflops"], ".1f"),
                      _pct(r["fraction_of_ceiling"]), _pct(r.get("fraction_of_shape_ceiling")),
                      _f(r["file_mb"], ".2f"), _f(r["peak_mem_mb"], ".0f"), _f(raw, ".1e"),
                      _f(r.get("seg_agreement"), ".2f"), _f(r.get("depth_rel_err"), ".3f"),
                      _f(r.get("normal_angle"), ".3f"), kept)  # fmt: skip
    out.print(table)
    if mixed:
        out.print("* random weights (the same architecture with one head): latency, not accuracy; a configuration's "
                  "accuracy verdict is the trained model's")  # fmt: skip
    summary = result["summary"]
    table = Table(title=f"MTL / sum of STL, and speed-ups against {summary['reference'] or 'torch fp32'} eager")
    for col in ("configuration", "MTL ms", "ΣSTL ms", "latency", "params", "size", "GFLOP", "MTL speed-up",
                "MTL vs torch ΣSTL", "% ceil", "% shape", "accuracy"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for c in summary["configs"]:
        kept = {True: "[green]kept[/]", False: "[red]lost[/]", None: "-"}[c["accuracy_kept"]]
        basis = " (raw)" if c.get("accuracy_basis") == "raw outputs" else ""
        table.add_row(c["label"], _f(c["mtl_p50_ms"], ".2f"), _f(c["stl_sum_p50_ms"], ".2f"),
                      _f(c["latency_ratio"], ".3f"), _f(c["params_ratio"], ".3f"), _f(c["size_ratio"], ".3f"),
                      _f(c["gflop_ratio"], ".3f"), _f(c["speedup_vs_torch_fp32"], ".2f"),
                      _f(c["mtl_vs_torch_stl_chain"], ".2f"), _pct(c["fraction_of_ceiling"]),
                      _pct(c.get("fraction_of_shape_ceiling")), kept + basis)  # fmt: skip
    out.print(table)
    if summary.get("fastest_kept"):
        out.print(f"fastest with the accuracy kept: [bold]{summary['fastest_kept']}[/]"
                  + (f"; fastest overall: {summary['fastest']}" if summary["fastest"] != summary["fastest_kept"]
                     else ""))  # fmt: skip
    _render_profiles(result["rows"], out)
    e2e = result.get("end_to_end")
    if e2e and not e2e.get("error"):
        h, w = e2e["image_size"]
        out.print(f"end to end ({e2e['label']}, {h}x{w} JPEG through Predictor): {e2e['total_ms']:.2f} ms = decode "
                  f"{e2e['decode_ms']:.2f} + preprocess {e2e['preprocess_ms']:.2f} + network {e2e['network_ms']:.2f} + "
                  f"postprocess {e2e['postprocess_ms']:.2f}; network alone (paired) {e2e['network_alone_ms']:.2f} ms; "
                  f"overhead {e2e['overhead_ms']:.2f} ms = {e2e['overhead_pct']:.1f}% of the network")  # fmt: skip
    elif e2e:
        out.print(f"end to end ({e2e['label']}): [red]{e2e['error']}[/]")
    for s in result["skipped"]:
        out.print(f"[dim]skipped {s['backend']} {s['precision']} {s['variant']}: {s['reason']}[/]")
    for entry in result.get("auto_cache") or []:
        out.print(f"[dim]auto backend for {Path(entry['file']).name}: {entry['backend']} {entry['timings_ms']}[/]")


def _render_profiles(rows: list[dict[str, Any]], out: Any) -> None:
    """`--profile`: per configuration, the share of the engine's time per kind of operation."""
    from rich.table import Table

    profiled = [r for r in rows if r.get("profile")]
    if not profiled:
        return
    names = list(dict.fromkeys(k for r in profiled for k in r["profile"]["shares"]))
    table = Table(title="where the multi-task model's time goes (% of the engine's own total, batch 1)")
    for col in ("configuration", "engine ms", *names):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in profiled:
        shares = r["profile"]["shares"]
        table.add_row(r["label"], _f(r["profile"]["total_ms"], ".1f"),
                      *(_f(100 * shares[n], ".1f") if n in shares else "-" for n in names))  # fmt: skip
    out.print(table)


app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
