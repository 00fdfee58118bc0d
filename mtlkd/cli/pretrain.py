"""`mtl-pretrain`: masked-image pretraining of a backbone that every method can start from."""

from __future__ import annotations

from pathlib import Path

import typer

from mtlkd.ui import user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


def command(
    preset: str = typer.Option("vit-micro", help="The preset whose ViT backbone is pretrained."),
    out: Path = typer.Option(Path("runs/pretrain"), help="Run folder; backbone.safetensors is written there."),
    images: int = typer.Option(4800, help="Pretraining scenes (rendered once, cached)."),
    data_seed: int = typer.Option(1000, help="Scene seed; the benchmark's scenes are seed 0."),
    epochs: int = typer.Option(20, help="Passes over the scenes."),
    batch_size: int = typer.Option(64, help="Images per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (OneCycle, 10% warm-up)."),
    mask_ratio: float = typer.Option(0.6, help="Share of patches hidden (SimMIM: 0.6)."),
    seed: int = typer.Option(0, help="Seed of initialisation, order, augmentation and masks."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last finished epoch."),
) -> None:
    """Pretrain a ViT backbone with SimMIM on synthetic scenes that are not the benchmark's, and write
    OUT/backbone.safetensors for `mtl-train --backbone-weights`.

    Example:

      mtl-pretrain --preset vit-micro --out runs/pretrain-micro --epochs 16
    """
    with user_errors():
        from mtlkd.train.pretrain import PretrainOptions, pretrain

        path = pretrain(PretrainOptions(
            out=str(out), preset=preset, images=images, data_seed=data_seed, epochs=epochs,
            batch_size=batch_size, lr=lr, mask_ratio=mask_ratio, seed=seed, resume=resume,
        ))
    typer.echo(f"backbone: {path}")


app.command()(command)

if __name__ == "__main__":
    app()
