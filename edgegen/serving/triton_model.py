"""The Python-backend model Triton runs for a model folder `edgegen triton` wrote: it loads the
package copied beside it with edgegen's runtime and answers requests through its pipeline
(the pipeline route) or one call of its served graph (the graph route, several requests
merged into one call when Triton's dynamic batcher hands over more than one).

Triton's Python backend imports `triton_python_backend_utils` into the process it starts
(the stub); it exists only there, so it is imported in initialize(), not at module level.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..cpus import shared_threads
from ..errors import ConfigError, EdgegenError, InputError
from ..families import get as get_family
from ..runtimes import load
from .requests import COUNT_INPUTS, arguments, served

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
# set to 1 where the server's Triton passes numpy 2 arrays to and from a Python-backend model rightly
NUMPY_2_ENV = "EDGEGEN_TRITON_NUMPY2"


def instance_threads(config: dict, parameters: dict) -> int | None:
    """ONNX Runtime threads for this instance: the count `edgegen triton --threads` wrote, else its
    share of the default among this model's instances. Each instance is its own process on the
    same cores, and N instances each running the whole count would run N threads per core, which
    spin and stall each other. Other models in the server are not counted (docs/serving.md)."""
    named = int(parameters.get("edgegen_threads") or 0)
    return named or shared_threads(sum(_processes(group) for group in config.get("instance_group", [])) or 1)


def _processes(group: dict) -> int:
    """The instances one instance group starts: its count, per GPU listed for a GPU group (Triton
    lists every GPU where the config named none)."""
    count = int(group.get("count", 1))
    return count * max(1, len(group.get("gpus") or ())) if group.get("kind") == "KIND_GPU" else count


def _refuse_numpy_2(model: str) -> None:
    """A model that would answer wrongly does not load: Triton lists numpy 2 in its Python backend as a
    known issue (2.51, 2.52), and under it 2.51's (the nvidia-pytriton wheel's) sent outputs empty,
    handed a graph-route model other inputs than the client sent, and stopped a model's process on
    text. A later Triton that carries numpy 2 arrays rightly is let through by EDGEGEN_TRITON_NUMPY2=1."""
    if NUMPY_2 and os.environ.get(NUMPY_2_ENV) != "1":
        raise ConfigError(f"model {model!r}: expected numpy 1 in the server's Python, found numpy {np.__version__}, "
                          f"which Triton's Python backend passes wrongly (2.51: empty outputs, other inputs): install "
                          f"'numpy<2' there, or set {NUMPY_2_ENV}=1 for the server where its Triton carries numpy 2")


class _Cancelled(Exception):
    """Raised in a pipeline's callback where Triton says its request was cancelled (a gRPC
    client's cancel, or its deadline past), to stop the pipeline's loop there."""


def graph_call(pipe, session):
    """How the graph route calls its graph: a user's own (the generic family's) through its
    pipeline, which refuses what edgegen.load's call refuses (ids past a table, sizes the export
    never checked, a NaN result); a family's served graph through its session."""
    return pipe.run if pipe.family == "generic" else session.run


