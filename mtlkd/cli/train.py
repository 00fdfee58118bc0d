"""`mtl-train`: train single-task, multi-task and distilled models.

The method flags and their help come from the methods' option dataclasses (mtlkd.train.method_options):
one flag per option, in the "Method options" panel, each saying which methods take it and their default.
Importing this module needs no torch, so `--help` is quick and a runtime-only install says in one line
what it lacks.
"""

from __future__ import annotations

import enum
import inspect
from pathlib import Path
from typing import Any, NoReturn

import typer

from mtlkd.cli.common import MtlCommand, parse_hw
from mtlkd.data.mtan import DATASET_NAMES
from mtlkd.errors import UserError
from mtlkd.models.presets import PRESETS
from mtlkd.train.method_options import METHOD_OPTIONS, method_flags
from mtlkd.train.options import flag
from mtlkd.train.run_options import TrainOptions
from mtlkd.ui import interrupted_code, user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
Dataset = enum.Enum("Dataset", {name: name for name in DATASET_NAMES}, type=str)  # a choice in --help

METHOD_PANEL = "Method options"
METHOD_HELP = {
    "stl": "one network per task (the single-task baseline, KD-MTL's teachers)",
    "mtl": "one backbone, one head per task, a task weighting",
    "cross-stitch": "one backbone per task, mixed after every block (Misra et al.)",
    "okd": "online distillation from single-task networks trained alongside (Jacob et al.)",
    "kd-mtl": "frozen single-task teachers through feature adaptors (Li and Bilen)",
    "kdam": "a trained multi-task teacher, Cauchy-Schwarz divergence (Xu et al.)",
    "distill": "a student of teachers' predictions on unlabeled frames (run it with mtl-distill)",
}


def command(
    ctx: typer.Context,
    dataset: Dataset = typer.Argument(
        TrainOptions.dataset, show_default=True,
        help="The MTAN-layout datasets of the papers, or the built-in synthetic scenes (made on first use)."),
    method: str = typer.Option(
        TrainOptions.method, metavar="NAME",
        help="; ".join(f"[bold]{m}[/]: {METHOD_HELP.get(m, '')}" for m in METHOD_OPTIONS) + "."),
    preset: str = typer.Option(
        TrainOptions.preset, metavar="NAME",
        help="; ".join(f"[bold]{name}[/]: {p.about}" for name, p in PRESETS.items()) + "."),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks; default: all the dataset has.",
                                     metavar="TASK,..."),
    data_dir: Path | None = typer.Option(None, help="Dataset folder (MTAN layout). synthetic: generated if absent.",
                                         metavar="DIR"),
    out: Path | None = typer.Option(None, help="Run folder; default runs/DATASET-METHOD.", metavar="DIR"),
    epochs: int = typer.Option(TrainOptions.epochs, help="Epochs (the paper: 200).", metavar="N"),
    batch_size: int = typer.Option(TrainOptions.batch_size,
        help="Images per step (per process under torchrun).", metavar="N"),
    lr: float = typer.Option(TrainOptions.lr, help="Peak learning rate of OneCycleLR (the paper: 1e-3).", metavar="LR"),
    weight_decay: float = typer.Option(TrainOptions.weight_decay, help="AdamW weight decay.", metavar="WD"),
    img_size: str | None = typer.Option(None, help="Network input HxW, overriding the preset's (e.g. 288x384).",
                                        metavar="HxW"),
    backbone_weights: Path | None = typer.Option(None, help="Local timm ViT or ResNet checkpoint (.safetensors).",
                                                 metavar="FILE"),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="Start every network from the preset's pretrained backbone: the "
        "bundled SimMIM one for vit-micro(-wide), timm's ImageNet weights for the others (downloaded once)."),
    select_fraction: float = typer.Option(
        TrainOptions.select_fraction,
        help="Share of the training images held out to choose the epoch to keep (0: keep the last).",
        metavar="F"),
    select_seed: int = typer.Option(TrainOptions.select_seed,
        help="Which training images are held out (the same for every --seed).",
                                    metavar="N"),
    seed: int = typer.Option(TrainOptions.seed,
        help="Seed; a CPU run with the same seed repeats exactly.", metavar="N"),
    device: str = typer.Option(TrainOptions.device, help="auto, cpu or cuda.", metavar="DEVICE"),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (fp16 on CUDA, bf16 on CPU)."),
    workers: int = typer.Option(TrainOptions.workers, help="DataLoader worker processes.", metavar="N"),
    max_steps: int | None = typer.Option(None, help="Cap on steps per epoch (quick runs).", metavar="N"),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue an interrupted run in --out from its last saved epoch."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the run already in --out (its training files are deleted "
        "first); without it, training into a folder that holds a run is refused."),
    quiet: bool = typer.Option(False, "--quiet",
                               help="No progress bars or epoch lines: only the result and errors."),
    **method_values: Any,
) -> None:
    """Train on DATASET and write checkpoints, metrics.json, history.jsonl and curves.png to --out; print the
    run folder on stdout (progress and epoch lines go to stderr).

    Examples:

      mtl-train synthetic --epochs 10                  # the demo model, data generated on first use

      mtl-train nyuv2 --data-dir data/nyuv2 --preset vit-tiny --method stl

      mtl-train nyuv2 --data-dir data/nyuv2 --preset vit-tiny --method mtl --task-weighting dwa

      torchrun --nproc_per_node 2 -m mtlkd.cli.train synthetic --epochs 5
    """
    with user_errors():
        from mtlkd.train.trainer import train

        hw = parse_hw(img_size) if img_size else None
        size = list(hw) if hw else None
        if pretrained and backbone_weights:
            raise UserError("--pretrained and --backbone-weights both name a starting point; pass one")
        if pretrained:
            from mtlkd.models.pretrained import pretrained_backbone

            backbone_weights = pretrained_backbone(preset)
        dataset = Dataset(dataset).value
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
            quiet=quiet,
            backbone_weights=str(backbone_weights) if backbone_weights else None,
            select_fraction=select_fraction,
            select_seed=select_seed,
            method_options=method_options(method_values),
        )
        if resume:  # the run's own options from its run.json; those typed here must agree with them
            options = _resumed(ctx, options)
        try:
            run = train(options)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from a scheduler (ui.user_errors turns it into this)
            _interrupted(Path(options.out), interrupted_code(exc))
    typer.echo(f"run folder: {run}")


