"""Shared by the method and weighting tests: a learnable fixed batch, a vit-nano context, the trainer's step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkd.models import preset_config
from mtlkd.train.methods.base import MethodContext

TASKS = ["seg", "depth", "normal"]


def fixed_batch(b: int = 2, size: int = 32, classes: int = 13, seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch in the datasets' format, targets derived from the image so that there is something to learn."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g)
    return {
        "image": image,
        "seg": (image[:, 0] * classes).long().clamp_max(classes - 1),
        "depth": 1.0 + 3.0 * image[:, 1:2],
        "normal": F.normalize(image - 0.5, dim=1),
    }


def nano_context(tasks=TASKS, epochs: int = 10, **options) -> MethodContext:
    config = preset_config("vit-nano", tasks, 13 if "seg" in tasks else None)
    return MethodContext(config=config, tasks=list(tasks), num_classes=config["num_classes"], class_names=None,
                         device=torch.device("cpu"), options=options, epochs=epochs, steps_per_epoch=4)


def run_steps(method, batch, steps: int, epoch: int = 0, lr: float = 2e-3) -> list[dict]:
    """The trainer's step (zero_grad, backward, step, after_optimizer_step) on one repeated batch."""
    optimizers = [torch.optim.AdamW(method.parameter_groups(lr), weight_decay=0.0), *method.extra_optimizers()]
    method.train(True)
    logs = []
    for step in range(steps):
        loss, log = method.training_step(batch, step, epoch)
        assert torch.isfinite(loss), (step, loss)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        method.after_optimizer_step()
        logs.append({"loss": loss.item(), **log})
    return logs


def killed_at_each(run, cases: list) -> list[int]:
    """For each (argument, index) of `cases`: `run(argument)` in a process SIGKILLed just before its file
    operation number `index` (mtlkd.files.file_operation_hook); returns the wait statuses. The processes are
    forked from one freshly spawned helper that never ran autograd: a process whose autograd threads ran
    (the test session's, after other tests trained) cannot run backward in a forked child."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_fork_each, (run, cases))


def _fork_each(run, cases: list) -> list[int]:
    import importlib
    import os
    import signal

    import mtlkd.files

    torch.set_num_threads(1)
    for module in (run.__module__, "mtlkd.train.plots", "mtlkd.train.methods", "mtlkd.models.nets",
                   "mtlkd.eval.evaluate", "matplotlib.pyplot", "safetensors.torch"):  # imported once, not per child
        importlib.import_module(module)
    statuses = []
    for argument, index in cases:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the helper's loop
            try:
                count = iter(range(1 << 30))

                def hook(op, path, index=index, count=count):
                    if next(count) == index:
                        os.kill(os.getpid(), signal.SIGKILL)
                mtlkd.files.file_operation_hook = hook
                run(argument)
            finally:
                os._exit(3)
        statuses.append(os.waitpid(pid, 0)[1])
    return statuses
