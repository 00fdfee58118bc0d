"""The benchmark run: build or read the models, export what each backend needs, measure every
(backend, precision, variant) x model in a fresh worker, and assemble the result.

Order: the multi-task model on every configuration first; then the single-task models on the reference
(PyTorch fp32) and on the fastest configuration that kept the accuracy (`stl_on="best"`, the default, so
the run answers "what does one multi-task pass save, where it matters" in minutes), or on every
configuration (`stl_on="all"`). Artifacts are written once into a cache folder keyed by preset, size and
opset (or the checkpoint's hash) and reused by later runs. Which configurations run is
`mtlkd.bench.plan`; what cannot run here is listed in `skipped` with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.bench.artifacts import artifact
from mtlkd.bench.autocache import update_auto_cache, user_exports
from mtlkd.bench.ceiling import Ceiling, ShapeCeiling, compute_precision
from mtlkd.bench.models import Model, build_models
from mtlkd.bench.options import BenchOptions
from mtlkd.bench.plan import PRECISIONS, Config, backend_names, plan
from mtlkd.bench.stats import merge_rounds
from mtlkd.bench.summary import REFERENCE, make_row, summarise
from mtlkd.bench.worker import run_worker

Progress = Callable[[str, int, int, str], None]


def default_precisions(native: dict[str, bool], device: str = "cpu") -> list[str]:
    """fp32 and the precisions this machine computes natively. On a CPU that is bf16 and int8 where it has
    their instructions; fp16 only on a GPU: CPU backends up-convert it to fp32 (even with AVX512-FP16 it
    is not faster than fp32), so its rows answer no question a user asks here."""
    wanted = ("bf16", "int8", "fp16") if device != "cpu" else ("bf16", "int8")
    return ["fp32", *(p for p in wanted if native.get(p))]


@dataclass
class Prepared:
    """Everything the measurements need, made before the first one."""

    models: list[Model]
    configs: list[Config]
    skipped: list[dict[str, str]]
    paths: dict[tuple[str, str], Path]
    threads: int
    native: dict[str, bool]
    precisions: list[str]
    calibration: tuple[tuple[np.ndarray, str], str]  # (images, description), the files' calibration tag


def prepare(options: BenchOptions, report: Progress) -> Prepared:
    """The plan, the models (trained briefly, or read) and every file the plan loads."""
    from mtlkd.bench.machine import native_precisions
    from mtlkd.export.precision import DEFAULT_KEEP_FLOAT, load_calibration_images
    from mtlkd.runtime.backends import available, installed, physical_cores

    threads = options.threads or physical_cores()
    native = native_precisions() if options.device == "cpu" else {p: True for p in PRECISIONS}
    precisions = options.precisions or default_precisions(native, options.device)
    names = options.backends or [b for b in backend_names() if installed(b) and available(b, options.device)]
    configs, skipped = plan(names, precisions, options.variants, options.device, native)
    if options.threads:  # explicit, so in-process runs honour it too (the workers are pinned anyway)
        for config in configs:  # every backend's `load` takes threads= (one without CPU threads ignores it)
            config.options["threads"] = options.threads
    report("models", 0, 1, "models (the first run trains the preset briefly)")
    models = build_models(options)
    report("models", 1, 1, "")
    size = models[0].input_size
    calib_source = str(Path(options.data_dir).resolve()) if options.data_dir else "synthetic"
    recipe = f"{calib_source}:{options.calib_size}:float={','.join(DEFAULT_KEEP_FLOAT)}"  # a new recipe, new files
    calib_tag = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    needs_calib = any(c.artifact in ("int8.onnx", "ov-int8", "ov-int8-nncf", "trt-int8") for c in configs)
    calibration = (load_calibration_images(options.data_dir, size, options.calib_size) if needs_calib
                   else (np.zeros((0, 3, *size), np.float32), "none"))  # fmt: skip
    prepared = Prepared(models, configs, skipped, {}, threads, native, precisions, (calibration, calib_tag))
    export_for(prepared, models[:1], configs, report)  # the STL models' files once it is known which they need
    return prepared


def export_for(prepared: Prepared, models: list[Model], configs: list[Config], report: Progress) -> None:
    """The files `configs` load for `models`, into `prepared.paths`; a failing exporter skips its
    configurations (with the reason), not the run."""
    calibration, calib_tag = prepared.calibration
    kinds = list(dict.fromkeys(c.artifact for c in configs))
    jobs = [(m, k) for m in models for k in kinds if (m.name, k) not in prepared.paths]
    for step, (model, kind) in enumerate(jobs):
        report("export", step, len(jobs), f"{model.name}: {kind}")
        try:  # NNCF and the converters print their own progress bars on stdout: not ours to show
            with contextlib.redirect_stdout(io.StringIO()):
                prepared.paths[(model.name, kind)] = artifact(model, kind, calibration, calib_tag)
        except Exception as exc:  # a failing exporter skips its configurations, not the run
            reason = f"{model.name}: export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            prepared.skipped += [{"backend": c.backend, "precision": c.precision, "variant": c.variant,
                                  "reason": reason} for c in configs if c.artifact == kind]  # fmt: skip
    report("export", len(jobs), len(jobs), "")


def run_benchmark(options: BenchOptions, progress: Progress | None = None,
                  argv: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything: prepare, measure the ceilings, measure each configuration, summarise. `progress(stage,
    done, total, info)` is called as work completes. Returns the JSON-serialisable result."""
    from mtlkd.bench.inputs import dataset_images
    from mtlkd.export.validate import validation_images

    report = progress or (lambda *_: None)
    prepared = prepare(options, report)
    size = prepared.models[0].input_size
    images = (dataset_images(Path(options.data_dir), size, options.accuracy_images) if options.data_dir
              else validation_images(size, n=options.accuracy_images, seed=2025))  # fmt: skip
    timing_image = validation_images(size, n=1, seed=7)
    with tempfile.TemporaryDirectory(prefix="mtl-bench-") as tmp:
        return _measure(options, prepared, (timing_image, images), Path(tmp), report, argv)


