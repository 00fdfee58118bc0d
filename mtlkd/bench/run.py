"""The benchmark run: build or read the models, export what each backend needs, measure every
(backend, precision, variant) x (MTL model, each STL model) in a fresh worker, and assemble the result.

Models: without checkpoints, the preset with random weights (latency does not depend on them): an MTL
model with seg (13 classes), depth and normal heads and one STL model per task. Artifacts (checkpoint,
ONNX fp32/fp16/int8, OpenVINO IR fp16/int8, ORT-optimised graph, TensorRT engines) are written once into
a cache folder keyed by preset, size and opset (or the checkpoint's hash) and reused by later runs.

Which configurations are measured is `mtlkd.bench.plan`; what cannot run here is listed in `skipped`
with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.bench import (
    BACKENDS,
    PRECISIONS,
    Config,
    make_row,
    plan,
    summarise,
    update_auto_cache,
    user_exports,
)
from mtlkd.bench.timing import merge_rounds, run_worker
from mtlkd.errors import UserError

TASKS = ("seg", "depth", "normal")


@dataclass
class BenchOptions:
    preset: str = "vit-tiny"
    mtl: Path | None = None
    stl: list[Path] = field(default_factory=list)
    size: tuple[int, int] | None = None
    backends: list[str] | None = None
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    variants: list[str] = field(default_factory=list)
    batch: int = 8
    data_dir: Path | None = None
    repeats: int = 10
    rounds: int = 1
    budget: float = 20.0
    rel_ci: float = 0.02
    threads: int | None = None
    device: str = "cpu"
    isolate: bool = True
    work_dir: Path | None = None
    accuracy_images: int = 4
    calib_size: int = 16
    e2e: bool = True
    auto_cache: bool = True
    ceiling_budget: float = 1.0


@dataclass
class Model:
    name: str  # "mtl" or the task of an STL model
    tasks: list[str]
    folder: Path
    checkpoint: Path
    metadata: dict[str, Any]
    params: int
    flops: dict[str, Any]
    net: Any = None  # the torch module while preparing

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.metadata["input_size"][0]), int(self.metadata["input_size"][1])


# ---------------------------------------------------------------------------------------- models


def work_root(options: BenchOptions) -> Path:
    if options.work_dir:
        return Path(options.work_dir)
    cache = os.environ.get("MTLKD_CACHE")
    base = Path(cache).parent if cache and cache.endswith(".json") else Path(cache) if cache else None
    return (base or Path.home() / ".cache" / "mtlkd") / "bench"


def random_checkpoint(folder: Path, config: dict[str, Any], seed: int) -> Path:
    """`folder/model.safetensors` with random weights for `config`, written once (latency does not depend
    on the weights; the metadata says `random_weights`)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model

    checkpoint = folder / "model.safetensors"
    if not checkpoint.is_file():
        torch.manual_seed(seed)
        save_checkpoint(checkpoint, create_model(config).state_dict(), model_metadata(config, random_weights=True))
    return checkpoint


