"""Checkpoints: one safetensors file, metadata in its header, atomic writes, clear errors, no pickle."""

import pytest
import torch

from mtlkd.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from mtlkd.errors import CheckpointError
from mtlkd.metadata import SCHEMA_VERSION


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    state = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    path = save_checkpoint(tmp_path / "x.safetensors", state, {"tasks": ["seg"], "class_names": ["a", "b"]})
    loaded, meta = load_checkpoint(path)
    assert torch.equal(loaded["a"], state["a"]) and torch.equal(loaded["b"], state["b"])
    assert meta["tasks"] == ["seg"] and meta["class_names"] == ["a", "b"] and meta["schema_version"] == SCHEMA_VERSION
    assert read_metadata(path) == meta
    assert not list(tmp_path.glob("*.tmp"))


def test_a_pickle_is_refused_with_one_line(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_metadata(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="run folder"):
        read_metadata(tmp_path)


def test_foreign_safetensors_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="without mtlkd metadata"):
        read_metadata(tmp_path / "other.safetensors")