def _run_jobs(jobs: list[tuple[Config, Model]], options: BenchOptions, base: dict[str, Any],
              prepared: Prepared, inputs: dict[str, Path], run_dir: Path, report: Progress,
              stage: str) -> list[dict[str, Any]]:  # fmt: skip
    """Each job once per round; odd rounds run in reverse order, so a drift of the machine's load over the
    run weighs on every configuration alike instead of on whichever came last."""
    rounds = max(1, options.rounds)
    measured: list[list[dict[str, Any]]] = [[] for _ in jobs]
    order = [i for r in range(rounds) for i in (range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs))))]
    for step, i in enumerate(order):
        config, model = jobs[i]
        report(stage, step, len(order), f"{config.label} {model.name}")
        spec = worker_spec(base, config, model, prepared.paths, inputs)
        measured[i].append(run_worker(spec, run_dir, options.isolate))
    report(stage, len(order), len(order), "")
    return [merge_rounds(r) for r in measured]


def _stl_configs(options: BenchOptions, configs: list[Config], mtl_rows: list[dict[str, Any]]) -> list[Config]:
    """Where the single-task models are timed: every configuration, or the reference and the fastest
    configuration whose multi-task model kept the accuracy."""
    if options.stl_on == "all":
        return configs
    timed = [r for r in mtl_rows if r.get("p50_ms") and r.get("accuracy_kept") is not False]
    fastest = min(timed, key=lambda r: r["p50_ms"], default=None)
    wanted = {REFERENCE, *(((fastest["backend"], fastest["precision"], fastest["variant"]),) if fastest else ())}
    return [c for c in configs if (c.backend, c.precision, c.variant) in wanted]


