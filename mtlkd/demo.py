"""The embedded default (`make demo`): synthetic scenes -> a small multi-task model -> metrics ->
pictures, on a CPU in a few minutes. Every step is the same library call a user would make."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mtlkd.ui import console


def run_demo(out: Path, epochs: int, train_images: int, val_images: int, batch_size: int) -> dict:
    from mtlkd.data import create_synthetic
    from mtlkd.runtime.infer import InferOptions, infer
    from mtlkd.train.trainer import TrainOptions, train

    timings: dict[str, float] = {}
    data = out / "data"
    started = time.perf_counter()
    if not (data / "meta.json").exists():
        console.rule("1/4  synthetic scenes")
        create_synthetic(data, train_images, val_images, size=(96, 128), seed=0)
    timings["data_s"] = time.perf_counter() - started

    console.rule("2/4  training the vit-micro multi-task model")
    started = time.perf_counter()
    run = train(TrainOptions(dataset="synthetic", data_dir=str(data), out=str(out / "mtl"), method="mtl",
                             preset="vit-micro", epochs=epochs, batch_size=batch_size, lr=1e-3, seed=0,
                             overwrite=True))  # `make demo` again replaces the demo run
    timings["train_s"] = time.perf_counter() - started

    console.rule("3/4  evaluation (whole validation split)")
    metrics = json.loads((run / "metrics.json").read_text())
    floor = majority_baseline(data)
    metrics["majority_class_baseline"] = floor
    console.print(
        f"seg mIoU {metrics['seg']['miou']:.1f}% (pixel acc {metrics['seg']['pixel_acc']:.1f}%; predicting the "
        f"most frequent class everywhere gives mIoU {floor['miou']:.1f}%, pixel acc {floor['pixel_acc']:.1f}%)"
        f"   depth abs {metrics['depth']['abs_err']:.3f} m, rel "
        f"{metrics['depth']['rel_err']:.3f}   normal mean {metrics['normal']['mean']:.1f}°, "
        f"within 30° {metrics['normal']['within_30']:.1f}%"
    )

    console.rule("4/4  one-pass inference on validation images")
    started = time.perf_counter()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        array = np.load(data / "val" / "image" / f"{i}.npy", allow_pickle=False)
        Image.fromarray((array * 255).round().astype(np.uint8)).save(images / f"val_{i}.png")
    infer(run / "model.safetensors", [images], out / "predictions", InferOptions(save_raw=True))
    timings["infer_s"] = time.perf_counter() - started

    summary = {"metrics": metrics, "timings": {k: round(v, 1) for k, v in timings.items()},
               "run": str(run), "predictions": str(out / "predictions")}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"\nmetrics:      {run / 'metrics.json'}\ncurves:       {run / 'curves.png'}\n"
                  f"checkpoint:   {run / 'model.safetensors'}\npredictions:  {out / 'predictions'}"
                  f" (*_panel.png: input | segmentation | depth | normals)\n"
                  f"times:        {summary['timings']}")
    return summary


def majority_baseline(data: Path) -> dict[str, float]:
    """What segmentation scores without looking at the image: the most frequent training class everywhere."""
    from mtlkd.eval.metrics import SegMetrics

    def labels(split: str):
        folder = data / split / "label"
        return [np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npy"))]

    counts = np.bincount(np.concatenate([x.ravel() for x in labels("train")]).clip(0), minlength=13)
    metric = SegMetrics(13)
    for target in labels("val"):
        metric.update(np.full_like(target, counts.argmax()), target)
    return metric.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=800)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    run_demo(args.out, args.epochs, args.train_images, args.val_images, args.batch_size)


if __name__ == "__main__":
    main()
