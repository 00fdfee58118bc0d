"""A small KServe v2 HTTP client (Triton's binary tensor extension) on the standard library alone.

What the load test sends: one keep-alive connection per client thread, the request as a JSON header plus
the raw float32 bytes (`Inference-Header-Content-Length`), the outputs back the same way. It can also send
what a correct client never would (a wrong shape or dtype, a batch above the maximum, half a request),
which is what the load test needs to check that the server refuses them and goes on. For applications,
Triton's own `tritonclient.http` / `tritonclient.grpc` speak the same protocol (the repository README).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Sequence

import numpy as np

from mtlkd.errors import InferError

DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT32": np.int32, "UINT8": np.uint8}


class HttpClient:
    """One connection to a Triton server's HTTP endpoint (`host:port`), reused for every request."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        self.host, _, port = url.rpartition(":")
        self.port, self.timeout_s = int(port), timeout_s
        self.connection: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host.strip("[]"), self.port, timeout=self.timeout_s)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def infer(self, model: str, image: np.ndarray, outputs: Sequence[str], input_name: str = "image",
              datatype: str = "FP32") -> dict[str, np.ndarray]:  # fmt: skip
        """POST /v2/models/<model>/infer with `image` as binary data; {output: array}, or InferError."""
        body, header_length = request_body(image, outputs, input_name, datatype)
        headers = {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}
        try:
            connection = self._connection()
            connection.request("POST", f"/v2/models/{model}/infer", body, headers)
            answer = connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a broken connection is not reused
            raise
        if answer.status != 200:
            raise InferError(answer.status, _error_text(data))
        return parse_response(data, answer.getheader("Inference-Header-Content-Length"))


def request_body(image: np.ndarray, outputs: Sequence[str], input_name: str = "image",
                 datatype: str = "FP32") -> tuple[bytes, int]:  # fmt: skip
    """(body, JSON header length) of a binary-data inference request."""
    data = np.ascontiguousarray(image, dtype=DTYPES[datatype]).tobytes()
    header = {"inputs": [{"name": input_name, "shape": list(image.shape), "datatype": datatype,
                          "parameters": {"binary_data_size": len(data)}}],
              "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]}  # fmt: skip
    text = json.dumps(header).encode()
    return text + data, len(text)


def parse_response(data: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """{output: array} from a response with binary outputs (or JSON `data` lists)."""
    length = int(header_length) if header_length else len(data)
    header, offset, results = json.loads(data[:length]), length, {}
    for output in header["outputs"]:
        dtype = DTYPES[output["datatype"]]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            results[output["name"]] = np.asarray(output["data"], dtype).reshape(output["shape"])
            continue
        results[output["name"]] = np.frombuffer(data[offset : offset + size], dtype).reshape(output["shape"])
        offset += size
    return results


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", data[:200]))
    except ValueError:
        return data[:200].decode(errors="replace")


def send_half_and_close(url: str, model: str, image: np.ndarray, outputs: Sequence[str]) -> None:
    """A client that dies mid-request: the header and half the tensor bytes, then the connection closed."""
    host, _, port = url.rpartition(":")
    body, header_length = request_body(image, outputs)
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {header_length}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as connection:
        connection.sendall(head + body[: header_length + (len(body) - header_length) // 2])
