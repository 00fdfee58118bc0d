"""`mtl-eval`: dataset-level metrics of a checkpoint or an exported model.

Parses options and prints; the work is `mtlkd.eval.evaluate.evaluate_model`, which reads the dataset with
numpy, so scoring an exported file needs no torch. Results on stdout, progress and the header on stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mtlkd.cli.common import JSON_STDOUT, MtlCommand, backend_option, check_json_target, emit_json, model_files
from mtlkd.ui import console, user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


def command(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False,
                                 help="model.safetensors, model.onnx, an OpenVINO model.xml or a TensorRT .engine."),
    dataset: str = typer.Argument("synthetic", metavar="DATASET",
                                  help="nyuv2, cityscapes, cityscapes19 or synthetic (rendered into the cache on "
                                       "first use)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", metavar="DIR",
                                         help="Dataset folder (MTAN layout) (default for synthetic: the cache)."),
    split: str = typer.Option("val", "--split", metavar="SPLIT", help="train or val."),
    tasks: str | None = typer.Option(None, "--tasks", metavar="TASKS",
                                     help="Comma-separated subset (default: every task MODEL and DATASET share)."),
    batch_size: int = typer.Option(8, "--batch-size", metavar="N", help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", metavar="cpu|cuda",
                                      help="cpu or cuda (default: cuda for .engine, else cpu)."),
    backend: str = backend_option(),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="The metrics as JSON (the layout of a run's metrics.json, which "
                                             "mtl-report reads): on stdout, or into PATH (ending in .json, or "
                                             "--json=PATH)."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress bar or header; only results and errors."),
) -> None:
    """Evaluate MODEL on a whole split: mIoU, pixel accuracy, depth errors, normal angles.

    Results on stdout, progress and the header on stderr.

    Examples:

      mtl-eval runs/demo/mtl/model.safetensors synthetic

      mtl-eval exports/model.onnx nyuv2 --data-dir data/nyuv2 --json scores.json
    """
    from mtlkd.eval.evaluate import EvalOptions, evaluate_model

    with user_errors():
        # before the run, so that its result is not lost at the end, and never onto the model or the dataset
        check_json_target(json_out, inputs=model_files(model), input_folders=[data_dir] if data_dir else [])
        options = EvalOptions(data_dir=data_dir, split=split, backend=backend, device=device, batch_size=batch_size,
                              tasks=tasks, progress=not quiet)
        scores = evaluate_model(model, dataset, options)
        if not quiet:
            console.print(f"evaluated {scores.model} ({scores.precision}, {scores.backend}) on {scores.dataset} "
                          f"{scores.split}: {scores.samples} images in {scores.seconds:.1f} s", highlight=False)
        if emit_json(scores.metrics, json_out):
            typer.echo(f"wrote {json_out}", err=True)
        if json_out == JSON_STDOUT:  # JSON on stdout stands alone
            return
    for task, values in scores.metrics.items():
        typer.echo(f"{task:<7} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))


app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
