"""The epoch a run keeps: held-out training images (never the evaluation split), Delta against the first
trained epoch, the evaluation split scored once by the chosen checkpoint and once by the last epoch."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mtlkd.data import open_dataset
from mtlkd.data.synthetic import write_synthetic
from mtlkd.train.selection import EpochSelector, holdout_split
from mtlkd.train.trainer import TrainOptions, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 20, 6, size=(32, 32), seed=5, progress=False)


def test_holdout_split_is_disjoint_complete_seeded_and_sized():
    train_ids, held = holdout_split(100, 0.1, seed=0)
    assert len(held) == 10 and not set(train_ids) & set(held)
    assert sorted(train_ids + held) == list(range(100))
    assert holdout_split(100, 0.1, seed=0) == (train_ids, held)
    assert holdout_split(100, 0.1, seed=1)[1] != held
    assert holdout_split(5, 0.01)[1] != [] and holdout_split(5, 0.0) == (list(range(5)), [])
    with pytest.raises(ValueError, match="leaves none"):
        holdout_split(1, 0.5)


def test_selection_images_are_training_images_and_never_evaluation_images(tiny_data):
    train_set = open_dataset("synthetic", tiny_data, "train")
    eval_set = open_dataset("synthetic", tiny_data, "val")
    _, held = holdout_split(len(train_set), 0.25)

    def digest(dataset, i):
        return hashlib.sha256(np.ascontiguousarray(dataset.read(i)["image"]).tobytes()).hexdigest()

    held_images = {digest(train_set, i) for i in held}
    assert held_images.isdisjoint(digest(eval_set, i) for i in range(len(eval_set)))
    assert held_images <= {digest(train_set, i) for i in range(len(train_set))}


def _m(miou: float, mean_angle: float) -> dict:
    return {"seg": {"miou": miou, "pixel_acc": 50.0}, "normal": {"mean": mean_angle}}


def test_selector_keeps_an_epoch_only_when_it_beats_the_kept_one():
    selector = EpochSelector()
    # okd-like: "mtl" does not train in epoch 1 (warm-up); it starts being kept at epoch 2
    selector.update(1, {"mtl": {"metrics": _m(1.0, 80.0)}, "stl": {"metrics": _m(10.0, 40.0)}}, {"stl"})
    assert "mtl" not in selector.state
    deltas = selector.update(2, {"mtl": {"metrics": _m(10.0, 40.0)}, "stl": {"metrics": _m(12.0, 40.0)}},
                             {"mtl", "stl"})
    assert deltas["mtl"] == 0.0 and selector.improved("mtl", 2) and selector.improved("stl", 2)
    # seg better by 10% of mIoU (+5 on the task), normals worse by 10% (-10): Delta -2.5, not kept
    deltas = selector.update(3, {"mtl": {"metrics": _m(11.0, 44.0)}, "stl": {"metrics": _m(12.0, 40.0)}},
                             {"mtl", "stl"})
    assert deltas["mtl"] == pytest.approx(-2.5)
    assert not selector.improved("mtl", 3) and not selector.improved("stl", 3)  # equal is not better
    # against the kept epoch 2: seg +5, normals +5 (38 vs 40 degrees) -> +5, kept
    deltas = selector.update(4, {"mtl": {"metrics": _m(11.0, 38.0)}, "stl": {"metrics": _m(11.0, 40.0)}},
                             {"mtl", "stl"})
    assert deltas["mtl"] == pytest.approx(5.0)
    chosen = selector.chosen()
    assert chosen["mtl"]["epoch"] == 4 and chosen["stl"]["epoch"] == 2
    # the next epoch is compared with epoch 4, not with epoch 2
    assert selector.update(5, {"mtl": {"metrics": _m(11.0, 38.0)}}, {"mtl"})["mtl"] == 0.0
    # a kept metric of 0 (an untrained network) is left out instead of dividing by it
    zero = EpochSelector()
    zero.update(1, {"n": {"metrics": {"normal": {"mean": 50.0, "within_11.25": 0.0}}}}, {"n"})
    assert zero.update(2, {"n": {"metrics": {"normal": {"mean": 45.0, "within_11.25": 3.0}}}}, {"n"})["n"] == 10.0


def test_run_scores_the_evaluation_split_with_the_chosen_and_the_last_weights(tiny_data, tmp_path):
    from mtlkd.checkpoint import read_metadata

    run = train(TrainOptions(dataset="synthetic", data_dir=str(tiny_data), out=str(tmp_path / "run"),
                             preset="vit-nano", epochs=3, batch_size=4, seed=1, device="cpu", select_fraction=0.2))
    selection = json.loads((run / "selection.json").read_text())
    assert selection["evaluation_images"] == 6 and selection["select_fraction"] == 0.2
    chosen = selection["networks"]["mtl"]["epoch"]
    assert read_metadata(run / "model.safetensors")["epoch"] == chosen
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    deltas = [r["select_delta"]["mtl"] for r in history]
    assert deltas[0] == 0.0
    kept = [1 + i for i, d in enumerate(deltas) if i == 0 or d > 0]  # the epochs that replaced the kept one
    assert chosen == kept[-1]
    metrics = json.loads((run / "metrics.json").read_text())
    last = json.loads((run / "last_metrics.json").read_text())
    assert set(metrics) == set(last) == {"seg", "depth", "normal"}
    if chosen == 3:
        assert metrics == last
