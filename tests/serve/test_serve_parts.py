"""The parts of mtl-serve that need no server: options, finding the environment, the Python-backend model's
imports and config, the HTTP client's wire format."""

from __future__ import annotations

import ast
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlkd.errors import BackendUnavailable, ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("changes", "flag"), [
    ({"host": "localhost:80"}, "--host"), ({"port": 0}, "--port"), ({"grpc_port": 8000}, "must differ"),
    ({"max_batch_size": 0}, "--max-batch-size"), ({"max_queue_delay_us": -1}, "--max-queue-delay-us"),
    ({"instances": 0}, "--instances"), ({"name": "a/b"}, "--name"), ({"startup_timeout_s": 0}, "--startup-timeout"),
])  # fmt: skip
def test_bad_options_name_their_flag(changes, flag):
    from mtlkd.serve import ServeOptions

    with pytest.raises(ConfigError, match=flag):
        ServeOptions(**changes).check()


def test_a_port_in_use_is_refused_before_the_server_starts():
    from mtlkd.serve.server import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--grpc-port {port}: 127.0.0.1:{port} is not free"):
            check_port_free("127.0.0.1", port, "--grpc-port")


def test_no_serve_environment_says_how_to_make_one(tmp_path):
    from mtlkd.serve.environment import find_serve_environment

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)  # a Python without the wheel
    with pytest.raises(BackendUnavailable, match="no nvidia-pytriton.*make serve-env"):
        find_serve_environment(tmp_path)
    with pytest.raises(BackendUnavailable, match="no bin/python"):
        find_serve_environment(tmp_path / "missing")


def test_the_python_backend_model_imports_only_the_runtime_numpy_and_tritons_utils():
    """It runs in the server's environment (no torch, numpy<2): mtlkd.runtime, numpy, Triton's module and
    the standard library, nothing else."""
    tree = ast.parse((ROOT / "mtlkd" / "runtime" / "triton_model.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed = {"numpy", "triton_python_backend_utils", "mtlkd.runtime"}
    outside = {n for n in names if n not in allowed and n.split(".")[0] not in sys.stdlib_module_names}
    assert not outside and {"numpy", "triton_python_backend_utils", "mtlkd.runtime"} <= names


def test_python_backend_config_parses_with_tritons_schema_and_names_the_file():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from mtlkd.export.triton import config_text

    meta = {"input_size": [96, 128], "tasks": ["seg", "depth"], "num_classes": 13, "output_stride": 8}
    for kind, (file, backend) in {"onnx": ("model.onnx", "onnxruntime"), "openvino": ("model.xml", "openvino")}.items():
        text = config_text("m", kind, meta, max_batch_size=16, backend="python", queue_delay_us=500)
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
        assert config.backend == "python" and not config.platform and config.max_batch_size == 16
        assert {k: v.string_value for k, v in config.parameters.items()} == {"model_file": file,
                                                                             "runtime_backend": backend}
        assert [list(o.dims) for o in config.output] == [[13, 12, 16], [1, 12, 16]]
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
    with pytest.raises(ConfigError, match="unknown Triton backend"):
        config_text("m", "onnx", meta, backend="pytorch")


def test_the_client_request_and_response_round_trip_the_binary_protocol():
    from mtlkd.serve.client import parse_response, request_body

    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    body, length = request_body(image, ["seg"])
    header = json.loads(body[:length])
    assert header["inputs"][0]["shape"] == [2, 3, 4, 5] and header["inputs"][0]["datatype"] == "FP32"
    assert np.array_equal(np.frombuffer(body[length:], np.float32).reshape(image.shape), image)
    out = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 6)
    meta = json.dumps({"outputs": [{"name": "seg", "datatype": "FP32", "shape": [1, 6],
                                    "parameters": {"binary_data_size": out.nbytes}}]}).encode()
    assert np.array_equal(parse_response(meta + out.tobytes(), str(len(meta)))["seg"], out)
