"""`mtl-train`: train single-task, multi-task and distilled models.

`--method`'s choices and the method flags come from the registries (mtlkd.train.methods, whose
`method_flags` lists every option of every method and task weighting): one flag per option, in the
"Method options" panel, each saying which methods (or weightings) take it and their default. The
registries live with the methods, which need torch, so `TrainCommand` adds those flags when the command
first parses or shows its help: importing this module (as `mtl` does for every command) needs no torch,
and a runtime-only install says in one line what it lacks.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import typer

from mtlkd.cli.common import MtlCommand, parse_hw
from mtlkd.data.mtan import DATASET_NAMES
from mtlkd.errors import UserError
from mtlkd.models.presets import PRESETS
from mtlkd.train.options import TrainOptions, flag
from mtlkd.ui import interrupted_code, terminations_unmasked, user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
Dataset = enum.Enum("Dataset", {name: name for name in DATASET_NAMES}, type=str)  # a choice in --help

METHOD_PANEL = "Method options"
METHOD_VALUES = "mtlkd.method_values"  # where TrainCommand hands the method flags' values to `command` (ctx.meta)


def command(
    ctx: typer.Context,
    dataset: Dataset = typer.Argument(
        TrainOptions.dataset, show_default=True,
        help="The MTAN-layout datasets of the papers, or the built-in synthetic scenes (made on first use)."),
    method: str = typer.Option(TrainOptions.method, metavar="NAME", help="The training method."),  # + the registry's
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
            method_options=method_options(ctx.meta.get(METHOD_VALUES, {})),
        )
        if resume:  # the run's own options from its run.json; those typed here must agree with them
            options = _resumed(ctx, options)
        try:
            with terminations_unmasked():  # SIGTERM inside a C extension's import: still a SIGTERM
                run = train(options)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from a scheduler (ui.user_errors turns it into this)
            _interrupted(Path(options.out), interrupted_code(exc))
    typer.echo(f"run folder: {run}")


def _defaults(owners: dict[str, Any]) -> str:
    """'A (default 5)', or per default: 'A, B (default x); C (default y)' for the methods (or weightings) A, B, C."""
    groups: dict[str, list[str]] = {}
    for name, default in owners.items():
        shown = "none" if default in (None, (), {}) else ("on" if default is True else "off" if default is False
                                                          else str(default))
        groups.setdefault(shown, []).append(name)
    return "; ".join(f"{', '.join(names)} (default {shown})" for shown, names in groups.items())


def _choices_help(choices: Any) -> str:
    """A field's allowed values as its help ends: 'One of: a, b.', or each with its line when the registry
    describes them (task weightings)."""
    values = choices() if callable(choices) else choices
    if isinstance(values, Mapping):
        return " " + "; ".join(f"[bold]{name}[/]: {text}" for name, text in values.items()) + "."
    return f" One of: {', '.join(values)}." if values else ""


def _method_parameters(flags: dict[str, dict[str, Any]]) -> list[inspect.Parameter]:
    """One keyword parameter per method option, typed and documented from its dataclass field."""
    types = {"str": str, "int": int, "float": float}
    params = []
    for name, entry in flags.items():
        field, kind = entry["field"], str(entry["field"].type).replace(" ", "").removesuffix("|None")
        meta = field.metadata
        help_text = meta["help"] + _choices_help(meta.get("choices")) + f" [dim]{_defaults(entry['defaults'])}[/]"
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


def _method_click_params(flags: dict[str, dict[str, Any]]) -> list[Any]:
    """The method flags as click parameters, converted by typer itself (from a function of those keyword
    parameters alone, as `command`'s own are)."""
    def flags_only(**values: Any) -> None:
        """The method flags."""

    extra = _method_parameters(flags)
    flags_only.__signature__ = inspect.Signature(extra)  # type: ignore[attr-defined]
    flags_only.__annotations__ = {p.name: p.annotation for p in extra}
    holder = typer.Typer(add_completion=False)
    holder.command()(flags_only)
    return list(typer.main.get_command(holder).params)


class TrainCommand(MtlCommand):
    """mtl-train's command: `--method`'s help and the method flags come from the registries the first time
    the command parses or shows its help; `command` finds the flags' values in ctx.meta[METHOD_VALUES]."""

    method_params: list[Any] | None = None

    def get_params(self, ctx: Any) -> list[Any]:
        if self.method_params is None:
            with user_errors():  # a runtime-only install: one line saying what it lacks
                from mtlkd.train.methods import METHODS, method_flags

                flags = method_flags()
            self.method_params = _method_click_params(flags)
            self.params.extend(self.method_params)
            for param in self.params:
                if param.name == "method":
                    param.help = "; ".join(f"[bold]{name}[/]: {cls.help}" for name, cls in METHODS.items()) + "."
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:
        names = [p.name for p in self.method_params or [] if p.name in ctx.params]
        ctx.meta[METHOD_VALUES] = {name: ctx.params.pop(name) for name in names}
        return super().invoke(ctx)


def method_options(values: dict[str, Any]) -> dict[str, Any]:
    """What the user set of the method flags, as the methods' options take it (the rest: the method's
    defaults); task=w lists become mappings, repeated paths lists."""
    from mtlkd.train.methods import method_flags

    kinds = {name: str(entry["field"].type).replace(" ", "") for name, entry in method_flags().items()}
    options: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if kinds.get(name, "").startswith("dict[") and isinstance(value, str):
            value = _parse_weights(name, value)
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


def _parse_weights(name: str, text: str) -> dict[str, float]:
    """'seg=1,depth=2' -> {"seg": 1.0, "depth": 2.0}: the value of a TASK=W,... flag."""
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise UserError(f"{flag(name)} {text!r}: expected task=value pairs, e.g. seg=1,depth=2") from None


COMMAND_CLASS = TrainCommand  # what `mtl train` builds this command with (mtlkd.cli.main)
app.command(cls=TrainCommand)(command)

if __name__ == "__main__":
    app()
