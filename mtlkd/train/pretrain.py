"""Masked-image-modelling pretraining of a ViT backbone: the stand-in for the papers' ImageNet start.

All three papers start every network (multi-task, single-task, teacher, student) from one ImageNet
checkpoint. There is no ImageNet here and nothing is downloaded, so `pretrain` makes the equivalent
locally: a backbone trained on images that are not the benchmark's, with an objective that is not the
benchmark's tasks.

- Objective: SimMIM (Xie et al., CVPR 2022). Patches are hidden in 2x2-patch blocks (60% of the image),
  replaced by one learned mask token before the position embedding; a linear layer reads each masked
  patch's final token and regresses its normalised pixels (L1 over the masked patches only). Why SimMIM
  rather than MAE: the encoder sees every token, masked or not, exactly as it will when it predicts
  dense maps, so nothing about the architecture changes between pretraining and fine-tuning; and why a
  self-supervised objective at all: it uses no label of the benchmark's three tasks, which is what makes
  it an honest stand-in for a generic ImageNet start.
- Data: synthetic rooms from the same generator with another seed (`data_seed`, never the benchmark's 0)
  and the wider `SceneRanges` (`WIDE`: emptier and fuller rooms, more camera angles, lenses and light),
  several times the benchmark's training set, with random resized crops, flips and colour jitter on top.
- Output: `backbone.safetensors`, the timm ViT state dict (the keys `--backbone-weights` reads) with
  mtlkd metadata: preset, backbone config, objective, data, epochs, final loss.
- The run folder as a training's: one run per folder under the trainer's lock (`runfolder.run_lock`), each
  epoch committed by `train.state.commit` (state.safetensors with the history in its header, then
  state.json and history.jsonl), so a kill at any instant resumes (`resume`) after the last committed
  epoch; a loss that becomes inf or NaN stops the run with the trainer's line (`runfolder.diverged`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlkd import __version__
from mtlkd.checkpoint import save_checkpoint, write_json
from mtlkd.errors import CheckpointError, ConfigError
from mtlkd.models import ModelConfig, model_config
from mtlkd.models.nets import build_backbone
from mtlkd.train.options import PretrainOptions
from mtlkd.train.runfolder import diverged, run_lock
from mtlkd.train.state import (
    STATE_FILE,
    STATE_JSON,
    commit,
    optimizer_state,
    publish,
    read_commit,
    restore_optimizers,
)
from mtlkd.ui import console, progress_bar

BACKBONE_FILE = "backbone.safetensors"
OPTIONS_FILE = "pretrain.json"
KIND = "pretraining"  # how the state's header and its errors name this run


class SimMIM(nn.Module):
    """A ViT backbone with a mask token and a linear pixel decoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.backbone = build_backbone(config)
        if not hasattr(self.backbone, "vit"):
            raise ConfigError(f"masked-image pretraining needs a ViT backbone, not {config.backbone.name!r}")
        vit = self.backbone.vit
        self.patch = int(vit.patch_embed.patch_size[0])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.backbone.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(self.backbone.embed_dim, self.patch * self.patch * 3)
        self.register_buffer("mean", torch.tensor(list(config.mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(config.std)).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W in [0, 1]; mask: B x N bool (True = hidden). Returns the L1 loss."""
        x = (images - self.mean) / self.std
        vit = self.backbone.vit
        tokens = vit.patch_embed(x)
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype).expand_as(tokens), tokens)
        tokens = self.backbone.add_position(tokens)
        tokens = vit.norm(vit.blocks(tokens))[:, self.backbone.num_prefix :]
        pred = self.decoder(tokens)
        target = patchify(x, self.patch)
        error = (pred.float() - target).abs().mean(dim=-1)
        return (error * mask).sum() / mask.sum().clamp(min=1)


def patch_of(config: ModelConfig) -> int:
    """Pixels per patch side of a ViT config (masked-image pretraining is for ViTs)."""
    patch = getattr(config.backbone, "patch_size", None)
    if patch is None:
        raise ConfigError(f"masked-image pretraining needs a ViT backbone, not {config.backbone.name!r}")
    return int(patch)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """B x C x H x W -> B x N x (patch * patch * C), patches in row-major order (the ViT's token order)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def block_mask(batch: int, grid: tuple[int, int], ratio: float, block: int, generator: torch.Generator) -> torch.Tensor:
    """B x N bool: `ratio` of the patches hidden, chosen as whole block x block squares (SimMIM's masking
    at a coarser size than the patch, so a hidden patch cannot be copied from its neighbour)."""
    gh, gw = math.ceil(grid[0] / block), math.ceil(grid[1] / block)
    hidden = round(ratio * gh * gw)
    scores = torch.rand(batch, gh * gw, generator=generator)
    coarse = torch.zeros(batch, gh * gw, dtype=torch.bool)
    coarse.scatter_(1, scores.argsort(dim=1)[:, :hidden], True)
    coarse = coarse.view(batch, gh, gw).repeat_interleave(block, 1).repeat_interleave(block, 2)
    return coarse[:, : grid[0], : grid[1]].reshape(batch, -1)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop (scale 0.4-1), horizontal flip and colour jitter (brightness, contrast,
    saturation, channel order): more textures and lighting than the generator alone draws."""
    b, _, h, w = images.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    scale = 0.4 + 0.6 * rand(b)
    aspect = torch.exp((rand(b) - 0.5) * 0.6)
    sh, sw = (scale / aspect).sqrt().clamp(max=1), (scale * aspect).sqrt().clamp(max=1)
    cy, cx = (rand(b) * 2 - 1) * (1 - sh), (rand(b) * 2 - 1) * (1 - sw)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gray = out.mean(dim=1, keepdim=True)
    saturation = (0.5 + rand(b, 1, 1, 1)).clamp(max=1.3)
    out = gray + (out - gray) * saturation
    contrast = 0.7 + 0.6 * rand(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = mean + (out - mean) * contrast
    out = out * (0.7 + 0.6 * rand(b, 1, 1, 1))
    permute = rand(b) < 0.2
    if permute.any():
        out[permute] = out[permute][:, torch.randperm(3, generator=generator)]
    return out.clamp(0, 1)


def pretraining_images(count: int, size: tuple[int, int], seed: int, cache: Path | None = None,
                       quiet: bool = False) -> np.ndarray:
    """count x H x W x 3 uint8 renders of the wide scene distribution, cached as one .npy file."""
    from mtlkd.data import cache_dir
    from mtlkd.data.synthetic import WIDE, render_scene, scene_rng

    base = Path(cache) if cache is not None else cache_dir()
    path = base / f"pretrain-wide-{size[0]}x{size[1]}-s{seed}-n{count}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    images = np.empty((count, size[0], size[1], 3), dtype=np.uint8)
    with progress_bar("img", quiet=quiet) as bar:
        job = bar.add_task("rendering pretraining scenes", total=count, info="")
        for i in range(count):
            image = render_scene(scene_rng(seed, "train", i), size[0], size[1], WIDE)["image"]
            images[i] = np.round(image * 255).astype(np.uint8)
            bar.advance(job)
    base.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial.npy")  # two processes may render at once
    np.save(partial, images)
    partial.replace(path)
    return images


def pretrain(options: PretrainOptions) -> Path:
    """Run (or, with `resume`, continue) SimMIM pretraining in `options.out`, locked for the whole run;
    returns the path of the backbone checkpoint."""
    out = Path(options.out)
    with run_lock(out):
        from mtlkd.files import clean_stale_temporaries

        clean_stale_temporaries(out)  # what a killed run left half-written (under the lock: none is ours)
        return _pretrain(options, out)


def _pretrain(options: PretrainOptions, out: Path) -> Path:
    config = model_config(options.preset, img_size=options.img_size)
    backbone_json = config.to_dict()["backbone"]
    size = config.img_size
    torch.manual_seed(options.seed)
    patch = patch_of(config)
    if size[0] % patch or size[1] % patch:
        raise ConfigError(f"--img-size {size[0]}x{size[1]}: not a multiple of the {patch}-pixel patches")
    if not options.resume and any((out / name).exists() for name in (BACKBONE_FILE, STATE_FILE, STATE_JSON)):
        raise ConfigError(f"--out {out}: holds a pretraining run already; continue it with --resume or pass "
                          "another --out")
    from mtlkd.train.trainer import resolve_device

    device = resolve_device(options.device)
    model = SimMIM(config).to(device)
    images = torch.from_numpy(pretraining_images(options.images, size, options.data_seed, quiet=options.quiet))
    steps = options.images // options.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay,
                                  betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr, total_steps=options.epochs * steps,
                                                    pct_start=0.1)
    start, history = 0, []
    if options.resume and (out / STATE_FILE).is_file():
        start, history = _load_state(out, model, optimizer, scheduler)
        if not options.quiet:
            console.print(f"resuming {out} after epoch {start}")
    write_json(out / OPTIONS_FILE, asdict(options) | {"backbone": backbone_json})
    grid = tuple(model.backbone.grid)
    for epoch in range(start, options.epochs):
        generator = torch.Generator().manual_seed(options.seed * 100003 + epoch)
        model.train()
        total, started = 0.0, time.perf_counter()
        with progress_bar("img", transient=True, quiet=options.quiet) as bar:
            job = bar.add_task(f"pretrain {epoch + 1}/{options.epochs}", total=steps * options.batch_size, info="")
            for step, batch in enumerate(_batches(images, options.batch_size, steps, generator)):
                batch = augment(batch, generator).to(device)
                mask = block_mask(len(batch), grid, options.mask_ratio, options.mask_block, generator).to(device)
                loss = model(batch, mask)
                if not torch.isfinite(loss):
                    raise diverged(loss.item(), epoch, step, options)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item()
                bar.update(job, advance=len(batch), info=f"loss {loss.item():.4f}")
        record = {"epoch": epoch + 1, "loss": total / steps, "seconds": round(time.perf_counter() - started, 1)}
        history.append(record)
        if not options.quiet:
            console.print(f"epoch {epoch + 1}  masked-patch L1 {record['loss']:.4f}  {record['seconds']:.0f}s")
        _save_state(out, model, optimizer, scheduler, epoch + 1, history)
    meta = {  # a backbone, not a model: no tasks or heads, so not model_metadata
        "kind": "backbone", "objective": "simmim", "preset": options.preset, "backbone": backbone_json,
        "input_size": [int(v) for v in size], "mtlkd_version": __version__,
        "pretraining": {**asdict(options), "history": history, "scene_ranges": "wide"},
    }
    path = save_checkpoint(out / BACKBONE_FILE, model.backbone.vit.state_dict(), meta)
    _plot(out, history, options.preset)
    return path


def _batches(images: torch.Tensor, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch's batches (B x 3 x H x W floats in [0, 1]) in an order drawn from `generator`."""
    order = torch.randperm(len(images), generator=generator)
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        yield images[index].permute(0, 3, 1, 2).float() / 255.0


def _save_state(out: Path, model: nn.Module, optimizer, scheduler, epochs_done: int, history: list) -> None:
    """Commit epoch `epochs_done` as a training commits its epochs (`train.state.commit`)."""
    optim_tensors, scalars, groups = optimizer_state([optimizer])
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | optim_tensors
    meta = {"epochs_done": epochs_done, "history": history, "optim_scalars": scalars, "param_groups": groups,
            "scheduler": scheduler.state_dict()}
    commit(out, tensors, meta, kind=KIND)


def _load_state(out: Path, model: nn.Module, optimizer, scheduler) -> tuple[int, list]:
    """Restore the last commit; returns (epochs done, history). Rewrites the readable copies from it, which
    finishes a commit a kill interrupted."""
    tensors, meta = read_commit(out, KIND, device=str(next(model.parameters()).device))
    if meta is None:  # a state from before commits carried their scalars: its state.json holds them
        try:
            meta = json.loads((out / STATE_JSON).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{out / STATE_JSON}: corrupt pretraining state ({exc}); start again in a new "
                                  "--out") from None
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizers([optimizer], tensors, meta["optim_scalars"], meta["param_groups"])
        scheduler.load_state_dict(meta["scheduler"])
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise CheckpointError(f"{out / STATE_FILE}: the saved state does not fit these options ({exc!s:.200}); "
                              f"resume with the run's own options (see {out / OPTIONS_FILE})") from None
    publish(out, meta)
    return meta["epochs_done"], meta["history"]


def _plot(out: Path, history: list[dict[str, Any]], preset: str) -> None:
    """pretrain.png: the masked-patch loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from mtlkd.train.plots import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([r["epoch"] for r in history], [r["loss"] for r in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-patch L1 (normalised pixels)")
    ax.set_title(f"SimMIM pretraining of {preset}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / "pretrain.png")
