"""The mtlkd metadata of every model file: where it is stored, how it is written and read, and its checks.

One place for the metadata of every format, so that a reader and a writer cannot drift apart:
- checkpoint: JSON in the safetensors header under `METADATA_KEY` (`checkpoint_header`, `read_checkpoint_metadata`);
- ONNX: JSON in `metadata_props[METADATA_KEY]` (`set_onnx_metadata`, `read_onnx_metadata`);
- OpenVINO IR: JSON in the IR's rt_info at `OPENVINO_RT_INFO` (`set_openvino_metadata`, `read_openvino_metadata`);
- TensorRT engine: a JSON sidecar `<engine>.json` (`engine_sidecar`, `engine_sidecar_text`, `read_engine_metadata`).
`read_model_file_metadata(path)` reads any of them, the reader chosen by the file's suffix. Every file written
carries `schema_version` (`SCHEMA_VERSION`); files written before it existed read as version 1, and a file
from a newer schema is refused in one line.
Nothing here imports torch (the runtime reads exported files with it); onnx and openvino are imported
only by their own readers.

A model file is user input: its safetensors header, ONNX `metadata_props`, OpenVINO `rt_info` or engine
sidecar may be forged or damaged. Sizes and counts read from it decide how much memory the runtime and the
network builder allocate (input size, class count, widths, depths), so each is checked for type and range
here, and against the tensors or graph it describes by the loaders (`check_outputs`, `check_input_size`).
Imports only the torch-free task registry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtlkd.errors import MetadataError, UserError

MAX_SIDE = 8192  # pixels per side of the network input
MAX_CLASSES = 4096
MAX_CONFIG_INT = 1 << 16  # any width, depth, channel or query count of a config
MAX_NAME = 256

METADATA_KEY = "mtlkd"  # safetensors header key, ONNX metadata_props key, top of the OpenVINO rt_info path
OPENVINO_RT_INFO = [METADATA_KEY, "metadata"]
# Where readers look in an OpenVINO model's rt_info: the IR path above, ONNX metadata_props as OpenVINO's ONNX
# frontend files them (under "framework"), and a plain key.
OPENVINO_RT_INFO_PATHS = (OPENVINO_RT_INFO, ["framework", METADATA_KEY], [METADATA_KEY])
# 1: files written before the field existed. 2: `schema_version` itself; optional `output_stride` (heads' maps
# at their own resolution, input size / stride).
SCHEMA_VERSION = 2
PRECISIONS = ("fp32", "fp16", "int8")  # what the exporter writes, each with its own file names
# Library versions a file records, and the distributions that provide each (the first one installed counts).
# The engines' distributions come from their backend specs (`mtlkd.runtime.backends.version_distributions`).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"mtlkd": ("mtlkd",)}


def versions(names: Iterable[str] = ("mtlkd",),
             distributions: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """{library: installed version} for the libraries named (distribution names, or keys of
    `distributions`: the first installed of its distributions counts), read from the installed package
    metadata, so nothing is imported; missing ones are left out. mtlkd's own version is the package's
    `__version__` (also in a source checkout that is not installed)."""
    from importlib import metadata as importlib_metadata

    table = {**DISTRIBUTIONS, **(distributions or {})}
    found: dict[str, str] = {}
    for name in names:
        if name == "mtlkd":
            from mtlkd import __version__

            found[name] = __version__
            continue
        for dist in table.get(name, (name,)):
            try:
                found[name] = importlib_metadata.version(dist)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return found


def schema_version(meta: dict[str, Any]) -> int:
    """The schema a file's metadata follows; files written before the field existed are version 1."""
    return int(meta.get("schema_version", 1))


