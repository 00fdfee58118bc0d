"""`ServeOptions`: what `mtl-serve` and `serve_model` take, checked before a server starts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mtlkd.errors import ConfigError

FLAGS = {"host": "--host", "port": "--port", "grpc_port": "--grpc-port", "metrics_port": "--metrics-port",
         "max_batch_size": "--max-batch-size", "max_queue_delay_us": "--max-queue-delay-us",
         "instances": "--instances", "name": "--name", "serve_env": "--serve-env",
         "startup_timeout_s": "--startup-timeout"}  # fmt: skip
MAX_QUEUE_DELAY_US = 10_000_000  # 10 s: beyond that a request waits longer than any client would


@dataclass
class ServeOptions:
    """Triton's defaults for the ports (HTTP 8000, gRPC 8001, metrics 8002); loopback unless told otherwise."""

    host: str = "127.0.0.1"  # every endpoint listens here; 0.0.0.0 opens them to the network
    port: int = 8000  # HTTP/REST (KServe v2)
    grpc_port: int = 8001  # gRPC (KServe v2)
    metrics_port: int = 8002  # Prometheus metrics, /metrics
    max_batch_size: int = 8  # dynamic batching: most images in one network call (requests are gathered)
    max_queue_delay_us: int = 2000  # how long the scheduler waits to fill a batch
    instances: int = 1  # model instances (stub processes), each with its own Predictor
    name: str | None = None  # the model's name (default: the exported repository's, mtlkd_onnx, mtlkd_openvino...)
    serve_env: Path | None = None  # the environment with the server (default: environment.candidates)
    startup_timeout_s: float = 120.0  # until every model is loaded
    log_file: Path | None = None  # the server's own log (default: in its workspace, removed when it stops)

    def check(self) -> ServeOptions:
        """One ConfigError naming the flag for the first option that cannot work."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ConfigError(f"{FLAGS['host']} {self.host!r}: give an IP address (127.0.0.1, 0.0.0.0, ::1)") from None
        ports = {"port": self.port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port}
        for field, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise ConfigError(f"{FLAGS[field]} {port}: a TCP port is 1 to 65535")
        if len(set(ports.values())) < len(ports):
            given = ", ".join(str(p) for p in ports.values())
            raise ConfigError(f"--port, --grpc-port and --metrics-port must differ (got {given})")
        for field, low, high in (("max_batch_size", 1, 1024), ("max_queue_delay_us", 0, MAX_QUEUE_DELAY_US),
                                 ("instances", 1, 64)):  # fmt: skip
            value = getattr(self, field)
            if not low <= int(value) <= high:
                raise ConfigError(f"{FLAGS[field]} {value}: must be {low} to {high}")
        if self.name is not None and not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{FLAGS['name']} {self.name!r}: use letters, digits, '-' and '_' only")
        if self.startup_timeout_s <= 0:
            raise ConfigError(f"{FLAGS['startup_timeout_s']} {self.startup_timeout_s}: must be more than 0 seconds")
        return self
