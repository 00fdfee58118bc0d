"""Paired seeds: runs of one seed start their multi-task network from the same weights and see the same
augmented batches, whatever method they train (so a row's seed i can be compared with mtl's seed i)."""

from __future__ import annotations

import pytest
import torch

from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.data.synthetic import write_synthetic
from mtlkd.models import create_model, preset_config
from mtlkd.train.methods import method_class
from mtlkd.train.methods.base import unwrap
from mtlkd.train.trainer import TrainOptions, train

STEPS_SEEN = 2


class _Seen(Exception):
    """Stops a run once the first batches and the starting weights are recorded."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 24, 4, size=(32, 32), seed=5, progress=False)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_data):
    config = preset_config("vit-nano", ["seg", "depth", "normal"], 13)
    path = tmp_path_factory.mktemp("teacher") / "model.safetensors"
    save_checkpoint(path, create_model(config).state_dict(), model_metadata(config))
    return path


def _first_steps(data, out, monkeypatch, method: str, seed: int, **method_options):
    """(the student's weights before its first step, the first STEPS_SEEN batches) of a run."""
    seen: dict = {"batches": []}
    originals: dict[type, object] = {}

    def recording(self, batch, step, epoch):
        if not seen["batches"]:
            seen["weights"] = {k: v.clone() for k, v in unwrap(self.nets["mtl"]).state_dict().items()}
        seen["batches"].append({k: v.clone() for k, v in batch.items()})
        if len(seen["batches"]) == STEPS_SEEN:
            raise _Seen
        return originals[type(self)](self, batch, step, epoch)

    cls = method_class(method)
    originals[cls] = cls.training_step
    monkeypatch.setattr(cls, "training_step", recording)
    options = TrainOptions(dataset="synthetic", data_dir=str(data), out=str(out), method=method, preset="vit-nano",
                           epochs=2, batch_size=4, seed=seed, device="cpu", quiet=True,
                           method_options=method_options)
    with pytest.raises(_Seen):
        train(options)
    monkeypatch.undo()
    return seen["weights"], seen["batches"]


def test_rows_of_one_seed_share_the_start_and_the_batches(tiny_data, teacher, tmp_path, monkeypatch):
    weights, batches = _first_steps(tiny_data, tmp_path / "mtl", monkeypatch, "mtl", seed=7)
    others = {
        "okd": {"warmup": 0},  # builds three single-task networks besides the student
        "kdam": {"teacher": str(teacher)},  # loads a teacher first
        "mtl": {"task_weighting": "rlw"},  # draws random task weights every step, between two batches
    }
    for method, method_options in others.items():
        theirs, their_batches = _first_steps(tiny_data, tmp_path / f"{method}-{len(method_options)}", monkeypatch,
                                             method, seed=7, **method_options)
        assert theirs.keys() == weights.keys()
        heads = [k for k in weights if k.startswith("heads.")]
        assert heads and all(torch.equal(theirs[k], weights[k]) for k in weights), method
        for ours, their in zip(batches, their_batches, strict=True):
            assert all(torch.equal(ours[k], their[k]) for k in ours), method


def test_another_seed_starts_elsewhere_and_sees_other_batches(tiny_data, tmp_path, monkeypatch):
    weights, batches = _first_steps(tiny_data, tmp_path / "a", monkeypatch, "mtl", seed=7)
    other, other_batches = _first_steps(tiny_data, tmp_path / "b", monkeypatch, "mtl", seed=8)
    heads = [k for k in weights if k.startswith("heads.")]
    assert not all(torch.equal(other[k], weights[k]) for k in heads)
    assert not torch.equal(batches[0]["image"], other_batches[0]["image"])


def test_augmentation_of_a_sample_ignores_the_global_generator(tiny_data):
    from mtlkd.data import open_dataset

    data = open_dataset("synthetic", tiny_data, "train", augment=True)
    data.augment_seed = 3
    samples = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        samples.append([data[i]["image"] for i in range(6)])
    assert all(torch.equal(a, b) for a, b in zip(*samples, strict=True))
    un_augmented = open_dataset("synthetic", tiny_data, "train")
    assert any(not torch.equal(samples[0][i], un_augmented[i]["image"]) for i in range(6))  # it did augment


