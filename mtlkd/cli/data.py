"""`mtl-data`: generate the synthetic dataset and check dataset folders.

The typer `app` is also mounted by the main command: `main_app.add_typer(data_app, name="data")`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from mtlkd.cli.common import MtlCommand

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    help="Generate the synthetic dataset and check dataset folders (nothing is ever downloaded).",
)
data_app = app  # the name other modules mount it under
console = Console()
err_console = Console(stderr=True)


@app.command(cls=MtlCommand)
def synthetic(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (MTAN NYUv2 layout)."),
    train: int = typer.Option(800, "--train", metavar="N", help="Training images."),
    val: int = typer.Option(200, "--val", metavar="N", help="Validation images."),
    img_size: str = typer.Option("96x128", "--img-size", metavar="HxW", help="Image size HEIGHTxWIDTH."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Same seed, same bytes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Render procedural indoor rooms with segmentation, depth and normals.

    Writes OUT/{train,val}/{image,label,depth,normal}/{i}.npy and OUT/meta.json.
    That is the layout of the preprocessed NYUv2: pass OUT as --data-dir with dataset synthetic.
    Same seed and size give the same bytes; image i depends only on (seed, split, i).

    [bold]Examples:[/bold]

      mtl-data synthetic --out data/synthetic

      mtl-data synthetic --out data/big --train 5000 --val 1000 --img-size 192x256 --seed 1
    """
    from mtlkd.cli.common import parse_hw
    from mtlkd.data import create_synthetic
    from mtlkd.errors import ConfigError
    from mtlkd.files import cannot_write
    from mtlkd.metadata import MAX_SIDE
    from mtlkd.ui import user_errors

    with user_errors():
        height, width = parse_hw(img_size)
        if max(height, width) > MAX_SIDE:
            raise ConfigError(f"--img-size {img_size}: at most {MAX_SIDE} pixels a side (the largest network "
                              f"input a model may have)")
        if train < 0 or val < 0 or train + val == 0:
            raise ConfigError(f"--train {train} --val {val}: nothing to generate; ask for at least one image")
        problem = "is a file, not a folder" if out.is_file() else cannot_write(out / "meta.json")
        if not problem and out.is_dir() and any(out.iterdir()):
            problem = "holds files already (an earlier dataset's would mix into this one); pass a new folder"
        if problem:
            raise ConfigError(f"--out {out}: {problem}; pass another folder")
        started = time.perf_counter()
        create_synthetic(out, train, val, size=(height, width), seed=seed, progress=not quiet)
    seconds = time.perf_counter() - started
    rate = (train + val) / max(seconds, 1e-9) * 60
    console.print(
        f"wrote {train} train + {val} val images of {height}x{width} to {out} "
        f"in {seconds:.1f} s ({rate:,.0f} images/minute)",
        soft_wrap=True,
    )


@app.command(cls=MtlCommand)
def check(
    dataset: str = typer.Argument(..., help="nyuv2, cityscapes, cityscapes19 or synthetic."),
    data_dir: Path = typer.Option(None, "--data-dir", "-d", help="Dataset root (containing train/ and val/)."),
) -> None:
    """Validate a dataset folder: every sample of both splits is read and checked, with progress.

    Checks shape, dtype and values of every file (labels within the classes or -1, images uint8 or float
    in [0, 1], depth finite and >= 0, normals unit length or 0) and names each bad file on its own line.
    Exits with status 2 when something is missing or malformed.
    For synthetic without --data-dir, checks (and if needed renders) the cached default set.

    [bold]Examples:[/bold]

      mtl-data check nyuv2 --data-dir ~/data/nyuv2

      mtl-data check cityscapes19 --data-dir ~/data/cityscapes
    """
    from mtlkd.data import get_spec, open_dataset
    from mtlkd.errors import DatasetError
    from mtlkd.ui import progress_bar

    def error(message: str) -> None:
        err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)

    try:
        spec = get_spec(dataset)
        splits = [(split, open_dataset(spec.name, data_dir, split=split)) for split in ("train", "val")]
    except DatasetError as err:
        error(str(err))
        raise typer.Exit(2) from None
    rows, bad = [], 0
    with progress_bar("sample", transient=True) as bar:
        for split, ds in splits:
            job = bar.add_task(f"check {split}", total=len(ds), info="")
            for index in range(len(ds)):
                try:
                    ds.check(index)
                except DatasetError as err:
                    bad += 1
                    bar.console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
                bar.update(job, advance=1, info=f"{bad} bad" if bad else "")
            rows.append((split, len(ds), tuple(ds.read(0)["image"].shape[1:]) if not bad else None))
    if bad:
        error(f"{bad} bad sample(s) in {splits[0][1].root} (listed above); fix or remove them before training")
        raise typer.Exit(2)
    root = splits[-1][1].root
    console.print(f"{spec.title} at {root}: ok (every sample checked)", highlight=False, soft_wrap=True)
    console.print(f"  tasks: {', '.join(spec.tasks)}; {spec.num_classes} classes", highlight=False)
    for split, count, (height, width) in rows:
        console.print(f"  {split}: {count} samples of {height}x{width}", highlight=False)


if __name__ == "__main__":
    app()
