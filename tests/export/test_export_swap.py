"""An export replacing an older one in the same folder changes it whole or not at all (issue 20, case 5):
SIGKILL at every file operation of the swap leaves either the old export, or a swap the runtime refuses in
one line and the next export finishes; the staging folders of killed exports are removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

import mtlkd.files
from mtlkd.checkpoint import model_metadata, save_checkpoint
from mtlkd.errors import BackendError
from mtlkd.export.pipeline import export_model, prepare_folder
from mtlkd.models import create_model, preset_config
from mtlkd.runtime.predictor import Predictor

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the killed export")


def _checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b", "c"])
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(folder / "model.safetensors", create_model(config).state_dict(), model_metadata(config))


def _which(out: Path, references: dict[str, dict]) -> set[str]:
    """Whose files `out` holds, per file: {"old"} or {"new"} when whole, both when mixed."""
    onnx = (out / "model.onnx").read_bytes()
    checks = json.loads((out / "export.json").read_text())["checks"]
    return {name for name, ref in references.items() if ref["onnx"] == onnx} | \
           {name for name, ref in references.items() if ref["checks"] == checks}


def _killed_at(action, index: int) -> None:
    """Run `action` in a forked child that SIGKILLs itself just before file operation `index`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = iter(range(1 << 30))

            def hook(op, path):
                if next(count) == index:
                    os.kill(os.getpid(), signal.SIGKILL)
            mtlkd.files.file_operation_hook = hook
            action()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def test_a_kill_at_every_swap_operation_leaves_one_whole_export(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    old_ckpt, new_ckpt = _checkpoint(tmp_path / "a", 2), _checkpoint(tmp_path / "b", 3)
    out = tmp_path / "export"
    references = {}
    for name, ckpt in (("old", old_ckpt), ("new", new_ckpt)):
        export_model(ckpt, out)
        references[name] = {"onnx": (out / "model.onnx").read_bytes(),
                            "checks": json.loads((out / "export.json").read_text())["checks"]}
    export_model(old_ckpt, out)
    kept = tmp_path / "kept"
    shutil.copytree(out, kept)

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", lambda op, path: seen.append((op, Path(path).name)))
    export_model(new_ckpt, tmp_path / "scratch")
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", None)
    first = next(i for i, (_, name) in enumerate(seen) if name == mtlkd.files.SWAP_JOURNAL)
    swap = range(first, len(seen))
    assert {op for op, _ in seen[first:]} >= {"create", "write", "replace", "move", "finish"}

    for index in swap:
        shutil.rmtree(out)
        shutil.copytree(kept, out)
        _killed_at(lambda: export_model(new_ckpt, out), index)
        where = f"killed before {seen[index]}"
        if (out / mtlkd.files.SWAP_JOURNAL).is_file():  # mid-swap: refused until finished
            with pytest.raises(BackendError, match="interrupted"):
                Predictor.load(out / "model.onnx", backend="onnxruntime")
        else:
            assert _which(out, references) in ({"old"}, {"new"}), where
            Predictor.load(out / "model.onnx", backend="onnxruntime")
        stage = prepare_folder(out)  # what the next export does first
        stage.rmdir()
        assert _which(out, references) in ({"old"}, {"new"}), where
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export.")] == [], where
        if index > first + 2:  # the journal was in place: the swap rolled forward
            assert _which(out, references) == {"new"}, where


def test_an_ir_with_another_models_bin_is_refused(tmp_path):
    pytest.importorskip("openvino")
    torch.set_num_threads(1)
    first = export_model(_checkpoint(tmp_path / "a", 2), tmp_path / "one", formats=["onnx", "openvino"])
    second = export_model(_checkpoint(tmp_path / "b", 3), tmp_path / "two", formats=["onnx", "openvino"])
    xml, other = first.path("openvino"), second.path("openvino")
    Predictor.load(xml, backend="openvino")  # its own weights: fine
    shutil.copyfile(other.with_suffix(".bin"), xml.with_suffix(".bin"))  # same architecture, other weights
    with pytest.raises(BackendError, match="not the ones model.xml was exported with"):
        Predictor.load(xml, backend="openvino")
