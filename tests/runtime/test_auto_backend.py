"""backend="auto": measured once per file and machine, then read from the JSON cache."""

from __future__ import annotations

import json
import os

import pytest

from mtlkd.errors import BackendUnavailable
from mtlkd.runtime import Predictor, auto


@pytest.fixture
def counted(monkeypatch):
    """Count the timing runs select_backend makes."""
    calls = []
    real = auto.time_backend

    def time_backend(backend, **kwargs):
        calls.append(backend.name)
        return real(backend, runs=2, warmup=1)

    monkeypatch.setattr(auto, "time_backend", time_backend)
    return calls


def test_measures_once_then_reads_the_cache(tmp_path, monkeypatch, nano_onnx, counted):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    cache = tmp_path / "cache"
    monkeypatch.setenv("MTLKD_CACHE", str(cache))
    first = Predictor.load(nano_onnx)
    assert sorted(counted) == ["onnxruntime", "openvino"]
    data = json.loads((cache / "auto_backend.json").read_text())
    (entry,) = data["entries"].values()
    assert entry["backend"] == first.backend_name
    assert set(entry["timings_ms"]) == {"onnxruntime", "openvino"}
    assert entry["file"] == str(nano_onnx.resolve()) and entry["cpu"]

    second = Predictor.load(nano_onnx)
    assert len(counted) == 2  # nothing re-measured
    assert second.backend_name == first.backend_name

    os.utime(nano_onnx, ns=(nano_onnx.stat().st_atime_ns, nano_onnx.stat().st_mtime_ns + 10**9))
    Predictor.load(nano_onnx)  # a re-exported file is measured again
    assert len(counted) == 4
    assert len(json.loads((cache / "auto_backend.json").read_text())["entries"]) == 2


def test_cache_may_name_a_json_file(tmp_path, monkeypatch, nano_onnx, counted):
    pytest.importorskip("openvino")
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "mine.json"))
    assert auto.cache_path() == tmp_path / "mine.json"
    name, loaded = auto.select_backend(nano_onnx, "cpu")
    assert loaded is not None and loaded.name == name
    assert (tmp_path / "mine.json").is_file()


def test_measuring_can_be_disabled(tmp_path, monkeypatch, nano_onnx, counted):
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("MTLKD_AUTO_MEASURE", "0")
    assert Predictor.load(nano_onnx).backend_name == "onnxruntime"  # first preference
    monkeypatch.delenv("MTLKD_AUTO_MEASURE")
    assert Predictor.load(nano_onnx, measure=False).backend_name == "onnxruntime"
    assert counted == [] and not (tmp_path / "c").exists()


def test_single_candidate_is_not_measured(nano_checkpoint, nano_ir, counted):
    assert Predictor.load(nano_checkpoint).backend_name == "torch"
    assert Predictor.load(nano_ir).backend_name == "openvino"
    assert counted == []


def test_gpu_preference_without_a_gpu(nano_onnx, tmp_path):
    # onnxruntime here has no CUDA provider and OpenVINO does not run on CUDA: a clear error, no guessing.
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has ORT CUDA")
    with pytest.raises(BackendUnavailable, match="cuda"):
        Predictor.load(nano_onnx, device="cuda")


def test_broken_cache_is_ignored(tmp_path, monkeypatch, nano_onnx, counted):
    pytest.importorskip("openvino")
    monkeypatch.setenv("MTLKD_CACHE", str(tmp_path))
    (tmp_path / "auto_backend.json").write_text("{ not json")
    Predictor.load(nano_onnx)
    assert len(counted) == 2
    assert json.loads((tmp_path / "auto_backend.json").read_text())["version"] == auto.CACHE_VERSION


def test_cache_key_follows_the_installed_backend_versions(monkeypatch, nano_onnx):
    """The key reads each backend's version from its first installed distribution (the GPU wheel when only
    that is installed), so a new onnxruntime is measured again and an unchanged install hits old entries."""
    from importlib import metadata as importlib_metadata

    installed = {"onnxruntime-gpu": "1.20.0", "openvino": "2025.1"}

    def version(dist):
        if dist not in installed:
            raise importlib_metadata.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(importlib_metadata, "version", version)
    names = ["onnxruntime", "openvino", "tensorrt"]
    assert auto.versions(names) == {"onnxruntime": "1.20.0", "openvino": "2025.1"}
    before = auto.cache_key(nano_onnx, "cpu", names, {})
    assert auto.cache_key(nano_onnx, "cpu", names, {}) == before
    installed["onnxruntime-gpu"] = "1.21.0"
    assert auto.cache_key(nano_onnx, "cpu", names, {}) != before