def stamp(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the current `schema_version` and mtlkd version: what every writer stores."""
    return {**meta, "schema_version": SCHEMA_VERSION, "mtlkd_version": versions(["mtlkd"])["mtlkd"]}


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_metadata(meta: Any, where: str, require: Sequence[str] = ("tasks", "input_size"),
                   error: type[UserError] = MetadataError) -> dict[str, Any]:
    """`meta` when every field present has the type and range mtlkd writes and the fields agree with each
    other; otherwise `error` naming `where` and the field. Fields in `require` must be present."""
    from mtlkd.tasks import TASKS

    def bad(field: str, why: str) -> ValueError:
        return error(f"{where}: metadata field {field!r} {why}; the file was not written by mtlkd or is damaged")

    if not isinstance(meta, dict):
        raise error(f"{where}: mtlkd metadata is a {type(meta).__name__}, not a JSON object")
    version = meta.get("schema_version", 1)
    if not _int(version, 1, 1 << 20):
        raise bad("schema_version", "is not a positive integer")
    if version > SCHEMA_VERSION:
        raise error(f"{where}: metadata schema version {version} is newer than this mtlkd reads ({SCHEMA_VERSION});"
                    f" upgrade mtlkd (pip install -U mtlkd)")
    stride = meta.get("output_stride")
    if stride is not None and not _int(stride, 1, MAX_SIDE):
        raise bad("output_stride", f"is not a stride in 1..{MAX_SIDE}")
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
    classes = [t for t in tasks or () if t in TASKS and TASKS[t].has_classes]
    if classes and num_classes is None and "num_classes" in require:
        raise bad("num_classes", f"is missing for a model of class maps ({', '.join(classes)})")
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
                output_shapes: dict[str, Sequence[Any] | None], error: type[UserError] = MetadataError) -> None:
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


# ------------------------------------------------------------------------------------ read and write


def parse_metadata(text: str | None, where: str, require: Sequence[str] = ("tasks", "input_size"),
                   error: type[UserError] = MetadataError) -> dict[str, Any]:
    """The checked metadata from the JSON text stored in a file; `error` naming `where` when it is absent,
    not JSON or not what mtlkd writes."""
    if not text:
        raise error(f"{where}: no mtlkd metadata; was it written by mtlkd (mtl-train, mtl-export)?")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: mtlkd metadata is not valid JSON ({exc})") from None
    return check_metadata(data, where, require=require, error=error)


def to_json(meta: dict[str, Any], indent: int | None = None) -> str:
    """The text every writer stores: `meta` stamped with the schema and mtlkd versions, keys sorted."""
    return json.dumps(stamp(meta), sort_keys=True, indent=indent)


def checkpoint_header(meta: dict[str, Any]) -> dict[str, str]:
    """The safetensors header entry (`metadata=` of safetensors' save_file) that carries `meta`."""
    return {METADATA_KEY: to_json(meta)}


def read_checkpoint_metadata(path: str | Path, error: type[UserError] = MetadataError) -> dict[str, Any]:
    """The metadata in a safetensors checkpoint's header, without loading its tensors (numpy only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise error(f"{path}: not a safetensors file ({exc}); pass a model.safetensors") from None
    if raw is None:
        raise error(f"{path}: safetensors file without mtlkd metadata; was it written by mtlkd?")
    return parse_metadata(raw, str(path), require=(), error=error)


def set_onnx_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """Store `meta` in an ONNX ModelProto's `metadata_props[METADATA_KEY]`, replacing an earlier value."""
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == METADATA_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, to_json(meta)


def missing_external_data(proto: Any, folder: Path) -> str | None:
    """The first external-data file an ONNX graph names that is not in `folder`, or None."""
    for tensor in proto.graph.initializer:
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and not (folder / location).is_file():
                return location
    return None


def read_onnx_metadata(model: str | Path | Any, error: type[UserError] = MetadataError) -> dict[str, Any]:
    """The metadata of an ONNX file (weights not loaded) or of a loaded ModelProto."""
    import onnx

    where = str(model) if isinstance(model, str | Path) else "ONNX model"
    proto = onnx.load(where, load_external_data=False) if isinstance(model, str | Path) else model
    if isinstance(model, str | Path):
        missing = missing_external_data(proto, Path(model).parent)
        if missing:
            raise error(f"{model}: its weights file {missing} (ONNX external data) is missing beside it; copy it "
                        f"next to the model, or export again")
    raw = next((entry.value for entry in proto.metadata_props if entry.key == METADATA_KEY), None)
    return parse_metadata(raw, where, error=error)


def set_openvino_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store `meta` in an OpenVINO model's rt_info (saved in the IR's .xml)."""
    model.set_rt_info(to_json(meta), OPENVINO_RT_INFO)


# rt_info entry holding the sha256 of the IR's .bin, which ties the weights to the .xml and its metadata: an
# IR is saved with WEIGHTS_PENDING there, and `seal_openvino_weights` writes the hash of the saved .bin in.
OPENVINO_WEIGHTS_RT_INFO = [METADATA_KEY, "weights_sha256"]
WEIGHTS_PENDING = "mtlkd-weights-sha256-pending"


def mark_openvino_weights(model: Any) -> None:
    """Leave the place for the .bin's hash in a model's rt_info, before `openvino.save_model`."""
    model.set_rt_info(WEIGHTS_PENDING, OPENVINO_WEIGHTS_RT_INFO)


def seal_openvino_weights(xml: str | Path) -> str:
    """Write the sha256 of a saved IR's .bin into its .xml (where `mark_openvino_weights` left the place);
    returns the hash. The IR is in a staging folder: written in place."""
    from mtlkd.files import sha256_of

    xml = Path(xml)
    digest = sha256_of(xml.with_suffix(".bin"))
    text = xml.read_text()
    if text.count(WEIGHTS_PENDING) != 1:
        raise ValueError(f"{xml}: no single place for the weights hash (was mark_openvino_weights called?)")
    xml.write_text(text.replace(WEIGHTS_PENDING, digest))
    return digest


def check_openvino_weights(model: Any, xml: str | Path, error: type[UserError] = MetadataError) -> None:
    """Refuse an IR whose .bin is not the one its .xml was saved with (another model's of the same
    architecture predicts garbage); IRs from before the hash existed are taken as they are."""
    from mtlkd.files import sha256_of

    xml = Path(xml)
    if not model.has_rt_info(OPENVINO_WEIGHTS_RT_INFO):
        return
    recorded = model.get_rt_info(OPENVINO_WEIGHTS_RT_INFO).astype(str)
    if sha256_of(xml.with_suffix(".bin")) != recorded:
        raise error(f"{xml.with_suffix('.bin')}: these weights are not the ones {xml.name} was exported with (its "
                    f"recorded sha256 differs); export the model again, or put the matching .bin beside it")


def read_openvino_metadata(model: str | Path | Any, error: type[UserError] = MetadataError,
                           where: str | Path | None = None) -> dict[str, Any]:
    """The metadata of an OpenVINO IR (.xml path) or of a read `openvino.Model`: the first rt_info location
    of `OPENVINO_RT_INFO_PATHS` that holds it. `where`: the file a read model came from, for the message."""
    where = str(where or (model if isinstance(model, str | Path) else "OpenVINO model"))
    if isinstance(model, str | Path):
        import openvino as ov

        model = ov.Core().read_model(str(model))
    for keys in OPENVINO_RT_INFO_PATHS:
        try:
            if model.has_rt_info(keys):
                return parse_metadata(model.get_rt_info(keys).astype(str), where, error=error)
        except RuntimeError:  # a map node rather than a string
            continue
    return parse_metadata(None, where, error=error)


def engine_sidecar(engine: str | Path) -> Path:
    """model.engine -> model.engine.json: where a TensorRT engine's metadata lives (an engine file has no
    room for it)."""
    return Path(f"{engine}.json")


def engine_sidecar_text(meta: dict[str, Any]) -> str:
    """The sidecar's content: the metadata itself, indented for people who open it."""
    return to_json(meta, indent=2) + "\n"


