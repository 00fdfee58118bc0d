"""The Python-backend model of a Triton repository: Triton's request loop around mtlkd's Predictor.

`mtl-export --triton REPO --triton-backend python` and `mtl-serve` copy this file to
`REPO/<name>/1/model.py`, beside the exported model file. Triton's Python backend runs it in its stub
process, with the Python environment that has mtlkd installed (the stub imports `triton_python_backend_utils`,
which only exists there, so it is imported inside the methods and this module stays importable anywhere).

The model's config.pbtxt names the file and the runtime backend in its `parameters`:
`model_file` (inside the version folder) and `runtime_backend` (onnxruntime, openvino, tensorrt, or auto:
the runtime's first preference for the file, unmeasured, so that loading never writes a cache). Inputs and
outputs are those of the native-backend repository: `image` N x 3 x H x W float32 in, one N x C x h x w
float32 output per task, so a client cannot tell the two apart.

Dynamic batching hands `execute` every request the scheduler gathered: they run as one batch through the
network (the point of batching on a CPU) and the rows are split back per request. A request that fails
gets its own error; the others are still answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mtlkd.runtime import Predictor


class TritonPythonModel:
    """What Triton's Python backend calls: `initialize` once per instance, `execute` per gathered batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        backend = parameters.get("runtime_backend", "auto")
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        options: dict[str, Any] = {"measure": False} if backend == "auto" else {}
        self.predictor = Predictor.load(folder / parameters["model_file"], backend=backend, device=device, **options)
        self.input_name = config["input"][0]["name"]
        self.tasks = [output["name"] for output in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        images = [np.asarray(pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy(), np.float32)
                  for request in requests]
        answers = []
        try:
            outputs = self.predictor.run_raw(np.concatenate(images), self.tasks)
        except Exception:  # noqa: BLE001  (run alone, each request gets its own answer or error)
            return [self._answer(pb_utils, image) for image in images]
        start = 0
        for image in images:
            rows = slice(start, start + image.shape[0])
            start = rows.stop
            answers.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(t, np.ascontiguousarray(outputs[t][rows])) for t in self.tasks]))
        return answers

    def _answer(self, pb_utils: Any, image: np.ndarray) -> Any:
        """One request run on its own, after its batch failed: its outputs, or the error it causes."""
        try:
            outputs = self.predictor.run_raw(image, self.tasks)
        except Exception as error:  # noqa: BLE001  (the request's own error goes back to its client)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(error).__name__}: {error}"))
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(t, outputs[t]) for t in self.tasks])

    def finalize(self) -> None:
        self.predictor = None
