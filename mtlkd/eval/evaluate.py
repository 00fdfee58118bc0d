"""Whole-split evaluation: of anything that maps a batch of images to raw task outputs (`evaluate`, what
training uses), and of any model file without torch (`evaluate_model`, what `mtl-eval` runs).

    from mtlkd.eval.evaluate import EvalOptions, evaluate_model
    scores = evaluate_model("exports/model.onnx", "nyuv2", EvalOptions(data_dir="data/nyuv2"))
    scores.metrics["seg"]["miou"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.tasks import LOGITS, get_task


def metric_arrays(task: str, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw B x C x H x W prediction and the dataset's target -> what the task's metric accumulator reads
    (class ids for classification, channel-last values otherwise)."""
    spec = get_task(task)
    if spec.output == LOGITS:
        return pred.argmax(axis=1), target
    if spec.target_channels and spec.target_channels > 1:
        return np.moveaxis(pred, 1, -1), np.moveaxis(target, 1, -1)
    return pred, target


def evaluate(
    predict: Callable[[Any, list[str]], dict[str, Any]],
    batches: Iterable[dict[str, Any]],
    tasks: list[str],
    num_classes: int | None,
    depth_meaning: str | None = None,
) -> dict[str, dict[str, float]]:
    """Run `predict(images, tasks)` over every batch and return the metrics.json dict for `tasks`.

    Batches are dicts with `image` and one target per task (torch tensors or numpy arrays); predictions
    may be torch tensors or numpy arrays too. `depth_meaning` relative or relative-inverse (a student of
    mtl-distill): depth is aligned to the ground truth per image first (mtlkd.eval.align).
    """
    from mtlkd.eval.align import aligned_depth

    accumulators = {t: get_task(t).metric(num_classes=num_classes) for t in tasks}
    for batch in batches:
        outputs = predict(batch["image"], tasks)
        for task in tasks:
            raw = _numpy(outputs[task])
            if depth_meaning and get_task(task).relative_forms:
                raw = aligned_depth(raw, _numpy(batch[task]), depth_meaning)
            pred, target = metric_arrays(task, raw, _numpy(batch[task]))
            accumulators[task].update(pred, target)
    return {t: acc.compute() for t, acc in accumulators.items()}


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------- any model file, no torch


@dataclass
class EvalOptions:
    """Where the data is and how to run the model. data_dir None: the dataset's default (the synthetic set
    is rendered into the cache on first use; real datasets need a folder)."""

    data_dir: str | Path | None = None
    split: str = "val"
    backend: str = "auto"
    device: str | None = None
    batch_size: int = 8
    tasks: str | list[str] | None = None  # None: every task the model and the dataset share
    progress: bool = True

    def __post_init__(self) -> None:
        from mtlkd.errors import ConfigError

        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be 1 or more")


@dataclass
class Scores:
    """Dataset-level metrics of one model file ({task: {metric: value}}, as metrics.json) and what was run."""

    metrics: dict[str, dict[str, float]]
    model: str
    backend: str
    precision: str
    dataset: str
    split: str
    samples: int
    tasks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_model(model: Any, data: Any = "synthetic", options: EvalOptions | None = None) -> Scores:
    """Score a checkpoint, ONNX file, OpenVINO IR or TensorRT engine (or a loaded `Predictor`) on a whole
    split, reading the dataset with numpy: scoring an exported file needs no torch.

    data: a dataset name (nyuv2, cityscapes, cityscapes19, synthetic) or an opened `MTANDataset`.
    Bad input (unknown dataset, missing folder, a model with no task the dataset has) raises a one-line
    UserError family exception.
    """
    from mtlkd.data import MTANDataset, open_dataset
    from mtlkd.errors import DatasetError
    from mtlkd.runtime import Predictor

    options = options or EvalOptions()
    started = time.perf_counter()
    predictor = model if isinstance(model, Predictor) else Predictor.load(model, backend=options.backend,
                                                                          device=options.device)
    wanted = predictor.resolve_tasks(options.tasks)
    if isinstance(data, MTANDataset):
        dataset = data
    else:
        dataset = open_dataset(data, options.data_dir, options.split, wanted, augment=False,
                               progress=options.progress)
    tasks = [t for t in wanted if t in dataset.tasks]
    if not tasks:
        raise DatasetError(f"{predictor.path} predicts {', '.join(wanted)}, but {dataset.spec.title} has targets "
                           f"for {', '.join(dataset.spec.tasks)}; pass a model or dataset that share a task")
    num_classes = predictor.num_classes
    precision = predictor.metadata.get("precision") or (
        "fp32" if predictor.path.suffix == ".safetensors" else "unknown")

    def predict(images: np.ndarray, ts: list[str]) -> dict[str, np.ndarray]:
        return predictor.run_raw(images, ts, data_size=True)

    metrics = evaluate(predict, _with_progress(dataset, options), tasks, num_classes,
                       predictor.metadata.get("depth_meaning"))
    return Scores(metrics=metrics, model=str(predictor.path), backend=predictor.backend_name, precision=precision,
                  dataset=dataset.spec.name, split=dataset.split, samples=len(dataset), tasks=tasks,
                  seconds=time.perf_counter() - started)


def _with_progress(dataset: Any, options: EvalOptions) -> Iterator[dict[str, np.ndarray]]:
    from mtlkd.ui import progress_bar

    with progress_bar("img", transient=True, quiet=not options.progress) as bar:
        task = bar.add_task("eval", total=len(dataset), info="")
        for batch in dataset.batches(options.batch_size):
            yield batch
            bar.update(task, advance=len(batch["image"]))
