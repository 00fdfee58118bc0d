"""A Triton repository changes whole (issue 20, case 6): a kill at any file operation of its swap leaves
either the old models or, once the next write finishes the swap, the new ones, never one model's ONNX beside
another's IR; a model an earlier export wrote that this one does not have is removed, other models stay."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

import mtlkd.files
from mtlkd.export.triton import write_triton_repo
from mtlkd.files import SWAP_JOURNAL, finish_swap

META = {"tasks": ["depth"], "input_size": [32, 32], "num_classes": None}


def _artifacts(folder: Path, tag: str) -> dict[str, Path]:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_text(f"onnx {tag}")
    (folder / "model.xml").write_text(f"xml {tag}")
    (folder / "model.bin").write_text(f"bin {tag}")
    return {"onnx": folder / "model.onnx", "openvino": folder / "model.xml"}


def _tags(repo: Path) -> set[str]:
    files = [repo / "mtlkd_onnx" / "1" / "model.onnx", repo / "mtlkd_openvino" / "1" / "model.xml",
             repo / "mtlkd_openvino" / "1" / "model.bin"]
    return {p.read_text().split()[-1] for p in files}


def test_reexport_with_fewer_formats_leaves_no_stale_model(tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(repo, _artifacts(tmp_path / "a", "old"), META)
    (repo / "users_model").mkdir()
    (repo / "users_model" / "config.pbtxt").write_text("name: 'users_model'")
    new = _artifacts(tmp_path / "b", "new")
    write_triton_repo(repo, {"onnx": new["onnx"]}, META)
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "mtlkd_onnx", "users_model"]
    assert (repo / "mtlkd_onnx" / "1" / "model.onnx").read_text() == "onnx new"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the killed write")
def test_a_kill_at_every_repository_swap_operation_leaves_one_whole_repository(tmp_path, monkeypatch):
    old, new = _artifacts(tmp_path / "a", "old"), _artifacts(tmp_path / "b", "new")
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", lambda op, path: seen.append((op, Path(path).name)))
    write_triton_repo(tmp_path / "scratch", new, META)
    monkeypatch.setattr(mtlkd.files, "file_operation_hook", None)
    for index in range(len(seen)):
        repo = tmp_path / f"repo{index}"
        write_triton_repo(repo, old, META)
        pid = os.fork()
        if pid == 0:
            try:
                count = iter(range(1 << 30))

                def hook(op, path, index=index, count=count):
                    if next(count) == index:
                        os.kill(os.getpid(), signal.SIGKILL)
                mtlkd.files.file_operation_hook = hook
                write_triton_repo(repo, new, META)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), status
        journal = (repo / SWAP_JOURNAL).is_file()
        if not journal:
            assert _tags(repo) == {"old"}, seen[index]
        finish_swap(repo)  # what the next write (or export) into the repository does first
        assert _tags(repo) in ({"old"}, {"new"}), seen[index]
        assert journal <= (_tags(repo) == {"new"}), seen[index]
        shutil.rmtree(repo)
