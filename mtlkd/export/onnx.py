"""PyTorch -> ONNX: one input `image`, one output per task, dynamic batch, metadata inside the file.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript), the default since torch 2.9.
The legacy TorchScript exporter (`dynamo=False`) is deprecated; on these networks it writes about three
times the nodes (Shape/Gather/Unsqueeze/Constant chains around every reshape) and runs no faster. The
dynamo graph is constant-folded, has one `LayerNormalization` node per LayerNorm and static shapes
everywhere except the batch axis.

Opset: 20 (`DEFAULT_OPSET`). The dynamo exporter's minimum is 18; opset 20 adds the `Gelu` operator, so
GELU is one node that ONNX Runtime fuses with its bias into `BiasGelu` at session load, OpenVINO maps to
its Gelu op and the TensorRT parser imports directly (at opset 18 it is an Erf sub-graph that ONNX
Runtime's session optimiser leaves unfused). Opset 23 would also write the `Attention` operator, which
needs ORT >= 1.23 or TensorRT >= 10.14 and runs no faster on the CPU engines. Opset 20 runs on ORT >=
1.17, OpenVINO 2024+ and TensorRT 10/11.

Attention is exported as the explicit MatMul -> Softmax -> MatMul pattern (timm's `fused_attn` is
switched off while exporting): the scaled-dot-product decomposition the exporter writes otherwise
carries extra Reshape/Transpose pairs around K and splits the scale over Q and K, which gets in the way
of the attention pattern matchers (ORT's FusedMatMul, OpenVINO's SDPA fusion, TensorRT's MHA fusion).
On the CPU engines this graph is at least as fast as the alternatives above (opset 18 with the SDPA
decomposition, opset 23 with `Attention`, the legacy exporter's graph); `mtl-bench` measures it on yours.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtlkd.errors import ConfigError, ExportError
from mtlkd.metadata import METADATA_KEY, read_onnx_metadata, set_onnx_metadata, versions

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "MAX_OPSET", "METADATA_KEY", "MIN_OPSET", "export_metadata", "export_onnx",
           "graph_stats", "optimize_for_ort", "output_resolution", "read_onnx_metadata", "save_onnx", "set_metadata"]

DEFAULT_OPSET = 20
MIN_OPSET = 18  # the dynamo exporter cannot write older opsets
MAX_OPSET = 23  # torch.onnx's newest (torch.onnx._constants.ONNX_MAX_OPSET); ONNX Runtime 1.2x runs it
INPUT_NAME = "image"
MAX_BATCH = 4096  # upper bound of the dynamic batch axis given to torch.export


def export_metadata(
    metadata: dict[str, Any],
    tasks: list[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    source_sha256: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What every exported artifact carries: the checkpoint's metadata restricted to the exported tasks,
    plus where it came from and how it was exported. Enough for the runtime to pre- and postprocess."""
    tasks = list(tasks or metadata["tasks"])
    meta = {k: v for k, v in metadata.items() if k != "format"}
    meta.update(
        tasks=tasks,
        outputs={t: metadata["outputs"][t] for t in tasks},
        input_name=INPUT_NAME,
        output_names=tasks,
        opset=int(opset),
        precision=precision,
        source_sha256=source_sha256 if source_sha256 is not None else metadata.get("source_sha256"),
    )
    meta.update(extra)
    return meta


def set_metadata(proto, meta: dict[str, Any]) -> None:
    """Store `meta` in the graph (see `mtlkd.metadata.set_onnx_metadata`)."""
    set_onnx_metadata(proto, meta)


def save_onnx(proto, path: str | Path) -> Path:
    """Write a ModelProto atomically (temporary file in the same folder, then rename)."""
    import onnx

    from mtlkd.files import atomic_write

    return atomic_write(path, lambda tmp: onnx.save(proto, tmp))


def graph_stats(model: str | Path | Any) -> dict[str, int]:
    """Node and parameter (initializer element) counts of an ONNX graph."""
    import numpy as np
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    params = sum(int(np.prod(init.dims)) for init in proto.graph.initializer)
    return {"nodes": len(proto.graph.node), "parameters": params}


def _wrapper(model, tasks: list[str]):
    import torch

    class OnnxWrapper(torch.nn.Module):
        """`image -> tuple of task outputs` in task order: what the exporter needs (tensors, not a dict)."""

        def __init__(self):
            super().__init__()
            self.net = model
            self.tasks = list(tasks)

        def forward(self, image: torch.Tensor):
            out = self.net(image, tasks=self.tasks)
            return tuple(out[t] for t in self.tasks)

    return OnnxWrapper().eval()


