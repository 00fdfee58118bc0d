"""scripts/experiment.py's bookkeeping: what a call runs, given what is recorded and what is in OUT."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest


@pytest.fixture
def experiment(monkeypatch):
    path = Path(__file__).parents[2] / "scripts" / "experiment.py"
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "experiment", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def _finish(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "last_metrics.json", "selection.json", "run.json"):
        (folder / name).write_text(json.dumps({"name": name}))
    (folder / "history.jsonl").write_text("{}\n")
    (folder / "model.safetensors").write_bytes(b"weights")


def _jobs(experiment, tmp_path, rows=("stl", "mtl", "kd-mtl"), seeds=(0, 1)):
    return [experiment.Job(row, seed, tmp_path / "runs" / row / f"seed{seed}",
                           list(experiment.ROWS[row][3]), tmp_path / "results" / row / f"seed{seed}")
            for seed in seeds for row in rows]


def test_a_recorded_run_is_skipped_and_one_whose_weights_are_needed_is_rebuilt(experiment, tmp_path):
    jobs = _jobs(experiment, tmp_path)
    by = {(j.row, j.seed): j for j in jobs}
    for key in [("stl", 0), ("mtl", 0), ("kd-mtl", 0), ("stl", 1), ("mtl", 1)]:
        _finish(by[key].folder)
        experiment.record_run(by[key], 1.0)
    for key in [("stl", 0), ("stl", 1)]:  # a later session: OUT is gone, results are committed
        for f in by[key].folder.iterdir():
            f.unlink()
    todo = {(j.row, j.seed) for j in experiment._to_do(jobs)}
    # kd-mtl seed 1 is to do and needs stl seed 1's weights: rebuilt; stl seed 0 is needed by nothing left
    assert todo == {("kd-mtl", 1), ("stl", 1)}


def test_recorded_files_are_the_small_ones_and_the_machine(experiment, tmp_path):
    job = _jobs(experiment, tmp_path, rows=("mtl",), seeds=(3,))[0]
    _finish(job.folder)
    experiment.record_run(job, 12.34)
    names = {p.name for p in job.record.iterdir()}
    assert names == {*experiment.SMALL_FILES, "machine.json"}  # never the weights
    machine = json.loads((job.record / "machine.json").read_text())
    assert machine["cpu"] and machine["wall_seconds"] == 12.3
    assert job.recorded and not list(job.record.parent.glob(".*partial"))