def build_models(options: BenchOptions) -> list[Model]:
    """The MTL model and the STL models as torch modules, loaded from their checkpoints (for a preset,
    random-weight checkpoints written once into the cache folder; the cached exports come from them)."""
    from mtlkd.bench.flops import model_flops
    from mtlkd.checkpoint import read_metadata, sha256_of
    from mtlkd.data.synthetic import CLASS_NAMES
    from mtlkd.export.onnx import DEFAULT_OPSET
    from mtlkd.models import count_parameters, load_model, preset_config

    sources: list[tuple[Path, Path]] = []  # (checkpoint, cache folder)
    if options.mtl is None:
        names = list(CLASS_NAMES)  # NYUv2's 13 classes
        for i, tasks in enumerate([list(TASKS)] + [[t] for t in TASKS]):
            arch = "mtl" if len(tasks) > 1 else "stl"
            config = preset_config(options.preset, tasks, class_names=names, img_size=options.size, arch=arch)
            h, w = config["backbone"]["img_size"]
            key = f"{options.preset}-{h}x{w}-opset{DEFAULT_OPSET}"
            folder = work_root(options) / key / ("mtl" if i == 0 else tasks[0])
            sources.append((random_checkpoint(folder, config, seed=i), folder))
    else:
        for path in [options.mtl, *options.stl]:
            sources.append((Path(path), work_root(options) / f"ckpt-{sha256_of(path)[:16]}-opset{DEFAULT_OPSET}"))
        if not options.stl:  # STL counterparts of the MTL's own architecture, random weights (latency only)
            meta = read_metadata(options.mtl)
            for i, task in enumerate(meta["tasks"]):
                folder = sources[0][1] / f"stl-{task}-random"
                config = {**copy.deepcopy(meta["config"]), "arch": "stl", "tasks": [task]}
                sources.append((random_checkpoint(folder, config, seed=1 + i), folder))
    models: list[Model] = []
    for checkpoint, folder in sources:
        net, meta = load_model(str(checkpoint))
        is_mtl = not models
        if not is_mtl and len(meta["tasks"]) != 1:
            raise UserError(f"--stl {checkpoint}: a single-task checkpoint has one task, this one has {meta['tasks']}")
        name = "mtl" if is_mtl else meta["tasks"][0]
        if any(m.name == name for m in models):
            raise UserError(f"--stl {checkpoint}: a second single-task model for {name}")
        if not is_mtl and name not in models[0].tasks:
            raise UserError(f"--stl {checkpoint}: predicts {name}, which the MTL model does not")
        models.append(Model(name, list(meta["tasks"]), folder, checkpoint, meta, count_parameters(net), {}, net))
    sizes = {m.input_size for m in models}
    if len(sizes) > 1 or (options.mtl and options.size and tuple(options.size) not in sizes):
        raise UserError(f"input sizes differ: {sorted(sizes)} (--size {options.size}); compare models built for "
                        f"one size (--size only applies to presets)")  # fmt: skip
    for model in models:
        model.flops = model_flops(model.net, model.input_size)
    return models


def artifact(model: Model, kind: str, calibration: tuple[np.ndarray, str], calib_tag: str) -> Path:
    """The file a configuration loads, exported into the model's cache folder when missing."""
    from mtlkd.export import openvino as ov_export
    from mtlkd.export import precision as prec
    from mtlkd.export.onnx import export_onnx, optimize_for_ort

    folder = model.folder
    onnx_path = folder / "model.onnx"
    if kind == "ckpt":
        return model.checkpoint
    if kind != "onnx":
        artifact(model, "onnx", calibration, calib_tag)
    paths = {"onnx": onnx_path, "fp16.onnx": folder / "model.fp16.onnx", "ort.onnx": folder / "model.ort.onnx",
             "int8.onnx": folder / f"model.int8-{calib_tag}.onnx", "ov-fp16": folder / "openvino_fp16" / "model.xml",
             "ov-int8": folder / f"openvino_int8-{calib_tag}" / "model.xml",
             "ov-int8-nncf": folder / f"openvino_int8_nncf-{calib_tag}" / "model.xml"}  # fmt: skip
    if kind.startswith("trt-"):
        precision = kind[4:]
        source = {"fp32": "onnx", "fp16": "fp16.onnx", "int8": "int8.onnx"}[precision]
        graph = artifact(model, source, calibration, calib_tag)
        engine = folder / f"model.{precision}.engine"
        if not engine.is_file():
            from mtlkd.export.tensorrt import build_engine

            build_engine(graph, engine)
        return engine
    path = paths[kind]
    if path.is_file():
        return path
    if kind == "onnx":
        export_onnx(model.net, model.metadata, path, model.tasks)
    elif kind == "fp16.onnx":
        prec.convert_fp16(onnx_path, path)
    elif kind == "int8.onnx":
        prec.quantize_int8(onnx_path, path, calibration[0], calibration[1])
    elif kind == "ort.onnx":
        optimize_for_ort(onnx_path, path)
    else:  # OpenVINO IR, written into a temporary folder and renamed, so an interrupted export is redone
        tmp = path.parent.with_name(path.parent.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if kind == "ov-fp16":
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="fp16")
        elif kind == "ov-int8":
            qdq = artifact(model, "int8.onnx", calibration, calib_tag)
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="int8", int8_source="qdq", qdq_path=qdq)
        else:
            ov_export.export_openvino(onnx_path, tmp / "model.xml", precision="int8", int8_source="nncf",
                                      calibration=calibration[0])  # fmt: skip
        shutil.rmtree(path.parent, ignore_errors=True)
        tmp.replace(path.parent)
    return path


