"""ONNX Runtime sessions: the CPU, CUDA and TensorRT execution providers.

Runtime code: never imports torch or onnx.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort

from ..errors import BackendError, InputError, PackageError, not_one_of
from ..package import MANIFEST_OR_GRAPH_CHANGED, TensorSpec, refuse_other_names
from .backends import ORT_BACKENDS
from ..cpus import MAX_THREADS_PER_CORE, default_threads, session_threads
from .session import Session, check_feeds

# ONNX Runtime's element type strings, mapped to the numpy names the manifest uses.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def session_options(threads: int | None, spin: bool = True) -> ort.SessionOptions:
    """spin=False: the intra-op threads sleep as soon as a run ends instead of spinning for
    the next one, for pipelines that alternate between graphs (each session has its own
    pool, and an idle pool that spins takes the cores from the one that is running)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise BackendError(f"threads: expected a positive number of intra-op threads, found {threads!r}")
        most = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
        if threads > most:
            raise BackendError(f"threads: expected at most {MAX_THREADS_PER_CORE} per logical core ({most} on this "
                               f"machine), found {threads}")
        options.intra_op_num_threads = threads
    # One graph runs at a time in a pipeline: inter-op parallelism only adds thread pools.
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


# x86 CPU flags of an int8 dot product that sums in 32 bits (VNNI, AMX). Without one, ONNX
# Runtime's int8 kernels (MLAS) multiply with VPMADDUBSW, whose pairwise sums saturate at int16:
# an int8 variant computes less exactly there than its QDQ nodes say.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU's feature flags in /proc/cpuinfo's text (x86's "flags" lines, ARM's "Features")."""
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


@functools.lru_cache(maxsize=None)
def int8_sums_saturate(cpuinfo: str | None = None, machine: str | None = None) -> str | None:
    """Why this CPU's ONNX Runtime int8 kernels saturate (an x86 CPU with AVX2 but without VNNI),
    or None where they do not (VNNI or AMX; no AVX2 or AVX-512, where MLAS's SSE2 kernel widens
    to 16 bits and sums in 32, though its SSE4.1 kernel is unchecked; ARM's dot products). Where
    the flags cannot be read (x86 macOS, Windows), taken as saturating, the cautious side: 7-bit
    weights lose little. `cpuinfo`/`machine`: /proc/cpuinfo's text and the machine, for a test."""
    import platform

    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return "an x86 CPU whose flags cannot be read here, taken as without VNNI"
    flags = cpu_flags(cpuinfo)
    if flags & set(INT8_DOT_FLAGS) or not flags & {"avx2", "avx512bw"}:
        return None
    return f"an x86 CPU without VNNI ({', '.join(INT8_DOT_FLAGS)} absent from its flags)"


def provider_list(backend: str, cache_dir: Path | None, device_id: int = 0) -> list:
    """The providers, with their options, for one of the ONNX Runtime backends.

    CUDA and TensorRT keep the CPU provider behind them for any node they cannot take.
    """
    cuda = ("CUDAExecutionProvider", {
        "device_id": device_id,
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "do_copy_in_default_stream": True,
    })
    if backend == "ort-cpu":
        return ["CPUExecutionProvider"]
    if backend == "ort-cuda":
        return [cuda, "CPUExecutionProvider"]
    if backend == "ort-tensorrt":
        trt_options = {"device_id": device_id, "trt_max_workspace_size": 2 << 30}
        if cache_dir is not None:
            # engines and timing caches kept (package.engine_cache_dir) so that a second load on the same
            # device skips the engine build; open_sessions made the folder
            engines = cache_dir / "ort-tensorrt"
            trt_options.update({
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(engines),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(engines),
            })
        return [("TensorrtExecutionProvider", trt_options), cuda, "CPUExecutionProvider"]
    raise BackendError(not_one_of("backend", backend, ORT_BACKENDS))


class OrtSession(Session):
    """One graph in an ONNX Runtime InferenceSession."""

    def __init__(self, graph_name: str, path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 backend: str = "ort-cpu", threads: int | None = None, cache_dir: Path | None = None,
                 spin: bool = True, disabled_optimizers: tuple[str, ...] = ()):
        super().__init__(graph_name, inputs, outputs)
        self.backend = backend
        self.path = Path(path)
        # None: ONNX Runtime's own pool, unless a container or cpuset allows fewer cores (cpus.py)
        self.threads = session_threads() if threads is None else threads
        options = session_options(default_threads() if threads is None else threads, spin)
        providers = provider_list(backend, cache_dir)
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:   # ONNX Runtime's binding takes UTF-8 paths only, and says so as a signature dump
            raise PackageError(f"graph {graph_name!r} at {str(path)!r}: expected a path ONNX Runtime can open (UTF-8 "
                               "text), found bytes that are not: rename the folder") from None
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers,
                                                 disabled_optimizers=list(disabled_optimizers) or None)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types for a bad model
            raise PackageError(f"graph {graph_name!r} at {str(path)!r}: expected a loadable ONNX model, found: {exc}") from None
        wanted = ORT_BACKENDS[backend]
        if wanted not in self._session.get_providers():
            raise BackendError(f"backend {backend!r}: ONNX Runtime fell back to {self._session.get_providers()} for graph {graph_name!r} (check the CUDA / TensorRT libraries)")
        self._check_signature()
        self._output_names = [o.name for o in outputs]
        self._run_options = quiet_run_options(ort.RunOptions())

    def _check_signature(self) -> None:
        """The graph file must have exactly the inputs and outputs the manifest promises."""
        for kind, declared, actual in (("input", self.inputs, self._session.get_inputs()),
                                       ("output", self.outputs, self._session.get_outputs())):
            found = {a.name: a for a in actual}
            refuse_other_names(self.graph_name, kind, declared, found)
            for spec in declared:
                node = found[spec.name]
                dtype = _ORT_DTYPES.get(node.type, node.type)
                static = [d if isinstance(d, int) else "?" for d in node.shape]
                promised = [d if isinstance(d, int) else "?" for d in spec.shape]
                if dtype != spec.dtype or static != promised:
                    in_file = TensorSpec(spec.name, dtype, tuple(node.shape)).describe()   # written as the manifest's
                    raise PackageError(
                        f"graph {self.graph_name!r} {kind} {spec.name!r}: expected the manifest's {spec.describe()}, "
                        f"found {in_file} in {str(self.path)!r} ({MANIFEST_OR_GRAPH_CHANGED})"
                    )

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def inference_session(self) -> ort.InferenceSession:
        return self._session

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Session.run, inlined: this is the per-call path, a few microseconds matter on small graphs
        if not self._accepts(feeds):
            check_feeds(self.graph_name, self.inputs, feeds)  # raises InputError saying what is wrong
        try:
            return dict(zip(self._output_names, self._session.run(self._output_names, feeds, self._run_options)))
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise run_error(self.graph_name, exc) from None


