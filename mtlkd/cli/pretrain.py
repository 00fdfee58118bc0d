"""`mtl-pretrain`: masked-image pretraining of a backbone that every method can start from."""

from __future__ import annotations

from pathlib import Path

import typer

from mtlkd.cli.common import MtlCommand, parse_hw
from mtlkd.errors import UserError
from mtlkd.models.presets import PRESETS
from mtlkd.train.options import PretrainOptions
from mtlkd.ui import user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")
VIT_PRESETS = [name for name, preset in PRESETS.items() if preset.backbone.name == "vit"]


def command(
    preset: str = typer.Option(PretrainOptions.preset, metavar="NAME",
                               help=f"The preset whose ViT backbone is pretrained: {', '.join(VIT_PRESETS)}."),
    out: Path = typer.Option(Path(PretrainOptions.out), help="Run folder; backbone.safetensors is written there.",
                             metavar="DIR"),
    images: int = typer.Option(PretrainOptions.images, help="Pretraining scenes (rendered once, cached).", metavar="N"),
    data_seed: int = typer.Option(PretrainOptions.data_seed,
        help="Scene seed; the benchmark's scenes are seed 0.", metavar="N"),
    epochs: int = typer.Option(PretrainOptions.epochs, help="Passes over the scenes.", metavar="N"),
    batch_size: int = typer.Option(PretrainOptions.batch_size, help="Images per step.", metavar="N"),
    img_size: str | None = typer.Option(None, help="Input HxW, overriding the preset's (a multiple of its patch "
                                        "size; the backbone then fits `mtl-train --img-size` of the same size).",
                                        metavar="HxW"),
    lr: float = typer.Option(PretrainOptions.lr, help="Peak learning rate (OneCycle, 10% warm-up).", metavar="LR"),
    mask_ratio: float = typer.Option(PretrainOptions.mask_ratio,
        help="Share of patches hidden (SimMIM: 0.6).", metavar="F"),
    seed: int = typer.Option(PretrainOptions.seed,
        help="Seed of initialisation, order, augmentation and masks.", metavar="N"),
    device: str = typer.Option(PretrainOptions.device, help="auto, cpu or cuda.", metavar="DEVICE"),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in --out from its last finished epoch."),
    quiet: bool = typer.Option(False, "--quiet",
                               help="No progress bars or epoch lines: only the result and errors."),
) -> None:
    """Pretrain a ViT backbone with SimMIM on synthetic scenes that are not the benchmark's, and write
    OUT/backbone.safetensors for `mtl-train --backbone-weights`; print its path on stdout (progress on stderr).

    Example:

      mtl-pretrain --preset vit-micro --out runs/pretrain-micro --epochs 16
    """
    with user_errors():
        from mtlkd.train.pretrain import pretrain

        if preset not in VIT_PRESETS:
            raise UserError(f"--preset {preset}: pretraining needs a ViT preset; known: {', '.join(VIT_PRESETS)}")
        path = pretrain(PretrainOptions(
            out=str(out), preset=preset, images=images, data_seed=data_seed, epochs=epochs,
            batch_size=batch_size, lr=lr, mask_ratio=mask_ratio, seed=seed, resume=resume,
            img_size=parse_hw(img_size) if img_size else None, device=device, quiet=quiet,
        ))
    typer.echo(f"backbone: {path}")


app.command(cls=MtlCommand)(command)

if __name__ == "__main__":
    app()
