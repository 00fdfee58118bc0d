"""How strongly KDAM's distillation pulls on each task's prediction, against the task loss itself, for the
two readings of "a distribution" for depth and normals (spatial: softmax over positions per channel, the
default; channel: softmax over the channels at each pixel, degenerate for one-channel depth).

    .venv/bin/python scripts/kd_gradient_ratio.py --student runs/experiment/mtl/seed0/model.safetensors \\
        --teacher runs/experiment/kdam-teacher/seed0/model.safetensors --data runs/experiment/data

Prints, per task and view, ||d L_KD / d prediction|| / ||d L_task / d prediction|| over one batch of
training images (both gradients taken at the student's prediction, beta = 1, the paper's T = 3).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=3.0)
    args = parser.parse_args()

    from mtlkd.data import open_dataset
    from mtlkd.models import load_model
    from mtlkd.train.distill import REGRESSION_VIEWS, task_kd_loss
    from mtlkd.train.methods.base import forward, task_losses

    dataset = open_dataset("synthetic", args.data, "train")
    samples = [dataset[i] for i in range(args.images)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    student, _ = load_model(args.student)
    teacher, _ = load_model(args.teacher)
    tasks = list(student.tasks)
    with torch.no_grad():
        preds = forward(student, batch["image"], tasks)
        targets = forward(teacher, batch["image"], tasks)
    print(f"{'task':8} {'view':8} {'|dKD|/|dtask|':>14}")
    for task in tasks:
        pred = preds[task].detach().requires_grad_(True)
        (task_grad,) = torch.autograd.grad(task_losses({task: pred}, batch, [task])[task], pred)
        for view in REGRESSION_VIEWS if task != "seg" else ("classes",):
            loss, _ = task_kd_loss(task, pred, targets[task], "cs", args.temperature,
                                   "spatial" if view == "classes" else view)
            if not loss.requires_grad:
                print(f"{task:8} {view:8} {0.0:14.4f}")
                continue
            (kd_grad,) = torch.autograd.grad(loss, pred)
            print(f"{task:8} {view:8} {(kd_grad.norm() / task_grad.norm()).item():14.4f}")


if __name__ == "__main__":
    main()
