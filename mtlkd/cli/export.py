"""`mtl-export`: a checkpoint to ONNX (always), fp16/int8 graphs, a TensorRT engine, an OpenVINO IR and a
Triton model repository, each validated against PyTorch before it is reported as written."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import typer

from mtlkd.errors import UserError
from mtlkd.export.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from mtlkd.export.precision import PRECISIONS
from mtlkd.ui import fail, user_errors

app = typer.Typer(add_completion=False)
EXIT_FAILED = 1  # a check failed or a back-end is missing (user mistakes exit 2)


def command(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="A model.safetensors written by mtl-train."),
    onnx: bool = typer.Option(False, "--onnx", help="Write the ONNX graph (always done; the rest starts from it)."),
    trt: bool = typer.Option(False, "--trt", help="Build a TensorRT engine (needs TensorRT and an NVIDIA GPU)."),
    openvino: bool = typer.Option(False, "--openvino", help="Write an OpenVINO IR (openvino/model.xml + .bin)."),
    precision: str = typer.Option("fp32", "--precision", "-p", metavar="fp32|fp16|int8",
                                  help="fp16: mixed-precision graph; int8: Q/DQ graph calibrated on --calib-data."),
    calib_data: Path | None = typer.Option(None, "--calib-data", metavar="DIR",
                                           help="int8 calibration images: a dataset folder or a folder of images "
                                                "(default: 32 synthetic scenes)."),
    calib_size: int = typer.Option(32, "--calib-size", min=1, help="How many calibration images to use."),
    tasks: str | None = typer.Option(None, "--tasks", metavar="seg,depth",
                                     help="Export only these heads (default: every task of the checkpoint)."),
    triton: Path | None = typer.Option(None, "--triton", metavar="REPO",
                                       help="Also write a Triton model repository here."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR",
                                    help="Output folder (default: export/ beside the checkpoint)."),
    batch: str = typer.Option("1,4,8", "--batch", metavar="MIN,OPT,MAX",
                              help="TensorRT batch profile; MAX is also Triton's max_batch_size."),
    workspace: int = typer.Option(4096, "--workspace", metavar="MB", min=1, help="TensorRT builder workspace limit."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", metavar="N", help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET})."),
    ort_optimize: bool = typer.Option(False, "--ort-optimize",
                                      help="Also write model.ort.onnx, fused by onnxruntime.transformers (ORT only)."),
) -> None:  # fmt: skip
    """Export a checkpoint to ONNX and, on request, TensorRT, OpenVINO and Triton.

    The ONNX graph has one input `image` (N x 3 x H x W float32, RGB in [0, 1],
    dynamic N) and one output per task, and carries the checkpoint's metadata
    (tasks, classes, input size, normalisation) under the key "mtlkd".

    Every file is run on synthetic scenes at batch 1 and 3 and compared with
    PyTorch (fp32) or with the fp32 graph (fp16, int8); a result outside its
    tolerance exits with status 1, a missing TensorRT or GPU too.

    TensorRT 11 takes precision from the graph only: --precision fp16 writes a
    mixed-precision graph (float32 I/O; LayerNorm, Softmax and normalisations
    in float32), --precision int8 a Q/DQ graph; the engine and the Triton ONNX
    model are built from that graph.

    Examples:
      mtl-export runs/okd/model.safetensors
      mtl-export runs/okd/model.safetensors --openvino --precision int8 \\
          --calib-data data/synthetic
      mtl-export runs/okd/model.safetensors --tasks seg,depth --openvino \\
          --triton triton_repo
      mtl-export runs/okd/model.safetensors --trt --precision fp16 \\
          --batch 1,8,16 --workspace 2048
    """
    from mtlkd.checkpoint import read_metadata
    from mtlkd.export.tensorrt import parse_batch_profile
    from mtlkd.tasks import parse_tasks

    with user_errors():
        meta = read_metadata(checkpoint)
        if precision not in PRECISIONS:
            raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise UserError(f"--opset {opset}: the exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")
        task_list = parse_tasks(tasks, available=list(meta["tasks"]))
        profile = parse_batch_profile(batch)
        if calib_data is not None and not calib_data.is_dir():
            raise UserError(f"--calib-data {calib_data}: no such folder")
        if calib_data is not None and precision != "int8":
            raise UserError("--calib-data is only used with --precision int8")
        out_dir = out or checkpoint.parent / "export"
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir}: exists and is not a folder")
        _check_writable(out_dir)
    if openvino:
        from mtlkd.errors import BackendUnavailable
        from mtlkd.export.openvino import require_openvino

        try:
            require_openvino()
        except BackendUnavailable as err:
            fail(f"{err}; nothing was written", code=EXIT_FAILED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter/converter chatter; real problems raise
        _run(checkpoint, out_dir, task_list, precision, calib_data, calib_size, trt, openvino, triton,
             profile, workspace, opset, ort_optimize)  # fmt: skip


def _run(checkpoint, out_dir, task_list, precision, calib_data, calib_size, trt, openvino, triton, profile,
         workspace, opset, ort_optimize) -> None:  # fmt: skip
    from rich.console import Console

    from mtlkd.models import load_model

    console = Console()
    if not console.is_terminal:
        console.width = 140  # logs and pipes: do not wrap the summary table at 80 columns
    with user_errors():
        model, meta = load_model(str(checkpoint))
    final_dir = out_dir
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    # Everything is built and checked in a folder beside the export and moved in only when every check
    # passed: a failed export (NaN weights, a tolerance missed, Ctrl-C) leaves the folder as it was.
    out_dir = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.building-"))
    try:
        _build(checkpoint, out_dir, final_dir, model, meta, console, task_list, precision, calib_data, calib_size,
               trt, openvino, triton, profile, workspace, opset, ort_optimize)  # fmt: skip
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _build(checkpoint, out_dir, final_dir, model, meta, console, task_list, precision, calib_data, calib_size,
           trt, openvino, triton, profile, workspace, opset, ort_optimize) -> None:  # fmt: skip
    from mtlkd.checkpoint import sha256_of, write_json
    from mtlkd.export import precision as prec
    from mtlkd.export import validate as val
    from mtlkd.export.onnx import export_onnx, graph_stats, optimize_for_ort, read_onnx_metadata

    rows: list[dict] = []
    checks_all: list[val.Check] = []

    def record(path: Path, precision_: str, checks: list[val.Check], extra: str = "") -> None:
        for check in checks:
            typer.echo(check.line())
        checks_all.extend(checks)
        rows.append({"file": path, "precision": precision_, "checks": checks, "extra": extra})
        val.ensure_ok(checks)

    typer.echo(f"exporting {checkpoint} ({', '.join(task_list)}) -> {final_dir}")
    onnx_path = export_onnx(model, meta, out_dir / "model.onnx", task_list, opset, source_sha256=sha256_of(checkpoint))
    images = val.validation_images(meta["input_size"], n=max(val.BATCHES))
    try:
        refs = val.run_batches(lambda x: val.run_torch(model, x, task_list), images)
        fp32 = val.run_batches(lambda x: val.run_onnxruntime(onnx_path, x), images)
        stats = graph_stats(onnx_path)
        record(onnx_path, "fp32", val.compare(onnx_path.name, "fp32", "pytorch", refs, fp32),
               f"opset {opset}, {stats['nodes']} nodes")  # fmt: skip
        deploy = onnx_path  # the graph TensorRT and Triton's ONNX model use
        calibration = None
        if precision == "fp16":
            deploy = prec.convert_fp16(onnx_path, out_dir / "model.fp16.onnx")
            outs = val.run_batches(lambda x: val.run_onnxruntime(deploy, x), images)
            record(deploy, "fp16", val.compare(deploy.name, "fp16", "fp32 onnx", fp32, outs),
                   read_onnx_metadata(deploy)["fp16_converter"])  # fmt: skip
        elif precision == "int8":
            with user_errors():
                calibration, source = prec.load_calibration_images(calib_data, meta["input_size"], calib_size)
            deploy = prec.quantize_int8(onnx_path, out_dir / "model.int8.onnx", calibration, source)
            outs = val.run_batches(lambda x: val.run_onnxruntime(deploy, x), images)
            qdq = prec.count_qdq(deploy)
            record(deploy, "int8", val.compare(deploy.name, "int8", "fp32 onnx", fp32, outs),
                   f"{qdq['QuantizeLinear']} Q/{qdq['DequantizeLinear']} DQ, calibration: {source}")  # fmt: skip
        if ort_optimize:
            ort_path = optimize_for_ort(onnx_path, out_dir / "model.ort.onnx")
            outs = val.run_batches(lambda x: val.run_onnxruntime(ort_path, x), images)
            record(ort_path, "fp32", val.compare(ort_path.name, "fp32", "pytorch", refs, outs), "ORT-only fusions")
        xml_path = None
        if openvino:
            xml_path = _openvino(onnx_path, out_dir, precision, calibration, deploy, images, refs, fp32, record)
    except val.ValidationError as err:
        _table(console, rows, out_dir, "not written (failed its checks)")
        fail(f"{err} ({final_dir} was left as it was; tolerances in mtlkd/export/validate.py)", code=EXIT_FAILED)

    trt_error, engine = None, None
    if trt:
        from mtlkd.errors import BackendError, BackendUnavailable, CudaError, EngineBuildError
        from mtlkd.export.tensorrt import build_engine

        try:
            final_dir.mkdir(parents=True, exist_ok=True)  # for the timing cache, which is shared between builds
            engine = build_engine(deploy, out_dir / _named("model.engine", precision), batch=profile,
                                  workspace_mb=workspace, timing_cache=final_dir / "timing.cache")
            reference = (refs, "pytorch") if precision == "fp32" else (fp32, "fp32 onnx")
            record(engine, precision, _check_engine(engine, precision, images, *reference, profile[2]),
                   f"batch {profile}")  # fmt: skip
        except (BackendUnavailable, EngineBuildError) as err:
            trt_error = f"{err} (the ONNX graph {deploy} was written)"
        except (BackendError, CudaError) as err:  # built, but it cannot run here (e.g. cuda-python missing)
            trt_error = f"{engine} was built but not validated: {err}"
        except val.ValidationError as err:
            _table(console, rows, out_dir, "not written (failed its checks)")
            fail(f"{err} ({final_dir} was left as it was; tolerances in mtlkd/export/validate.py)", code=EXIT_FAILED)
    moved = _move_into_place(out_dir, final_dir)
    for row in rows:
        row["file"] = moved.get(row["file"], row["file"])
    deploy, xml_path = moved.get(deploy, deploy), moved.get(xml_path, xml_path)
    engine = moved.get(engine, engine) if engine else None
    if trt_error:
        trt_error = trt_error.replace(str(out_dir), str(final_dir))
    if triton is not None:
        from mtlkd.export.triton import write_triton_repo

        artifacts = {"onnx": deploy, **({"openvino": xml_path} if xml_path else {}),
                     **({"tensorrt": engine} if engine else {})}  # fmt: skip
        folders = write_triton_repo(triton, artifacts, read_onnx_metadata(deploy), max_batch_size=profile[2],
                                    gpu=engine is not None)  # fmt: skip
        for name, folder in folders.items():
            rows.append({"file": folder / "config.pbtxt", "precision": precision, "checks": [], "extra": name})
    write_json(final_dir / "export.json", _report(rows, checks_all))
    _table(console, rows, final_dir)
    if trt_error:
        fail(trt_error, code=EXIT_FAILED)


def _check_engine(engine: Path, precision: str, images, reference, reference_name: str, max_batch: int) -> list:
    """Run the engine on the export's own images (batch 1 and 3, within the profile) through the runtime's
    TensorRT backend and compare it like every other artifact: fp32 against PyTorch, fp16/int8 against
    the fp32 graph, with the tolerances of mtlkd/export/validate.py."""
    from mtlkd.export import validate as val
    from mtlkd.runtime.backends import load_backend

    backend = load_backend("tensorrt", engine, "cuda")
    batches = [b for b in val.BATCHES if b <= max_batch]
    tasks = list(backend.tasks)
    outs = val.run_batches(lambda x: backend.run(x, tasks), images, batches)
    refs = {b: reference[b] for b in batches}
    return val.compare(engine.name, precision, reference_name, refs, outs)


def _openvino(onnx_path, out_dir, precision, calibration, deploy, images, refs, fp32, record) -> Path:
    from mtlkd.export import validate as val
    from mtlkd.export.openvino import export_openvino

    xml = export_openvino(onnx_path, out_dir / "openvino" / _named("model.xml", precision), precision=precision,
                          calibration=calibration, qdq_path=deploy if precision == "int8" else None)  # fmt: skip
    # The CPU plugin computes in bf16 by default on CPUs that have it (avx512_bf16, AMX), which alone moves
    # an untrained seg head's argmax on ~4% of pixels; check what the file holds, in f32.
    compiled = _compile(xml, {"INFERENCE_PRECISION_HINT": "f32"})  # compile once for both batch sizes
    outs = val.run_batches(lambda x: val.run_openvino(xml, x, compiled), images)
    if precision == "fp32":
        checks = val.compare(f"openvino/{xml.name}", "fp32", "pytorch", refs, outs)
    else:
        checks = val.compare(f"openvino/{xml.name}", precision, "fp32 onnx", fp32, outs)
    record(xml, precision, checks, "OpenVINO IR")
    return xml


def _named(name: str, precision: str) -> str:
    """model.xml -> model.int8.xml: every precision has its own files in every format, so an int8 export
    never replaces the fp32 one (ONNX: model.onnx, model.fp16.onnx, model.int8.onnx)."""
    stem, _, suffix = name.rpartition(".")
    return name if precision == "fp32" else f"{stem}.{precision}.{suffix}"


def _check_writable(folder: Path) -> None:
    """Refuse an export folder (or its nearest existing parent) that cannot be written, before the export."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {folder}: {existing} is not writable; pass another --out")


