"""Checks on the mtlkd metadata found inside a model file, before anything is built or allocated from it.

A model file is user input: its safetensors header, ONNX `metadata_props`, OpenVINO `rt_info` or engine
sidecar may be forged or damaged. Sizes and counts read from it decide how much memory the runtime and the
network builder allocate (input size, class count, widths, depths), so each is checked for type and range
here, and against the tensors or graph it describes by the loaders (`check_outputs`, `check_input_size`).
Imports only the torch-free task registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from mtlkd.errors import MetadataError

MAX_SIDE = 8192  # pixels per side of the network input
MAX_CLASSES = 4096
MAX_CONFIG_INT = 1 << 16  # any width, depth, channel or query count of a config
MAX_NAME = 256


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_metadata(meta: Any, where: str, require: Sequence[str] = ("tasks", "input_size"),
                   error: type[ValueError] = MetadataError) -> dict[str, Any]:
    """`meta` when every field present has the type and range mtlkd writes and the fields agree with each
    other; otherwise `error` naming `where` and the field. Fields in `require` must be present."""
    from mtlkd.tasks import TASKS

    def bad(field: str, why: str) -> ValueError:
        return error(f"{where}: metadata field {field!r} {why}; the file was not written by mtlkd or is damaged")

    if not isinstance(meta, dict):
        raise error(f"{where}: mtlkd metadata is a {type(meta).__name__}, not a JSON object")
    for key in require:
        if key not in meta:
            raise bad(key, "is missing")
    tasks = meta.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise bad("tasks", "is not a non-empty list of task names")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise bad("tasks", f"names unknown task {unknown[0][:40]!r} (known: {', '.join(TASKS)})")
        if len(set(tasks)) != len(tasks):
            raise bad("tasks", "names a task twice")
    if "input_size" in meta:
        size = meta["input_size"]
        if not isinstance(size, list) or len(size) != 2 or not all(_int(v, 1, MAX_SIDE) for v in size):
            raise bad("input_size", f"is not [height, width] in 1..{MAX_SIDE} pixels")
    num_classes = meta.get("num_classes")
    if num_classes is not None and not _int(num_classes, 1, MAX_CLASSES):
        raise bad("num_classes", f"is not a class count in 1..{MAX_CLASSES}")
    if tasks and "seg" in tasks and num_classes is None and "num_classes" in require:
        raise bad("num_classes", "is missing for a segmentation model")
    names = meta.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= MAX_NAME for n in names):
            raise bad("class_names", "is not a list of short names")
        if num_classes is not None and len(names) != num_classes:
            raise bad("class_names", f"has {len(names)} names for num_classes {num_classes}")
    norm = meta.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            raise bad("normalization", "is not an object")
        for key in ("mean", "std"):
            values = norm.get(key)
            if values is not None and not _finite3(values, positive=key == "std"):
                raise bad(f"normalization.{key}", "is not three finite numbers" + (" > 0" if key == "std" else ""))
    if "config" in meta:
        _check_config(meta, bad)
    return meta


def _finite3(values: Any, positive: bool) -> bool:
    return (isinstance(values, list) and len(values) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            and (not positive or all(v > 0 for v in values)))


def _check_config(meta: dict[str, Any], bad) -> None:
    config = meta["config"]
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), dict):
        raise bad("config", "is not a network config with a backbone")
    for part in ("backbone", "head"):
        for key, value in _ints(config.get(part) or {}, part):
            if not 0 <= value <= MAX_CONFIG_INT:
                raise bad(f"config.{key}", f"is {value}, outside 0..{MAX_CONFIG_INT}")
    size = config["backbone"].get("img_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(_int(v, 1, MAX_SIDE) for v in size)):
        raise bad("config.backbone.img_size", f"is not [height, width] in 1..{MAX_SIDE} pixels")
    if "input_size" in meta and size is not None and list(size) != list(meta["input_size"]):
        raise bad("input_size", f"{meta['input_size']} differs from the config's img_size {size}")
    config_tasks = config.get("tasks")
    if meta.get("tasks") and isinstance(config_tasks, list) and not set(meta["tasks"]) <= set(config_tasks):
        raise bad("tasks", f"{meta['tasks']} are not among the config's tasks {config_tasks}")
    if meta.get("num_classes") is not None and config.get("num_classes") not in (None, meta["num_classes"]):
        raise bad("num_classes", f"{meta['num_classes']} differs from the config's {config.get('num_classes')}")
    if config.get("num_classes") is not None and not _int(config["num_classes"], 1, MAX_CLASSES):
        raise bad("config.num_classes", f"is not a class count in 1..{MAX_CLASSES}")


def _ints(node: Any, prefix: str) -> Iterable[tuple[str, int]]:
    """Every integer inside a nested dict/list, with its dotted path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _ints(value, f"{prefix}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _ints(value, f"{prefix}[{i}]")
    elif isinstance(node, int) and not isinstance(node, bool):
        yield prefix, node


def expected_channels(meta: dict[str, Any], task: str) -> int | None:
    """Output channels the metadata promises for a task (None when it does not say)."""
    from mtlkd.tasks import get_task

    fixed = get_task(task).fixed_channels
    return fixed if fixed is not None else meta.get("num_classes")


def check_graph(meta: dict[str, Any], where: str, input_shape: Sequence[Any] | None,
                output_shapes: dict[str, Sequence[Any] | None], error: type[ValueError] = MetadataError) -> None:
    """The graph agrees with its metadata: every task is an output, the static input H x W is input_size and
    static output channels are what the task needs. Dimensions that are not ints (dynamic) are not compared."""
    missing = [t for t in meta["tasks"] if t not in output_shapes]
    if missing:
        raise error(f"{where}: the metadata lists task {missing[0]!r} but the graph has no such output; re-export it")
    if input_shape is not None and len(input_shape) == 4:
        static = [d for d in input_shape[2:] if isinstance(d, int)]
        if len(static) == 2 and static != list(meta["input_size"]):
            raise error(f"{where}: metadata input_size {meta['input_size']} differs from the graph's input "
                        f"{static[0]}x{static[1]}; re-export it")
    for task in meta["tasks"]:
        shape = output_shapes.get(task)
        want = expected_channels(meta, task)
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) and want is not None \
                and shape[1] != want:
            raise error(f"{where}: output {task!r} has {shape[1]} channels but the metadata says {want}; "
                        f"re-export it")
