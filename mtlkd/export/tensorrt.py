"""ONNX -> TensorRT engine with the TensorRT 11 Python API (strongly typed networks only).

TensorRT 11 removed the precision builder flags (FP16, INT8, ...) and INT8 calibrators: networks are
always strongly typed, so the precision comes from the graph (see `mtlkd.export.precision`: the
mixed-precision fp16 graph or the Q/DQ int8 graph). `NetworkDefinitionCreationFlag.STRONGLY_TYPED` is
deprecated and ignored in 11.x; it is set only when building with TensorRT 10.x, where it still matters.

The engine is specific to the GPU, TensorRT version and batch profile it was built for; the sidecar
`model.engine.json` holds the same metadata as the ONNX file plus those build facts. A timing cache
file is loaded before and saved after every build, so rebuilding (other batch profile, other precision)
skips the kernel timing it has already done.

No TensorRT or no CUDA GPU -> `BackendUnavailable` with a one-line message; nothing is faked.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from mtlkd.errors import BackendUnavailable, EngineBuildError
from mtlkd.export.options import DEFAULT_BATCH, DEFAULT_WORKSPACE_MB, parse_batch_profile
from mtlkd.metadata import engine_sidecar, engine_sidecar_text, read_onnx_metadata


def profile_shapes(batch: tuple[int, int, int], input_size: tuple[int, int] | list[int],
                   channels: int = 3) -> dict[str, tuple[int, int, int, int]]:  # fmt: skip
    """The min/opt/max input shapes (N x C x H x W) of the profile for the model's input size."""
    height, width = (int(v) for v in input_size)
    low, opt, high = parse_batch_profile(batch)
    return {name: (b, channels, height, width) for name, b in (("min", low), ("opt", opt), ("max", high))}


def require_tensorrt():
    """The `tensorrt` module, or BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed: --trt needs the tensorrt Python package (pip install tensorrt) "
            "and an NVIDIA GPU with CUDA"
        ) from None
    return trt


def _builder(trt, logger):
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # the binding's factory returns null without a usable GPU
        raise BackendUnavailable(f"TensorRT {trt.__version__} found no usable CUDA GPU ({exc})") from None
    if builder is None:
        raise BackendUnavailable(f"TensorRT {trt.__version__} found no usable CUDA GPU")
    return builder


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    metadata: dict[str, Any] | None = None,
    batch: tuple[int, int, int] | str = DEFAULT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: str | Path | None = None,
    verbose: bool = False,
    tf32: bool = False,
) -> Path:
    """Build and serialise a TensorRT engine for `onnx_path`; writes `engine_path` and its JSON sidecar.

    `batch` is the optimisation profile (min, opt, max) of input `image`; `workspace_mb` caps the
    builder's scratch memory; `timing_cache` (default: `timing.cache` beside the engine) is reused and
    updated; a cache TensorRT rejects (another GPU or version) is rebuilt with a warning. TF32 is off
    unless `tf32`: TensorRT enables it by default, so an fp32 engine would multiply matrices with 10-bit
    mantissas and drift from the fp32 graph it was validated against.
    The engine and its sidecar are written beside their final names and moved into place together, so
    neither is left without the other. Raises BackendUnavailable without TensorRT or GPU,
    EngineBuildError when the build fails.
    """
    from mtlkd.files import sha256_of

    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    meta = dict(metadata or read_onnx_metadata(onnx_path))
    shapes = profile_shapes(parse_batch_profile(batch), meta["input_size"])
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = _builder(trt, logger)

    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(meta.get("input_name", "image"), shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else engine_path.parent / "timing.cache"
    _use_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")
    engine_bytes = bytes(serialized)
    meta["tensorrt"] = {
        "version": trt.__version__,
        "batch_profile": dict(zip(("min", "opt", "max"), (s[0] for s in shapes.values()), strict=True)),
        "workspace_mb": int(workspace_mb),
        "strongly_typed": True,
        "tf32": bool(tf32),
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_of(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
    }
    write_pair(engine_path, engine_bytes, engine_sidecar(engine_path), engine_sidecar_text(meta).encode())
    _save_timing_cache(config, cache_path)
    return engine_path


def _use_timing_cache(config: Any, cache_path: Path) -> None:
    """Load the timing cache file into `config`; one TensorRT rejects (another GPU or TensorRT version,
    a damaged file) is replaced by an empty cache, with a warning, instead of failing the build."""
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    if data:
        warnings.warn(f"{cache_path}: TensorRT rejected this timing cache (made on another GPU or TensorRT "
                      f"version?); building with a fresh one, which replaces it", stacklevel=3)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError("TensorRT could not set up an empty timing cache")


def _save_timing_cache(config: Any, cache_path: Path) -> None:
    """Write the updated timing cache; the engine is already in place, so a failure here only warns."""
    cache = config.get_timing_cache()
    if cache is None:
        warnings.warn(f"{cache_path}: TensorRT returned no timing cache after the build; not saved", stacklevel=3)
        return
    try:
        write_pair(cache_path, bytes(cache.serialize()))
    except OSError as exc:
        warnings.warn(f"{cache_path}: could not save the timing cache ({exc})", stacklevel=3)


def _temporary(path: Path) -> Path:
    """A new file beside `path` (same folder, so the rename is atomic), created with the umask applied."""
    from mtlkd.files import temporary_beside

    return temporary_beside(path)


def write_pair(first: Path, first_bytes: bytes, second: Path | None = None, second_bytes: bytes = b"") -> None:
    """Write one or two files beside their final names, then move them into place (second, then first):
    a failure before the renames leaves the old files untouched; the engine never lands without its sidecar."""
    first.parent.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []
    try:
        for target, data in ((first, first_bytes), (second, second_bytes)):
            if target is None:
                continue
            tmp = _temporary(target)
            pending.append((tmp, target))
            tmp.write_bytes(data)
        for tmp, target in reversed(pending):
            os.replace(tmp, target)
    finally:
        for tmp, _ in pending:
            if tmp.exists():
                tmp.unlink()

