"""A Triton Inference Server model repository for an exported model (ONNX, OpenVINO IR or TensorRT plan).

Layout (what Triton's backends expect):

    REPO/README.md                      how to start the server and call it
    REPO/<name>/config.pbtxt            platform/backend, max_batch_size, inputs, outputs, batching
    REPO/<name>/1/model.onnx            platform "onnxruntime_onnx" (KIND_GPU on a GPU export)
    REPO/<name>/1/model.xml + model.bin backend "openvino" (CPU)
    REPO/<name>/1/model.plan            platform "tensorrt_plan", plus model.plan.json: the metadata
                                        sidecar the Predictor reads when it opens that plan

Every model serves every batch from 1 to max_batch_size:
- OpenVINO: Triton's openvino backend reshapes the model to max_batch_size (`ov::set_batch`) and rejects
  smaller batches unless the model's parameter ENABLE_BATCH_PADDING is YES (then it pads and returns
  only the real rows), so that parameter is always written. Its precision cannot be pinned: the backend
  accepts HINT_BF16=YES but has no f32 setting, so the CPU plugin computes in bf16 on CPUs with
  avx512_bf16/AMX and in f32 elsewhere; the config and the README say so.
- ONNX: the graph's batch axis is dynamic.
- TensorRT: mtl-export builds profiles starting at batch 1 (mtlkd.export.options.parse_batch_profile).

With `backend="python"` (`mtl-export --triton-backend python`) every model is the same but runs in
Triton's Python backend: `<name>/1/model.py` (mtlkd/runtime/triton_model.py) runs mtlkd's Predictor on the
same file, with the same inputs, outputs and batching; this is what a Triton without the ONNX Runtime or
OpenVINO backends (the pip wheel's, `mtl-serve`) can run.

Dims in config.pbtxt leave out the batch axis (max_batch_size > 0 means Triton adds it). The text is
written here by hand so that exporting does not need tritonclient; the tests parse it with Triton's
own schema (`tritonclient.grpc.model_config_pb2`). A model's version folder is written beside the old
one and swapped in, so a failed copy leaves the previous version in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mtlkd.errors import ConfigError
from mtlkd.tasks import get_task

KINDS = {
    "onnx": {"line": 'platform: "onnxruntime_onnx"', "files": ["model.onnx"], "device": "KIND_CPU"},
    "openvino": {"line": 'backend: "openvino"', "files": ["model.xml", "model.bin"], "device": "KIND_CPU"},
    "tensorrt": {"line": 'platform: "tensorrt_plan"', "files": ["model.plan", "model.plan.json"],
                 "device": "KIND_GPU"},
}
TRITON_BACKENDS = ("native", "python")  # Triton's own backend per kind, or model.py running the Predictor
PYTHON_MODEL = Path(__file__).resolve().parents[1] / "runtime" / "triton_model.py"  # copied to <name>/1/model.py
DEFAULT_QUEUE_DELAY_US = 2000
GPU_CAPABLE = ("onnx", "tensorrt")  # kinds whose Triton backend runs on a GPU instance
OPENVINO_PRECISION = ("# precision: OpenVINO's CPU plugin default, bf16 on CPUs with avx512_bf16 or AMX and f32 "
                      "elsewhere;\n# the openvino backend has no f32 parameter (only HINT_BF16). The export "
                      "was validated in f32.")


def runtime_backend(kind: str) -> str:
    """The runtime backend model.py runs a kind's file with: the runtime's first choice for its suffix."""
    from mtlkd.runtime.backends import backends_for

    return backends_for(KINDS[kind]["files"][0])[0]


def kind_of(path: str | Path) -> str | None:
    """The kind of a model file (the KINDS entry its runtime backend runs), None for a file no kind holds
    (a checkpoint, an unknown type)."""
    from mtlkd.runtime.backends import suffixes

    names = suffixes().get(Path(path).suffix.lower(), ())
    return next((kind for kind in KINDS if names and runtime_backend(kind) == names[0]), None)


def output_dims(metadata: dict[str, Any]) -> dict[str, list[int]]:
    """Per output, its dims without the batch axis (C x H x W): the input size, or the heads' own grid
    (input size / `output_stride`) for a graph exported with low-resolution outputs."""
    stride = int(metadata.get("output_stride") or 1)
    height, width = (int(v) // stride for v in metadata["input_size"])
    return {t: [get_task(t).channels(metadata.get("num_classes")), height, width] for t in metadata["tasks"]}


def config_text(name: str, kind: str, metadata: dict[str, Any], max_batch_size: int = 8, instances: int = 1,
                device: str | None = None, backend: str = "native",
                queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> str:  # fmt: skip
    """The config.pbtxt of one model, in protobuf text format. `device`: KIND_CPU or KIND_GPU (default:
    the kind's own, GPU only for TensorRT). `backend`: "native" or "python" (TRITON_BACKENDS)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown Triton model kind {kind!r}; known: {', '.join(KINDS)}")
    if backend not in TRITON_BACKENDS:
        raise ConfigError(f"unknown Triton backend {backend!r}; choose {' or '.join(TRITON_BACKENDS)}")
    device = device or KINDS[kind]["device"]
    if device == "KIND_GPU" and kind not in GPU_CAPABLE:
        raise ConfigError(f"Triton's {kind} model runs on the CPU only; use KIND_CPU")
    height, width = (int(v) for v in metadata["input_size"])
    input_name = metadata.get("input_name", "image")
    preferred = sorted({b for b in (max_batch_size // 2, max_batch_size) if b >= 1})
    lines = [f'name: "{name}"', KINDS[kind]["line"] if backend == "native" else 'backend: "python"',
             f"max_batch_size: {int(max_batch_size)}"]
    if backend == "python":
        lines += [f"# model.py runs mtlkd's Predictor on 1/{KINDS[kind]['files'][0]} with its {runtime_backend(kind)} "
                  "backend"]
        for key, value in (("model_file", KINDS[kind]["files"][0]), ("runtime_backend", runtime_backend(kind))):
            lines += ["parameters {", f'  key: "{key}"', f'  value: {{ string_value: "{value}" }}', "}"]
    elif kind == "openvino":
        lines += ['default_model_filename: "model.xml"', OPENVINO_PRECISION,
                  "# without ENABLE_BATCH_PADDING the backend refuses every batch smaller than max_batch_size",
                  "parameters {", '  key: "ENABLE_BATCH_PADDING"', '  value: { string_value: "YES" }', "}"]
    lines += ["input [", "  {", f'    name: "{input_name}"', "    data_type: TYPE_FP32", "    format: FORMAT_NCHW",
              f"    dims: [ 3, {height}, {width} ]", "  }", "]", "output ["]  # fmt: skip
    outputs = output_dims(metadata)
    for i, (task, dims) in enumerate(outputs.items()):
        comma = "," if i < len(outputs) - 1 else ""
        lines += ["  {", f'    name: "{task}"', "    data_type: TYPE_FP32",
                  f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }" + comma]  # fmt: skip
    lines += ["]", "dynamic_batching {", f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
              f"  max_queue_delay_microseconds: {int(queue_delay_us)}", "}",
              "instance_group [", "  {", f"    count: {int(instances)}", f"    kind: {device}",
              "  }", "]"]  # fmt: skip
    return "\n".join(lines) + "\n"


def artifact_sources(kind: str, artifact: str | Path) -> list[Path]:
    """The files of one artifact, in the order of KINDS[kind]["files"]."""
    artifact = Path(artifact)
    if kind == "openvino":
        return [artifact, artifact.with_suffix(".bin")]
    if kind == "tensorrt":
        return [artifact, Path(f"{artifact}.json")]  # the engine's metadata sidecar
    return [artifact]


def write_triton_model(
    repo: str | Path,
    kind: str,
    artifact: str | Path,
    metadata: dict[str, Any],
    name: str | None = None,
    max_batch_size: int = 8,
    instances: int = 1,
    device: str | None = None,
    backend: str = "native",
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> Path:
    """Copy one artifact into REPO/<name>/1/ with its config.pbtxt; returns the model folder.

    `artifact`: the .onnx file, the IR's .xml (its .bin is taken from beside it) or the engine file (its
    .json sidecar too). Every source is checked before anything is replaced; the new version folder is
    filled beside the old one and swapped in."""
    name = name or f"mtlkd_{kind}"
    sources = artifact_sources(kind, artifact)
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"{source}: missing, cannot add it to the Triton repository")
    config = config_text(name, kind, metadata, max_batch_size, instances, device, backend, queue_delay_us)
    folder = Path(repo) / name
    folder.mkdir(parents=True, exist_ok=True)
    version, fresh, old = folder / "1", folder / ".1.new", folder / ".1.old"
    for stale in (fresh, old):
        if stale.exists():
            shutil.rmtree(stale)
    fresh.mkdir()
    try:
        for source, target in zip(sources, KINDS[kind]["files"], strict=True):
            shutil.copyfile(source, fresh / target)
        if backend == "python":
            shutil.copyfile(PYTHON_MODEL, fresh / "model.py")
        (fresh / ".config.pbtxt").write_text(config)
        if version.exists():
            os.replace(version, old)
        try:
            os.replace(fresh, version)
        except OSError:
            if old.exists() and not version.exists():
                os.replace(old, version)  # put the previous version back
            raise
        os.replace(version / ".config.pbtxt", folder / "config.pbtxt")
    finally:
        for stale in (fresh, old):
            if stale.exists():
                shutil.rmtree(stale)
    return folder


def write_triton_readme(repo: str | Path, models: dict[str, str], metadata: dict[str, Any],
                        gpu: bool = False, backend: str = "native",
                        into: str | Path | None = None) -> Path:  # fmt: skip
    """REPO/README.md: the server command and a Python HTTP client call. `models`: name -> kind. `into`:
    the folder the file goes to when it is not REPO (a staging folder that becomes REPO)."""
    repo = Path(repo)
    height, width = (int(v) for v in metadata["input_size"])
    tasks = list(metadata["tasks"])
    first = next(iter(models))
    extra = ["model.py"] if backend == "python" else []
    rows = "\n".join(f"| `{n}` | {k} | `{'`, `'.join(KINDS[k]['files'] + extra)}` |" for n, k in models.items())
    outputs = "\n".join(f"- `{t}`: {' x '.join(str(d) for d in ['N', *dims])} float32, {get_task(t).title.lower()} "
                        f"({get_task(t).output})" for t, dims in output_dims(metadata).items())  # fmt: skip
    gpus = " --gpus=all" if gpu or "tensorrt" in models.values() else ""
    notes = []
    if backend == "python":
        notes.append("Every model runs in Triton's Python backend: `<model>/1/model.py` runs mtlkd's Predictor on "
                     "the file beside it,\nso the Python environment of the server needs `pip install "
                     "'mtlkd[cpu]'` (NGC container: inside it;\nhere: `mtl-serve REPO` uses the environment "
                     "`make serve-env` creates).")
    elif "openvino" in models.values():
        notes.append("The OpenVINO model pads every batch to max_batch_size (parameter ENABLE_BATCH_PADDING: "
                     "without it the backend\nrefuses smaller batches) and computes in bf16 on CPUs with "
                     "avx512_bf16 or AMX, f32 elsewhere: the backend\nhas no f32 setting. The export was "
                     "validated in f32; for f32 serving use the ONNX model.")
    if "tensorrt" in models.values():
        notes.append("A TensorRT plan only runs on the GPU model and TensorRT version it was built with: use "
                     "the Triton release\nwhose TensorRT matches `tensorrt.version` in `model.plan.json` (the "
                     "plan's metadata, beside it; the\nPredictor reads it too: `Predictor.load(\"<model>/1/"
                     "model.plan\")`).")
    stride = int(metadata.get("output_stride") or 1)
    if stride > 1:
        notes.append(f"The outputs are at 1/{stride} of the input's size per side (the heads' own grid). Resize "
                     "them bilinearly to your\nimage's size (half-pixel centres), then take the argmax of the "
                     "class logits and renormalise the\nnormals to unit length: what `mtlkd.runtime.processing."
                     "postprocess` does.")
    if gpu and "onnx" in models.values():
        notes.append("The ONNX model runs on the GPU (KIND_GPU, ONNX Runtime's CUDA provider).")
    notes_text = "\n\n".join(notes)
    text = f"""# Triton model repository (written by mtl-export)

| model | backend | files in `<model>/1/` |
| --- | --- | --- |
{rows}

Input `image`: N x 3 x {height} x {width} float32, RGB in [0, 1]; the mean/std normalisation is inside the
network. Outputs:
{outputs}

## Start the server

```bash
docker run --rm{gpus} -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
# or, where tritonserver is installed:
tritonserver --model-repository={repo.resolve()}
```

{notes_text}

## Call it from Python (`pip install tritonclient[http]`)

```python
import numpy as np
import tritonclient.http as httpclient

client = httpclient.InferenceServerClient(url="localhost:8000")
image = np.random.rand(1, 3, {height}, {width}).astype(np.float32)  # your RGB image in [0, 1], N x 3 x H x W
request = httpclient.InferInput("image", list(image.shape), "FP32")
request.set_data_from_numpy(image)
wanted = [httpclient.InferRequestedOutput(name) for name in {tasks!r}]
result = client.infer("{first}", inputs=[request], outputs=wanted)
outputs = {{name: result.as_numpy(name) for name in {tasks!r}}}
```
"""
    folder = Path(into or repo)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    path.write_text(text)
    return path


def write_triton_repo(repo: str | Path, artifacts: dict[str, str | Path], metadata: dict[str, Any],
                      max_batch_size: int = 8, prefix: str = "mtlkd", gpu: bool = False,
                      backend: str = "native") -> dict[str, Path]:  # fmt: skip
    """One Triton model per artifact (`kind -> path`, kinds: onnx, openvino, tensorrt) plus the README;
    returns model name -> model folder. `gpu`: the export has a GPU (it built an engine), so the ONNX
    model gets a GPU instance too. `backend`: "native" or "python" (TRITON_BACKENDS)."""
    from mtlkd.files import clean_stale_folders, finish_swap, folder_beside

    repo = Path(repo)
    if repo.is_dir():
        finish_swap(repo)  # a swap a kill interrupted: completed before this one
    clean_stale_folders(repo)
    stage = folder_beside(repo)
    try:
        folders = {}
        for kind, artifact in artifacts.items():
            name = f"{prefix}_{kind}"
            device = "KIND_GPU" if gpu and kind in GPU_CAPABLE else None
            write_triton_model(stage, kind, artifact, metadata, name, max_batch_size, device=device, backend=backend)
            folders[name] = repo / name
        write_triton_readme(repo, {name: kind for name, kind in zip(folders, artifacts, strict=True)}, metadata,
                            gpu, backend, into=stage)
        swap_whole_repo(stage, repo, prefix, set(folders))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folders


def swap_whole_repo(stage: Path, repo: Path, prefix: str, models: set[str]) -> None:
    """Replace the repository's models with the staged ones as one swap (`files.swap_in`): a full disk or a
    kill never leaves one model's ONNX beside another's IR, and an earlier export's `prefix_*` model that
    this one does not have (other formats) goes, so Triton never serves it; other models stay. Each model's
    config.pbtxt moves after its files (Triton may poll the repository)."""
    from mtlkd.files import swap_in

    files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: (p.name == "config.pbtxt", str(p)))
    stale = sorted(p.name for p in repo.glob(f"{prefix}_*") if p.is_dir() and p.name not in models)
    swap_in(stage, repo, files, remove=stale)
