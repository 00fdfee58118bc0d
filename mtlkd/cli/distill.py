"""`mtl-distill`: replace the single-task models a user runs with one multi-task student, on unlabeled frames.

Parses options and prints; the work is `mtlkd.train.distill_run.distill`, whose run folder is mtl-train's.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from mtlkd.cli.common import JSON_STDOUT, MtlCommand, check_json_target, emit_json, parse_hw
from mtlkd.models.presets import PRESETS
from mtlkd.train.options import TrainOptions
from mtlkd.ui import interrupted_code, terminations_unmasked, user_errors

TEACHER_HELP = (
    "TASKS=MODEL\\[,KEY=VALUE...], once per model: e.g. depth=depth.onnx, seg=seg.xml, "
    "normal=run/model.safetensors, seg,depth=mtl.onnx. A model without mtlkd metadata needs size=HxW, mean=R/G/B, "
    "std=R/G/B (for RGB in [0, 1]) and per task seg=logits|probs with classes=FILE (one name a line), "
    "depth=metric|relative|inverse (inverse: inverse depth up to scale and shift), normal=AXES (its x,y,z in "
    "mtlkd's frame, e.g. x-y-z: x kept, y and z flipped); output=NAME\\[/NAME] picks its outputs, backend=NAME "
    "its runtime backend.")


def command(
    sources: list[str] = typer.Argument(..., metavar="SOURCE", show_default=False,
                                        help="Unlabeled image files, folders, globs ('frames/*.png') or videos."),
    teacher: list[str] = typer.Option(..., "--teacher", metavar="TASKS=MODEL", show_default=False, help=TEACHER_HELP),
    out: Path = typer.Option(Path("runs/distill"), "--out", metavar="DIR", help="Run folder (as mtl-train's)."),
    preset: str = typer.Option(TrainOptions.preset, "--preset", metavar="NAME",
                               help="The student: " + ", ".join(PRESETS) + "."),
    img_size: str | None = typer.Option(None, "--img-size", metavar="HxW", help="Student input, overriding the "
                                        "preset's."),
    epochs: int = typer.Option(TrainOptions.epochs, "--epochs", metavar="N", help="Epochs."),
    batch_size: int = typer.Option(TrainOptions.batch_size, "--batch-size", metavar="N", help="Frames per step."),
    lr: float = typer.Option(TrainOptions.lr, "--lr", metavar="LR", help="Peak learning rate of OneCycleLR."),
    weight_decay: float = typer.Option(TrainOptions.weight_decay, "--weight-decay", metavar="WD",
                                       help="AdamW weight decay."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from the preset's pretrained backbone."),
    task_weighting: str | None = typer.Option(
        None, "--task-weighting", metavar="NAME", show_default=False,
        help="How the task losses are combined: one of mtl-train's --task-weighting choices that needs no "
             "single-task losses (default: every task weight 1)."),
    seg_loss: str | None = typer.Option(
        None, "--seg-loss", metavar="LOSS", show_default=False,
        help="Segmentation against the teacher: kl (soft targets at --seg-temperature; the default) or ce (the "
             "teacher's classes)."),
    seg_temperature: float | None = typer.Option(None, "--seg-temperature", metavar="T", show_default=False,
                                                 help="Soft-target temperature (default 1)."),
    val_data: str | None = typer.Option(None, "--val-data", metavar="DATASET",
                                        help="A labelled dataset (its val split): the true metrics of the student "
                                             "and of each teacher, side by side."),
    val_dir: Path | None = typer.Option(None, "--val-dir", metavar="DIR", help="Folder of --val-data (MTAN layout)."),
    select_fraction: float = typer.Option(TrainOptions.select_fraction, "--select-fraction", metavar="F",
                                          help="Share of the frames held out to measure agreement and choose the "
                                               "epoch."),
    frame_step: int = typer.Option(1, "--frame-step", metavar="N", help="Take every N-th frame of a video."),
    cache: Path | None = typer.Option(None, "--cache", metavar="DIR",
                                      help="Teacher prediction cache (default: $MTLKD_CACHE/teachers)."),
    cache_limit: float = typer.Option(20.0, "--cache-limit", metavar="GB", help="Largest size of the cache."),
    seed: int = typer.Option(TrainOptions.seed, "--seed", metavar="N", help="Seed."),
    device: str = typer.Option(TrainOptions.device, "--device", metavar="DEVICE", help="auto, cpu or cuda (the "
                               "student)."),
    teacher_device: str | None = typer.Option(None, "--teacher-device", metavar="cpu|cuda",
                                              help="Where the teachers run (default: cuda for .engine, else cpu)."),
    max_steps: int | None = typer.Option(None, "--max-steps", metavar="N", help="Cap on steps per epoch."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out (same arguments)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in --out."),
    json_out: str | None = typer.Option(None, "--json", metavar="[PATH]",
                                        help="The summary (replace.json) as JSON: on stdout, or into PATH."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or epoch lines."),
) -> None:  # fmt: skip
    """Distil TEACHER models into one multi-task student on unlabeled SOURCE frames; labels are never read.

    Examples:

      mtl-distill frames/ --teacher seg=seg.xml --teacher depth=depth.onnx --epochs 8 --out runs/student

      mtl-distill clip.mp4 --frame-step 5 --teacher "depth=far.onnx,size=256x256,mean=0/0/0,std=1/1/1,depth=inverse"
    """
    with user_errors():
        check_json_target(json_out)
        from mtlkd.train.distill_run import DistillRunOptions, distill

        backbone = None
        if pretrained:
            from mtlkd.models.pretrained import pretrained_backbone

            backbone = str(pretrained_backbone(preset))
        hw = parse_hw(img_size) if img_size else None
        train_options = TrainOptions(
            dataset="unlabeled", out=str(out), preset=preset, img_size=list(hw) if hw else None,
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, device=device,
            augment=False, resume=resume, overwrite=overwrite, max_steps_per_epoch=max_steps,
            backbone_weights=backbone, select_fraction=select_fraction, quiet=quiet,
            method_options={name: value for name, value in (("task_weighting", task_weighting), ("seg_loss", seg_loss),
                                                            ("seg_temperature", seg_temperature)) if value is not None},
        )
        options = DistillRunOptions(
            sources=sources, teachers=list(teacher), train=train_options, val_data=val_data,
            val_dir=str(val_dir) if val_dir else None, cache=str(cache) if cache else None,
            cache_limit_gb=cache_limit, frame_step=frame_step, teacher_device=teacher_device)
        try:
            with terminations_unmasked():  # SIGTERM inside a C extension's import: still a SIGTERM
                result = distill(options)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (ui.user_errors turns it into this)
            _interrupted(out, interrupted_code(exc))
    if not result.main:  # another torchrun rank: rank 0 prints the run
        return
    summary = (result.out / "replace.json").read_text()
    if json_out is not None:
        import json

        emit_json(json.loads(summary), json_out)
        if json_out == JSON_STDOUT:
            return
    _print_table(result)
    typer.echo(f"run folder: {result.out}")


def _interrupted(out: Path, code: int) -> NoReturn:
    """Say how to continue (the teacher pass keeps what it computed; training from its last saved epoch)."""
    import sys

    if (out / "state.safetensors").is_file():
        print(f"interrupted; continue from the last saved epoch: the same command with --resume (--out {out})",
              file=sys.stderr)
    else:
        print("interrupted before the first epoch ended; the teacher pass keeps what it computed: run the same "
              "command again", file=sys.stderr)
    raise typer.Exit(code)


def _print_table(result) -> None:
    """Teachers and student side by side (true metrics with --val-data), and the agreement."""
    names = {"seg": ("miou", "mIoU"), "depth": ("abs_err", "abs err"), "normal": ("mean", "mean angle")}
    for label, entry in result.teachers.items():
        parts = [f"{names[t][1]} {entry['metrics'][t][names[t][0]]:.3f}" for t in entry["tasks"]]
        typer.echo(f"teacher {label}: " + ", ".join(parts))
    if result.student:
        parts = [f"{names[t][1]} {result.student[t][names[t][0]]:.3f}" for t in result.tasks if t in result.student]
        typer.echo("student: " + ", ".join(parts))
    if result.agreement:
        parts = []
        for task in result.tasks:
            values = result.agreement.get(task, {})
            if task == "seg":
                parts.append(f"seg pixel agreement {values['pixel_acc']:.1f}%, mIoU vs teacher {values['miou']:.1f}")
            elif task == "depth":
                parts.append(f"depth rel error vs teacher {values['rel_err']:.3f}")
            elif task == "normal":
                parts.append(f"normal angle to teacher {values['mean']:.1f}°")
        typer.echo(f"agreement (held-out frames, epoch {result.agreement['epoch']}): " + "; ".join(parts))


app = typer.Typer(add_completion=False, rich_markup_mode="rich")
app.command(cls=MtlCommand)(command)


if __name__ == "__main__":
    app()
