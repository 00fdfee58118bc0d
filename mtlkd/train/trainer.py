"""The one training loop. Methods supply networks and losses; this owns everything else: data,
AdamW + OneCycleLR, mixed precision, DistributedDataParallel, validation, history, plots, checkpoints
and exact resume (state saved atomically at every epoch end; data order and augmentation are seeded
per epoch, so a resumed run reaches the same weights as an uninterrupted one)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from mtlkd.checkpoint import load_checkpoint, model_metadata, save_checkpoint, write_json
from mtlkd.data import open_dataset
from mtlkd.errors import ConfigError
from mtlkd.eval.evaluate import metric_arrays
from mtlkd.models import model_config
from mtlkd.tasks import TASKS, get_task, parse_tasks
from mtlkd.train import state as train_state
from mtlkd.train.methods import create_method, parse_method_options
from mtlkd.train.methods.base import MethodContext, MethodOptions, Trained, forward, task_losses, unwrap
from mtlkd.train.options import TrainOptions
from mtlkd.train.runfolder import check_run_folder, clear_run, diverged, run_lock
from mtlkd.train.selection import EpochSelector, holdout_split
from mtlkd.ui import console, progress_bar


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def launched(cls) -> DistInfo:
        """The rank and world size torchrun gave this process (1 process without it); starts nothing."""
        return cls(rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")))

    @classmethod
    def from_env(cls, device: torch.device) -> DistInfo:
        info = cls.launched()
        if info.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from mtlkd.models import check_device

    check_device(name)
    return torch.device(name)


@dataclass
class RunData:
    """What a run trains on (`train`), chooses its epoch on (`select`) and is scored on once (`evaluate`),
    with the tasks and classes its network gets; `teachers` goes to the method (mtl-distill's targets)."""

    train: Any
    select: Any
    evaluate: Any
    tasks: list[str]
    num_classes: int | None
    class_names: list[str] | None
    teachers: dict[str, Any] | None = None


def open_run_data(options: TrainOptions) -> RunData:
    """The dataset's training split, less a held-out share for choosing the epoch, and its evaluation split."""
    full_train = open_dataset(options.dataset, options.data_dir, "train", options.tasks, augment=options.augment)
    eval_set = open_dataset(options.dataset, options.data_dir, "val", options.tasks, augment=False)
    train_ids, select_ids = holdout_split(len(full_train), options.select_fraction, options.select_seed)
    tasks = parse_tasks(options.tasks, available=list(full_train.tasks))
    classes = any(get_task(t).has_classes for t in tasks)
    return RunData(
        train=Subset(full_train, train_ids),
        select=Subset(open_dataset(options.dataset, options.data_dir, "train", options.tasks), select_ids),
        evaluate=eval_set, tasks=tasks, num_classes=full_train.num_classes if classes else None,
        class_names=list(full_train.class_names) if classes else None,
    )


def train(options: TrainOptions, data: Callable[[TrainOptions], RunData] | None = None) -> Path:
    """Train a method; returns the run folder holding checkpoints, metrics.json and history.jsonl.

    Options are checked first; a folder holding a run is refused unless `resume` or `overwrite`, and the
    folder is locked for the whole run (mtlkd.train.runfolder). `data`: opens what to train on instead of
    `options.dataset`, called inside the lock (mtl-distill's teacher pass and targets)."""
    method_options = parse_method_options(options.check().method, options.method_options)
    if not DistInfo.launched().main:
        return _train(options, method_options, data=data)
    out = Path(options.out)
    with run_lock(out):
        stale = check_run_folder(out, options.resume, options.overwrite)
        return _train(options, method_options, stale, data)


def _train(options: TrainOptions, method_options: MethodOptions, stale: list[Path] | None = None,
           data: Callable[[TrainOptions], RunData] | None = None) -> Path:
    device = resolve_device(options.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    dinfo = DistInfo.from_env(device)
    out = Path(options.out)
    torch.manual_seed(options.seed)

    run_data = (data or open_run_data)(options)
    train_set, select_set, eval_set, tasks = run_data.train, run_data.select, run_data.evaluate, run_data.tasks
    config = model_config(options.preset, tasks, run_data.num_classes, run_data.class_names,
                          img_size=tuple(options.img_size) if options.img_size else None)
    steps = len(train_set) // (options.batch_size * dinfo.world)
    if options.max_steps_per_epoch:
        steps = min(steps, options.max_steps_per_epoch)
    if steps < 1:
        raise ConfigError(f"{len(train_set)} training images is less than one batch of {options.batch_size}")
    ctx = MethodContext(
        config=config, tasks=tasks, num_classes=config.num_classes,
        class_names=list(config.class_names) if config.class_names else None,
        device=device, options=method_options, epochs=options.epochs, steps_per_epoch=steps,
        backbone_weights=options.backbone_weights, teachers=run_data.teachers, seed=options.seed,
    )
    method = create_method(options.method, ctx).to(device)
    if dinfo.world > 1:
        _wrap_ddp(method, device)
    optimizer = torch.optim.AdamW(method.parameter_groups(options.lr), weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=options.epochs * steps
    )
    optimizers = [optimizer, *method.extra_optimizers()]
    scaler = torch.amp.GradScaler("cuda", enabled=options.amp and device.type == "cuda")

    clear_run(stale or [])  # --overwrite: the old run goes only now that data, network and options all work
    start_epoch, selection = 0, {}
    if (out / train_state.STATE_FILE).exists() and options.resume:
        start_epoch, selection = train_state.load(out, method, optimizers, scheduler)
        if dinfo.main:
            console.print(f"resuming {out} after epoch {start_epoch}")
    elif dinfo.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.jsonl").write_text("")
    if dinfo.main:
        write_json(out / "run.json", asdict(options) | {"method_options": method.method_options.to_json(),
                                                        "config": config.to_dict()})
    selector = EpochSelector(selection)

    sampler = (DistributedSampler(train_set, dinfo.world, dinfo.rank, shuffle=True, seed=options.seed, drop_last=True)
               if dinfo.world > 1 else None)
    select_loader = DataLoader(select_set, batch_size=options.batch_size, num_workers=options.workers)
    augmented = getattr(train_set, "dataset", train_set)  # the dataset under the training Subset
    for epoch in range(start_epoch, options.epochs):
        torch.manual_seed(options.seed * 100003 + epoch)  # random numbers a method draws, per epoch
        if hasattr(augmented, "augment_seed"):  # each sample's augmentation, its own stream (MTANDataset)
            augmented.augment_seed = options.seed * 100003 + epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(options.seed * 100003 + epoch)
        loader = DataLoader(
            train_set, batch_size=options.batch_size, drop_last=True, num_workers=options.workers,
            sampler=sampler or RandomSampler(train_set, generator=generator),
        )
        started = time.perf_counter()
        train_logs = _train_epoch(method, loader, optimizers, scheduler, scaler, options, device, epoch, steps, dinfo)
        train_seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "train": train_logs,
                  "train_seconds": round(train_seconds, 2)}
        record.update(method.on_epoch_end(epoch, train_logs))
        if dinfo.main:
            trained = method.trained_networks(epoch)
            if len(select_set):
                record["val"] = validate(method, select_loader, device, options.max_val_batches)
                record["select_delta"] = selector.update(epoch + 1, record["val"], trained)
            else:  # nothing held out: keep the last epoch
                selector.keep_last(epoch + 1, trained)
            _save_selected(out, method, selector, epoch, options)
            train_state.save(out, method, optimizers, scheduler, epoch + 1, selector.state, record)  # the commit
            if not options.quiet:
                _print_epoch(record)
            from mtlkd.train.plots import plot_history

            plot_history(out)
        if dinfo.world > 1:
            dist.barrier()
    if dinfo.main:
        _final_scores(out, method, eval_set, selector, options, device)
    return out


def _final_scores(out: Path, method, eval_set, selector: EpochSelector, options: TrainOptions, device) -> None:
    """Score the evaluation split once with the last epoch's weights (last_metrics.json) and once with
    the chosen checkpoints (metrics.json, what reports read); selection.json says what was chosen."""
    loader = DataLoader(eval_set, batch_size=options.batch_size, num_workers=options.workers)
    last = validate(method, loader, device)
    networks = method.networks()
    kept = selector.chosen()
    earlier = [name for name in networks if kept.get(name, {}).get("epoch") != options.epochs]
    for name in earlier:  # networks whose kept epoch is the last one already hold its weights
        path = out / f"{networks[name].stem}.safetensors"
        if path.is_file():
            state, _ = load_checkpoint(path, device=str(device))
            unwrap(networks[name].net).load_state_dict(state)
    chosen = validate(method, loader, device) if earlier else last  # the same weights are scored once
    write_json(out / "last_metrics.json", merged_metrics(last, networks))
    write_json(out / "metrics.json", merged_metrics(chosen, networks))
    write_json(out / "selection.json", {
        "rule": "an epoch replaces the kept one when its Delta against it is > 0, on the held-out training images",
        "select_fraction": options.select_fraction, "select_seed": options.select_seed,
        "evaluation_split": "val", "evaluation_images": len(eval_set), "networks": selector.chosen(),
    })


def _train_epoch(method, loader, optimizers, scheduler, scaler, options, device, epoch, steps, dinfo) -> dict:
    method.train(True)
    sums: dict[str, Any] = {}
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with progress_bar("img", transient=True, quiet=options.quiet or not dinfo.main) as bar:
        job = bar.add_task(f"epoch {epoch + 1}/{options.epochs}", total=steps * options.batch_size, info="")
        for step, batch in enumerate(loader):
            if step >= steps:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            autocast = torch.autocast(device.type, dtype=amp_dtype) if options.amp else contextlib.nullcontext()
            with autocast:
                loss, logs = method.training_step(batch, epoch * steps + step, epoch)
            if not torch.isfinite(loss):
                raise diverged(loss.item(), epoch, step, options)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if dinfo.world > 1:
                _allreduce_extra(method, dinfo.world)
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            method.after_optimizer_step()
            _accumulate(sums, {"loss": loss.item(), **logs})
            bar.update(job, advance=options.batch_size, info=f"loss {loss.item():.4f}")
    return _average(sums, steps)


@torch.inference_mode()
def validate(method, loader, device, max_batches: int | None = None) -> dict[str, Any]:
    """Metrics and unweighted losses of every network the method asks to be measured."""
    method.train(False)
    results: dict[str, Any] = {}
    for name, trained in method.networks().items():
        net, tasks = trained.net, trained.tasks
        accs = {t: get_task(t).metric(num_classes=method.ctx.num_classes) for t in tasks}
        loss_sums = dict.fromkeys(tasks, 0.0)
        batches = 0
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            preds, batch = method.metric_inputs(forward(unwrap(net), batch["image"], tasks), batch)
            for t, value in task_losses(preds, batch, tasks).items():
                loss_sums[t] += value.item()
            for t in tasks:
                pred, target = metric_arrays(t, preds[t].float().cpu().numpy(), batch[t].cpu().numpy())
                accs[t].update(pred, target)
            batches += 1
        results[name] = {"metrics": {t: a.compute() for t, a in accs.items()},
                         "loss": {t: s / max(batches, 1) for t, s in loss_sums.items()}}
    return results


def _save_selected(out: Path, method, selector: EpochSelector, epoch: int, options: TrainOptions) -> None:
    """Save each network whose held-out Delta improved this epoch: its checkpoint is the chosen one."""
    for name, trained in method.networks().items():
        if not selector.improved(name, epoch + 1):
            continue
        net = unwrap(trained.net)
        meta = model_metadata(net.config.to_dict(), method=options.method, dataset=options.dataset,
                              epoch=epoch + 1, preset=options.preset, selection=selector.chosen()[name],
                              **method.extra_metadata())
        save_checkpoint(out / f"{trained.stem}.safetensors", net.state_dict(), meta)


def merged_metrics(results: dict, networks: dict[str, Trained]) -> dict[str, Any]:
    """metrics.json from `validate`'s results: the headline (deployable multi-task) network's metrics;
    without one (STL runs), each task's from its own network."""
    headline = [name for name, trained in networks.items() if trained.headline and name in results]
    if headline:
        return results[headline[0]]["metrics"]
    merged: dict[str, Any] = {}
    for entry in results.values():
        merged.update(entry["metrics"])
    return merged


def _wrap_ddp(method, device: torch.device) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name, net in list(method.nets.items()):
        if any(p.requires_grad for p in net.parameters()):
            ids = [device.index] if device.type == "cuda" else None
            method.nets[name] = DDP(net, device_ids=ids, find_unused_parameters=False)


def _allreduce_extra(method, world: int) -> None:
    """Parameters outside the networks (task weights, omega, adaptors) are averaged by hand."""
    for p in method.extra.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _accumulate(sums: dict, logs: dict) -> None:
    for key, value in logs.items():
        if isinstance(value, dict):
            _accumulate(sums.setdefault(key, {}), value)
        else:
            sums[key] = sums.get(key, 0.0) + float(value)


def _average(sums: dict, n: int) -> dict:
    return {k: _average(v, n) if isinstance(v, dict) else v / n for k, v in sums.items()}


def _print_epoch(record: dict) -> None:
    parts = [f"epoch {record['epoch']}", f"loss {record['train']['loss']:.4f}", f"{record['train_seconds']:.1f}s"]
    for name, result in record.get("val", {}).items():  # nothing held out (--select-fraction 0): no val
        m = result["metrics"]
        parts += [f"{name} {TASKS[t].progress.format(**m[t])}" for t in TASKS if t in m and TASKS[t].progress]
    console.print("  ".join(parts))
