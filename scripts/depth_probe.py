"""Why depth stays near the median predictor: what trained runs predict for depth, image by image.

No row of the experiment gets much below the error of predicting the median training depth everywhere.
This script takes finished runs (any folder with model.safetensors) and the data they were evaluated on,
and measures on every evaluation scene, over the pixels with ground truth:

- `abs`: the run's abs. error, and `median`: that of the median training depth (the trivial predictor);
- `bias`: the mean over images of (mean prediction - mean ground truth) in the image;
- `spread`: the std over pixels of the prediction within an image, beside `gt spread`, the ground truth's;
- `corr`: the Pearson correlation of prediction and ground truth within an image;
- `aligned`: the abs. error after the least-squares scale and shift of each image (what is left when the
  image's depth scale is given), beside `image median`, the error of each image's own median depth (an
  oracle constant per image);
- `scale corr`: across images, the correlation of the mean prediction with the mean ground truth.

    OMP_NUM_THREADS=1 python scripts/depth_probe.py --data runs/experiment/data runs/experiment/mtl/seed0 ...

With `--figure PNG`: for the first run, a row per scene (the first `--scenes` evaluation scenes): the
input, the ground truth, the prediction, and the prediction after its per-image scale and shift, all in
one colour range so that a compressed range shows as flat colour.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mtlkd.data import open_dataset
from mtlkd.eval.align import fit_scale_shift
from mtlkd.models import load_model

sys.path.insert(0, str(Path(__file__).parent))
from seed_failures import trivial_scores  # noqa: E402  (the median training depth, as its bar uses it)

COLUMN_TITLES = ("input", "ground truth", "prediction", "after scale and shift")
COLUMNS = ("abs", "median", "bias", "spread", "gt spread", "corr", "aligned", "image median", "scale corr")


@torch.no_grad()
def predictions(run: Path, data: Path, scenes: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """(image, prediction, ground truth, valid, scale, shift) for each evaluation scene (the first `scenes`),
    the scale and shift those of the least-squares fit of the prediction to the ground truth."""
    model, _ = load_model(str(run / "model.safetensors"))
    val = open_dataset("synthetic", data, "val", augment=False, progress=False)
    for i in range(len(val) if scenes is None else min(scenes, len(val))):
        item = val[i]
        image = np.asarray(item["image"])
        pred = model(torch.as_tensor(image)[None])["depth"][0, 0].numpy()
        target = np.asarray(item["depth"]).reshape(pred.shape)
        valid = target != 0
        yield (image, pred, target, valid, *fit_scale_shift(pred, target, valid))


def figure(run: Path, data: Path, out: Path, scenes: int, label: str | None = None) -> None:
    """Input | ground truth | prediction | prediction after its per-image scale and shift, one row a scene."""
    from mtlkd.runtime.visualize import depth_image, save_png, titled, to_uint8

    rows = []
    for image, pred, target, valid, scale, shift in predictions(run, data, scenes):
        lo, hi = np.percentile(target[valid], [2, 98])
        shown = to_uint8(np.moveaxis(image * 0.5 + 0.5 if image.min() < 0 else image, 0, -1))
        tiles = [shown, *(depth_image(d.astype(np.float32), value_range=(float(lo), float(hi)))
                          for d in (target, pred, np.where(valid, scale * pred + shift, 0)))]
        height = max(t.shape[0] for t in tiles)
        tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 6), (0, 0))) for t in tiles]
        if not rows:  # the first row names the columns
            tiles = [titled(t, name, 12) for t, name in zip(tiles, COLUMN_TITLES, strict=True)]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    body = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    save_png(out, titled(body, f"{label or run.parent.name + '/' + run.name}: depth, one colour range a row", 14))


def probe(run: Path, data: Path, median: float) -> dict[str, float]:
    per_image: dict[str, list[float]] = {k: [] for k in ("bias", "spread", "gt spread", "corr")}
    sums = {"abs": 0.0, "median": 0.0, "aligned": 0.0, "image median": 0.0}
    count = 0
    means = []
    for _image, pred, target, valid, scale, shift in predictions(run, data):
        p, t = pred[valid].astype(np.float64), target[valid].astype(np.float64)
        sums["abs"] += np.abs(p - t).sum()
        sums["median"] += np.abs(median - t).sum()
        sums["aligned"] += np.abs(scale * p + shift - t).sum()
        sums["image median"] += np.abs(np.median(t) - t).sum()
        count += t.size
        per_image["bias"].append(p.mean() - t.mean())
        per_image["spread"].append(p.std())
        per_image["gt spread"].append(t.std())
        per_image["corr"].append(np.corrcoef(p, t)[0, 1])
        means.append((p.mean(), t.mean()))
    result = {k: v / count for k, v in sums.items()} | {k: float(np.mean(v)) for k, v in per_image.items()}
    result["scale corr"] = float(np.corrcoef(np.array(means).T)[0, 1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with model.safetensors")
    parser.add_argument("--data", type=Path, required=True, help="the synthetic data folder the runs used")
    parser.add_argument("--figure", type=Path, default=None, help="a PNG of the first run's predictions")
    parser.add_argument("--scenes", type=int, default=4, help="scenes in the figure")
    parser.add_argument("--label", default=None, help="the figure's title (default: the run folder's last two parts)")
    args = parser.parse_args()
    if args.figure:
        figure(args.runs[0], args.data, args.figure, args.scenes, args.label)
    median = trivial_scores(args.data)["constants"]["median_depth"]
    print(f"median training depth {median:.3f} m; metres except corr")
    print(f"{'run':40s} " + " ".join(f"{c:>12s}" for c in COLUMNS))
    for run in args.runs:
        scores = probe(run, args.data, median)
        print(f"{str(run)[-40:]:40s} " + " ".join(f"{scores[c]:12.3f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