def _defaults(methods: dict[str, Any]) -> str:
    """'okd (default 5)', or per default: 'mtl, cross-stitch, kd-mtl, kdam (default equal); okd (default otw)'."""
    groups: dict[str, list[str]] = {}
    for name, default in methods.items():
        shown = "none" if default in (None, (), {}) else ("on" if default is True else "off" if default is False
                                                          else str(default))
        groups.setdefault(shown, []).append(name)
    return "; ".join(f"{', '.join(names)} (default {shown})" for shown, names in groups.items())


def _method_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per method option, typed and documented from its dataclass field."""
    types = {"str": str, "int": int, "float": float}
    params = []
    for name, entry in method_flags().items():
        field, kind = entry["field"], str(entry["field"].type).replace(" ", "").removesuffix("|None")
        meta = field.metadata
        help_text = meta["help"]
        if meta.get("choices"):
            help_text += f" One of: {', '.join(meta['choices'])}."
        help_text += f" [dim]{_defaults(entry['methods'])}[/]"
        decls = [flag(name)]
        if kind == "bool":
            decls = [f"{flag(name)}/--no-{name.replace('_', '-')}"]
            annotation: Any = bool | None
        elif kind == "tuple[str,...]":
            annotation = list[str] | None
        elif kind == "dict[str,float]":
            annotation = str | None
        else:
            annotation = types[kind] | None
        default = typer.Option(None, *decls, help=help_text, metavar=meta.get("metavar") or "", show_default=False,
                               rich_help_panel=METHOD_PANEL)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def method_options(values: dict[str, Any]) -> dict[str, Any]:
    """What the user set of the method flags, as the methods' options take it (the rest: the method's
    defaults); task=w lists become mappings, repeated paths lists."""
    options: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if name == "kd_weights":
            value = _parse_weights(value)
        elif isinstance(value, list | tuple):
            value = [str(v) for v in value]
        options[name] = value
    return options


# Command-line parameters stored under another TrainOptions field; device, workers and quiet may change on resume.
PARAM_FIELDS = {"max_steps": "max_steps_per_epoch", "pretrained": "backbone_weights"}
MAY_DIFFER = {"device", "workers", "quiet"}


def _resumed(ctx: typer.Context, options):
    """`--resume --out RUN` alone continues RUN with the options in RUN/run.json; options typed as well must
    agree with them (device, workers and quiet may change)."""
    from mtlkd.train.runfolder import resumed_options

    # by name: typer may bring its own click, whose ParameterSource is not click.core's
    typed = {PARAM_FIELDS.get(name, name) for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
    return resumed_options(TrainOptions, Path(options.out), options, typed, MAY_DIFFER)


def _interrupted(out: Path, code: int) -> NoReturn:
    """Ctrl-C or SIGTERM: say how to continue (from the last saved epoch) and exit 130 or 143, as a shell does."""
    import shlex
    import sys

    if (out / "state.safetensors").is_file() or (out / "run.json").is_file():
        print(f"interrupted; continue from the last saved epoch with: mtl-train --resume --out {shlex.quote(str(out))}",
              file=sys.stderr)
    else:
        print("interrupted before the first epoch ended; nothing was saved to resume: run the same command again",
              file=sys.stderr)
    raise typer.Exit(code)


def _parse_weights(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise UserError(f"--kd-weights {text!r}: expected task=value pairs, e.g. seg=1,depth=2") from None


def _with_method_flags(func):
    """`func` with its `**method_values` replaced by one typed keyword parameter per method option."""
    signature = inspect.signature(func)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = _method_parameters()
    func.__signature__ = signature.replace(parameters=fixed + extra)
    func.__annotations__ = {**func.__annotations__, **{p.name: p.annotation for p in extra}}
    return func


app.command(cls=MtlCommand)(_with_method_flags(command))

if __name__ == "__main__":
    app()