def _measure(options: BenchOptions, prepared: Prepared, data: tuple, run_dir: Path, report: Progress,
             argv: list[str] | None) -> dict[str, Any]:  # fmt: skip
    from mtlkd.bench.inputs import write_inputs
    from mtlkd.bench.machine import machine_info

    models, paths, native = prepared.models, prepared.paths, prepared.native
    timing_image, images = data
    machine = machine_info(prepared.threads, options.device)  # load average at the start; the end's below
    inputs = {m.name: write_inputs(m.net, m.tasks, timing_image, images, run_dir / f"{m.name}.npz") for m in models}
    for model in models:
        model.net = None  # the workers load the files; free the parent's copies
    report("ceiling", 0, 1, "matrix-product ceilings")
    ceiling_spec = {"precisions": prepared.precisions, "threads": prepared.threads, "device": options.device,
                    "budget": options.ceiling_budget, "folder": run_dir, "isolate": options.isolate,
                    "config": models[0].metadata["config"]}  # fmt: skip
    before, shape_before = measure_ceilings_isolated(**ceiling_spec)
    report("ceiling", 1, 1, "")
    base = {"device": options.device, "threads": prepared.threads, "batch": options.batch_size,
            "repeats": options.repeats, "budget": options.budget, "rel_ci": options.rel_ci}  # fmt: skip
    mtl, stl = models[0], models[1:]
    mtl_jobs = [(c, mtl) for c in prepared.configs if (mtl.name, c.artifact) in paths]
    mtl_results = _run_jobs(mtl_jobs, options, {**base, "profile": options.profile}, prepared, inputs, run_dir,
                            report, "multi-task")  # fmt: skip
    # a first judgement of the multi-task rows (square ceilings only) chooses where the STL models run
    first = [make_row(c, m, paths[(m.name, c.artifact)], r,
                      before[compute_precision(c.precision, native, options.device)], options.batch_size)
             for (c, m), r in zip(mtl_jobs, mtl_results, strict=True)]  # fmt: skip
    stl_configs = _stl_configs(options, prepared.configs, first)
    export_for(prepared, stl, stl_configs, report)
    stl_jobs = [(c, m) for c in stl_configs for m in stl if (m.name, c.artifact) in paths]
    stl_results = _run_jobs(stl_jobs, options, base, prepared, inputs, run_dir, report, "single-task")
    after, shape_after = measure_ceilings_isolated(**ceiling_spec)
    ceilings = {p: (before[p] if before[p].gflops >= after[p].gflops else after[p]) for p in before}
    shape_ceilings = {p: max((c for c in (shape_before.get(p), shape_after.get(p)) if c), key=lambda c: c.gflops)
                      for p in {*shape_before, *shape_after}}  # fmt: skip
    backbone = mtl.metadata["config"]["backbone"]  # the shapes measured are this backbone's

    def row(config: Config, model: Model, result: dict[str, Any]) -> dict[str, Any]:
        precision = compute_precision(config.precision, native, options.device)
        shape = shape_ceilings.get(precision) if model.metadata["config"]["backbone"] == backbone else None
        return make_row(config, model, paths[(model.name, config.artifact)], result, ceilings[precision],
                        options.batch_size, shape and shape.gflops)  # fmt: skip

    jobs, results = mtl_jobs + stl_jobs, mtl_results + stl_results
    rows = [row(c, m, r) for (c, m), r in zip(jobs, results, strict=True)]
    summary = summarise(rows)
    end_to_end = None
    if options.e2e and summary.get("e2e_config"):
        report("end-to-end", 0, 1, summary["e2e_config"])
        end_to_end = run_end_to_end(summary["e2e_config"], prepared.configs, models, paths, inputs, base, run_dir,
                                    options)  # fmt: skip
        report("end-to-end", 1, 1, "")
    exports = user_exports(models, paths) if options.model else {}
    auto = update_auto_cache(rows, options.device, exports) if options.auto_cache else []
    return {
        "version": 2,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv) if argv else None,
        "name": model_name(options, mtl),
        "options": json.loads(json.dumps(asdict(options), default=str)),
        "precisions": prepared.precisions,
        "machine": {**machine, "load_avg_end": machine_info(prepared.threads, options.device)["load_avg"]},
        "ceilings": {p: c.to_dict() | {"before_gflops": before[p].gflops, "after_gflops": after[p].gflops}
                     for p, c in ceilings.items()},
        "shape_ceilings": {p: c.to_dict() for p, c in shape_ceilings.items()},
        "models": {m.name: {"tasks": m.tasks, "params": m.params, "flops": m.flops["flops"], "gflop": m.flops["gflop"],
                            "gflop_parts": {k: round(v / 1e9, 6) for k, v in m.flops["parts"].items()},
                            "input_size": list(m.input_size), "checkpoint": str(m.checkpoint),
                            "random_weights": bool(m.metadata.get("random_weights"))} for m in models},
        "rows": rows,
        "skipped": prepared.skipped,
        "summary": summary,
        "end_to_end": end_to_end,
        "auto_cache": auto,
        "cache": str(mtl.folder.parent),
    }  # fmt: skip


