"""Where the Triton server comes from: the `nvidia-pytriton` wheel in a Python environment of its own.

The wheel bundles a real `tritonserver` (2.51) with its Python backend, which runs on a CPU-only machine.
It pins numpy<2 while mtlkd's main environment has numpy 2, so it lives in a second environment:
`make serve-env` creates `.venv-serve` beside the project (`pip install -e '.[cpu,serve]'`: the runtime,
ONNX Runtime, OpenVINO and the wheel; no torch). `MTLKD_SERVE_ENV` (or `ServeOptions.serve_env`) names
another one; an environment that has the wheel itself (a `pip install 'mtlkd[cpu,serve]'`) is used as it is.

Only the server runs in that environment; mtl-serve, its clients and the tests run wherever mtlkd is. Two
things the bundled server needs that its wheel does not set up (pytriton itself does them the same way):
- the Python backend's stub is built for one Python minor version per folder and links `libpython3.X.so`
  by name, so it must find the same libpython as the environment's interpreter: `LD_LIBRARY_PATH` starts at
  that interpreter's LIBDIR (else the system's libpython of the same name may be loaded);
- the stub runs `model.py` with the first `python` on `PATH`'s packages, so `PATH` starts at the
  environment's `bin`.
The backends folder (the Python backend with the stub of the right version) is assembled from symlinks in
the server's workspace, never inside the installed wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mtlkd
from mtlkd.errors import BackendUnavailable

SERVE_ENV_VARIABLE = "MTLKD_SERVE_ENV"
DEFAULT_SERVE_ENV = ".venv-serve"  # what `make serve-env` creates, beside pyproject.toml
SETUP_HINT = (f"run `make serve-env` in the mtlkd checkout (creates {DEFAULT_SERVE_ENV}), or set {SERVE_ENV_VARIABLE} "
              "to a Python environment with `pip install 'mtlkd[cpu,serve]'`")
_PROBE = ("import json, sys, sysconfig, importlib.util as u; s = u.find_spec('pytriton'); "
          "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var('LIBDIR'), "
          "'pytriton': s and list(s.submodule_search_locations)[0], 'mtlkd': bool(u.find_spec('mtlkd'))}))")


@dataclass(frozen=True)
class ServeEnvironment:
    """A Python environment with the pytriton wheel: its interpreter and the server files inside it."""

    prefix: Path  # the environment's folder (its bin/python runs the stub's model.py)
    python_version: str  # "3.11": which of the wheel's stubs fits
    libdir: Path  # the interpreter's libpython folder
    distribution: Path  # pytriton/tritonserver: bin/tritonserver, backends/python, python_backend_stubs

    @property
    def tritonserver(self) -> Path:
        return self.distribution / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.distribution / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    def backends_folder(self, workspace: Path) -> Path:
        """workspace/backends/python: the wheel's Python backend with the stub of this interpreter's version."""
        python = workspace / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        source = self.distribution / "backends" / "python"
        links = {entry.name: entry for entry in source.iterdir() if entry.is_file()}
        links["triton_python_backend_stub"] = self.stub
        for name, target in links.items():
            (python / name).symlink_to(target)
        return python.parent

    def process_environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The server's environment: libpython and `python` of this environment found first."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.libdir), env.get("LD_LIBRARY_PATH")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(self.prefix / "bin"), env.get("PATH")) if p)
        env.pop("PYTHONHOME", None)
        return env


def candidates(explicit: str | Path | None = None) -> list[Path]:
    """Where to look, first match wins: the option, $MTLKD_SERVE_ENV, the checkout's .venv-serve, this env."""
    if explicit is not None:
        return [Path(explicit)]
    if os.environ.get(SERVE_ENV_VARIABLE):
        return [Path(os.environ[SERVE_ENV_VARIABLE])]
    checkout = Path(mtlkd.__file__).resolve().parents[1]
    found = [checkout / DEFAULT_SERVE_ENV] if (checkout / "pyproject.toml").is_file() else []
    return [*found, Path(sys.prefix)]


def find_serve_environment(explicit: str | Path | None = None) -> ServeEnvironment:
    """The first candidate environment that has the pytriton wheel (with a stub for its Python) and mtlkd."""
    tried = []
    for prefix in candidates(explicit):
        python = prefix / "bin" / "python"
        if not python.exists():
            tried.append(f"{prefix}: no bin/python")
            continue
        done = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            tried.append(f"{prefix}: its python fails ({done.stderr.strip().splitlines()[-1:]})")
            continue
        probe = json.loads(done.stdout)
        if not probe["pytriton"] or not probe["mtlkd"]:
            tried.append(f"{prefix}: {'no nvidia-pytriton' if not probe['pytriton'] else 'no mtlkd'}")
            continue
        env = ServeEnvironment(prefix.absolute(), probe["version"], Path(probe["libdir"]),
                               Path(probe["pytriton"]) / "tritonserver")
        if not env.tritonserver.is_file() or not env.stub.is_file():
            tried.append(f"{prefix}: the wheel has no tritonserver or no stub for Python {probe['version']}")
            continue
        return env
    raise BackendUnavailable(f"no Triton server found ({'; '.join(tried)}); {SETUP_HINT}")
