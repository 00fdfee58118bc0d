"""The steps of `mtlkd.export.pipeline.export_model`: each file built in the staging folder (or reused from
the output folder), run on the export's own images and compared with its reference:

- fp32 graphs (ONNX, ORT-optimised, OpenVINO IR, TensorRT engine) against PyTorch;
- fp16 and int8 files against the fp32 ONNX graph (what a lower precision can keep is measured against
  the graph it came from), with the tolerances of `mtlkd.export.validate`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.export import validate as val
from mtlkd.export.options import DEFAULT_NAMES, ExportOptions, artifact_key, parse_batch_profile
from mtlkd.export.result import Artifact, ExportResult


class Build:
    """One export in progress: what is built so far, and the references the checks compare with."""

    def __init__(self, model: Any, meta: dict[str, Any], sha: str | None, tasks: list[str], options: ExportOptions,
                 stage: Path, out: Path, say: Callable[[str], None]):  # fmt: skip
        self.model, self.meta, self.sha, self.tasks, self.options = model, meta, sha, tasks, options
        self.stage, self.out, self.say = stage, out, say
        self.artifacts: list[Artifact] = []
        self.problems: list[str] = []
        self.paths: dict[str, Path] = {}
        self._images: np.ndarray | None = None
        self._refs: dict | None = None
        self._fp32: dict | None = None
        self._calibration: tuple[np.ndarray, str] | None = options.calibration

    # ----------------------------------------------------------------------------------------- plan

    def plan(self) -> list[tuple[str, str]]:
        """(format, precision) in build order: every file after the ones it is made from."""
        formats, precisions, opts = self.options.formats, self.options.precisions, self.options
        steps = [("onnx", "fp32")]
        for p in precisions:
            qdq_ir = p == "int8" and "openvino" in formats and opts.int8_source == "qdq"
            if p != "fp32" and ("onnx" in formats or "tensorrt" in formats or qdq_ir):
                steps.append(("onnx", p))
        if "ort" in formats:
            steps.append(("ort", "fp32"))
        steps += [(f, p) for f in ("openvino", "tensorrt") if f in formats for p in precisions]
        return steps

    def run(self) -> None:
        from mtlkd.export.onnx import output_resolution

        with output_resolution(self.model, self.options.full_resolution):
            for fmt, precision in self.plan():
                getattr(self, f"_{fmt}")(precision)

    # ------------------------------------------------------------------------------------ helpers

    def target(self, key: str) -> tuple[Path, bool]:
        """(where to build `key`, whether it is reused): its name in `out` when `reuse` and it is there
        (an IR with its .bin), else the same name in the staging folder."""
        name = self.options.names.get(key, DEFAULT_NAMES[key])
        final = self.out / name
        whole = final.is_file() and (final.suffix != ".xml" or final.with_suffix(".bin").is_file())
        if self.options.reuse and whole:
            self.say(f"reusing {final}")
            return final, True
        path = self.stage / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, False

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = val.validation_images(self.meta["input_size"], n=max(val.BATCHES))
        return self._images

    @property
    def refs(self) -> dict:
        """PyTorch's outputs on the export's images, batch 1 and 3."""
        if self._refs is None:
            self._refs = val.run_batches(lambda x: val.run_torch(self.model, x, self.tasks), self.images)
        return self._refs

    @property
    def fp32(self) -> dict:
        """The fp32 ONNX graph's outputs: the reference of every fp16 and int8 file."""
        if self._fp32 is None:
            self._fp32 = val.run_batches(lambda x: val.run_onnxruntime(self.paths["onnx"], x), self.images)
        return self._fp32

    def reference(self, precision: str) -> tuple[dict, str]:
        return (self.refs, "pytorch") if precision == "fp32" else (self.fp32, "fp32 onnx")

    def check(self, fmt: str, precision: str, path: Path, run: Callable[[np.ndarray], dict] | None, note: str,
              reused: bool, batches: tuple[int, ...] = val.BATCHES) -> None:  # fmt: skip
        """Record the artifact; with validation on, run it, compare it and stop the export on a failure."""
        key = artifact_key(fmt, precision)
        self.paths[key] = path
        artifact = Artifact(key, fmt, precision, path, note, reused=reused)
        self.artifacts.append(artifact)
        if not self.options.validate or run is None:
            return
        reference, name = self.reference(precision)
        outs = val.run_batches(run, self.images, batches)
        if key == "onnx" and batches == val.BATCHES:  # the fp32 graph's outputs: the lower precisions' reference
            self._fp32 = outs
        label = str(Path(self.options.names.get(key, DEFAULT_NAMES[key])))
        artifact.checks = val.compare(label, precision, name, {b: reference[b] for b in outs}, outs,
                                      trained=not self.meta.get("random_weights"))  # fmt: skip
        for check in artifact.checks:
            self.say(check.line())
        val.ensure_ok(artifact.checks)

    @property
    def calibration(self) -> tuple[np.ndarray, str]:
        if self._calibration is None:
            from mtlkd.export.precision import load_calibration_images

            self._calibration = load_calibration_images(self.options.calib_data, self.meta["input_size"],
                                                        self.options.calib_size)  # fmt: skip
        return self._calibration

    # -------------------------------------------------------------------------------------- steps

    def _onnx(self, precision: str) -> None:
        from mtlkd.export import precision as prec
        from mtlkd.export.onnx import export_onnx, graph_stats
        from mtlkd.metadata import read_onnx_metadata

        path, reused = self.target(artifact_key("onnx", precision))
        opts = self.options
        if precision == "fp32":
            if not reused:
                export_onnx(self.model, self.meta, path, self.tasks, opts.opset, source_sha256=self.sha,
                            full_resolution=opts.full_resolution)  # fmt: skip
            note = f"opset {opts.opset}, {graph_stats(path)['nodes']} nodes"
        elif precision == "fp16":
            if not reused:
                prec.convert_fp16(self.paths["onnx"], path)
            note = read_onnx_metadata(path).get("fp16_converter", "")
        else:
            if not reused:
                prec.quantize_int8(self.paths["onnx"], path, *self.calibration)
            qdq = prec.count_qdq(path)
            source = read_onnx_metadata(path).get("quantization", {}).get("calibration", {}).get("source", "")
            note = f"{qdq['QuantizeLinear']} Q/{qdq['DequantizeLinear']} DQ, calibration: {source}"
        self.check("onnx", precision, path, lambda x: val.run_onnxruntime(path, x), note, reused)

    def _ort(self, precision: str) -> None:
        from mtlkd.export.onnx import optimize_for_ort

        path, reused = self.target("ort")
        if not reused:
            optimize_for_ort(self.paths["onnx"], path)
        self.check("ort", "fp32", path, lambda x: val.run_onnxruntime(path, x), "ORT-only fusions", reused)

    def _openvino(self, precision: str) -> None:
        from mtlkd.export.openvino import export_openvino

        path, reused = self.target(artifact_key("openvino", precision))
        nncf = precision == "int8" and self.options.int8_source == "nncf"
        if not reused:
            export_openvino(self.paths["onnx"], path, precision=precision, int8_source=self.options.int8_source,
                            calibration=self.calibration[0] if nncf else None,
                            qdq_path=self.paths.get("onnx.int8") if precision == "int8" and not nncf else None)
        run = None
        if self.options.validate:
            # The CPU plugin computes in bf16 by default on CPUs that have it (avx512_bf16, AMX), which alone
            # moves an untrained seg head's argmax on a few percent of pixels; check what the file holds, in f32.
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            run = lambda x: val.run_openvino(path, x, compiled)  # noqa: E731 (compiled once for both batches)
        self.check("openvino", precision, path, run, "OpenVINO IR" + (" (NNCF)" if nncf else ""), reused)

    def _tensorrt(self, precision: str) -> None:
        from mtlkd.errors import BackendError, BackendUnavailable, EngineBuildError
        from mtlkd.export.tensorrt import build_engine

        graph = self.paths[artifact_key("onnx", precision)]
        path, reused = self.target(artifact_key("tensorrt", precision))
        profile = parse_batch_profile(self.options.batch_profile)
        try:
            if not reused:
                self.out.mkdir(parents=True, exist_ok=True)  # for the timing cache, shared between builds
                build_engine(graph, path, batch=profile, workspace_mb=self.options.workspace_mb,
                             timing_cache=self.options.timing_cache or self.out / "timing.cache")  # fmt: skip
            run = None
            if self.options.validate:
                backend = _load_engine(path)
                run = lambda x: backend.run(x, list(backend.tasks))  # noqa: E731
            batches = tuple(b for b in val.BATCHES if b <= profile[2])
            self.check("tensorrt", precision, path, run, f"batch {profile}", reused, batches)
        except (BackendUnavailable, EngineBuildError) as err:  # no TensorRT or GPU here, or a failed build
            self.problems.append(f"{err} (the ONNX graph {graph} was written)")
        except BackendError as err:  # built, but it cannot run here (e.g. cuda-python missing, a CUDA error)
            self.check("tensorrt", precision, path, None, f"batch {profile}, not validated", reused)
            self.problems.append(f"{path} was built but not validated: {err}")


def _load_engine(path: Path):
    """The runtime's backend for the engine (looked up at call time, so tests can stand in for it)."""
    from mtlkd.runtime import backends

    return backends.load_backend(backends.backends_for(path)[0], path, "cuda")


def triton(result: ExportResult, options: ExportOptions, meta: dict[str, Any]) -> list[Artifact]:
    """The Triton repository for the exported files of the one precision exported; one row per model."""
    from mtlkd.export.triton import write_triton_repo
    from mtlkd.metadata import read_onnx_metadata

    precision = options.precisions[0]
    keys = {kind: artifact_key(kind, precision) for kind in ("onnx", "openvino", "tensorrt")}
    have = {a.key: a.path for a in result.artifacts}
    artifacts = {kind: have[key] for kind, key in keys.items() if key in have}
    max_batch = parse_batch_profile(options.batch_profile)[2]
    folders = write_triton_repo(options.triton, artifacts, read_onnx_metadata(artifacts.get("onnx", have["onnx"])),
                                max_batch_size=max_batch, gpu="tensorrt" in artifacts,
                                backend=options.triton_backend)  # fmt: skip
    return [Artifact(f"triton:{name}", "triton", precision, folder / "config.pbtxt", name)
            for name, folder in folders.items()]
