"""A real Triton server from the project's serve environment (`make serve-env`), over a random-weight
vit-nano exported by mtl-export: the native repository (ONNX, OpenVINO IR) and the same with Python-backend
models. Every test here is skipped, with the reason, when that environment cannot be found."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import TASKS


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's ~/.cache from a test."""
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path_factory.getbasetemp() / "mtlkd-cache"))


@pytest.fixture(scope="session")
def serve_environment():
    from mtlkd.errors import BackendUnavailable
    from mtlkd.serve.environment import find_serve_environment

    try:
        return find_serve_environment()
    except BackendUnavailable as error:
        pytest.skip(f"no serve environment: {error}")


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """{"onnx": model.onnx, "openvino": model.xml, "native": REPO, "python": REPO}, from one mtl-export run
    per repository kind (the second reuses the files of the first)."""
    torch = pytest.importorskip("torch")
    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.export.pipeline import export_model
    from mtlkd.models import create_model, preset_config

    root = tmp_path_factory.mktemp("served")
    config = preset_config("vit-nano", TASKS, class_names=["wall", "floor", "chair", "table", "window"])
    torch.manual_seed(0)
    model = create_model(config).eval()
    checkpoint = save_checkpoint(root / "model.safetensors", model.state_dict(), model_metadata(config))
    for kind in ("native", "python"):
        export_model(checkpoint, root / "export", formats=["onnx", "openvino"], triton=root / f"repo-{kind}",
                     triton_backend=kind, reuse=kind == "python")  # fmt: skip
    return {"checkpoint": checkpoint, "onnx": root / "export" / "model.onnx",
            "openvino": root / "export" / "openvino" / "model.xml",
            "native": root / "repo-native", "python": root / "repo-python"}  # fmt: skip
