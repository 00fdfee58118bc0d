"""A training killed (SIGKILL) at any file operation of any epoch's commit resumes to the bytes an
uninterrupted run ends with, every epoch once in its history (issue 20, case 4).

The kill comes from `mtlkd.files.file_operation_hook`, called before each step of every atomic write (create
the temporary file, write it, rename it) and after it; the killed trainings are forked from one spawned
helper (train_helpers.killed_at_each), so torch is imported twice, not once per kill. The kill points are
every operation from the first epoch's checkpoints to the last epoch's plots: a kill before the first
commit, between a checkpoint and the state, between the state and its readable copies (state.json,
history.jsonl), and during the plots."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import killed_at_each

import mtlkd.files
from mtlkd.data.synthetic import write_synthetic
from mtlkd.train.runfolder import resumed_options
from mtlkd.train.trainer import TrainOptions, train

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the killed training")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "syn", 16, 4, size=(32, 32), seed=3, progress=False)


def _options(data, out, **kw) -> TrainOptions:
    base = dict(dataset="synthetic", data_dir=str(data), out=str(out), preset="vit-nano", epochs=2, batch_size=4,
                max_steps_per_epoch=1, seed=1, device="cpu", select_fraction=0.25, quiet=True)
    return TrainOptions(**{**base, **kw})


def _operations(options: TrainOptions, monkeypatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", lambda op, path: seen.append((op, Path(path).name)))
    train(options)
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", None)
    return seen


def _resume(options: TrainOptions) -> None:
    """What a user does next: `mtl-train --resume --out RUN`, or the same command where the folder holds no
    run yet (killed before run.json)."""
    out = Path(options.out)
    if (out / "run.json").is_file() or (out / "state.safetensors").is_file():
        train(resumed_options(TrainOptions, out, options, set(), {"device", "workers", "quiet"}))
    else:
        train(options)


def _result(run: Path) -> dict:
    tensors = {name: load_file(str(run / name)) for name in ("state.safetensors", "model.safetensors")}
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    for record in history:
        record.pop("train_seconds")  # a wall-clock time, the one thing a repeat may change
    return {"tensors": tensors, "history": history,
            "state": {k: v for k, v in json.loads((run / "state.json").read_text()).items()},
            "metrics": json.loads((run / "metrics.json").read_text())}


def test_a_kill_at_every_commit_operation_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    reference = _options(tiny_data, tmp_path / "straight")
    operations = _operations(reference, monkeypatch)
    expected = _result(Path(reference.out))
    assert [r["epoch"] for r in expected["history"]] == [1, 2]
    first = next(i for i, (_, name) in enumerate(operations) if name == "model.safetensors")
    last = max(i for i, (_, name) in enumerate(operations) if name.endswith(".png"))
    names = {name for _, name in operations[first:last + 1]}
    assert {"model.safetensors", "state.safetensors", "state.json", "history.jsonl", "curves.png"} <= names
    indices = [0, *range(first, last + 1)]  # 0: before run.json exists
    runs = [dataclasses.replace(reference, out=str(tmp_path / f"kill{index}")) for index in indices]
    statuses = killed_at_each(train, list(zip(runs, indices, strict=True)))
    for index, options, status in zip(indices, runs, statuses, strict=True):
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (index, status)
        out = Path(options.out)
        _resume(options)
        got = _result(out)
        where = f"killed before {operations[index]}"
        assert [p.name for p in out.iterdir() if ".tmp" in p.name] == [], where  # the killed writer's are gone
        assert [r["epoch"] for r in got["history"]] == [1, 2], where
        assert got["history"] == expected["history"], where
        assert got["state"] == expected["state"], where
        assert got["metrics"] == expected["metrics"], where
        for file, tensors in expected["tensors"].items():
            assert got["tensors"][file].keys() == tensors.keys(), where
            for key, value in tensors.items():
                assert torch.equal(got["tensors"][file][key], value), (where, file, key)
