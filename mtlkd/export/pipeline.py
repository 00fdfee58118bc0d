"""The export pipeline: one call from a checkpoint (or a network in memory) to checked model files.

`export_model(source, out, options)` builds the fp32 ONNX graph, then what `ExportOptions` asks for
(fp16/int8 graphs, an ORT-optimised graph, OpenVINO IRs, TensorRT engines, a Triton repository), checks
every file against PyTorch or the fp32 graph (`mtlkd.export.validate`) unless `validate=False`, and returns
an `ExportResult` listing the files and every check with its measured numbers. `mtl-export` is a thin layer
over it, and the benchmark calls it with its own cache folder and file names.

Safety: everything is built in a folder beside `out` and moved in only
when every check passed, so a failed export (a tolerance missed, NaN weights, Ctrl-C) leaves `out` as it
was; each precision has its own file names in every format (`DEFAULT_NAMES`); `export.json` records the
result. With `reuse=True` a file already at its name in `out` is taken as it is (a cache) instead of rebuilt.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtlkd.errors import ValidationError
from mtlkd.export.options import DEFAULT_NAMES, FORMATS, REPORT_NAME, ExportOptions, artifact_key
from mtlkd.export.result import Artifact, ExportResult

__all__ = ["DEFAULT_NAMES", "FORMATS", "Artifact", "ExportOptions", "ExportResult", "artifact_key", "export_model"]

Source = str | Path | tuple[Any, dict[str, Any]]


def export_model(source: Source, out: str | Path, options: ExportOptions | None = None,
                 progress: Callable[[str], None] | None = None, **overrides: Any) -> ExportResult:  # fmt: skip
    """Export `source` (a checkpoint path, or `(network, metadata)` with the checkpoint metadata or the
    network config) into the folder `out`. `overrides` replace fields of `options` (`formats=["openvino"]`).
    `progress(line)` receives what is being done and each check. Raises a UserError for bad input (a
    ConfigError naming the flag for bad options), `ValidationError` (with `.result`, what
    was built) when a file fails its check, and BackendUnavailable when OpenVINO is asked for but missing;
    nothing in `out` changes in these cases. A missing TensorRT is not an error: the rest is written and
    `result.problems` says so."""
    options = replace(options or ExportOptions(), **overrides)  # checked as it is made
    out = Path(out)
    options.check_out(out)  # before the network is built: mistakes are quick
    tasks = options.export_tasks(_metadata(source))
    if "openvino" in options.formats:
        from mtlkd.export.openvino import require_openvino

        require_openvino()
    from mtlkd.export import steps
    from mtlkd.models import check_device

    check_device(options.device)
    model, meta, sha, label = _load(source, options.device)
    say = progress or (lambda _line: None)
    say(f"exporting {label} ({', '.join(tasks)}) -> {out}")
    stage = prepare_folder(out)
    build = steps.Build(model, meta, sha, tasks, options, stage, out, say)
    was_training = model.training
    try:
        try:
            build.run()
        except ValidationError as err:
            err.result = ExportResult(out, build.artifacts)  # type: ignore[attr-defined]
            raise
        except Exception as exc:  # a full or read-only disk, however the exporter words it: one line
            _storage_refusal(out, exc)
            raise
        result = ExportResult(out, build.artifacts, [p.replace(str(stage), str(out)) for p in build.problems])
        for artifact in result.artifacts:
            if stage in artifact.path.parents:
                artifact.path = out / artifact.path.relative_to(stage)
        if options.report:  # in the stage: export.json changes together with the files it describes
            from mtlkd.checkpoint import write_json

            write_json(stage / REPORT_NAME, result.to_dict())
            result.report = out / REPORT_NAME
        _move_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        model.train(was_training)  # the checks ran it in eval mode; a caller's network is left as it came
    if options.triton is not None:
        result.artifacts += steps.triton(result, options, meta)
        if options.report:
            from mtlkd.checkpoint import write_json

            write_json(out / REPORT_NAME, result.to_dict())
    return result


def _storage_refusal(out: Path, exc: Exception) -> None:
    """Raise StorageError (naming `out`) when `exc` is the disk refusing the export's files; else return."""
    from mtlkd.errors import StorageError
    from mtlkd.files import written_where

    message = written_where(out, exc)
    if message is not None:
        raise StorageError(f"{message}; {out} was left as it was") from None


def prepare_folder(out: Path) -> Path:
    """Before an export into `out`: finish a swap a kill interrupted, remove the staging folders of killed
    exports, and return a new staging folder beside `out`."""
    from mtlkd.files import clean_stale_folders, clean_stale_temporaries, finish_swap, folder_beside

    if out.is_dir():
        finish_swap(out)
        clean_stale_temporaries(out)
    clean_stale_folders(out)
    return folder_beside(out)


def _metadata(source: Source) -> dict[str, Any]:
    """The checkpoint metadata of a source, without building the network (a path: its header only)."""
    if isinstance(source, str | Path):
        from mtlkd.checkpoint import read_metadata

        return read_metadata(source)
    meta = source[1]
    if "backbone" in meta and "tasks" in meta and "config" not in meta:  # a network config, not metadata
        from mtlkd.checkpoint import model_metadata

        meta = model_metadata(meta)
    return meta


def _load(source: Source, device: str) -> tuple[Any, dict[str, Any], str | None, str]:
    """(network, checkpoint metadata, checkpoint sha256 or None, label for messages)."""
    if isinstance(source, str | Path):
        from mtlkd.files import sha256_of
        from mtlkd.models import load_model

        model, meta = load_model(str(source), device=device)
        return model, meta, sha256_of(source), str(source)
    meta = _metadata(source)
    return source[0].to(device), meta, meta.get("source_sha256"), type(source[0]).__name__


def _move_into_place(stage: Path, out: Path) -> None:
    """Move every file built in `stage` to the same place under `out`, as one swap (`files.swap_in`: a kill
    midway is finished by the next export or refused by the runtime); other files of `out` stay."""
    from mtlkd.files import swap_in

    files = sorted((p for p in stage.rglob("*") if p.is_file()),
                   key=lambda p: (p.suffix in (".xml", ".engine", ".plan", ".onnx"), str(p)))  # fmt: skip
    swap_in(stage, out, files)