def quiet_run_options(options):
    """Run options whose log shows fatal messages only: a failed run's error reaches the user as
    the exception run_error turns into one line; ONNX Runtime would also log it, in red, first.
    (The session's own log, at creation, stays at errors: a provider that fails to load says why.)"""
    options.log_severity_level = 4
    return options


_BINDING_FAILURE = "Error in execution: "  # run_with_iobinding's C++ prefix for a failed status


def run_error(graph_name: str, exc: Exception) -> Exception:
    """What a failed ONNX Runtime call means to the user: inputs of the right names, types and
    shapes whose values the graph cannot take (an index past a table's end) are an InputError;
    any other failure of ONNX Runtime a BackendError; an exception of another library as it was.
    An IO-binding run raises a plain RuntimeError that has lost the status code, so its failures
    are all BackendErrors."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    from_binding = type(exc) is RuntimeError and first_line.startswith(_BINDING_FAILURE)
    if not (type(exc).__module__.startswith("onnxruntime") or from_binding):
        return exc
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ", "", first_line.removeprefix(_BINDING_FAILURE))
    # its C++ source line and function signature, which hide the reason after them past any cut
    text = re.sub(r"Status Message: /\S+:\d+ [^(]*\([^)]*\)(?: const)? ", "Status Message: ", text)
    if type(exc).__name__ == "InvalidArgument":
        return InputError(f"graph {graph_name!r}: expected input values it can compute on, found ONNX Runtime "
                          f"refusing them: {text}")
    return BackendError(f"graph {graph_name!r}: expected ONNX Runtime to run it, found it failing: {text}")


class OrtBinding:
    """ONNX Runtime IO binding over memory the caller owns: inputs are read from and outputs
    written into it in place, so a loop that reuses its buffers (the KV cache) copies and
    allocates nothing per call.

    input(name, array) / output(name, array) bind C-contiguous numpy arrays and hold them until
    the name is bound again through them (ONNX Runtime keeps only their address: a temporary
    array freed before the run would be read after it was freed); bind_input / bind_output(name, dtype,
    shape, address) take a raw address, for hot loops that keep their buffers' addresses (no
    ctypes object per call) and keep them alive themselves.
    """

    def __init__(self, session: OrtSession):
        self._held: dict[str, np.ndarray] = {}
        self._graph_name = session.graph_name
        inference = session.inference_session
        binding = inference.io_binding()
        raw, raw_session = getattr(binding, "_iobinding", None), getattr(inference, "_sess", None)
        C = getattr(ort.capi, "_pybind_state", None)
        if raw is not None and raw_session is not None and hasattr(C, "OrtDevice"):
            # The pybind objects behind the public wrappers, with the device built once
            # instead of per call: about half of a small decoder's per-token overhead.
            device = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
            self.bind_input = functools.partial(_bind_raw, raw.bind_input, device)
            self.bind_output = functools.partial(_bind_raw, raw.bind_output, device)
            self._run = functools.partial(raw_session.run_with_iobinding, raw, quiet_run_options(C.RunOptions()))
        else:  # a future ONNX Runtime that moved them: the public API
            self.bind_input = lambda name, dtype, shape, address: binding.bind_input(name, "cpu", 0, dtype, shape, address)
            self.bind_output = lambda name, dtype, shape, address: binding.bind_output(name, "cpu", 0, dtype, shape, address)
            run_options = quiet_run_options(ort.RunOptions())
            self._run = lambda: inference.run_with_iobinding(binding, run_options)

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise run_error(self._graph_name, exc) from None

    def input(self, name: str, array: np.ndarray) -> None:
        self._held[name] = array
        self.bind_input(name, array.dtype, array.shape, array.ctypes.data)

    def output(self, name: str, array: np.ndarray) -> None:
        self._held[name] = array
        self.bind_output(name, array.dtype, array.shape, array.ctypes.data)


def _bind_raw(method, device, name, dtype, shape, address):
    method(name, device, dtype, shape, address)