def _move_into_place(stage: Path, final_dir: Path) -> dict[Path, Path]:
    """Move every file built in `stage` to the same place under `final_dir` (weights before the files that
    name them: .bin before .xml, sidecars before engines); other files of `final_dir` stay. Returns
    staged path -> final path."""
    files = sorted((p for p in stage.rglob("*") if p.is_file()),
                   key=lambda p: (p.suffix in (".xml", ".engine", ".plan", ".onnx"), str(p)))
    moved = {}
    for path in files:
        target = final_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved[path] = target
    return moved


def _compile(xml: Path, config: dict):
    import openvino as ov

    return ov.Core().compile_model(str(xml), "CPU", config)


def _size(path: Path) -> int:
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return path.stat().st_size


def _report(rows: list[dict], checks) -> dict:
    from mtlkd.export.validate import summary

    return {"artifacts": [{"file": str(r["file"]), "bytes": _size(r["file"]), "precision": r["precision"],
                           "note": r["extra"], "checks": summary(r["checks"])} for r in rows],
            "checks": [c.__dict__ for c in checks]}  # fmt: skip


def _short(path: Path, out_dir: Path) -> str:
    for base in (out_dir, Path.cwd()):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _table(console, rows: list[dict], out_dir: Path, title: str | None = None) -> None:
    from rich.table import Table

    from mtlkd.export.validate import summary

    table = Table(title=title or f"written to {out_dir}")
    for column in ("file", "size", "precision", "max |err|", "accuracy kept (worst)", "note"):
        table.add_column(column)
    for row in rows:
        worst = summary(row["checks"])
        err = max((v["max_abs_err"] for v in worst.values()), default=None)
        units = {"seg_agreement": "seg {:.2f}%", "depth_rel_err": "depth {:.2f}%", "normal_angle": "normal {:.2f}°"}
        kept = ", ".join(units[k].format(v) for entry in worst.values() for k, v in entry.items() if k in units)
        table.add_row(_short(row["file"], out_dir), _human(_size(row["file"])), row["precision"],
                      "-" if err is None else f"{err:.1e}", kept or "-", row["extra"])  # fmt: skip
    console.print(table)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


app.command()(command)

if __name__ == "__main__":
    app()