class TritonPythonModel:
    """Triton's Python-backend model interface: initialize, execute, finalize."""

    max_count = 0   # a request's largest n, num_samples or max_new_tokens (0: none), as initialize reads its config

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.name = args["model_name"]
        _refuse_numpy_2(self.name)
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.pipe = load(folder / "package", backend=parameters.get("edgegen_backend", "auto"),
                         threads=instance_threads(config, parameters),
                         precision=parameters.get("edgegen_precision", "fp32"))
        self.route = parameters.get("edgegen_route", "pipeline")
        self.max_count = int(parameters.get("edgegen_max_count") or 0)   # edgegen triton --max-count
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        if self.route == "graph":
            self.session = self.pipe.sessions[parameters["edgegen_graph"]]
            self.input_names = [t.name for t in self.session.inputs]
            self.run = graph_call(self.pipe, self.session)
        else:
            self.request = served(get_family(self.pipe.family), self.pipe.config)
        # with a batch dim, every request tensor and response output has one row in front
        self.batched = config.get("max_batch_size", 0) > 0

    # -- the pipeline route: one request, one pipeline call ---------------------------------------

    def execute(self, requests):
        if self.route == "graph":
            return self._graph(requests)
        if self.decoupled:
            for request in requests:
                self._stream(request)
            return None
        if self.request.answer_many is not None and len(requests) > 1:
            return self._merged(requests)
        return [self._answer(request) for request in requests]

    def _merged(self, requests):
        """The requests Triton's batcher queued together, as one pipeline run where they can be;
        if the run is refused, each is answered on its own, so one mistake fails one request (a
        request answer_many ran alone comes back as its own error)."""
        try:
            results = self.request.answer_many(self.pipe, [self._arguments(r) for r in requests])
        except EdgegenError:
            return [self._answer(request) for request in requests]
        return [self._error(outputs) if isinstance(outputs, EdgegenError) else self._response(outputs)
                for outputs in results]

    def _arguments(self, request) -> dict:
        values = {}
        for field in self.request.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, field.name)
            if tensor is None:
                continue
            value = tensor.as_numpy()
            if self.batched:
                if value.shape[0] != 1:
                    raise InputError(f"request input {field.name!r}: expected one row (shape [1, ...]) per request, "
                                     f"found {value.shape[0]} (send each call as its own request)")
                value = value[0]
            values[field.name] = value
            if self.max_count and field.name in COUNT_INPUTS and value.size and np.max(value) > self.max_count:
                raise InputError(f"request input {field.name!r}: expected at most {self.max_count} (this model's "
                                 f"--max-count), found {np.max(value)}")
        return arguments(self.request.inputs, values)

    def _answer(self, request):
        try:
            arguments = self._arguments(request)
            # its loop asks between steps whether the client is still there (a Triton before 23.10,
            # an older Jetson's, has no is_cancelled: its requests run to their end, as before)
            # (a streaming answer, GPT's, stops between its pieces instead: its stream takes no callback)
            if self.pipe.stoppable and not self.request.streams and hasattr(request, "is_cancelled"):
                arguments["callback"] = self._stop_if_cancelled(request)
            outputs = {}
            for piece in self.request.answer(self.pipe, arguments):
                outputs.update(piece)
            return self._response(outputs)
        except EdgegenError as exc:
            return self._error(exc)
        except _Cancelled:
            return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(
                "cancelled by its client", self.pb.TritonError.CANCELLED))

    def _stop_if_cancelled(self, request):
        """The pipeline's callback: raises _Cancelled where Triton says the request was cancelled,
        after saying in the server's log where it stopped (a diffusion loop reports (step index,
        timestep, x), the others (done, total))."""
        def check(*progress):
            if request.is_cancelled():
                where = f"after sampler step {progress[0] + 1}" if len(progress) == 3 else \
                    f"at {progress[0]} of {progress[1]} {self.pipe.counts}".rstrip()
                self._said_cancelled(where)
                raise _Cancelled
        return check

    def _said_cancelled(self, where: str) -> None:
        self.pb.Logger.log_info(f"{self.name}: a request cancelled by its client stopped {where}")

    def _stream(self, request) -> None:
        """Each piece the pipeline yields as its own response, then the final flag; a stream its
        client cancelled stops before its next piece."""
        sender = request.get_response_sender()
        cancelled = getattr(sender, "is_cancelled", lambda: False)   # none before Triton 23.10
        try:
            for sent, piece in enumerate(self.request.answer(self.pipe, self._arguments(request))):
                if cancelled():   # the generator closes here, with nothing left running
                    self._said_cancelled(f"after {sent} pieces")
                    break
                sender.send(self._response(piece))
        except EdgegenError as exc:
            sender.send(self._error(exc))
        except Exception as exc:  # noqa: BLE001 - the stream must still end, with the failure said
            sender.send(self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(
                f"{type(exc).__name__}: {exc}", self.pb.TritonError.INTERNAL)))
        finally:
            sender.send(flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _response(self, outputs: dict):
        """Outputs as a response; in a batched pipeline model each gets the request's row dim
        (the graph route's outputs have their batch dim already)."""
        row = self.batched and self.route != "graph"
        return self.pb.InferenceResponse(output_tensors=[
            self.pb.Tensor(name, np.asarray(value)[None] if row else np.asarray(value)) for name, value in outputs.items()])

    # -- the graph route: requests merged along the batch dim into one call ----------------------

    def _graph(self, requests):
        feeds = [{name: self.pb.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
                 for r in requests]
        if not self.batched:   # no batch dim to merge along (a scalar input, a fixed shape): a call each
            return [self._graph_one(f) for f in feeds]
        sizes = [len(next(iter(f.values()))) for f in feeds]
        try:
            merged = {name: np.concatenate([f[name] for f in feeds]) for name in self.input_names}
            outputs = self.run(merged)
        except EdgegenError:
            # one request's bad input must not fail the others: answer each on its own
            return [self._graph_one(f) for f in feeds]
        bounds = np.cumsum([0, *sizes])
        return [self._response({name: value[a:b] for name, value in outputs.items()})
                for a, b in zip(bounds[:-1], bounds[1:])]

    def _graph_one(self, feeds: dict):
        try:
            return self._response(self.run(feeds))
        except EdgegenError as exc:
            return self._error(exc)

    def _error(self, exc: EdgegenError):
        """The caller's mistake as Triton's INVALID_ARG (HTTP 400), with edgegen's message."""
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(exc), self.pb.TritonError.INVALID_ARG))

    def finalize(self) -> None:
        self.pipe = None
