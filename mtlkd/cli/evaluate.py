"""`mtl-eval`: dataset-level metrics of a checkpoint or an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mtlkd.errors import DatasetError, UserError
from mtlkd.ui import console, user_errors

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


def command(
    model: Path = typer.Argument(..., help="model.safetensors, model.onnx, model.xml or model.engine."),
    dataset: str = typer.Argument("synthetic", help="nyuv2, cityscapes, cityscapes19 or synthetic."),
    data_dir: Path | None = typer.Option(None, help="Dataset folder (MTAN layout)."),
    split: str = typer.Option("val", help="train or val."),
    backend: str = typer.Option("auto", help="Runtime backend for exported files."),
    batch_size: int = typer.Option(8),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics.json dict only."),
) -> None:
    """Evaluate MODEL on a whole split: mIoU, pixel accuracy, depth errors, normal angles.

    Examples:

      mtl-eval runs/demo/mtl/model.safetensors synthetic

      mtl-eval exports/model.onnx nyuv2 --data-dir data/nyuv2 --json
    """
    from mtlkd.eval.evaluate import evaluate
    from mtlkd.runtime import Predictor

    with user_errors():
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be 1 or more")
        predictor = Predictor.load(str(model), backend=backend)
        from torch.utils.data import DataLoader

        from mtlkd.data import open_dataset

        tasks = [t for t in predictor.tasks]
        data = open_dataset(dataset, str(data_dir) if data_dir else None, split, tasks, augment=False)
        tasks = [t for t in tasks if t in data.tasks]
        if not tasks:
            raise DatasetError(f"{model} predicts {predictor.tasks}, but {dataset} has targets for {data.tasks}")
        precision = predictor.metadata.get("precision") or ("fp32" if model.suffix == ".safetensors" else "unknown")
        console.print(f"evaluating {model} ({precision}, {predictor.backend_name})", highlight=False)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        metrics = evaluate(lambda images, ts: predictor.run_raw(images.numpy(), ts, data_size=True), loader,
                           tasks, predictor.metadata.get("num_classes"))
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    for task, values in metrics.items():
        console.print(f"[bold]{task}[/]  " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()), highlight=False)


app.command()(command)

if __name__ == "__main__":
    app()
