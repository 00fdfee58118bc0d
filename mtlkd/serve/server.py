"""A real Triton Inference Server over an mtlkd model: start it, wait for its models, stop it cleanly.

    with TritonServer(repository, ServeOptions(port=8000)) as server:   # started, models loaded
        server.models       # {name: ModelState(state="READY" | "UNAVAILABLE", reason=...)}
        ...                 # clients on server.http_url / server.grpc_url (KServe v2)
    # stopped: SIGTERM (Triton unloads its models and ends its stubs), then its process group is gone

`prepare_repository` turns any model file the runtime reads into a one-model repository whose model runs
the Predictor in Triton's Python backend (the layout of `mtl-export --triton REPO --triton-backend python`);
a folder is taken as a repository already written. `serve_model` is `mtl-serve`: prepare, start, wait for
Ctrl-C or SIGTERM, stop.

The server runs in its own process group (a new session), so a Ctrl-C in the terminal reaches mtl-serve
only, which then stops the server in order; whatever is left of the group afterwards is killed. It starts
with `--exit-on-error=false`, so that a model that fails to load is reported with Triton's own reason
(`models`) instead of ending the server before anyone can ask. On Linux the server also gets SIGTERM when
the thread that started it ends (prctl's PR_SET_PDEATHSIG), so a SIGKILLed mtl-serve does not leave a
server behind holding its ports: it stops as on Ctrl-C, within `--exit-timeout-secs`.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtlkd.errors import BackendError, ConfigError
from mtlkd.serve.environment import ServeEnvironment, find_serve_environment
from mtlkd.serve.options import FLAGS, ServeOptions

LOADING = ("LOADING", "UNLOADING")  # states that change by themselves
REJECTED = "REJECTED"  # a config Triton refused before loading: listed without a state, its reason only in the log
EXIT_TIMEOUT_S = 20  # Triton's own wait for in-flight requests when told to stop (--exit-timeout-secs)
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ModelState:
    """One model of the repository as the server reports it (POST /v2/repository/index)."""

    name: str
    state: str  # READY, UNAVAILABLE (loading failed), LOADING..., or REJECTED (its config refused)
    reason: str = ""


class TritonServer:
    """The bundled `tritonserver` over one repository, in a workspace of its own (removed when it stops)."""

    def __init__(self, repository: str | Path, options: ServeOptions | None = None,
                 environment: ServeEnvironment | None = None, workspace: str | Path | None = None):  # fmt: skip
        self.repository = Path(repository)
        self.options = (options or ServeOptions()).check()
        self.environment = environment or find_serve_environment(self.options.serve_env)
        self.workspace = Path(workspace) if workspace else None
        self.own_workspace = workspace is None
        self.process: subprocess.Popen | None = None
        self.models: dict[str, ModelState] = {}

    # ------------------------------------------------------------------------------------ endpoints
    @property
    def http_url(self) -> str:
        return f"{_url_host(self.options.host)}:{self.options.port}"

    @property
    def grpc_url(self) -> str:
        return f"{_url_host(self.options.host)}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.options.host)}:{self.options.metrics_port}/metrics"

    @property
    def log_file(self) -> Path:
        return self.options.log_file or (self.workspace or Path(".")) / "tritonserver.log"

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float | None = None, cancel: threading.Event | None = None) -> TritonServer:
        """Start the server and wait until every model has loaded or failed (`models` says which), or until
        `cancel` is set (a Ctrl-C while the models load): then `models` holds what is known so far. The
        server lives as long as the calling thread (see the module's docstring): start it from a thread
        that outlives it."""
        options = self.options
        for field in ("port", "grpc_port", "metrics_port"):
            check_port_free(options.host, getattr(options, field), FLAGS[field])
        if self.workspace is None:
            self.workspace = Path(tempfile.mkdtemp(prefix="mtl-serve-"))
        backends = self.environment.backends_folder(self.workspace)
        command = [str(self.environment.tritonserver), f"--model-repository={self.repository.resolve()}",
                   f"--backend-directory={backends}", f"--http-address={options.host}", f"--http-port={options.port}",
                   f"--grpc-address={options.host}", f"--grpc-port={options.grpc_port}",
                   f"--metrics-address={options.host}", f"--metrics-port={options.metrics_port}",
                   "--allow-metrics=true", "--exit-on-error=false", "--strict-readiness=true",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_S}"]  # fmt: skip
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment.process_environment(), cwd=self.workspace,
                                            start_new_session=True, preexec_fn=_stop_with_parent())  # fmt: skip
        try:
            self.models = self._wait_loaded(timeout_s or options.startup_timeout_s, cancel)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_loaded(self, timeout_s: float, cancel: threading.Event | None) -> dict[str, ModelState]:
        deadline = time.monotonic() + timeout_s
        while True:
            if cancel is not None and cancel.is_set():
                return self.model_states() or {}
            if self.process.poll() is not None:
                raise BackendError(f"the Triton server exited with status {self.process.returncode} while starting; "
                                   f"its log ends:\n{self.log_tail()}")
            models = self.model_states() if self._get("/v2/health/live") == 200 else None
            if models is not None and all(m.state not in LOADING for m in models.values()):
                return models
            if time.monotonic() > deadline:
                raise BackendError(f"the Triton server did not load its models in {timeout_s:g} s "
                                   f"({FLAGS['startup_timeout_s']}); its log ends:\n{self.log_tail()}")
            time.sleep(0.2)

    def model_states(self) -> dict[str, ModelState] | None:
        """Every model of the repository with its state and Triton's reason; None if the server does not answer."""
        try:
            request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=5) as answer:
                index = json.loads(answer.read())
        except (OSError, ValueError):
            return None
        states = {m["name"]: ModelState(m["name"], m.get("state", ""), m.get("reason", "")) for m in index}
        for name, model in states.items():
            if not model.state:
                pattern = rf"Poll failed for model directory '{re.escape(name)}': (.*?)\"?$"
                found = re.findall(pattern, self.log_text(), re.M)
                states[name] = ModelState(name, REJECTED, found[-1] if found else "its config was refused (server log)")
        return states

    def ready(self) -> bool:
        """GET /v2/health/ready: the server is up and every model is ready (strict readiness)."""
        return self._get("/v2/health/ready") == 200

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 10) -> int | None:
        """SIGTERM to the server (it finishes in-flight requests and ends its stubs), SIGKILL to what is left
        of its process group after `timeout_s`; removes the workspace it made. Returns the exit status."""
        process, code = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            _kill_group(process.pid)
            if code is None:
                code = process.wait()
        if self.own_workspace and self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
        return code

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(line[:300] for line in self.log_text().splitlines()[-lines:]) or "(no log)"

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send the child SIGTERM when the calling thread ends (Linux), also
    by SIGKILL; None elsewhere. After fork it makes one foreign call (libc's prctl, its arguments built before),
    and ends the child at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    args = [ctypes.c_int(PR_SET_PDEATHSIG)] + [ctypes.c_ulong(v) for v in (int(signal.SIGTERM), 0, 0, 0)]

    def set_death_signal() -> None:
        prctl(*args)
        if os.getppid() != parent:
            os._exit(1)

    return set_death_signal


def _kill_group(pgid: int) -> None:
    """End every process left in the server's group (its stubs), whatever state they are in."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return  # the group is gone already


def _url_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host`."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def check_port_free(host: str, port: int, flag: str) -> None:
    """A ConfigError naming the flag when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise ConfigError(f"{flag} {port}: {host}:{port} is not free ({error.strerror}); choose another port"
                              ) from None


def prepare_repository(model: str | Path, options: ServeOptions, folder: str | Path,
                       progress: Callable[[str], None] | None = None) -> tuple[Path, list[str]]:  # fmt: skip
    """(repository, model names) for `model`: a folder with `<name>/config.pbtxt` is that repository; a model
    file becomes `folder/<name>/` with a Python-backend model running the Predictor on a copy of it (a
    .safetensors checkpoint is exported to ONNX in `folder` first, which needs the train extra)."""
    from mtlkd.export.triton import kind_of, write_triton_model

    model = Path(model)
    if model.is_dir():
        names = sorted(p.parent.name for p in model.glob("*/config.pbtxt"))
        if not names:
            raise ConfigError(f"{model}: a folder but not a Triton repository (no <model>/config.pbtxt); give a "
                              "model file or the REPO of mtl-export --triton REPO --triton-backend python")
        return model, names
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such model file or repository")
    if model.suffix.lower() == ".safetensors":
        model = _export_onnx(model, Path(folder) / "export", progress)
    kind = kind_of(model)
    if kind is None:
        from mtlkd.runtime.backends import suffixes

        served = [".safetensors", *(s for s in suffixes() if kind_of(f"model{s}"))]
        raise ConfigError(f"{model}: mtl-serve serves {', '.join(served)} files, or a Triton repository folder")
    metadata = _metadata(model, kind)
    name = options.name or f"mtlkd_{kind}"
    write_triton_model(Path(folder) / "models", kind, model, metadata, name, options.max_batch_size,
                       options.instances, backend="python", queue_delay_us=options.max_queue_delay_us)  # fmt: skip
    return Path(folder) / "models", [name]


def _metadata(model: Path, kind: str) -> dict[str, Any]:
    """The model's metadata, read as the runtime reads it (the file opened once: a bad one fails here)."""
    from mtlkd.export.triton import runtime_backend
    from mtlkd.runtime.backends import backend_spec

    if "cpu" not in backend_spec(runtime_backend(kind)).devices:  # a TensorRT engine's sidecar, without a GPU
        from mtlkd.metadata import read_metadata

        return read_metadata(model, error=BackendError)
    from mtlkd.runtime import Predictor

    return Predictor.load(model, device="cpu", measure=False).metadata


def _export_onnx(checkpoint: Path, out: Path, progress: Callable[[str], None] | None) -> Path:
    from mtlkd.export.options import artifact_key
    from mtlkd.export.pipeline import export_model

    result = export_model(checkpoint, out, progress=progress, formats=["onnx"], report=False)
    return next(a.path for a in result.artifacts if a.key == artifact_key("onnx"))


@dataclass
class ServeResult:
    """How a `serve_model` run ended."""

    models: dict[str, ModelState]
    reason: str  # "SIGINT", "SIGTERM", or "server exited (status N)"
    exit_status: int | None


def serve_model(model: str | Path, options: ServeOptions | None = None,
                progress: Callable[[str], None] | None = None,
                on_ready: Callable[[TritonServer], None] | None = None) -> ServeResult:  # fmt: skip
    """`mtl-serve`: serve `model` until Ctrl-C or SIGTERM (or the server's own end), then stop it cleanly.
    Raises BackendError, after stopping the server, when a model does not load (Triton's reason in it)."""
    options = (options or ServeOptions()).check()
    say = progress or (lambda _line: None)
    environment = find_serve_environment(options.serve_env)
    workspace = Path(tempfile.mkdtemp(prefix="mtl-serve-"))
    stop = threading.Event()
    received: list[str] = []

    def on_signal(number: int, _frame: Any) -> None:
        received.append(signal.Signals(number).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = None
    try:
        repository, _names = prepare_repository(model, options, workspace, say)
        say(f"starting Triton (from {environment.prefix}) on {repository} ...")
        server = TritonServer(repository, options, environment, workspace)
        server.start(cancel=stop)
        broken = {n: m for n, m in server.models.items() if m.state != "READY"}
        if broken and not stop.is_set():
            raise BackendError("; ".join(f"model {n} is {m.state}: {m.reason}" for n, m in broken.items()))
        if on_ready and not stop.is_set():
            on_ready(server)
        while not stop.is_set() and server.running():
            stop.wait(0.5)
        reason = received[0] if received else f"server exited (status {server.process.returncode})"
    finally:
        status = server.stop() if server is not None else None
        for number, handler in previous.items():
            signal.signal(number, handler)
        shutil.rmtree(workspace, ignore_errors=True)
    return ServeResult(server.models, reason, status)
