"""A Triton Inference Server model repository for an exported model (ONNX, OpenVINO IR or TensorRT plan).

Layout (what Triton's backends expect):

    REPO/README.md                      how to start the server and call it
    REPO/<name>/config.pbtxt            platform/backend, max_batch_size, inputs, outputs, batching
    REPO/<name>/1/model.onnx            platform "onnxruntime_onnx"
    REPO/<name>/1/model.xml + model.bin backend "openvino"
    REPO/<name>/1/model.plan            platform "tensorrt_plan"

Dims in config.pbtxt leave out the batch axis (max_batch_size > 0 means Triton adds it). The text is
written here by hand so that exporting does not need tritonclient; the tests parse it with Triton's
own schema (`tritonclient.grpc.model_config_pb2`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mtlkd.tasks import get_task

KINDS = {
    "onnx": {"line": 'platform: "onnxruntime_onnx"', "files": ["model.onnx"], "device": "KIND_CPU"},
    "openvino": {"line": 'backend: "openvino"', "files": ["model.xml", "model.bin"], "device": "KIND_CPU"},
    "tensorrt": {"line": 'platform: "tensorrt_plan"', "files": ["model.plan"], "device": "KIND_GPU"},
}


def output_dims(metadata: dict[str, Any]) -> dict[str, list[int]]:
    """Per output, its dims without the batch axis (C x H x W)."""
    height, width = (int(v) for v in metadata["input_size"])
    return {t: [get_task(t).channels(metadata.get("num_classes")), height, width] for t in metadata["tasks"]}


def config_text(name: str, kind: str, metadata: dict[str, Any], max_batch_size: int = 8, instances: int = 1,
                device: str | None = None) -> str:  # fmt: skip
    """The config.pbtxt of one model, in protobuf text format."""
    if kind not in KINDS:
        raise ValueError(f"unknown Triton model kind {kind!r}; known: {', '.join(KINDS)}")
    height, width = (int(v) for v in metadata["input_size"])
    input_name = metadata.get("input_name", "image")
    preferred = sorted({b for b in (max_batch_size // 2, max_batch_size) if b >= 1})
    lines = [f'name: "{name}"', KINDS[kind]["line"], f"max_batch_size: {int(max_batch_size)}"]
    if kind == "openvino":
        lines.append('default_model_filename: "model.xml"')
    lines += ["input [", "  {", f'    name: "{input_name}"', "    data_type: TYPE_FP32", "    format: FORMAT_NCHW",
              f"    dims: [ 3, {height}, {width} ]", "  }", "]", "output ["]  # fmt: skip
    outputs = output_dims(metadata)
    for i, (task, dims) in enumerate(outputs.items()):
        comma = "," if i < len(outputs) - 1 else ""
        lines += ["  {", f'    name: "{task}"', "    data_type: TYPE_FP32",
                  f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }" + comma]  # fmt: skip
    lines += ["]", "dynamic_batching {", f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
              "  max_queue_delay_microseconds: 2000", "}",
              "instance_group [", "  {", f"    count: {int(instances)}", f"    kind: {device or KINDS[kind]['device']}",
              "  }", "]"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_triton_model(
    repo: str | Path,
    kind: str,
    artifact: str | Path,
    metadata: dict[str, Any],
    name: str | None = None,
    max_batch_size: int = 8,
    instances: int = 1,
) -> Path:
    """Copy one artifact into REPO/<name>/1/ with its config.pbtxt; returns the model folder.

    `artifact`: the .onnx file, the IR's .xml (its .bin is taken from beside it) or the engine file."""
    artifact = Path(artifact)
    name = name or f"mtlkd_{kind}"
    folder = Path(repo) / name
    version = folder / "1"
    if version.exists():
        shutil.rmtree(version)
    version.mkdir(parents=True)
    sources = [artifact, artifact.with_suffix(".bin")] if kind == "openvino" else [artifact]
    for source, target in zip(sources, KINDS[kind]["files"], strict=True):
        if not source.is_file():
            raise FileNotFoundError(f"{source}: missing, cannot add it to the Triton repository")
        shutil.copyfile(source, version / target)
    (folder / "config.pbtxt").write_text(config_text(name, kind, metadata, max_batch_size, instances))
    return folder


def write_triton_readme(repo: str | Path, models: dict[str, str], metadata: dict[str, Any]) -> Path:
    """REPO/README.md: the server command and a Python HTTP client call. `models`: name -> kind."""
    repo = Path(repo)
    height, width = (int(v) for v in metadata["input_size"])
    tasks = list(metadata["tasks"])
    first = next(iter(models))
    rows = "\n".join(f"| `{n}` | {k} | `{'`, `'.join(KINDS[k]['files'])}` |" for n, k in models.items())
    outputs = "\n".join(f"- `{t}`: {' x '.join(str(d) for d in ['N', *dims])} float32, {get_task(t).title.lower()} "
                        f"({get_task(t).output})" for t, dims in output_dims(metadata).items())  # fmt: skip
    gpu = " --gpus=all" if "tensorrt" in models.values() else ""
    text = f"""# Triton model repository (written by mtl-export)

| model | backend | files in `<model>/1/` |
| --- | --- | --- |
{rows}

Input `image`: N x 3 x {height} x {width} float32, RGB in [0, 1]; the mean/std normalisation is inside the
network. Outputs:
{outputs}

## Start the server

```bash
docker run --rm{gpu} -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
# or, where tritonserver is installed:
tritonserver --model-repository={repo.resolve()}
```

A TensorRT plan only runs on the GPU model and TensorRT version it was built with: use the Triton release
whose TensorRT matches the one in `model.engine.json`.

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
    path = repo / "README.md"
    repo.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_triton_repo(repo: str | Path, artifacts: dict[str, str | Path], metadata: dict[str, Any],
                      max_batch_size: int = 8, prefix: str = "mtlkd") -> dict[str, Path]:  # fmt: skip
    """One Triton model per artifact (`kind -> path`, kinds: onnx, openvino, tensorrt) plus the README;
    returns model name -> model folder."""
    folders = {}
    for kind, artifact in artifacts.items():
        name = f"{prefix}_{kind}"
        folders[name] = write_triton_model(repo, kind, artifact, metadata, name, max_batch_size)
    write_triton_readme(repo, {name: kind for name, kind in zip(folders, artifacts, strict=True)}, metadata)
    return folders
