"""Why a seed fails a task: one plain-MTL run in the experiment's exact setting (scripts/experiment.py's
`mtl` row: vit-micro from its pretrained backbone, 8 epochs of 256 scenes, batch 16, AdamW + OneCycle at
1e-3), with per-step measurements taken beside the training, which they do not change (extra gradients
are computed with `torch.autograd.grad` on the same graph; no random number is drawn):

- each task's gradient norm at its own head and at the shared backbone;
- the spread across pixels of each head's raw output (std over pixels, mean over channels and images);
- the regression heads' query embeddings: mean pairwise cosine similarity of the projected queries, and
  the spread across queries of each patch's scalar products (what the MLP reads);
- the learning rate of that step.

    OMP_NUM_THREADS=1 python scripts/failure_mechanism.py --seed 44 --out runs/mechanism/seed44

Writes OUT/steps.jsonl (one line a step) beside the run's own files.

    python scripts/failure_mechanism.py --compare runs/mechanism/seed41 runs/mechanism/seed44

prints the measurements of several runs side by side, every 4 steps, and draws them (mechanism.png in
the first run's parent folder).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


def _decoder_probe(head, tokens: torch.Tensor) -> dict[str, float]:
    """Query similarity and per-patch spread across queries of a head's _QueryDecoder on `tokens`."""
    dec = head.decoder
    n = tokens.shape[1]
    x = torch.cat([dec.proj_in(tokens), dec.queries.expand(tokens.shape[0], -1, -1)], dim=1)
    for block in dec.blocks:
        x = block(x)
    x = dec.norm(x)
    patches = F.normalize(dec.proj_patch(x[:, :n]), dim=-1)
    queries = F.normalize(dec.proj_query(x[:, n:]), dim=-1)
    sim = queries @ queries.transpose(1, 2)
    q = sim.shape[-1]
    off = (sim.sum(dim=(1, 2)) - q) / (q * (q - 1))
    products = patches @ queries.transpose(1, 2)  # B x N x Q
    return {"query_cos": float(off.mean()),
            "products_std_over_patches": float(products.std(dim=1).mean()),
            "products_std_over_queries": float(products.std(dim=2).mean())}


SERIES = {  # name -> (how to read it from a step's record, label)
    "normal loss": (lambda r: r["loss"]["normal"], "normal loss (1 - cos)"),
    "normal grad at backbone": (lambda r: r["grad_backbone"]["normal"], "|grad| of the normal loss at the backbone"),
    "normal raw std": (lambda r: r["raw_std"]["normal"], "normal head output: std over pixels"),
    "normal query cos": (lambda r: r["probe"]["normal"]["query_cos"], "normal queries: mean pairwise cosine"),
    "depth raw std": (lambda r: r["raw_std"]["depth"], "depth head output: std over pixels"),
    "lr": (lambda r: r["lr"], "learning rate"),
}


def compare(runs: list[Path], every: int = 4) -> None:
    """Print and plot the measurements of `runs` (folders holding steps.jsonl) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {run.name: [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines() if line]
               for run in runs}
    print("step  " + "  ".join(f"{name}:{run}" for name in SERIES for run in records))
    steps = sorted({r["step"] for rs in records.values() for r in rs})
    for step in steps[::every]:
        cells = []
        for read, _ in SERIES.values():
            for rs in records.values():
                hit = [r for r in rs if r["step"] == step]
                cells.append(f"{read(hit[0]):.4g}" if hit else "-")
        print(f"{step:4d}  " + "  ".join(cells))
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), dpi=100)
    for ax, (name, (read, label)) in zip(axes.flat, SERIES.items(), strict=True):
        for run, rs in records.items():
            ax.plot([r["step"] for r in rs], [read(r) for r in rs], label=run, lw=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
        if name in ("normal grad at backbone", "normal raw std", "depth raw std"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out = runs[0].parent / "mechanism.png"
    fig.savefig(out)
    print(f"written: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, nargs="+", help="runs to print and plot side by side")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--data", type=Path, default=Path("runs/experiment/data"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--preset", default="vit-micro")
    parser.add_argument("--every", type=int, default=1, help="measure every N-th step")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return
    if args.seed is None or args.out is None:
        parser.error("--seed and --out, or --compare")

    from mtlkd.data.synthetic import write_synthetic
    from mtlkd.models.pretrained import pretrained_backbone
    from mtlkd.train.methods.base import forward, task_losses, unwrap
    from mtlkd.train.methods.mtl import MultiTaskMethod
    from mtlkd.train.options import TrainOptions
    from mtlkd.train.trainer import train

    if not (args.data / "meta.json").exists():
        write_synthetic(args.data, 288, 200, size=(96, 128), seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "steps.jsonl", "w")  # noqa: SIM115
    optimizers: list[torch.optim.Optimizer] = []
    original_init = torch.optim.AdamW.__init__

    def remember(self, *a, **k):
        original_init(self, *a, **k)
        optimizers.append(self)

    torch.optim.AdamW.__init__ = remember
    original_step = MultiTaskMethod.training_step

    def measured_step(self, batch, step, epoch):
        if step % args.every == 0:
            net = unwrap(self.student)
            with torch.no_grad():
                blocks, tokens = net.backbone(net.normalize(batch["image"]))
            preds = forward(self.student, batch["image"], self.tasks)
            losses = task_losses(preds, batch, self.tasks)
            backbone = [p for p in net.backbone.parameters() if p.requires_grad]
            record = {"step": step, "epoch": epoch, "lr": optimizers[0].param_groups[0]["lr"],
                      "loss": {t: float(v.detach()) for t, v in losses.items()}, "grad_head": {}, "grad_backbone": {},
                      "raw_std": {}, "probe": {}}
            for t in self.tasks:
                head = [p for p in net.heads[t].parameters() if p.requires_grad]
                grads = torch.autograd.grad(losses[t], head + backbone, retain_graph=True, allow_unused=True)
                record["grad_head"][t] = _norm(grads[:len(head)])
                record["grad_backbone"][t] = _norm(grads[len(head):])
                with torch.no_grad():
                    raw = net.heads[t](tokens, None)  # B x C x h x w at the token grid
                    record["raw_std"][t] = float(raw.flatten(2).std(dim=2).mean())
                    if t == "normal":
                        record["raw_norm"] = float(raw.norm(dim=1).mean())
                    record["probe"][t] = _decoder_probe(net.heads[t], tokens)
            log.write(json.dumps(record) + "\n")
            log.flush()
        return original_step(self, batch, step, epoch)

    MultiTaskMethod.training_step = measured_step
    options = TrainOptions(dataset="synthetic", data_dir=str(args.data), out=str(args.out), method="mtl",
                           preset=args.preset, epochs=args.epochs, batch_size=16, seed=args.seed,
                           select_fraction=1 / 9, device="cpu", overwrite=True,
                           backbone_weights=str(pretrained_backbone(args.preset)), quiet=True)
    train(options)
    log.close()


if __name__ == "__main__":
    main()