@contextlib.contextmanager
def output_resolution(model, full_resolution: bool = True) -> Iterator[dict[str, Any]]:
    """For the duration, the network's heads return maps at the input size (`full_resolution`) or at their
    own grid; yields the metadata that records it (`output_stride` when not full resolution). Networks
    without the switch always return full-resolution maps, so asking them for less is an ExportError."""
    if not hasattr(model, "full_resolution"):
        if not full_resolution:
            raise ExportError(f"{type(model).__name__} has no low-resolution output (no `full_resolution` switch); "
                            f"export it at full resolution")
        yield {}
        return
    before = model.full_resolution
    model.full_resolution = full_resolution
    try:
        yield {} if full_resolution else {"output_stride": int(model.output_stride)}
    finally:
        model.full_resolution = before


def export_onnx(
    model,
    metadata: dict[str, Any],
    path: str | Path,
    tasks: list[str] | str | None = None,
    opset: int = DEFAULT_OPSET,
    batch_dynamic: bool = True,
    *,
    source_sha256: str | None = None,
    full_resolution: bool = False,
) -> Path:
    """Export `model` (an mtlkd network, as `load_model` returns it) to an ONNX file at `path`.

    One float32 input `image` (N x 3 x H x W, RGB in [0, 1]; dynamic N unless `batch_dynamic=False`, then
    N = 1) and one float32 output per task, named after the task, in the order of `tasks` (default: every
    task of the network; a subset exports only those heads). The metadata (see `export_metadata`) is
    stored under `metadata_props["mtlkd"]`. By default the heads' maps are exported at their own grid (input
    size / `output_stride`, recorded in the metadata; networks without the switch keep full resolution
    only when `full_resolution=True` is asked); the runtime resizes them once. Returns the path.
    """
    import onnx
    import torch

    from mtlkd.models import explicit_attention
    from mtlkd.tasks import parse_tasks

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset}: the exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")
    tasks = parse_tasks(tasks, available=list(metadata["tasks"]))
    height, width = (int(v) for v in metadata["input_size"])
    wrapper = _wrapper(model, tasks)
    device = next(iter(model.parameters())).device
    example = torch.rand(2 if batch_dynamic else 1, 3, height, width, device=device)
    dynamic = {"image": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if batch_dynamic else None
    was_training = model.training
    model.eval()
    try:
        with output_resolution(model, full_resolution) as resolution, explicit_attention(model), torch.no_grad(), \
                contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(
                wrapper, (example,), None, input_names=[INPUT_NAME], output_names=tasks, opset_version=opset,
                dynamo=True, dynamic_shapes=dynamic, external_data=False, verbose=False, optimize=True,
            )  # fmt: skip
    finally:
        model.train(was_training)
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's per-node stack traces (local paths) double the file
        del node.metadata_props[:]
    proto.producer_name, proto.producer_version = "mtlkd", versions()["mtlkd"]
    set_metadata(proto, export_metadata(metadata, tasks, opset=opset, source_sha256=source_sha256, **resolution,
                                        exporter=f"torch.onnx dynamo (torch {torch.__version__})"))  # fmt: skip
    onnx.checker.check_model(proto)
    return save_onnx(proto, path)


def optimize_for_ort(src: str | Path, dst: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write an ONNX Runtime-specific graph with `onnxruntime.transformers.optimizer` (model_type 'vit'):
    BiasGelu and LayerNorm kernels from ORT's contrib domain; its attention fusion does not match timm's
    fused qkv projection. Only ONNX Runtime can run the result, and it is no faster than the plain graph on
    CPU (ORT's own session-level fusions already get the gain), so the CLI writes it only with
    `--ort-optimize`."""
    import logging

    from onnxruntime.transformers import optimizer

    meta = metadata or read_onnx_metadata(src)
    logging.disable(logging.WARNING)  # its modules log under top-level names ("symbolic shape inference ...")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            optimized = optimizer.optimize_model(str(src), model_type="vit", num_heads=0, hidden_size=0)
    finally:
        logging.disable(logging.NOTSET)
    proto = optimized.model
    set_metadata(proto, {**meta, "ort_optimized": True})
    return save_onnx(proto, dst)
