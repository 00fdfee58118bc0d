"""SIGTERM (what Slurm and Kubernetes send) stops a command as Ctrl-C does (issue 20, case 7): mtl-train
exits 143 and prints the resume command, mtl-export removes its staging folder. Real processes: the signal
arrives while they work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(module: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"never reached the point to signal (exit {process.poll()}): {process.communicate()}")
        time.sleep(0.05)


def test_sigterm_to_training_prints_the_resume_command(tmp_path):
    from mtlkd.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "syn", 8, 4, size=(32, 32), seed=3, progress=False)
    out = tmp_path / "run"
    process = _start("mtlkd.cli.train", "synthetic", "--data-dir", data, "--out", out, "--preset", "vit-nano",
                     "--epochs", 500, "--batch-size", 4, "--max-steps", 1, "--select-fraction", 0, "--quiet")
    _wait_for(lambda: (out / "state.safetensors").is_file(), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert f"mtl-train --resume --out {out}" in err and "Traceback" not in err


def test_sigterm_to_export_removes_its_staging_folder(tmp_path):
    pytest.importorskip("torch")
    import torch

    from mtlkd.checkpoint import model_metadata, save_checkpoint
    from mtlkd.models import create_model, preset_config

    torch.manual_seed(0)
    config = preset_config("vit-nano", ["seg", "depth"], class_names=["a", "b"])
    ckpt = save_checkpoint(tmp_path / "model.safetensors", create_model(config).state_dict(), model_metadata(config))
    process = _start("mtlkd.cli.export", ckpt, "--out", tmp_path / "export", "--precision", "fp32,fp16")
    staging = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".export.building-")]  # noqa: E731
    _wait_for(lambda: any(p.is_dir() and any(p.iterdir()) for p in staging()), process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert staging() == [] and "Traceback" not in err
    assert not (tmp_path / "export" / "model.onnx").exists()
