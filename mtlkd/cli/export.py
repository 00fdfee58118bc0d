"""`mtl-export`: options in, `mtlkd.export.pipeline.export_model` called, its result printed.

Results (the table of files and checks, or JSON) go to stdout; progress and each check line to stderr.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

from mtlkd.cli.common import JSON_STDOUT, MtlCommand, check_json_target, check_not_input, emit_json
from mtlkd.errors import BackendUnavailable, ValidationError
from mtlkd.export.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from mtlkd.export.options import DEFAULT_WORKSPACE_MB
from mtlkd.ui import fail, user_errors

EXIT_FAILED = 1  # a check failed or a back-end is missing (user mistakes exit 2)


app = typer.Typer(add_completion=False)


def command(
    model: Path = typer.Argument(..., metavar="MODEL", help="A model.safetensors written by mtl-train."),
    out: Path | None = typer.Option(None, "--out", "-o", metavar="DIR",
                                    help="Output folder (default: export/ beside the model)."),
    onnx: bool = typer.Option(False, "--onnx",
                              help="Write the ONNX graph (always done; the rest starts from it)."),
    trt: bool = typer.Option(False, "--trt",
                             help="Build a TensorRT engine (needs TensorRT and an NVIDIA GPU)."),
    openvino: bool = typer.Option(False, "--openvino",
                                  help="Write an OpenVINO IR (openvino/model.xml + .bin)."),
    ort_optimize: bool = typer.Option(False, "--ort-optimize",
                                      help="Also write model.ort.onnx, fused by onnxruntime.transformers (ORT only)."),
    precision: str = typer.Option("fp32", "--precision", "-p", metavar="fp32|fp16|int8[,...]",
                                  help="fp16: mixed-precision graph; int8: Q/DQ graph calibrated on --calib-data. "
                                       "Several, comma-separated, export each."),
    calib_data: Path | None = typer.Option(None, "--calib-data", metavar="DIR",
                                           help="int8 calibration images: a dataset folder or a folder of images "
                                                "(default: 32 synthetic scenes)."),
    calib_size: int = typer.Option(32, "--calib-size", metavar="N", help="How many calibration images to use."),
    tasks: str | None = typer.Option(None, "--tasks", metavar="seg,depth",
                                     help="Export only these heads (default: every task of the model)."),
    triton: Path | None = typer.Option(None, "--triton", metavar="REPO",
                                       help="Also write a Triton model repository here."),
    triton_backend: str = typer.Option("native", "--triton-backend", metavar="native|python",
                                       help="native: Triton's ONNX Runtime/OpenVINO/TensorRT backends (NGC "
                                            "containers); python: the same models run by mtlkd's Predictor in "
                                            "Triton's Python backend (what mtl-serve's pip-installed server has)."),
    batch_size: str = typer.Option("1,4,8", "--batch-size", metavar="MIN,OPT,MAX",
                                   help="TensorRT batch profile (one number N: 1,N,N); MAX is also Triton's "
                                        "max_batch_size."),
    workspace: int = typer.Option(DEFAULT_WORKSPACE_MB, "--workspace", metavar="MB",
                                  help="TensorRT builder workspace limit."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", metavar="N", help=f"ONNX opset ({MIN_OPSET} to {MAX_OPSET})."),
    full_resolution: bool = typer.Option(False, "--full-resolution",
                                         help="Outputs at the input size (the graph upsamples). Default: at the "
                                              "heads' own grid (output_stride in the metadata), resized once by "
                                              "the runtime straight to each image's size."),
    device: str = typer.Option("cpu", "--device", metavar="cpu|cuda",
                               help="Where the network runs while exporting and checking."),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="The result as JSON: on stdout (not the table), or into PATH (a .json)."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress or check lines; only results and errors."),
) -> None:  # fmt: skip
    """Export a checkpoint to ONNX and, on request, TensorRT, OpenVINO and Triton.

    The ONNX graph has one input `image` (N x 3 x H x W float32, RGB in [0, 1],
    dynamic N) and one output per task, and carries the checkpoint's metadata
    (tasks, classes, input size, normalisation) under the key "mtlkd".

    Every file is run on synthetic scenes at batch 1 and 3 and compared with
    PyTorch (fp32) or with the fp32 graph (fp16, int8); a result outside its
    tolerance exits with status 1 and leaves the output folder as it was; a
    missing TensorRT or GPU exits with status 1 after writing the rest.

    TensorRT 11 takes precision from the graph only: --precision fp16 writes a
    mixed-precision graph (float32 I/O; LayerNorm, Softmax and normalisations
    in float32), --precision int8 a Q/DQ graph; the engine and the Triton ONNX
    model are built from that graph.

    Examples:
      mtl-export runs/okd/model.safetensors
      mtl-export runs/okd/model.safetensors --openvino --precision int8 \\
          --calib-data data/synthetic
      mtl-export runs/okd/model.safetensors --tasks seg,depth --openvino \\
          --triton triton_repo --json export-result.json
      mtl-export runs/okd/model.safetensors --trt --precision fp16,int8 \\
          --batch-size 1,8,16 --workspace 2048 --json
    """
    from mtlkd.export.pipeline import ExportOptions, export_model

    formats = ["onnx"] + [f for f, on in (("ort", ort_optimize), ("openvino", openvino), ("tensorrt", trt)) if on]
    progress = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with user_errors():
        options = ExportOptions(  # a bad value is one ConfigError line naming its flag
            formats=formats, precisions=[p.strip() for p in precision.split(",") if p.strip()],
            tasks=tasks.split(",") if tasks is not None else None, opset=opset, device=device,
            calib_data=calib_data, calib_size=calib_size, batch_profile=batch_size, workspace_mb=workspace,
            triton=triton, triton_backend=triton_backend, full_resolution=full_resolution,
        )  # fmt: skip
        out_dir = out or model.parent / "export"
        # before the export, so that its result is not lost at the end; no output onto the checkpoint or the
        # calibration images
        folders = [calib_data] if calib_data else []
        check_json_target(json_out, inputs=[model], input_folders=folders)
        for option, target in (("--out", out_dir), ("--triton", triton)):
            check_not_input(target, option, [model], folders)
        check_not_input(json_out, "--json", export_outputs(out_dir), what="outputs")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exporter/converter chatter; real problems raise
                result = export_model(model, out_dir, options, progress=progress)
        except BackendUnavailable as err:  # OpenVINO asked for but not installed: checked before anything is built
            fail(f"{err}; nothing was written", code=EXIT_FAILED)
        except ValidationError as err:
            _table(getattr(err, "result", None), "not written (failed its checks)")
            fail(f"{err} ({out_dir} was left as it was; tolerances in mtlkd/export/validate.py)", code=EXIT_FAILED)
    if json_out != JSON_STDOUT:
        _table(result)
    emit_json(result.to_dict(), json_out)
    if result.problems:
        fail("; ".join(result.problems), code=EXIT_FAILED)


def export_outputs(out_dir: Path) -> list[Path]:
    """The model files an export may write (every format and precision, with an IR's .bin and an engine's
    sidecar): what `--json` must not land on (export.json may: it holds the same result)."""
    from mtlkd.export.options import DEFAULT_NAMES

    files = [out_dir / name for name in DEFAULT_NAMES.values()]
    files += [path.with_suffix(".bin") for path in files if path.suffix == ".xml"]
    files += [Path(f"{path}.json") for path in files if path.suffix in (".engine", ".plan")]
    return files


def _table(result, title: str | None = None) -> None:
    """The files and the worst value of each check, on stdout."""
    from rich.console import Console
    from rich.table import Table

    from mtlkd.export.validate import summary

    if result is None:
        return
    console = Console()
    if not console.is_terminal:
        console.width = 140  # logs and pipes: do not wrap the table at 80 columns
    table = Table(title=title or f"written to {result.out}")
    for column in ("file", "size", "precision", "max |err|", "accuracy kept (worst)", "note"):
        table.add_column(column)
    units = {"seg_agreement": "seg {:.2f}%", "depth_rel_err": "depth {:.2f}%", "normal_angle": "normal {:.2f}°"}
    for artifact in result.artifacts:
        worst = summary(artifact.checks)
        err = max((v["max_abs_err"] for v in worst.values()), default=None)
        kept = ", ".join(units[k].format(v) for entry in worst.values() for k, v in entry.items() if k in units)
        note = artifact.note + (" (reused)" if artifact.reused else "")
        table.add_row(_short(artifact.path, result.out), _human(artifact.bytes), artifact.precision,
                      "-" if err is None else f"{err:.1e}", kept or "-", note)  # fmt: skip
    console.print(table)


def _short(path: Path, out_dir: Path) -> str:
    for base in (out_dir, Path.cwd()):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
