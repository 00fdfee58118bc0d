"""`mtl-infer`: run a model on images, folders, globs, videos or a camera and write pictures of the result.

Parses options and prints; the work is `mtlkd.runtime.infer.infer`. Imports no torch unless the model is a
.safetensors checkpoint: exported models run on a runtime-only install.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mtlkd.cli.common import (
    JSON_STDOUT,
    MtlCommand,
    backend_option,
    check_json_target,
    emit_json,
    model_files,
)
from mtlkd.ui import user_errors


def command(
    model: Path = typer.Argument(..., metavar="MODEL", show_default=False,
                                 help="model.safetensors, model.onnx, an OpenVINO model.xml or a TensorRT .engine."),
    sources: list[str] = typer.Argument(
        ..., metavar="SOURCE", show_default=False,
        help="Image files, folders, globs ('photos/*.jpg'), videos (.mp4 .avi .mov .mkv) or camera indices (0)."),
    out: Path = typer.Option(Path("runs/infer"), "--out", "-o", metavar="DIR", help="Folder for the pictures."),
    tasks: str | None = typer.Option(None, "--tasks", metavar="TASKS",
                                     help="Comma-separated subset, e.g. seg,depth (default: every task of MODEL)."),
    batch_size: int = typer.Option(1, "--batch-size", metavar="N", help="Images per forward pass."),
    device: str | None = typer.Option(None, "--device", metavar="cpu|cuda",
                                      help="cpu or cuda (default: cuda for .engine, else cpu)."),
    backend: str = backend_option(),
    depth_range: str | None = typer.Option(
        None, "--depth-range", metavar="MIN,MAX",
        help="Metres the depth colours span, the same for every image and frame (default: the model's "
             "depth_range if it records one, else round numbers around the first image's depths, kept for the run)."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also save <stem>_<task>.npy arrays."),
    max_frames: int = typer.Option(0, "--max-frames", metavar="N", help="Stop videos/cameras after N frames (0: all)."),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="What was done and written, as JSON: on stdout, or into PATH (ending in "
                                             ".json, or --json=PATH)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; only results and errors."),
) -> None:
    """Predict segmentation, depth and normals for images or video and save pictures of them.

    Per image: <stem>_seg.png (classes with a legend), <stem>_overlay.png (the classes over the image),
    <stem>_depth.png (colour bar in metres), <stem>_normal.png (with a key of directions), <stem>_panel.png
    (all side by side), and with --save-raw <stem>_seg.npy etc. Videos and cameras give <stem>_panel.mp4.
    Unreadable files are reported and skipped (exit code 1). Results on stdout, progress on stderr.

    Examples:

      mtl-infer exports/model.onnx photos/

      mtl-infer exports/model.xml street.mp4 --tasks seg,depth --depth-range 1,40 --out runs/street

      mtl-infer runs/demo/mtl/model.safetensors 0 --max-frames 300      # camera 0
    """
    from mtlkd.runtime.infer import STAGES, InferOptions, infer, input_files, parse_depth_range

    with user_errors():
        # before the run, so that its result is not lost at the end, and never onto the model or an image
        check_json_target(json_out, inputs=[*model_files(model), *input_files(sources)])
        options = InferOptions(tasks=tasks, backend=backend, device=device, save_raw=save_raw,
                               batch_size=batch_size, max_frames=max_frames, progress=not quiet,
                               depth_range=parse_depth_range(depth_range) if depth_range else None)
        result = infer(model, sources, out, options)
        if emit_json(result.to_json(), json_out):
            typer.echo(f"wrote {json_out}", err=True)
    if json_out != JSON_STDOUT:  # JSON on stdout stands alone
        _print(result, STAGES)
    if result.failures:
        typer.echo(f"{len(result.failures)} input(s) failed (listed above)", err=True)
        raise typer.Exit(1)


def _print(result, stages) -> None:
    typer.echo(f"model {result.model} on {result.backend} ({result.device}), loaded in {result.load_seconds:.2f} s")
    if result.images:
        typer.echo(f"{result.images} image(s) -> {result.out}/<name>_{{seg,overlay,depth,normal,panel}}.png")
    for video in result.videos:
        typer.echo(f"video -> {video}")
    if result.depth_range:
        near, far = result.depth_range
        unit = f" {result.depth_unit}" if result.depth_unit else " (relative depth: no unit)"
        typer.echo(f"depth colours span {near:.2f}-{far:.2f}{unit} ({result.depth_range_source}); "
                   f"fix them with --depth-range MIN,MAX")
    if result.images + result.frames:
        ms = result.per_image_ms()
        typer.echo("per image: " + " | ".join(f"{stage} {ms[stage]:.1f} ms" for stage in stages)
                   + f" | total {sum(ms.values()):.1f} ms")


app = typer.Typer(add_completion=False)
app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