def model_name(options: BenchOptions, mtl: Model) -> str:
    """What the chart and tables are titled with: the preset and size, or the checkpoint's run folder."""
    h, w = mtl.input_size
    if options.model is None:
        return f"{options.preset} {h}x{w}"
    path = Path(options.model)
    where = path.parent.name if path.name == "model.safetensors" else path.stem
    preset = mtl.metadata.get("config", {}).get("preset")
    return f"{where} ({preset} {h}x{w})" if preset else f"{where} {h}x{w}"


def worker_spec(base: dict[str, Any], config: Config, model: Model, paths: dict, inputs: dict,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    """What a worker needs to measure `model` in `config` (see mtlkd.bench.worker.measure_config)."""
    return {**base, "backend": config.backend, "path": str(paths[(model.name, config.artifact)]),
            "options": config.options, "autocast": config.autocast, "compile": config.compile, "env": config.env,
            "inputs": str(inputs[model.name]), **extra}  # fmt: skip


def run_end_to_end(label: str, configs: list[Config], models: list[Model], paths: dict, inputs: dict,
                   base: dict[str, Any], run_dir: Path, options: BenchOptions) -> dict[str, Any] | None:  # fmt: skip
    """The MTL model of configuration `label` through Predictor on a JPEG, against its network alone."""
    from mtlkd.bench.inputs import E2E_SIZE, write_jpeg

    config = next(c for c in configs if c.label == label)
    model = models[0]
    spec = worker_spec(base, config, model, paths, inputs, mode="e2e", image=str(write_jpeg(run_dir / "e2e.jpg")))
    result = run_worker(spec, run_dir, options.isolate)
    if "error" in result:
        return {"label": label, "error": result["error"]}
    return {"label": label, "backend": config.backend, "precision": config.precision, "variant": config.variant,
            "image_size": list(E2E_SIZE), **result["end_to_end"]}  # fmt: skip


def measure_ceilings_isolated(precisions: list[str], threads: int, device: str, budget: float, folder: Path,
                              config: dict[str, Any], isolate: bool = True,
                              ) -> tuple[dict[str, Ceiling], dict[str, ShapeCeiling]]:  # fmt: skip
    """The square and the model-shape ceilings, in a fresh worker pinned like the benchmark rows' (in this
    process without `isolate`), so that the ceilings and the rows run under the same threads and affinity."""
    spec = {"mode": "ceiling", "precisions": list(precisions), "threads": threads, "device": device,
            "budget": budget, "config": config}  # fmt: skip
    result = run_worker(spec, folder, isolate)
    if "error" in result:
        raise RuntimeError(f"measuring the matrix-product ceiling failed: {result['error']}")
    square = {p: Ceiling(**c) for p, c in result["square"].items()}
    shapes = {p: ShapeCeiling(**c) for p, c in result["shapes"].items()}
    return square, shapes
