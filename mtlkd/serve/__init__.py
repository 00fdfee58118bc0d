"""Serving through a real Triton Inference Server: `mtl-serve`, its server, clients and load test.

`serve_model(path, ServeOptions())` serves any model file the runtime reads (or a Triton repository
folder) on Triton's HTTP and gRPC endpoints (KServe v2), with dynamic batching; `TritonServer` is the
server itself, for tests and scripts. The server is the `tritonserver` bundled in the nvidia-pytriton
wheel, run from a second Python environment (see `mtlkd.serve.environment` for why and where).
Layer 4: it orchestrates the export (a checkpoint is exported first) and the runtime.
"""

from mtlkd.serve.options import ServeOptions
from mtlkd.serve.server import ModelState, ServeResult, TritonServer, prepare_repository, serve_model

__all__ = ["ModelState", "ServeOptions", "ServeResult", "TritonServer", "prepare_repository", "serve_model"]
