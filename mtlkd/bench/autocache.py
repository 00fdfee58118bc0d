"""The benchmark's measured winners, written into the runtime's `backend="auto"` cache."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def update_auto_cache(rows: list[dict[str, Any]], device: str, exports: dict[str, Path] | None = None,
                      cache: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Write the measured winner per model file + machine into the runtime's auto-backend cache
    (mtlkd.runtime.auto), for every file that all its candidate backends were measured on with the same
    options, and for the user's own exports of the same checkpoints (`exports`: bench file -> user file).
    Returns what was written."""
    import json

    from mtlkd.runtime import auto

    measured: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row.get("error") or row["variant"] != "default" or row.get("p50_ms") is None:
            continue
        options = {k: v for k, v in row.get("options", {}).items() if k == "threads"}
        if set(row.get("options", {})) - {"threads"}:
            continue  # a precision or hint option: not what `Predictor.load(path)` would use
        measured.setdefault((row["file"], json.dumps(options, sort_keys=True)), {})[row["backend"]] = row["p50_ms"]
    path = cache or auto.cache_path()
    data = auto.read_cache(path)
    written = []
    for (file, options_json), timings in measured.items():
        names = auto.candidates(file, device)
        if len(names) < 2 or not all(n in timings for n in names):
            continue
        winner = min(names, key=lambda n: timings[n])
        options = json.loads(options_json)
        for target in [Path(file), *([exports[file]] if exports and file in exports else [])]:
            key = auto.cache_key(target, device, names, options)
            data["entries"][key] = {
                "backend": winner, "timings_ms": {n: timings[n] for n in names}, "errors": {},
                "file": str(target.resolve()), "device": device, **auto.cpu_identity(),
                "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": "mtl-bench",
            }  # fmt: skip
            written.append({"file": str(target), "backend": winner, "timings_ms": data["entries"][key]["timings_ms"]})
    if written:
        auto.write_cache(data, path)
    return written


def user_exports(models: list[Any], paths: dict[tuple[str, str], Path]) -> dict[str, Path]:
    """{benchmarked fp32 .onnx: the user's own export of the same checkpoint}: the `export/model.onnx`
    that mtl-export writes beside a checkpoint, when its metadata names this checkpoint's hash and tasks
    (so the auto-backend winner measured here is written for the file the user will load too)."""
    from mtlkd.export.onnx import read_onnx_metadata
    from mtlkd.files import sha256_of

    found = {}
    for model in models:
        sibling, ours = model.checkpoint.parent / "export" / "model.onnx", paths.get((model.name, "onnx"))
        if not sibling.is_file() or ours is None:
            continue
        try:
            meta = read_onnx_metadata(sibling)
        except Exception:  # not ours to judge; just no cache entry for it
            continue
        if meta.get("source_sha256") == sha256_of(model.checkpoint) and meta.get("tasks") == model.tasks:
            found[str(ours)] = sibling
    return found
