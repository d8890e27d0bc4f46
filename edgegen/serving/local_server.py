"""A real Triton Inference Server on this machine, for trying a repository before deploying it
and for edgegen's own tests and load benchmark: the `tritonserver` binary, Python backend and
backend stubs that the nvidia-pytriton wheel (PyPI) carries, run on CPU.

The server runs from its own virtual environment (docs/serving.md): the wheel pins numpy<2,
and with numpy 2 its Python backend loaded models but answered with empty outputs. Make it with

    python3 -m venv .venv-triton && .venv-triton/bin/pip install nvidia-pytriton==0.7.0 "numpy<2" -e ".[text]"

That wheel's server has only the Python backend: Triton's ONNX Runtime and TensorRT backends
come with Triton's own releases (its containers, its Jetson tarball).

Runtime code: the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import BackendError, ConfigError

DEFAULT_ENV = Path(__file__).resolve().parents[2] / ".venv-triton"   # a checkout's server environment
ENV_VARIABLE = "EDGEGEN_TRITON_ENV"
READY_SECONDS = 120


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen
    http_url: str          # host:port, as tritonclient takes it
    grpc_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def server_env(env: str | os.PathLike | None = None) -> Path:
    """The server's virtual environment: `env`, else $EDGEGEN_TRITON_ENV, else the checkout's .venv-triton."""
    return Path(env or os.environ.get(ENV_VARIABLE) or DEFAULT_ENV)


def pytriton_root(env: str | os.PathLike | None = None) -> Path:
    """The site-packages folder that holds pytriton/tritonserver, or ConfigError saying how to make it."""
    root = server_env(env)
    found = sorted(root.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    # an installed edgegen has no checkout's .venv-triton beside it: the path would name its site-packages
    said = (f"{str(root)!r}" if root != DEFAULT_ENV or (DEFAULT_ENV.parent / "pyproject.toml").is_file() else
            f"none given (env=, or ${ENV_VARIABLE}; a checkout's .venv-triton is taken without either)")
    if not found:
        raise ConfigError(f"Triton server environment {said}: expected nvidia-pytriton's tritonserver in it, found "
                          f"none (make one: python3 -m venv .venv-triton && .venv-triton/bin/pip install nvidia-pytriton==0.7.0 "
                          f"\"numpy<2\" EDGEGEN, where EDGEGEN is edgegen's wheel, or \".[text]\" in a checkout; then "
                          f"pass env= or set {ENV_VARIABLE} to it)")
    return found[-1].parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backends(site: Path, python_version: str, folder: Path) -> Path:
    """A backend directory: the wheel's Python backend with the stub for the server's Python version."""
    stub = site / "pytriton" / "tritonserver" / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ConfigError(f"Triton Python backend stub for Python {python_version}: expected {str(stub)!r}, found none")
    python = folder / "python"
    shutil.copytree(site / "pytriton" / "tritonserver" / "backends" / "python", python)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return folder


@contextlib.contextmanager
def local_server(repository: str | os.PathLike, env: str | os.PathLike | None = None,
                 ready_seconds: float = READY_SECONDS) -> Iterator[Server]:
    """Start tritonserver on free loopback ports with `repository`, wait until every model is
    ready, yield it, and always stop it (its whole process group) on the way out."""
    _refuse_killed_writes(Path(repository))
    site = pytriton_root(env)
    python_version = site.parent.name.removeprefix("python")
    with tempfile.TemporaryDirectory(prefix="edgegen-triton-") as scratch:
        scratch = Path(scratch)
        backends = _backends(site, python_version, scratch / "backends")
        http, grpc, metrics = _free_port(), _free_port(), _free_port()
        environment = dict(os.environ)
        # the stub's Python finds its packages through the environment's bin on PATH (as pytriton does)
        environment["PATH"] = f"{server_env(env) / 'bin'}:{environment.get('PATH', '')}"
        environment["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(site / "nvidia_pytriton.libs"),
                                                                environment.get("LD_LIBRARY_PATH")]))
        log = scratch / "tritonserver.log"
        command = [str(site / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
                   f"--model-repository={Path(repository).resolve()}", f"--backend-directory={backends}",
                   f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
                   "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--allow-metrics=false",
                   "--exit-timeout-secs=5"]
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment,
                                       start_new_session=True)
        server = Server(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log)
        try:
            _wait_ready(server, ready_seconds)
            yield server
        finally:
            _stop(process)


def _refuse_killed_writes(repository: Path) -> None:
    """A folder a killed edgegen triton left (.NAME.XXXXXXXX.partial) is one Triton would try to
    load as a model and fail to start on, blaming a backend: said as what it is, before the start."""
    from .triton import killed_write

    with contextlib.suppress(OSError):   # a missing repository: tritonserver says so
        left = sorted(e.name for e in repository.iterdir() if e.is_dir() and killed_write(e))
        if left:
            raise ConfigError(f"model repository {str(repository)!r}: expected model folders only, found {left[0]!r}"
                              f"{f' and {len(left) - 1} more' if len(left) > 1 else ''}, left by a killed edgegen triton "
                              "(Triton would load it as a model and fail): run edgegen triton with this --out again, "
                              "which removes it, or remove it yourself")


def _wait_ready(server: Server, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BackendError(f"tritonserver: expected it to start, found it exited with status {server.process.returncode}:"
                               f"\n{_tail(server.log)}")
        try:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise BackendError(f"tritonserver: expected it ready within {seconds:g} s, found it was not:\n{_tail(server.log)}")


# Triton's log marks an error line "E" and the date (E1204 12:00:00.000000 ...); the lines of its
# shutdown follow a failed load, so the log's tail alone hides the cause
TRITON_ERROR_LINE = re.compile(r"^E\d{4} ")
TRITON_LOG_LINE = re.compile(r"^[IWE]\d{4} ")
# a line of another process's (a Python stub's own stderr) that says it failed
FAILURE_LINE = re.compile(r"\b(error|Traceback|cannot|No such file)\b", re.IGNORECASE)
# an error line every start on a machine without a GPU prints, whatever follows
HARMLESS_ERROR = re.compile(r"CudaDriverHelper has not been initialized")
MISSING_BACKEND = re.compile(r"unable to find (backend library for backend '(onnxruntime|tensorrt)'|'libtriton_)")


def _tail(log: Path, lines: int = 30) -> str:
    """The server's error lines (else the log's last lines), and where a model wants a backend this
    server lacks, what to write instead."""
    if not log.exists():
        return "(no log)"
    text = log.read_text(errors="replace").splitlines()
    errors, within = [], False
    for line in text:   # an error line and the lines that continue it (a Python stub's traceback) ...
        if TRITON_LOG_LINE.match(line):
            within = bool(TRITON_ERROR_LINE.match(line)) and not HARMLESS_ERROR.search(line)
        elif not within:   # ... and another process's own failure (a stub that cannot start), not its warnings
            within = bool(FAILURE_LINE.search(line))
        if within:
            errors.append(line)
    shown = "\n".join((errors or text)[-lines:])
    if any(MISSING_BACKEND.search(line) for line in errors):
        shown += ("\n(this server has Triton's Python backend only: write the repository with edgegen triton "
                  "--graph-backend python)")
    return shown


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it and its Python stubs, which may outlive a server
    that crashed), SIGKILL to what lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
