"""`mtl-infer`: run a model on images, folders, globs, videos or a camera and write pictures of the result.

Imports no torch unless the model is a .safetensors checkpoint: exported models run on a runtime-only
install.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from mtlkd.ui import fail, progress_bar, user_errors

DEFAULT_MODEL = Path("runs/demo/mtl/model.safetensors")
STAGES = ("decode", "preprocess", "network", "postprocess", "save")


@dataclass
class InferSummary:
    """What a run did: counts, failures (one message each), written files, and summed stage times (s)."""

    out: Path
    images: int = 0
    frames: int = 0
    failures: list[str] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, stage_seconds: dict[str, float]) -> None:
        for stage in STAGES:
            self.seconds[stage] += stage_seconds.get(stage, 0.0)

    def per_image_ms(self) -> dict[str, float]:
        count = max(1, self.images + self.frames)
        return {stage: 1000 * s / count for stage, s in self.seconds.items()}


def _report_failure(summary: InferSummary, message: str) -> None:
    summary.failures.append(message)
    print(f"error: {message}", file=sys.stderr, flush=True)


class _Stems:
    """Output name per input: its stem, made unique when two inputs share one (a/x.png, b/x.png), and never
    one whose outputs would land on an input file (--out set to the input folder holding x_seg.png)."""

    def __init__(self, out: Path | None = None, inputs: set[Path] | None = None):
        self.used: dict[str, int] = {}
        self.out, self.inputs = out, inputs or set()

    def __call__(self, stem: str) -> str:
        count = self.used.get(stem, 0)
        while True:
            name = stem if count == 0 else f"{stem}_{count + 1}"
            count += 1
            if not self._hits_input(name):
                break
        self.used[stem] = count
        return name

    def _hits_input(self, name: str) -> bool:
        if self.out is None or not self.inputs:
            return False
        return any(_resolved(self.out / f"{name}_{kind}") in self.inputs for kind in OUTPUT_KINDS)


OUTPUT_KINDS = ("seg.png", "depth.png", "normal.png", "panel.png", "panel.mp4",
                *(f"{task}.npy" for task in ("seg", "depth", "normal")))


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path.absolute()


def write_outputs(out: Path, stem: str, image, result: dict, class_names: list[str], save_raw: bool) -> None:
    """<stem>_seg.png (with legend), <stem>_depth.png (with colour bar), <stem>_normal.png, <stem>_panel.png,
    and with save_raw the arrays as <stem>_<task>.npy. Each file is written beside and renamed into place."""

    from mtlkd.files import atomic_write
    from mtlkd.runtime import visualize

    if "seg" in result:
        visualize.save_png(out / f"{stem}_seg.png", visualize.seg_image(result["seg"], class_names))
    if "depth" in result:
        visualize.save_png(out / f"{stem}_depth.png", visualize.depth_image(result["depth"]))
    if "normal" in result:
        visualize.save_png(out / f"{stem}_normal.png", visualize.normal_image(result["normal"]))
    visualize.save_png(out / f"{stem}_panel.png", visualize.panel(image, result, class_names))
    if save_raw:
        for task, array in result.items():
            atomic_write(out / f"{stem}_{task}.npy", lambda tmp, a=array: _save_npy(tmp, a), suffix=".npy")


def _save_npy(path: str, array) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_out_folder(out: Path) -> None:
    """Refuse an --out that is a file or cannot be written, before any image is read."""
    from mtlkd.errors import UserError
    from mtlkd.files import make_out_folder

    make_out_folder(out, "the pictures")
    if not _writable(out):
        raise UserError(f"--out {out}: the folder is not writable; pass another --out")


def infer_paths(predictor: Any, sources: list[str | Path], out: str | Path, tasks: str | list[str] | None = None,
                save_raw: bool = False, batch_size: int = 1, max_frames: int = 0,
                show_progress: bool = True) -> InferSummary:
    """Run `predictor` on every source (files, folders, globs, videos, camera indices) and write the
    pictures into `out`. Unreadable inputs are reported as one `error:` line each on stderr and skipped;
    the summary lists them. Library function behind mtl-infer (the demo calls it too)."""
    from mtlkd.runtime.media import expand_sources

    out = Path(out)
    tasks = predictor.resolve_tasks(tasks)
    check_out_folder(out)
    summary = InferSummary(out=out)
    expanded = expand_sources([str(s) for s in sources])
    stems = _Stems(out, {_resolved(Path(s.path)) for s in expanded if s.kind in ("image", "video")})
    for source in expanded:
        if source.kind == "missing":
            _report_failure(summary, f"{source.path}: no such file, folder, glob match or camera")
    if not expanded:
        _report_failure(summary, f"no images or videos found in {', '.join(str(s) for s in sources)}")
    images = [s for s in expanded if s.kind == "image"]
    if images:
        _infer_images(predictor, images, out, tasks, save_raw, max(1, batch_size), show_progress and len(images) > 1,
                      summary, stems)
    for source in expanded:
        if source.kind in ("video", "camera"):
            _infer_video(predictor, source, out, tasks, max_frames, show_progress, summary, stems)
    return summary


def _infer_images(predictor, images, out, tasks, save_raw, batch_size, show_progress, summary, stems) -> None:
    from mtlkd.errors import MediaError
    from mtlkd.runtime.media import read_image

    with progress_bar("img", transient=False) if show_progress else _NoBar() as bar:
        task_id = bar.add_task("infer", total=len(images), info="")
        for start in range(0, len(images), batch_size):
            chunk, arrays = [], []
            t0 = time.perf_counter()
            for source in images[start : start + batch_size]:
                try:
                    arrays.append(read_image(source.path))
                    chunk.append(source)
                except MediaError as exc:  # read_image turns whatever its decoder raises into this
                    _report_failure(summary, str(exc))
            decode = time.perf_counter() - t0
            if arrays:
                results = predictor.predict_batch(arrays, tasks)
                t1 = time.perf_counter()
                for source, image, result in zip(chunk, arrays, results, strict=True):
                    try:
                        write_outputs(out, stems(source.stem), image, result, predictor.class_names, save_raw)
                    except OSError as exc:  # full disk, folder removed: nothing half-written is left; stop
                        from mtlkd.errors import UserError

                        raise UserError(f"{out}: cannot write the pictures of {source.path} "
                                        f"({exc.strerror or exc}); earlier outputs are complete") from None
                summary.add({"decode": decode, **predictor.timings, "save": time.perf_counter() - t1})
                summary.images += len(arrays)
            bar.update(task_id, advance=len(images[start : start + batch_size]))


def _infer_video(predictor, source, out, tasks, max_frames, show_progress, summary, stems) -> None:
    from mtlkd.errors import MediaError
    from mtlkd.runtime import visualize
    from mtlkd.runtime.media import VideoWriter, open_video

    try:
        reader = open_video(source)
    except MediaError as exc:
        _report_failure(summary, str(exc))
        return
    target = out / f"{stems(source.stem)}_panel.mp4"
    total = reader.frame_count
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    frames = 0
    started = time.perf_counter()
    with reader, VideoWriter(target, reader.fps) as writer, (
        progress_bar("frame") if show_progress else _NoBar()
    ) as bar:
        task_id = bar.add_task(source.stem, total=total, info="")
        iterator = iter(reader)
        try:
            while not max_frames or frames < max_frames:
                t0 = time.perf_counter()
                frame = next(iterator, None)
                if frame is None:
                    break
                decode = time.perf_counter() - t0
                result = predictor.predict(frame, tasks)
                t1 = time.perf_counter()
                writer.write(visualize.panel(frame, result, predictor.class_names, fixed_layout=True))
                summary.add({"decode": decode, **predictor.timings, "save": time.perf_counter() - t1})
                frames += 1
                fps = frames / max(time.perf_counter() - started, 1e-9)
                bar.update(task_id, advance=1, info=f"{fps:.1f} fps")
        except KeyboardInterrupt:  # a camera runs until Ctrl-C; keep what was written
            pass
    summary.frames += frames
    if frames:
        summary.videos.append(target)
    else:
        _report_failure(summary, f"{source.path}: no frame could be read")


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def add_task(self, *_, **__):
        return 0

    def update(self, *_, **__):
        pass


def command(
    sources: list[str] = typer.Argument(
        ..., metavar="SOURCE...",
        help="Image files, folders, globs ('photos/*.jpg'), videos (.mp4 .avi .mov .mkv) or camera indices (0)."),
    model: Path | None = typer.Option(
        None, "--model", "-m", help=f"model.safetensors, .onnx, .xml or .engine [default: {DEFAULT_MODEL}]"),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, torch, onnxruntime, openvino or tensorrt."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda [default: cuda for .engine, else cpu]"),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated subset, e.g. seg,depth [default: all]."),
    out: Path = typer.Option(Path("runs/infer"), "--out", "-o", help="Folder for the pictures."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also save <stem>_<task>.npy arrays."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per forward pass."),
    max_frames: int = typer.Option(0, "--max-frames", min=0, help="Stop videos/cameras after N frames (0: all)."),
) -> None:
    """Predict segmentation, depth and normals for images or video and save pictures of them.

    Per image: <stem>_seg.png (with legend), <stem>_depth.png (colour bar in metres), <stem>_normal.png,
    <stem>_panel.png (input | seg | depth | normals), and with --save-raw <stem>_seg.npy etc.
    Videos and cameras give <stem>_panel.mp4. Unreadable files are reported and skipped (exit code 1).

    Examples:

      mtl-infer photos/ --model exports/model.onnx

      mtl-infer street.mp4 --model exports/model.xml --tasks seg,depth --out runs/street
    """
    if model is None:
        if not DEFAULT_MODEL.is_file():
            fail(f"no --model given and the demo checkpoint {DEFAULT_MODEL} does not exist; pass --model PATH "
                 f"(a .safetensors, .onnx, .xml or .engine), or run `make demo` first")
        model = DEFAULT_MODEL
    with user_errors():
        from mtlkd.runtime import Predictor

        started = time.perf_counter()
        predictor = Predictor.load(model, backend=backend, device=device)
        load_seconds = time.perf_counter() - started
        summary = infer_paths(predictor, sources, out, tasks=tasks, save_raw=save_raw, batch_size=batch_size,
                              max_frames=max_frames)
    done = summary.images + summary.frames
    typer.echo(f"model {model} on {predictor.backend_name} ({predictor.device}), loaded in {load_seconds:.2f} s")
    if summary.images:
        typer.echo(f"{summary.images} image(s) -> {summary.out}/<name>_{{seg,depth,normal,panel}}.png")
    for video in summary.videos:
        typer.echo(f"video -> {video}")
    if done:
        ms = summary.per_image_ms()
        typer.echo("per image: " + " | ".join(f"{stage} {ms[stage]:.1f} ms" for stage in STAGES)
                   + f" | total {sum(ms.values()):.1f} ms")
    if summary.failures:
        typer.echo(f"{len(summary.failures)} input(s) failed (listed above)", err=True)
        raise typer.Exit(1)


app = typer.Typer(add_completion=False)
app.command()(command)

if __name__ == "__main__":
    app()