# --------------------------------------------------------------------------------------------- run


def run_benchmark(options: BenchOptions, progress: Callable[[str, int, int, str], None] | None = None,
                  argv: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything: prepare, measure the ceilings, measure each configuration, summarise. `progress(stage,
    done, total, info)` is called as work completes. Returns the JSON-serialisable result."""
    from mtlkd.bench.machine import native_precisions
    from mtlkd.bench.timing import dataset_images
    from mtlkd.export.precision import load_calibration_images
    from mtlkd.export.validate import validation_images
    from mtlkd.runtime.backends import available, installed, physical_cores

    report = progress or (lambda *_: None)
    threads = options.threads or physical_cores()
    native = native_precisions() if options.device == "cpu" else {p: True for p in PRECISIONS}
    names = options.backends or [b for b in BACKENDS if installed(b) and available(b, options.device)]
    configs, skipped = plan(names, options.precisions, options.variants, options.device, native)
    if options.threads:  # explicit, so in-process runs honour it too (the workers are pinned anyway)
        for config in configs:
            if config.backend in ("onnxruntime", "openvino"):
                config.options["threads"] = options.threads
    models = build_models(options)
    size = models[0].input_size
    calib_source = str(Path(options.data_dir).resolve()) if options.data_dir else "synthetic"
    calib_tag = hashlib.sha256(f"{calib_source}:{options.calib_size}".encode()).hexdigest()[:8]
    needs_calib = any(c.artifact in ("int8.onnx", "ov-int8", "ov-int8-nncf", "trt-int8") for c in configs)
    calibration = (load_calibration_images(options.data_dir, size, options.calib_size) if needs_calib
                   else (np.zeros((0, 3, *size), np.float32), "none"))  # fmt: skip
    images = (dataset_images(Path(options.data_dir), size, options.accuracy_images) if options.data_dir
              else validation_images(size, n=options.accuracy_images, seed=2025))  # fmt: skip
    timing_image = validation_images(size, n=1, seed=7)

    kinds = list(dict.fromkeys(c.artifact for c in configs))
    paths: dict[tuple[str, str], Path] = {}
    for step, (model, kind) in enumerate((m, k) for m in models for k in kinds):
        report("prepare", step, len(kinds) * len(models), f"{model.name}: {kind}")
        try:  # NNCF and the converters print their own progress bars on stdout: not ours to show
            with contextlib.redirect_stdout(io.StringIO()):
                paths[(model.name, kind)] = artifact(model, kind, calibration, calib_tag)
        except Exception as exc:  # a failing exporter skips its configurations, not the run
            reason = f"{model.name}: export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            skipped += [{"backend": c.backend, "precision": c.precision, "variant": c.variant, "reason": reason}
                        for c in configs if c.artifact == kind]  # fmt: skip
    report("prepare", 1, 1, "")

    with tempfile.TemporaryDirectory(prefix="mtl-bench-") as tmp:
        return _measure(options, models, configs, skipped, paths, threads, native,
                        (timing_image, images), Path(tmp), report, argv)  # fmt: skip


def _measure(options: BenchOptions, models: list[Model], configs: list[Config], skipped: list[dict],
             paths: dict[tuple[str, str], Path], threads: int, native: dict[str, bool], data: tuple,
             run_dir: Path, report: Callable, argv: list[str] | None) -> dict[str, Any]:  # fmt: skip
    from mtlkd.bench.ceiling import compute_precision, measure_ceilings_isolated
    from mtlkd.bench.machine import machine_info
    from mtlkd.bench.timing import write_inputs

    timing_image, images = data
    size = models[0].input_size
    machine = machine_info(threads, options.device)  # load average at the start; the end's is added below
    inputs = {m.name: write_inputs(m.net, m.tasks, timing_image, images, run_dir / f"{m.name}.npz") for m in models}
    for model in models:
        model.net = None  # the workers load the files; free the parent's copies
    report("ceiling", 0, 1, "matrix-product ceilings")
    ceiling_spec = {"precisions": options.precisions, "threads": threads, "device": options.device,
                    "budget": options.ceiling_budget, "folder": run_dir, "isolate": options.isolate}  # fmt: skip
    before = measure_ceilings_isolated(**ceiling_spec)
    report("ceiling", 1, 1, "")
    base = {"device": options.device, "threads": threads, "batch": options.batch, "repeats": options.repeats,
            "budget": options.budget, "rel_ci": options.rel_ci}  # fmt: skip
    jobs = [(c, m) for c in configs for m in models if (m.name, c.artifact) in paths]
    rounds = max(1, options.rounds)
    measured: list[list[dict[str, Any]]] = [[] for _ in jobs]
    # Every job once per round; odd rounds run in reverse order, so a drift of the machine's load over the
    # run weighs on every configuration alike instead of on whichever came last.
    order = [i for r in range(rounds) for i in (range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs))))]
    for step, i in enumerate(order):
        config, model = jobs[i]
        report("measure", step, len(order), f"{config.label} {model.name}")
        spec = worker_spec(base, config, model, paths, inputs)
        measured[i].append(run_worker(spec, run_dir, options.isolate))
    report("measure", len(order), len(order), "")
    results = [(c, m, paths[(m.name, c.artifact)], merge_rounds(r)) for (c, m), r in zip(jobs, measured, strict=True)]
    after = measure_ceilings_isolated(**ceiling_spec)
    ceilings = {p: (before[p] if before[p].gflops >= after[p].gflops else after[p]) for p in before}
    rows = [make_row(c, m, path, r, ceilings[compute_precision(c.precision, native, options.device)], options.batch)
            for c, m, path, r in results]  # fmt: skip

    preset = options.preset if options.mtl is None else models[0].metadata["config"].get("preset")
    summary = summarise(rows, native, preset=preset, size=size)
    end_to_end = None
    if options.e2e and summary.get("e2e_config"):
        report("end-to-end", 0, 1, summary["e2e_config"])
        end_to_end = run_end_to_end(summary["e2e_config"], configs, models, paths, inputs, base, run_dir, options)
        report("end-to-end", 1, 1, "")
        summary = summarise(rows, native, preset=preset, size=size, end_to_end=end_to_end)
    exports = user_exports(models, paths) if options.mtl else {}
    auto = update_auto_cache(rows, options.device, exports) if options.auto_cache else []
    return {
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv) if argv else None,
        "options": json.loads(json.dumps(asdict(options), default=str)),
        "machine": {**machine, "load_avg_end": machine_info(threads, options.device)["load_avg"]},
        "ceilings": {p: c.to_dict() | {"before_gflops": before[p].gflops, "after_gflops": after[p].gflops}
                     for p, c in ceilings.items()},
        "models": {m.name: {"tasks": m.tasks, "params": m.params, "flops": m.flops["flops"], "gflop": m.flops["gflop"],
                            "gflop_parts": {k: round(v / 1e9, 6) for k, v in m.flops["parts"].items()},
                            "input_size": list(m.input_size), "checkpoint": str(m.checkpoint)} for m in models},
        "rows": rows,
        "skipped": skipped,
        "summary": summary,
        "end_to_end": end_to_end,
        "auto_cache": auto,
        "work_dir": str(models[0].folder.parent),
    }  # fmt: skip


def worker_spec(base: dict[str, Any], config: Config, model: Model, paths: dict, inputs: dict,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    """What a worker needs to measure `model` in `config` (see mtlkd.bench.timing.measure_config)."""
    return {**base, "backend": config.backend, "path": str(paths[(model.name, config.artifact)]),
            "options": config.options, "autocast": config.autocast, "compile": config.compile, "env": config.env,
            "inputs": str(inputs[model.name]), **extra}  # fmt: skip


def run_end_to_end(label: str, configs: list[Config], models: list[Model], paths: dict, inputs: dict,
                   base: dict[str, Any], run_dir: Path, options: BenchOptions) -> dict[str, Any] | None:  # fmt: skip
    """The MTL model of configuration `label` through Predictor on a JPEG, against its network alone."""
    from mtlkd.bench.timing import E2E_SIZE, write_jpeg

    config = next(c for c in configs if c.label == label)
    model = models[0]
    spec = worker_spec(base, config, model, paths, inputs, mode="e2e", image=str(write_jpeg(run_dir / "e2e.jpg")))
    result = run_worker(spec, run_dir, options.isolate)
    if "error" in result:
        return {"label": label, "error": result["error"]}
    return {"label": label, "backend": config.backend, "precision": config.precision, "variant": config.variant,
            "image_size": list(E2E_SIZE), **result["end_to_end"]}  # fmt: skip