def read_engine_metadata(engine: str | Path, error: type[UserError] = MetadataError) -> dict[str, Any]:
    """The metadata of a TensorRT engine, from its sidecar: the metadata itself, or nested under
    `METADATA_KEY` (as an object or as JSON text)."""
    sidecar = engine_sidecar(engine)
    if not sidecar.is_file():
        raise error(f"{engine}: its metadata sidecar {sidecar.name} is missing; export the engine with mtl-export")
    text = sidecar.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{sidecar}: not valid JSON ({exc})") from None
    inner = data.get(METADATA_KEY) if isinstance(data, dict) else None
    if isinstance(inner, str):
        return parse_metadata(inner, str(sidecar), error=error)
    return check_metadata(inner if isinstance(inner, dict) else data, str(sidecar), error=error)


READERS = {".safetensors": read_checkpoint_metadata, ".onnx": read_onnx_metadata, ".xml": read_openvino_metadata,
           ".engine": read_engine_metadata, ".plan": read_engine_metadata}


def read_model_file_metadata(path: str | Path, error: type[UserError] = MetadataError) -> dict[str, Any]:
    """The checked mtlkd metadata of any model file mtlkd writes, chosen by its suffix."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise error(f"{path}: unknown model file type {path.suffix or '(none)'}; pass a .safetensors, .onnx, "
                    f".xml (OpenVINO) or .engine file")
    if not path.is_file():
        raise error(f"{path}: no such model file")
    return reader(path, error=error)
