"""Inference over what people point at: files, folders, globs, videos and cameras -> pictures and arrays.

    from mtlkd.runtime.infer import InferOptions, infer
    result = infer("exports/model.onnx", ["photos/", "street.mp4"], "runs/infer", InferOptions(tasks="seg,depth"))
    result.images, result.failures, result.written, result.per_image_ms()

The one loop behind `mtl-infer` and the demo; torch is imported only when the model is a .safetensors
checkpoint. What a user has is never lost: an output whose name would land on an input gets a `_2` suffix,
every file is written beside its target and renamed into place, and an unreadable input is one message in
`failures` (printed as one `error:` line on stderr) while the rest still run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlkd.errors import ConfigError, MediaError, UserError
from mtlkd.runtime.media import Source, VideoWriter, expand_sources, open_video, read_image
from mtlkd.ui import progress_bar

STAGES = ("decode", "preprocess", "network", "postprocess", "save")


def output_kinds() -> tuple[str, ...]:
    """The ends of the names `infer` writes after `<stem>_`: a picture and an array per registered task,
    the overlay of class maps, the panel and the panel video."""
    from mtlkd.tasks import CLASSES, TASKS

    pictures = [f"{name}.png" for name in TASKS]
    overlay = ["overlay.png"] if any(task.picture == CLASSES for task in TASKS.values()) else []
    return (*pictures, *overlay, "panel.png", "panel.mp4", *(f"{name}.npy" for name in TASKS))


@dataclass
class InferOptions:
    """How to run: which tasks and backend, what to write, and the depth colour range.

    depth_range: (near, far) metres the depth colours span, kept for the whole run so that pictures compare
    and video does not flicker. None: the model's metadata `depth_range` if it has one, else the 2nd-98th
    percentile of the first image or frame widened to round numbers
    (`visualize.run_depth_range`), then kept.
    """

    tasks: str | list[str] | None = None
    backend: str = "auto"
    device: str | None = None
    save_raw: bool = False
    batch_size: int = 1
    max_frames: int = 0
    depth_range: tuple[float, float] | None = None
    overlay_alpha: float = 0.5
    progress: bool = True
    report_failures: bool = True  # print each failure as one `error:` line on stderr as it happens

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be 1 or more")
        if self.max_frames < 0:
            raise ConfigError(f"--max-frames {self.max_frames}: must be 0 (all) or more")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError(f"overlay alpha {self.overlay_alpha}: must be in [0, 1]")
        if self.depth_range is not None:
            self.depth_range = check_depth_range(self.depth_range, "--depth-range")


def check_depth_range(value: Any, where: str) -> tuple[float, float]:
    """(near, far) as two finite floats with 0 <= near < far, or one ConfigError line naming `where`."""
    try:
        near, far = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} {value!r}: expected two numbers MIN,MAX in metres, e.g. 0.5,10") from None
    if not (near == near and far == far and 0.0 <= near < far < float("inf")):  # NaN fails the self-comparison
        raise ConfigError(f"{where} {near:g},{far:g}: expected 0 <= MIN < MAX metres, e.g. 0.5,10")
    return near, far


def parse_depth_range(text: str) -> tuple[float, float]:
    """'0.5,10' -> (0.5, 10.0), checked."""
    return check_depth_range(text.replace(" ", "").split(","), "--depth-range")


@dataclass
class InferResult:
    """What a run did: counts, failures (one message each), files written, summed stage times (s), and the
    depth colour range it used."""

    out: Path
    model: str = ""
    backend: str = ""
    device: str = ""
    load_seconds: float = 0.0
    images: int = 0
    frames: int = 0
    failures: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    depth_range: tuple[float, float] | None = None
    depth_range_source: str = ""  # "--depth-range", "the model's metadata" or "from the first image"
    depth_unit: str = "m"  # "" for a model whose depth is relative (metadata depth_meaning)

    def add(self, stage_seconds: dict[str, float]) -> None:
        for stage in STAGES:
            self.seconds[stage] += stage_seconds.get(stage, 0.0)

    def per_image_ms(self) -> dict[str, float]:
        count = max(1, self.images + self.frames)
        return {stage: 1000 * s / count for stage, s in self.seconds.items()}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out",):
            data[key] = str(data[key])
        for key in ("written", "videos"):
            data[key] = [str(p) for p in data[key]]
        data["per_image_ms"] = {k: round(v, 3) for k, v in self.per_image_ms().items()}
        data["depth_range"] = list(self.depth_range) if self.depth_range else None
        return data


def infer(predictor_or_path: Any, sources: list[str | Path], out: str | Path,
          options: InferOptions | None = None) -> InferResult:
    """Run a model on every source (image files, folders, globs, videos, camera indices such as "0") and
    write into `out`: per image <stem>_seg.png, _overlay.png, _depth.png, _normal.png, _panel.png (and
    <stem>_<task>.npy with save_raw); per video or camera <stem>_panel.mp4.

    `predictor_or_path`: a loaded `Predictor`, or a model file (.safetensors, .onnx, .xml, .engine) loaded
    here with options.backend / options.device. Bad input (a missing --out, a model that cannot be read)
    raises UserError before anything is written; unreadable inputs are collected in `failures`.
    """
    options = options or InferOptions()
    out = Path(out)
    predictor, load_seconds = _predictor(predictor_or_path, options)
    tasks = predictor.resolve_tasks(options.tasks)
    check_out_folder(out)
    run = _Run(predictor, tasks, out, options,
               InferResult(out=out, model=str(predictor.path), backend=predictor.backend_name,
                           device=predictor.device, load_seconds=load_seconds))
    expanded = expand_sources([str(s) for s in sources])
    run.stems = _Stems(out, {_resolved(p) for p in [*input_files(sources), Path(str(predictor.path))]})
    for source in expanded:
        if source.kind == "missing":
            run.fail(f"{source.path}: no such file, folder, glob match or camera")
    if not expanded:
        run.fail(f"no images or videos found in {', '.join(str(s) for s in sources)}")
    images = [s for s in expanded if s.kind == "image"]
    if images:
        run.images(images)
    for source in expanded:
        if source.kind in ("video", "camera"):
            run.video(source)
    return run.result


def input_files(sources: list[str | Path]) -> list[Path]:
    """The image and video files `sources` name (folders and globs expanded): what outputs must spare."""
    return [Path(s.path) for s in expand_sources([str(s) for s in sources]) if s.kind in ("image", "video")]


def _predictor(predictor_or_path: Any, options: InferOptions) -> tuple[Any, float]:
    if hasattr(predictor_or_path, "predict_batch"):
        return predictor_or_path, 0.0
    from mtlkd.runtime.predictor import Predictor

    started = time.perf_counter()
    predictor = Predictor.load(predictor_or_path, backend=options.backend, device=options.device)
    return predictor, time.perf_counter() - started


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_out_folder(out: Path) -> None:
    """Refuse an `out` that is a file or cannot be written, before any image is read."""
    from mtlkd.files import make_out_folder

    make_out_folder(out, "the pictures")
    if not _writable(out):
        raise UserError(f"--out {out}: the folder is not writable; pass another --out")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path.absolute()


class _Stems:
    """Output name per input: its stem, made unique when two inputs share one (a/x.png, b/x.png), and never
    one whose outputs would land on an input file (out set to the input folder holding x_seg.png)."""

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
        return any(_resolved(self.out / f"{name}_{kind}") in self.inputs for kind in output_kinds())


class _Run:
    """The state one call of `infer` shares between its images and videos (result, names, depth range)."""

    def __init__(self, predictor: Any, tasks: list[str], out: Path, options: InferOptions, result: InferResult):
        self.predictor, self.tasks, self.out, self.options, self.result = predictor, tasks, out, options, result
        self.stems = _Stems()
        from mtlkd.tasks import SCALE, TASKS

        meaning = predictor.metadata.get("depth_meaning")  # a student of relative-depth teachers says so
        self.shown = {name: task.shown_as(meaning) for name, task in TASKS.items()}
        result.depth_unit = next((t.unit for t in self.shown.values() if t.picture == SCALE), "")
        if options.depth_range is not None:
            result.depth_range, result.depth_range_source = options.depth_range, "--depth-range"
        elif predictor.metadata.get("depth_range") is not None:
            where = f"{predictor.path}: metadata depth_range"
            result.depth_range = check_depth_range(predictor.metadata["depth_range"], where)
            result.depth_range_source = "the model's metadata"

    def fail(self, message: str) -> None:
        self.result.failures.append(message)
        if self.options.report_failures:
            print(f"error: {message}", file=sys.stderr, flush=True)

    def depth_range_for(self, result: dict) -> tuple[float, float] | None:
        """The run's colour range of SCALE tasks (depth); the first such map fixes it when neither the option
        nor the model gave one."""
        from mtlkd.tasks import SCALE, TASKS

        scaled = [name for name in TASKS if name in result and TASKS[name].picture == SCALE]
        if self.result.depth_range is None and scaled:
            from mtlkd.runtime.visualize import run_depth_range

            self.result.depth_range = run_depth_range(result[scaled[0]])
            self.result.depth_range_source = "from the first image"
        return self.result.depth_range

    def images(self, images: list[Source]) -> None:
        options, predictor = self.options, self.predictor
        show = options.progress and len(images) > 1
        with progress_bar("img", transient=False, quiet=not show) as bar:
            task_id = bar.add_task("infer", total=len(images), info="")
            for start in range(0, len(images), options.batch_size):
                chunk, arrays = [], []
                t0 = time.perf_counter()
                for source in images[start : start + options.batch_size]:
                    try:
                        arrays.append(read_image(source.path))
                        chunk.append(source)
                    except MediaError as exc:  # read_image turns whatever its decoder raises into this
                        self.fail(str(exc))
                decode = time.perf_counter() - t0
                if arrays:
                    results = predictor.predict_batch(arrays, self.tasks)
                    t1 = time.perf_counter()
                    for source, image, result in zip(chunk, arrays, results, strict=True):
                        self._write(source, image, result)
                    self.result.add({"decode": decode, **predictor.timings, "save": time.perf_counter() - t1})
                    self.result.images += len(arrays)
                bar.update(task_id, advance=len(images[start : start + options.batch_size]))

    def _write(self, source: Source, image: Any, result: dict) -> None:
        try:
            self.result.written.extend(write_outputs(
                self.out, self.stems(source.stem), image, result, self.predictor.class_names,
                save_raw=self.options.save_raw, depth_range=self.depth_range_for(result),
                alpha=self.options.overlay_alpha, shown=self.shown))
        except OSError as exc:  # full disk, folder removed: nothing half-written is left; stop
            raise UserError(f"{self.out}: cannot write the pictures of {source.path} "
                            f"({exc.strerror or exc}); earlier outputs are complete") from None

    def video(self, source: Source) -> None:
        from mtlkd.runtime import visualize

        options, predictor = self.options, self.predictor
        try:
            reader = open_video(source)
        except MediaError as exc:
            self.fail(str(exc))
            return
        target = self.out / f"{self.stems(source.stem)}_panel.mp4"
        total = reader.frame_count
        if options.max_frames:
            total = min(total, options.max_frames) if total else options.max_frames
        frames, started = 0, time.perf_counter()
        with reader, VideoWriter(target, reader.fps) as writer, \
                progress_bar("frame", quiet=not options.progress) as bar:
            task_id = bar.add_task(source.stem, total=total, info="")
            iterator = iter(reader)
            try:
                while not options.max_frames or frames < options.max_frames:
                    t0 = time.perf_counter()
                    frame = next(iterator, None)
                    if frame is None:
                        break
                    decode = time.perf_counter() - t0
                    result = predictor.predict(frame, self.tasks)
                    t1 = time.perf_counter()
                    writer.write(visualize.panel(frame, result, predictor.class_names, fixed_layout=True,
                                                 depth_range=self.depth_range_for(result),
                                                 alpha=options.overlay_alpha, shown=self.shown))
                    self.result.add({"decode": decode, **predictor.timings, "save": time.perf_counter() - t1})
                    frames += 1
                    fps = frames / max(time.perf_counter() - started, 1e-9)
                    bar.update(task_id, advance=1, info=f"{fps:.1f} fps")
            except KeyboardInterrupt:  # a camera runs until Ctrl-C; keep what was written
                pass
        self.result.frames += frames
        if frames:
            self.result.videos.append(target)
            self.result.written.append(target)
        else:
            self.fail(f"{source.path}: no frame could be read")


def write_outputs(out: Path, stem: str, image: Any, result: dict, class_names: list[str], save_raw: bool = False,
                  depth_range: tuple[float, float] | None = None, alpha: float = 0.5,
                  shown: dict[str, Any] | None = None) -> list[Path]:
    """<stem>_<task>.png for each task (`visualize.task_pictures`: seg colours + legend, depth with its
    colour bar in metres, normals with their direction key), <stem>_overlay.png (the class colours blended
    over the input, legend), <stem>_panel.png, and with save_raw the arrays as <stem>_<task>.npy; `shown`:
    the tasks as the model's metadata draws them (`Task.shown_as`). Each file is written beside and renamed
    into place; returns the paths written."""
    from mtlkd.files import atomic_write
    from mtlkd.runtime import visualize
    from mtlkd.tasks import TASKS

    pictures: dict[str, Any] = {}
    shown = shown or {}
    for task in [name for name in TASKS if name in result]:  # in the registry's order
        pictures.update(visualize.task_pictures(shown.get(task, task), image, result[task], class_names,
                                                depth_range, alpha))
    pictures["panel"] = visualize.panel(image, result, class_names, depth_range=depth_range, alpha=alpha,
                                        shown=shown)
    written = []
    for kind, picture in pictures.items():
        written.append(out / f"{stem}_{kind}.png")
        visualize.save_png(written[-1], picture)
    if save_raw:
        for task, array in result.items():
            written.append(atomic_write(out / f"{stem}_{task}.npy", lambda tmp, a=array: _save_npy(tmp, a),
                                        suffix=".npy"))
    return written


def _save_npy(path: str, array: Any) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
