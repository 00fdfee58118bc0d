"""DistributedDataParallel on CPU (gloo): two processes started by torchrun train with the real trainer on
different shards of the data; afterwards both must hold bit-identical weights (networks and the
method's extra state: task weights, omega), and only rank 0 may write the run folder.

Run as a script, this file is the torchrun worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORLD = 2


def _snapshot(method) -> dict[str, torch.Tensor]:
    from mtlkd.train.methods.base import unwrap

    tensors = {}
    for name, net in method.nets.items():
        tensors.update({f"nets.{name}.{k}": v.detach().clone() for k, v in unwrap(net).state_dict().items()})
    tensors.update({f"extra.{k}": v.detach().clone() for k, v in method.extra.state_dict().items()})
    return tensors


def worker(data: str, out: str, weights: str, method_name: str, options: str) -> None:
    """One torchrun process: train through `mtlkd.train.trainer.train`, then dump this rank's weights."""
    import torch.distributed as dist
    from safetensors.torch import save_file

    import mtlkd.train.trainer as trainer

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    seen: dict = {"losses": []}
    create = trainer.create_method

    def capture(name, ctx):  # keep a handle on the method the trainer builds
        method = create(name, ctx)
        seen["method"], seen["initial"] = method, _snapshot(method)
        step = method.training_step

        def logged_step(batch, *args):
            loss, logs = step(batch, *args)
            seen["losses"].append(loss.item())
            return loss, logs

        method.training_step = logged_step
        return method

    trainer.create_method = capture
    trainer.train(trainer.TrainOptions(
        dataset="synthetic", data_dir=data, out=str(Path(out) / f"rank{rank}"), method=method_name,
        preset="vit-nano", epochs=2, batch_size=2, device="cpu", seed=3, method_options=json.loads(options),
        select_fraction=0.2,  # 2 of 10 held out: 8 training images, 2 steps per epoch on each rank
    ))
    save_file(_snapshot(seen["method"]), str(Path(weights) / f"rank{rank}.safetensors"))
    save_file(seen["initial"], str(Path(weights) / f"rank{rank}-initial.safetensors"))
    (Path(weights) / f"rank{rank}.json").write_text(json.dumps({"losses": seen["losses"]}))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mtlkd.data.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("ddp") / "data", n_train=10, n_val=2, size=(32, 32),
                           progress=False)


@pytest.mark.parametrize(
    ("method", "options", "saved"),
    [
        # GradNorm: autograd.grad inside a DDP step, and a learned weight outside the networks
        ("mtl", {"task_weighting": "gradnorm"}, ["model"]),
        # OKD: four DDP networks, one of them idle during the warm-up epoch (2 steps); omega outside the networks
        ("okd", {"warmup": 2}, ["model", "stl_seg", "stl_depth", "stl_normal"]),
    ],
)
def test_two_processes_end_with_identical_weights(tmp_path, data, method, options, saved):
    from safetensors.torch import load_file

    weights = tmp_path / "weights"
    weights.mkdir()
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           str(Path(__file__).resolve()), str(data), str(runs), str(weights), method, json.dumps(options)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]

    final = [load_file(str(weights / f"rank{r}.safetensors")) for r in range(WORLD)]
    initial = [load_file(str(weights / f"rank{r}-initial.safetensors")) for r in range(WORLD)]
    assert final[0].keys() == final[1].keys()
    different = [k for k in final[0] if not torch.equal(final[0][k], final[1][k])]
    assert not different, f"ranks disagree on {different[:5]}"
    assert any(k.startswith("extra.") for k in final[0])
    moved = {k for k in final[0] if not torch.equal(final[0][k], initial[0][k])}
    for name in ("nets.mtl.",) + tuple(f"nets.stl_{t}." for t in ("seg", "depth", "normal") if method == "okd"):
        assert any(k.startswith(name) for k in moved), f"{name} did not train"
    extra = {"mtl": "extra.weighting.weights", "okd": "extra.afd.omega"}[method]
    assert extra in moved

    # the ranks trained on different shards: their losses differ, yet their weights agree
    losses = [json.loads((weights / f"rank{r}.json").read_text())["losses"] for r in range(WORLD)]
    assert len(losses[0]) == len(losses[1]) == 4 and losses[0] != losses[1]

    # only rank 0 writes the run
    assert not (runs / "rank1").exists()
    for stem in saved:
        assert (runs / "rank0" / f"{stem}.safetensors").is_file(), stem
    history = (runs / "rank0" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2


if __name__ == "__main__":
    worker(*sys.argv[1:])
