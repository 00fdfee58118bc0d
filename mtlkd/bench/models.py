"""The models a benchmark compares: the multi-task model and one single-task model per task, each as a
checkpoint in the cache folder with its FLOPs and parameters.

Without a checkpoint, the preset: its multi-task model is trained briefly on synthetic scenes
(`train_steps`, once per preset and size, cached) so that the accuracy verdicts compare a network whose
outputs mean something; the single-task models get random weights (latency does not depend on them).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlkd.bench.options import BenchOptions
from mtlkd.errors import ConfigError

TASKS = ("seg", "depth", "normal")
CACHE_VERSION = 2  # part of every cache folder's name: 2 = graphs put out the heads' grid (output_stride)


@dataclass
class Model:
    name: str  # "mtl" or the task of an STL model
    tasks: list[str]
    folder: Path
    checkpoint: Path
    metadata: dict[str, Any]
    params: int
    flops: dict[str, Any]
    net: Any = None  # the torch module while preparing

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.metadata["input_size"][0]), int(self.metadata["input_size"][1])


# ---------------------------------------------------------------------------------------- models


def work_root(options: BenchOptions) -> Path:
    """The cache folder of exports and checkpoints: `options.cache`, else $MTLKD_CACHE/bench, else
    ~/.cache/mtlkd/bench."""
    if options.cache:
        return Path(options.cache)
    cache = os.environ.get("MTLKD_CACHE")
    base = Path(cache).parent if cache and cache.endswith(".json") else Path(cache) if cache else None
    return (base or Path.home() / ".cache" / "mtlkd") / "bench"


def random_checkpoint(folder: Path, config: dict[str, Any], seed: int) -> Path:
    """`folder/model.safetensors` with random weights for `config`, written once (latency does not depend
    on the weights; the metadata says `random_weights`)."""
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model

    checkpoint = folder / "model.safetensors"
    if not checkpoint.is_file():
        torch.manual_seed(seed)
        save_checkpoint(checkpoint, create_model(config).state_dict(), model_metadata(config, random_weights=True))
    return checkpoint


def trained_checkpoint(folder: Path, preset: str, size: tuple[int, int], steps: int, batch_size: int = 8) -> Path:
    """`folder/model.safetensors`: the preset's multi-task model after `steps` steps of ordinary training
    (mtl, AdamW, OneCycle) on the synthetic scenes, written once. Enough to make the class logits decisive
    where random weights leave them near-ties, so that task agreement is a fair test of a precision; not
    a model to ship."""
    from mtlkd.train.trainer import TrainOptions, train

    checkpoint = folder / "model.safetensors"
    if checkpoint.is_file():
        return checkpoint
    run = folder / "train"
    options = TrainOptions(dataset="synthetic", out=str(run), method="mtl", preset=preset, img_size=list(size),
                           epochs=1, batch_size=batch_size, max_steps_per_epoch=steps, max_val_batches=1,
                           select_fraction=0.0, overwrite=True, augment=False)  # fmt: skip
    train(options)
    folder.mkdir(parents=True, exist_ok=True)
    (run / "model.safetensors").replace(checkpoint)
    return checkpoint


def _sources(options: BenchOptions) -> list[tuple[Path, Path]]:
    """(checkpoint, cache folder) of the MTL model, then of each STL model."""
    from mtlkd.checkpoint import read_metadata
    from mtlkd.data.synthetic import CLASS_NAMES
    from mtlkd.export.onnx import DEFAULT_OPSET
    from mtlkd.files import sha256_of
    from mtlkd.models import preset_config

    if options.model is not None:
        sources = [(Path(p), work_root(options) / f"ckpt-{sha256_of(p)[:16]}-opset{DEFAULT_OPSET}-c{CACHE_VERSION}")
                   for p in [options.model, *options.stl]]  # fmt: skip
        if not options.stl:  # STL counterparts of the MTL's own architecture, random weights (latency only)
            meta = read_metadata(options.model)
            for i, task in enumerate(meta["tasks"]):
                folder = sources[0][1] / f"stl-{task}-random"
                config = {**copy.deepcopy(meta["config"]), "arch": "stl", "tasks": [task]}
                sources.append((random_checkpoint(folder, config, seed=1 + i), folder))
        return sources
    sources = []
    for i, tasks in enumerate([list(TASKS)] + [[t] for t in TASKS]):
        config = preset_config(options.preset, tasks, class_names=list(CLASS_NAMES), img_size=options.img_size,
                               arch="mtl" if len(tasks) > 1 else "stl")  # fmt: skip
        h, w = config["backbone"]["img_size"]
        root = work_root(options) / f"{options.preset}-{h}x{w}-opset{DEFAULT_OPSET}-c{CACHE_VERSION}"
        if i == 0 and options.train_steps:
            folder = root / f"mtl-trained{options.train_steps}"
            sources.append((trained_checkpoint(folder, options.preset, (h, w), options.train_steps), folder))
        else:
            folder = root / ("mtl" if i == 0 else tasks[0])
            sources.append((random_checkpoint(folder, config, seed=i), folder))
    return sources


def build_models(options: BenchOptions) -> list[Model]:
    """The MTL model and the STL models as torch modules, loaded from their checkpoints (written once into
    the cache folder for a preset; the cached exports come from them)."""
    from mtlkd.bench.flops import model_flops
    from mtlkd.models import count_parameters, load_model

    models: list[Model] = []
    for checkpoint, folder in _sources(options):
        net, meta = load_model(str(checkpoint))
        is_mtl = not models
        if not is_mtl and len(meta["tasks"]) != 1:
            raise ConfigError(f"--stl {checkpoint}: a single-task checkpoint has one task, this one has "
                              f"{meta['tasks']}")  # fmt: skip
        name = "mtl" if is_mtl else meta["tasks"][0]
        if any(m.name == name for m in models):
            raise ConfigError(f"--stl {checkpoint}: a second single-task model for {name}")
        if not is_mtl and name not in models[0].tasks:
            raise ConfigError(f"--stl {checkpoint}: predicts {name}, which the MTL model does not")
        models.append(Model(name, list(meta["tasks"]), folder, checkpoint, meta, count_parameters(net), {}, net))
    sizes = {m.input_size for m in models}
    if len(sizes) > 1 or (options.model and options.img_size and tuple(options.img_size) not in sizes):
        raise ConfigError(f"input sizes differ: {sorted(sizes)} (--img-size {options.img_size}); compare models "
                          f"built for one size (--img-size only applies to presets)")  # fmt: skip
    for model in models:
        model.flops = model_flops(model.net, model.input_size)
    return models
