"""`mtl-train`: train single-task, multi-task and distilled models."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from mtlkd.errors import ConfigError, UserError
from mtlkd.ui import user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


def command(
    ctx: typer.Context,
    dataset: str = typer.Argument("synthetic", help="nyuv2, cityscapes, cityscapes19 or synthetic."),
    method: str = typer.Option(
        "mtl", help="stl, mtl, okd, kdam, kd-mtl or cross-stitch (the README's Methods table says what each does)."
    ),
    preset: str = typer.Option(
        "vit-micro", help="vit-micro (CPU demo), vit-micro-wide (CPU teacher), vit-tiny (the paper's), vit-small "
        "(a teacher), vit-nano (tests), deeplabv3-r50 / deeplabv3-r18 (Table 3's CNN)."
    ),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks; default: all the dataset has."),
    data_dir: Path | None = typer.Option(None, help="Dataset folder (MTAN layout). synthetic: generated if absent."),
    out: Path | None = typer.Option(None, help="Run folder; default runs/DATASET-METHOD."),
    epochs: int = typer.Option(200, help="Epochs (the paper: 200)."),
    batch_size: int = typer.Option(8, help="Images per step (per process under torchrun)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate of OneCycleLR (the paper: 1e-3)."),
    weight_decay: float = typer.Option(1e-2, help="AdamW weight decay."),
    task_weighting: str | None = typer.Option(
        None, help="equal, dwa, uw, gradnorm, rlw, otw; default: the method's (mtl: equal, okd: otw)."
    ),
    dwa_temperature: float | None = typer.Option(None, help="DWA temperature (default 2)."),
    gradnorm_alpha: float | None = typer.Option(None, help="GradNorm asymmetry alpha (default 1.5)."),
    afd: str | None = typer.Option(None, help="okd: learned (default), equal, softmax, select, last, none."),
    otw_temperature: float | None = typer.Option(None, help="okd: OTW softmax temperature T (default 0.1)."),
    warmup_epochs: int | None = typer.Option(None, help="okd: single-task warm-up epochs (default 5)."),
    teacher: Path | None = typer.Option(None, help="kdam: the trained multi-task teacher checkpoint."),
    teachers: list[Path] | None = typer.Option(None, help="kd-mtl: single-task teacher checkpoints or a run folder."),
    kd: str | None = typer.Option(None, help="kdam: cs (Cauchy-Schwarz, default), kl or dist."),
    alpha: float | None = typer.Option(None, help="kdam: weight of the multi-task loss."),
    beta: float | None = typer.Option(None, help="kdam: weight of the distillation loss."),
    kd_temperature: float | None = typer.Option(None, help="kdam: softening temperature T (default 3; dist: 1)."),
    kd_layers: str | None = typer.Option(None, help="kd-mtl: last (default) or mid+last."),
    kd_weights: str | None = typer.Option(
        None, help="kd-mtl: per-task distillation weights (default seg=1,depth=1,normal=2)."
    ),
    adaptor_optimizer: str | None = typer.Option(
        None, help="kd-mtl: own (default: the paper's Adam, constant lr 0.1, weight decay 5e-4) or shared "
        "(a group of the network's AdamW + OneCycle)."
    ),
    adaptor_lr: float | None = typer.Option(
        None, help="kd-mtl: adaptor lr (own: default 0.1; shared: peak, default 1000 x --lr)."
    ),
    regression_kd: str | None = typer.Option(
        None, help="kdam: how depth and normals become distributions: spatial (default) or channel."
    ),
    img_size: str | None = typer.Option(None, help="Network input HxW, overriding the preset's (e.g. 288x384)."),
    backbone_weights: Path | None = typer.Option(None, help="Local timm ViT or ResNet checkpoint (.safetensors)."),
    pretrained: bool = typer.Option(
        False, help="Start every network from the preset's pretrained backbone: the bundled SimMIM one for "
        "vit-micro(-wide), timm's ImageNet weights for the others (downloaded once)."
    ),
    select_fraction: float = typer.Option(
        0.1, help="Share of the training images held out to choose the epoch to keep (0: keep the last)."
    ),
    select_seed: int = typer.Option(0, help="Which training images are held out (the same for every --seed)."),
    seed: int = typer.Option(0, help="Seed; a CPU run with the same seed repeats exactly."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: bool = typer.Option(False, help="Mixed precision (fp16 on CUDA, bf16 on CPU)."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
    max_steps: int | None = typer.Option(None, help="Cap on steps per epoch (quick runs)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out from its last saved epoch."),
    overwrite: bool = typer.Option(
        False, help="Replace the run already in --out (its training files are deleted first); without it, "
        "training into a folder that holds a run is refused."
    ),
) -> None:
    """Train on DATASET and write checkpoints, metrics.json, history.jsonl and curves.png to --out.

    Examples:

      mtl-train synthetic --epochs 10                  # the demo model, data generated on first use

      mtl-train nyuv2 --data-dir data/nyuv2 --preset vit-tiny --method stl

      mtl-train nyuv2 --data-dir data/nyuv2 --preset vit-tiny --method mtl --task-weighting dwa

      torchrun --nproc_per_node 2 -m mtlkd.cli.train synthetic --epochs 5
    """
    with user_errors():
        from mtlkd.train.trainer import TrainOptions, train

        size = _parse_img_size(img_size)
        if pretrained and backbone_weights:
            raise ConfigError("--pretrained and --backbone-weights both name a starting point; pass one")
        if pretrained:
            from mtlkd.models.pretrained import pretrained_backbone

            backbone_weights = pretrained_backbone(preset)
        options = TrainOptions(
            dataset=dataset,
            out=str(out or Path("runs") / f"{dataset}-{method}"),
            data_dir=str(data_dir) if data_dir else None,
            method=method,
            preset=preset,
            tasks=tasks.split(",") if tasks else None,
            img_size=size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            device=device,
            amp=amp,
            workers=workers,
            max_steps_per_epoch=max_steps,
            resume=resume,
            overwrite=overwrite,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            select_fraction=select_fraction,
            select_seed=select_seed,
            method_options=_method_options(
                task_weighting=task_weighting,
                dwa_temperature=dwa_temperature,
                gradnorm_alpha=gradnorm_alpha,
                afd=afd,
                otw_temperature=otw_temperature,
                warmup_epochs=warmup_epochs,
                teacher=str(teacher) if teacher else None,
                teachers=[str(t) for t in teachers] if teachers else None,
                kd=kd,
                alpha=alpha,
                beta=beta,
                kd_temperature=kd_temperature,
                kd_layers=kd_layers,
                kd_weights=_parse_weights(kd_weights),
                adaptor_lr=adaptor_lr,
                adaptor_optimizer=adaptor_optimizer,
                regression_kd=regression_kd,
            ),
        )
        if resume:  # the run's own options from its run.json; those typed here must agree with them
            options = _resumed(ctx, options)
        try:
            run = train(options)
        except KeyboardInterrupt:
            _interrupted(Path(options.out))
    typer.echo(f"run folder: {run}")


# Command-line parameters stored under another TrainOptions field; device and workers may change on resume.
PARAM_FIELDS = {"max_steps": "max_steps_per_epoch", "pretrained": "backbone_weights"}
MAY_DIFFER = {"device", "workers"}


def _resumed(ctx: typer.Context, options):
    """`--resume --out RUN` alone continues RUN with the options in RUN/run.json; options typed as well must
    agree with them (device and workers may change)."""
    from mtlkd.train.runfolder import resumed_options
    from mtlkd.train.trainer import TrainOptions

    # by name: typer may bring its own click, whose ParameterSource is not click.core's
    typed = {PARAM_FIELDS.get(name, name) for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
    return resumed_options(TrainOptions, Path(options.out), options, typed, MAY_DIFFER)


def _interrupted(out: Path) -> NoReturn:
    """Ctrl-C: say how to continue (from the last saved epoch) and exit 130, as a shell does."""
    import shlex
    import sys

    if (out / "state.json").is_file():
        print(f"interrupted; continue from the last saved epoch with: mtl-train --resume --out {shlex.quote(str(out))}",
              file=sys.stderr)
    else:
        print("interrupted before the first epoch ended; nothing was saved to resume: run the same command again",
              file=sys.stderr)
    raise typer.Exit(130)


def _parse_img_size(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--img-size {text}: expected HxW of at least 8x8, e.g. 96x128") from None
    return [height, width]


def _method_options(**values) -> dict:
    """Only what the user set: each method applies its paper's defaults to the rest."""
    return {k: v for k, v in values.items() if v is not None}


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise ConfigError(f"--kd-weights {text!r}: expected task=value pairs, e.g. seg=1,depth=2") from None


app.command()(command)

if __name__ == "__main__":
    app()
