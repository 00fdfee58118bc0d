"""The layers of DESIGN.md hold: no module imports one of a higher layer, nor a peer it must not know.

Read from the source with scripts/layers.py's `import_graph` (every import, also the lazy ones inside
functions). That running an exported ONNX file pulls in no torch is checked where it runs, in
tests/runtime/test_infer_cli.py (`test_runtime_runs_without_torch`, `test_modules_import_without_torch`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module may import modules of its own layer or lower; the longest matching prefix decides the layer.
LAYERS = {
    "mtlkd": 0, "mtlkd.errors": 0, "mtlkd.eval.metrics": 0,  # leaves: the version, the error family, numpy metrics
    "mtlkd.tasks": 1, "mtlkd.metadata": 1, "mtlkd.files": 1, "mtlkd.accuracy": 1, "mtlkd.checkpoint": 1,
    "mtlkd.ui": 1, "mtlkd.eval.delta": 1, "mtlkd.eval.report": 1, "mtlkd.eval.seeds": 1,
    "mtlkd.models": 2, "mtlkd.data": 2, "mtlkd.runtime": 2,
    "mtlkd.train": 3, "mtlkd.export": 3, "mtlkd.eval.evaluate": 3, "mtlkd.runtime.infer": 3,
    "mtlkd.bench": 4, "mtlkd.demo": 4, "mtlkd.serve": 4,
    "mtlkd.cli": 5,
}
# Peers that must stay apart although they share a layer.
FORBIDDEN = [
    ("mtlkd.models", "mtlkd.runtime"), ("mtlkd.data", "mtlkd.models"), ("mtlkd.data", "mtlkd.runtime"),
    ("mtlkd.export", "mtlkd.train"), ("mtlkd.train", "mtlkd.export"),
    ("mtlkd.runtime", "mtlkd.train"), ("mtlkd.runtime", "mtlkd.export"), ("mtlkd.runtime", "mtlkd.eval"),
    ("mtlkd.eval.evaluate", "mtlkd.train"), ("mtlkd.eval.evaluate", "mtlkd.export"),
    ("mtlkd.serve", "mtlkd.train"), ("mtlkd.serve", "mtlkd.bench"),
]


def _layers_script():
    spec = importlib.util.spec_from_file_location("layers_script", ROOT / "scripts" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if _under(module, p)), key=len)
    return LAYERS[prefix]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _layers_script().import_graph(ROOT / "mtlkd")


def test_the_graph_sees_lazy_and_relative_imports(graph):
    """The checks below are only as good as the graph: imports inside functions count."""
    assert "mtlkd.runtime.backends.torch_backend" in graph
    assert "mtlkd.metadata" in graph["mtlkd.runtime.backends.tensorrt_backend"]
    assert any(_under(m, "mtlkd.models") for m in graph["mtlkd.runtime.backends.torch_backend"])
    assert len(graph) > 50


def test_no_module_imports_a_higher_layer(graph):
    upward = sorted(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
                    for module, targets in graph.items() for target in targets if layer(target) > layer(module))
    assert not upward, "\n".join(upward)


def test_peers_that_must_not_know_each_other(graph):
    found = sorted(f"{module} imports {target}" for module, targets in graph.items() for target in targets
                   for low, high in FORBIDDEN if _under(module, low) and _under(target, high))
    assert not found, "\n".join(found)


def test_nothing_imports_the_cli(graph):
    found = sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts
                   if _under(t, "mtlkd.cli") and not _under(m, "mtlkd.cli"))
    assert not found, "\n".join(found)


def test_no_import_circles(graph):
    """No modules import each other, even lazily, even through others: a circle hidden by an import inside
    a function works only as long as nobody moves that import."""
    cycles = _layers_script().import_cycles(graph)
    assert not cycles, "\n".join(" <-> ".join(group) for group in cycles)


def test_a_circle_and_a_package_taking_its_submodule_are_told_apart(tmp_path):
    package = tmp_path / "mtlkd"
    (package / "export").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "export" / "__init__.py").write_text("from mtlkd.export.pipeline import run\n")
    (package / "export" / "pipeline.py").write_text("def run():\n    from mtlkd.export import steps\n")
    (package / "export" / "steps.py").write_text("from mtlkd.export.pipeline import run\n")
    script = _layers_script()
    graph = script.import_graph(package)
    assert "mtlkd.export" not in graph["mtlkd.export.pipeline"]  # a submodule, not the package's own names
    assert script.import_cycles(graph) == [["mtlkd.export.pipeline", "mtlkd.export.steps"]]


def test_the_rules_catch_a_violation(tmp_path):
    """A runtime module importing the trainer, and metadata importing the cli, are both found."""
    package = tmp_path / "mtlkd"
    for name in ("runtime", "train", "cli"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "metadata.py").write_text("def f():\n    from .cli import app\n")
    (package / "runtime" / "auto.py").write_text("from mtlkd.train import trainer\n")
    (package / "train" / "trainer.py").write_text("")
    graph = _layers_script().import_graph(package)
    assert "mtlkd.train.trainer" in graph["mtlkd.runtime.auto"] and "mtlkd.cli" in graph["mtlkd.metadata"]
    assert layer("mtlkd.train.trainer") > layer("mtlkd.runtime.auto")
    assert layer("mtlkd.cli") > layer("mtlkd.metadata")
