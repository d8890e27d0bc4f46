"""Serving: the Triton model repository `edgegen triton` writes (each config.pbtxt read with the
model-config protobuf tritonclient ships, each ONNX Runtime-backend model run with onnxruntime),
and the repository served by a real Triton Inference Server (the nvidia-pytriton wheel's
tritonserver, on CPU, in its own environment: docs/serving.md) over HTTP and gRPC, its
answers equal to edgegen.load(...) in this process."""

import importlib.util
import os
import queue
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgegen
from edgegen import cpus
from edgegen.cli import main
from edgegen.errors import BackendError, ConfigError, OutputExistsError, PackageError
from edgegen.serving.local_server import local_server, pytriton_root
from edgegen.serving.requests import Field, arguments
from edgegen.serving.triton import RepositoryOptions, write_repository
from edgegen.serving.triton_model import TritonPythonModel, instance_threads
from edgegen.training.train import train
from edgegen.export import export_checkpoint

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is in the dev extra")
from google.protobuf import text_format  # noqa: E402 - tritonclient brings protobuf


QUIET = lambda line: None  # noqa: E731


def read_config(folder) -> "model_config_pb2.ModelConfig":
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def gpt_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-gpt")
    ckpt = train("gpt", root / "gpt", steps=20, batch_size=4, n_layer=1, n_head=2, n_embd=32, block_size=64,
                 train_context=32, progress=False)
    return export_checkpoint(ckpt, root / "package")


@pytest.fixture(scope="module")
def repository(trained, gpt_package, tmp_path_factory):
    """What the server here can load (it has only the Python backend): gan through edgegen in
    Triton's Python backend; diffusion, flow and gpt through their pipelines. Diffusion's batcher
    waits up to 0.3 s for more requests, so that concurrent requests are merged."""
    out = tmp_path_factory.mktemp("repository") / "models"
    write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="python", max_batch_size=8,
                                                                       threads=1), report=QUIET)
    write_repository([str(trained["diffusion"][1])], out, RepositoryOptions(threads=1, max_batch_size=8,
                                                                             queue_delay_us=300_000), report=QUIET)
    write_repository([str(trained["flow2d"][1]), str(gpt_package)], out, RepositoryOptions(threads=1), report=QUIET)
    return out


@pytest.fixture(scope="module")
def onnxruntime_repository(trained, tmp_path_factory):
    """vae through Triton's ONNX Runtime backend (as a GPU server or a Jetson runs it)."""
    out = tmp_path_factory.mktemp("repository") / "onnxruntime"
    write_repository([str(trained["vae"][1])], out, report=QUIET)
    return out


def test_every_config_parses_with_tritons_own_model_config(repository, onnxruntime_repository, trained):
    configs = {folder.name: read_config(folder) for r in (repository, onnxruntime_repository) for folder in r.iterdir()}
    assert set(configs) == {"gan", "vae", "diffusion", "flow2d", "gpt"}
    gan, vae, diffusion, gpt = configs["gan"], configs["vae"], configs["diffusion"], configs["gpt"]
    assert (gan.backend, gan.max_batch_size, [i.name for i in gan.input]) == ("python", 8, ["z"])
    assert gan.HasField("dynamic_batching") and gan.dynamic_batching.max_queue_delay_microseconds == 0
    assert vae.backend == "onnxruntime" and vae.default_model_filename == "model.onnx"
    assert [list(o.dims) for o in vae.output] == [[1, 32, 32]] and list(vae.input[0].dims) == [16]
    assert vae.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # a loop that merges requests: each request one row, the pipeline's arguments as optional inputs
    assert diffusion.max_batch_size == 8 and diffusion.dynamic_batching.max_queue_delay_microseconds == 300_000
    assert configs["flow2d"].max_batch_size == 0 and not configs["flow2d"].HasField("dynamic_batching")
    inputs = {i.name: i for i in diffusion.input}
    assert {"n", "seed", "steps", "sampler", "guidance_scale", "labels", "eta"} <= set(inputs)
    assert inputs["sampler"].data_type == model_config_pb2.TYPE_STRING and inputs["steps"].optional
    assert inputs["guidance_scale"].data_type == model_config_pb2.TYPE_FP64
    assert [o.name for o in configs["flow2d"].output] == ["samples"]
    assert gpt.model_transaction_policy.decoupled and not {i.name: i for i in gpt.input}["prompt"].optional
    assert (repository / "diffusion" / "1" / "package" / "edgegen.json").is_file()


def test_an_onnxruntime_backend_model_is_the_packages_graph(onnxruntime_repository, trained):
    """Triton's ONNX Runtime backend is not in the wheel's server: the same file, run by onnxruntime
    with the config's names and dims, gives what the pipeline's decoder gives."""
    import onnxruntime

    config = read_config(onnxruntime_repository / "vae")
    session = onnxruntime.InferenceSession(str(onnxruntime_repository / "vae" / "1" / "model.onnx"))
    z = np.random.default_rng(0).standard_normal((3, *config.input[0].dims), dtype=np.float32)
    (image,) = session.run([config.output[0].name], {config.input[0].name: z})
    assert image.shape[1:] == tuple(config.output[0].dims)
    np.testing.assert_array_equal(image, edgegen.load(trained["vae"][1]).decode(z))


def test_threads_per_instance_reach_either_backend(trained, tmp_path, monkeypatch):
    """A count given is written for Triton's onnxruntime backend under its own key, and for a
    Python-backend model under edgegen's; without one, each Python-backend instance takes its
    share of the cores (cpus.shared_threads), read from the config Triton hands it."""
    write_repository([str(trained["vae"][1])], tmp_path / "named", RepositoryOptions(threads=2, instances=3), report=QUIET)
    write_repository([str(trained["vae"][1])], tmp_path / "default", report=QUIET)
    named = read_config(tmp_path / "named" / "vae")
    assert named.parameters["intra_op_thread_count"].string_value == "2" and named.instance_group[0].count == 3
    assert "intra_op_thread_count" not in read_config(tmp_path / "default" / "vae").parameters

    monkeypatch.setattr(cpus, "session_threads", lambda: 4)
    monkeypatch.delenv(cpus.ORT_THREADS_ENV, raising=False)
    as_triton_hands_it = {"instance_group": [{"name": "gan_0", "kind": "KIND_CPU", "count": 3}]}
    assert instance_threads(as_triton_hands_it, {"edgegen_threads": "0"}) == 1
    assert instance_threads({"instance_group": [{"count": 2}]}, {"edgegen_threads": "0"}) == 2
    assert instance_threads({"instance_group": [{"count": 1}]}, {"edgegen_threads": "0"}) is None   # the default
    assert instance_threads(as_triton_hands_it, {"edgegen_threads": "2"}) == 2   # the count written wins
    groups = {"instance_group": [{"kind": "KIND_CPU", "count": 1}, {"kind": "KIND_CPU", "count": 2}]}
    assert instance_threads(groups, {}) == 1   # every group's instances share the cores
    on_gpus = {"instance_group": [{"kind": "KIND_GPU", "count": 1, "gpus": [0, 1]}]}   # a count per GPU
    assert instance_threads(on_gpus, {}) == 2


def test_a_served_instance_opens_its_sessions_at_its_share(trained, tmp_path, monkeypatch):
    """What Triton's Python backend hands initialize(): the model config as JSON (Triton writes
    instance_group's count as a number), the repository, the version and the model's name."""
    import json
    import sys
    import types

    from edgegen.serving import triton_model

    monkeypatch.setattr(cpus, "session_threads", lambda: 4)
    monkeypatch.delenv(cpus.ORT_THREADS_ENV, raising=False)
    monkeypatch.setattr(triton_model, "NUMPY_2", False)   # a server's Python has numpy 1; this process may not
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils",
                        types.SimpleNamespace(using_decoupled_model_transaction_policy=lambda config: False))
    for threads, expected in ((0, 2), (3, 3)):
        out = tmp_path / f"threads-{threads}"
        write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="python", instances=2,
                                                                          threads=threads), report=QUIET)
        config = read_config(out / "gan")
        as_json = {"max_batch_size": config.max_batch_size,
                   "instance_group": [{"name": "gan_0", "kind": "KIND_CPU", "count": g.count, "gpus": []}
                                      for g in config.instance_group],
                   "parameters": {k: {"string_value": v.string_value} for k, v in config.parameters.items()}}
        model = TritonPythonModel()
        model.initialize({"model_config": json.dumps(as_json), "model_repository": str(out / "gan"), "model_version": "1",
                          "model_name": "gan"})
        assert model.session.threads == expected
        assert model.session.inference_session.get_session_options().intra_op_num_threads == expected


def test_a_python_backend_model_under_numpy_2_refuses_to_load_unless_told(trained, tmp_path, monkeypatch):
    """Under numpy 2, Triton 2.51's Python backend (the nvidia-pytriton wheel's) answered with empty
    outputs, gave a graph-route GAN other inputs than the client sent (its images off by 0.08) and
    stopped a GPT model's process: tried by hand with numpy 2.4 in the server's Python. The model
    now fails to load, saying so, unless the operator says their Triton carries numpy 2."""
    import json
    import sys
    import types

    from edgegen.serving import triton_model

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils",
                        types.SimpleNamespace(using_decoupled_model_transaction_policy=lambda config: False))
    out = tmp_path / "repo"
    write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="python"), report=QUIET)
    config = read_config(out / "gan")
    args = {"model_config": json.dumps({"max_batch_size": config.max_batch_size, "parameters": {
        k: {"string_value": v.string_value} for k, v in config.parameters.items()}}),
        "model_repository": str(out / "gan"), "model_version": "1", "model_name": "gan"}
    monkeypatch.setattr(triton_model, "NUMPY_2", True)
    monkeypatch.delenv("EDGEGEN_TRITON_NUMPY2", raising=False)
    with pytest.raises(ConfigError, match=r"model 'gan': expected numpy 1 in the server's Python, found numpy .*install "
                                          r"'numpy<2' there, or set EDGEGEN_TRITON_NUMPY2=1"):
        TritonPythonModel().initialize(args)
    monkeypatch.setenv("EDGEGEN_TRITON_NUMPY2", "1")
    model = TritonPythonModel()
    model.initialize(args)
    assert model.route == "graph"


def test_a_graph_without_a_batch_dim_answers_each_request_on_its_own(tmp_path):
    """A scalar input (served as dims [1] reshaped to []) reached the Python backend's graph route
    0-d, where merging requests along a batch dim failed in numpy: no request could be answered."""
    import types

    import torch

    from edgegen.serving import triton_model

    class Scaled(torch.nn.Module):
        def forward(self, x, scale):
            return x * scale

    pkg = edgegen.export_pytorch(Scaled(), {"x": np.ones((2, 4), np.float32), "scale": np.float32(2.0)},
                                 tmp_path / "scaled", dynamic={"x": {0: "batch", 1: "width"}})
    write_repository([str(pkg)], tmp_path / "repo", RepositoryOptions(graph_backend="python"), report=QUIET)
    assert read_config(tmp_path / "repo" / "scaled").max_batch_size == 0
    fake = types.SimpleNamespace(
        Tensor=lambda name, value: (name, value), get_input_tensor_by_name=lambda request, name: request[name],
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(outputs=output_tensors, error=error),
        TritonError=type("TritonError", (), {"INVALID_ARG": "400", "__init__": lambda self, m, code: setattr(self, "message", m)}))
    model = TritonPythonModel()
    model.pb, model.route, model.batched = fake, "graph", False
    pipe = edgegen.load(pkg)
    model.session, model.run = pipe.sessions["model"], triton_model.graph_call(pipe, pipe.sessions["model"])
    model.input_names = [t.name for t in model.session.inputs]
    tensor = lambda array: types.SimpleNamespace(as_numpy=lambda: np.asarray(array))  # noqa: E731
    answers = model._graph([{"x": tensor(np.ones((2, 4), np.float32)), "scale": tensor(np.float32(3))},
                            {"x": tensor(np.ones((3, 4), np.float32)), "scale": tensor(np.float32(5))}])
    assert [dict(a.outputs)["output"].tolist() for a in answers] == [[[3.0] * 4] * 2, [[5.0] * 4] * 3]
    # a user's graph is called through its package's checks, as edgegen.load's call is: a width its
    # export never checked was run unchecked (a module with a size branch would answer wrongly)
    (past,) = model._graph([{"x": tensor(np.ones((1, 40), np.float32)), "scale": tensor(np.float32(1))}])
    assert past.error.message.startswith("input 'x': expected width 1 to 16, the sizes its export checked")


def test_a_refused_request_of_a_merged_batch_fails_alone(trained):
    """The Python-backend model hands answer_many the requests Triton queued together: a picture
    request refused there comes back as its own 400, the others with their images."""
    import types

    from edgegen.families import get
    from edgegen.serving.requests import served
    from edgegen.training.data import load_images

    class Tensor:
        def __init__(self, name, value):
            self.name, self.value = name, np.asarray(value)

        def as_numpy(self):
            return self.value

    fake = types.SimpleNamespace(
        Tensor=Tensor, get_input_tensor_by_name=lambda request, name: request.get(name),
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(outputs=output_tensors, error=error),
        TritonError=type("TritonError", (), {"INVALID_ARG": "400", "__init__": lambda self, m, code: setattr(self, "message", m)}))
    model = TritonPythonModel()
    model.pb, model.route, model.batched = fake, "pipeline", True
    model.pipe = edgegen.load(trained["diffusion"][1], threads=1)
    model.request = served(get("diffusion"), model.pipe.config)
    image = load_images("digits", image_size=8).test[:1][None]   # one row per request
    requests = [{"n": Tensor("n", [[1]]), "seed": Tensor("seed", [[2]]), "steps": Tensor("steps", [[3]])},
                {"image": Tensor("image", image), "strength": Tensor("strength", [[0.1]]), "steps": Tensor("steps", [[3]])}]
    answered, refused = model._merged(requests)
    assert answered.error is None and refused.error.message.startswith("strength 0.1: expected it to run at least one")
    np.testing.assert_array_equal(answered.outputs[0].value[0], model.pipe(1, seed=2, steps=3))


def test_refusals_leave_the_repository_as_it_was(repository, trained, gpt_package, tmp_path):
    before = sorted(p.relative_to(repository) for p in repository.rglob("*"))
    with pytest.raises(OutputExistsError, match=r"gan.*--force, or overwrite=True in Python"):
        write_repository([str(trained["gan"][1])], repository, report=lambda line: None)
    # each folder that exists is named in one run (the second was found once the first was moved: helper 132)
    with pytest.raises(OutputExistsError, match=r"output '.*gan': expected a path that does not exist yet.*; and "
                                                r"output '.*flow2d': expected a path that does not exist yet"):
        write_repository([str(trained["gan"][1]), str(trained["flow2d"][1])], repository, report=lambda line: None)
    # --force: every model folder is checked before any is replaced, so a folder that is not a
    # Triton model's refuses the whole repository, not the models after the ones replaced
    foreign = tmp_path / "foreign"
    shutil.copytree(repository, foreign)
    (foreign / "vae").mkdir()
    (foreign / "vae" / "notes.txt").write_text("mine")
    gan_before = (foreign / "gan" / "config.pbtxt").read_bytes()
    with pytest.raises(OutputExistsError, match="expected a Triton model folder to replace"):
        write_repository([str(trained["gan"][1]), str(trained["vae"][1])], foreign, overwrite=True, report=lambda line: None)
    assert (foreign / "gan" / "config.pbtxt").read_bytes() == gan_before and (foreign / "vae" / "notes.txt").is_file()
    # a version of the user's beside edgegen's 1/ is the user's too
    (foreign / "vae" / "notes.txt").unlink()
    shutil.copytree(foreign / "gan", foreign / "vae", dirs_exist_ok=True)
    (foreign / "vae" / "2").mkdir()
    with pytest.raises(OutputExistsError, match="found 2 beside it"):
        write_repository([str(trained["vae"][1])], foreign, overwrite=True, report=lambda line: None)
    assert (foreign / "vae" / "2").is_dir() and (foreign / "vae" / "1").is_dir()
    with pytest.raises(ConfigError, match="graph route expected a family whose generation is one graph call.*diffusion"):
        write_repository([str(trained["diffusion"][1])], tmp_path / "r", RepositoryOptions(route="graph"))
    with pytest.raises(ConfigError, match="one package per model name"):
        write_repository([str(trained["gan"][1])] * 2, tmp_path / "r")
    for route, what in (("pipeline", "int8 variants"), ("graph", "the int8 variant of graph 'generator'")):
        with pytest.raises(ConfigError, match=re.escape(f"expected {what} (made by 'edgegen optimize --precision "
                                                        "int8'), found none")):
            write_repository([str(trained["gan"][1])], tmp_path / "r", RepositoryOptions(route=route, precision="int8"))
    # a precision optimize never writes for the family: said so, not "made by edgegen optimize", which refuses it
    with pytest.raises(PackageError, match=r"expected fp32 or a precision edgegen optimize writes for gan packages "
                                           r"\(int8, fp16\), found 'int4'"):
        write_repository([str(trained["gan"][1])], tmp_path / "r", RepositoryOptions(precision="int4"))
    for instances in (0, True):
        with pytest.raises(ConfigError, match=f"instances: expected an integer of at least 1, found {instances}"):
            write_repository([str(trained["gan"][1])], tmp_path / "r", RepositoryOptions(instances=instances))
    with pytest.raises(ConfigError, match=r"output: expected a path, found an empty one \(''\)"):
        write_repository([str(trained["gan"][1])], "")   # was the working folder
    # inside a model folder of the repository (or a package, a checkpoint): taken for a part of it
    with pytest.raises(OutputExistsError, match="expected a model repository of its own, found it in a Triton model folder"):
        write_repository([str(trained["vae"][1])], repository / "gan" / "more")
    with pytest.raises(OutputExistsError, match="found it in an edgegen checkpoint"):
        write_repository([str(trained["vae"][1])], trained["gan"][0] / "repo")
    assert not (trained["gan"][0] / "repo").exists()
    # an option no model of the run takes was ignored without a word (the user asked for TensorRT)
    for packages, options, said in (
            (["diffusion"], RepositoryOptions(graph_backend="tensorrt"), "graph_backend (--graph-backend) 'tensorrt'"),
            (["gan"], RepositoryOptions(backend="ort-cpu"), "backend (--backend) 'ort-cpu', edgegen's backend inside a "
                                                            "Python-backend model"),
            (["gan"], RepositoryOptions(dynamic_batching=False, queue_delay_us=100), "queue_delay_us (--queue-delay-us) "
                                                                                   "100, the dynamic batcher's wait, "
                                                                                   "where it is off"),
            (["diffusion"], RepositoryOptions(kind="gpu"), "kind (--kind) 'gpu', the device of an ONNX Runtime "
                                                           "graph-route model's instances, where there is none"),
            (["gan"], RepositoryOptions(graph_backend="tensorrt", threads=3), "threads (--threads) 3, ONNX Runtime's "
                                                                             "threads in a Python-backend or ONNX Runtime "
                                                                             "graph-route model, where there is none"),
            (["flow"], RepositoryOptions(dynamic_batching=False), "dynamic_batching off (--no-dynamic-batching), where "
                                                                  "no model merges requests (flow: pipeline route")):
        with pytest.raises(ConfigError, match=re.escape(f"expected options that some model of this run takes, found {said}")):
            write_repository([str(trained[f][1]) for f in packages], tmp_path / "r", options)
    # a loop TensorRT's own backend cannot run was served on it, and every request failed as the client's
    with pytest.raises(ConfigError, match=r"^backend \(--backend\) 'tensorrt': expected a backend gpt's generation runs "
                                          r"on, found TensorRT, which its KV-cache loop cannot use"):
        write_repository([str(gpt_package)], tmp_path / "r", RepositoryOptions(backend="tensorrt"))
    assert sorted(p.relative_to(repository) for p in repository.rglob("*")) == before
    assert not (tmp_path / "r").exists()


def test_a_repository_inside_a_package_is_refused_and_a_served_package_holds_only_what_edgegen_wrote(package_copy, tmp_path):
    pkg = package_copy("vae")
    with pytest.raises(OutputExistsError, match=r"expected a model repository outside the packages it serves, found it "
                                                r"inside"):
        write_repository([str(pkg)], pkg / "sub", report=lambda line: None)
    assert not (pkg / "sub").exists()
    (pkg / "notes.txt").write_text("mine")   # a user's file beside the package's: not served
    (pkg / ".edgegen-cache").mkdir()
    for path in (*pkg.iterdir(), pkg):   # a package on read-only storage
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        for _ in range(2):   # the second replaces the first: no copy of it left beside (as a non-root user too)
            write_repository([str(pkg)], tmp_path / "r", RepositoryOptions(route="pipeline"), overwrite=True,
                             report=lambda line: None)
    finally:
        for path in (pkg, *pkg.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
    served = tmp_path / "r" / "vae" / "1" / "package"
    assert {p.name for p in served.iterdir()} == {"edgegen.json", "encoder.onnx", "decoder.onnx"}
    assert all(p.stat().st_mode & 0o200 for p in (served, *served.iterdir())), "the copy keeps the source's read-only modes"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["vae"]


def test_a_tree_with_read_only_folders_is_removed_whole(tmp_path):
    """storage.remove_tree makes the folders inside the tree writable where the system refuses a
    removal in them, and leaves a folder a symbolic link in it points to as it was. Root is never
    refused, so as root the removal runs in a forked child as the user nobody, on a tree nobody owns."""
    import pwd
    import tempfile

    from edgegen.storage import remove_tree

    nobody = None
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root, with no user 'nobody' to be refused as")
        tmp_path = Path(tempfile.mkdtemp(prefix="edgegen-remove-tree-", dir="/tmp"))   # pytest's are root's alone
    try:
        (tmp_path / "old" / "sub").mkdir(parents=True)
        (tmp_path / "old" / "sub" / "graph.onnx").write_bytes(b"x")
        (tmp_path / "outside").mkdir()
        (tmp_path / "old" / "sub" / "link").symlink_to(tmp_path / "outside")
        if nobody is not None:
            for path in (tmp_path, tmp_path / "old", tmp_path / "old" / "sub", tmp_path / "old" / "sub" / "graph.onnx",
                         tmp_path / "outside"):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        (tmp_path / "outside").chmod(0o500)
        (tmp_path / "old" / "sub").chmod(0o555)
        child = os.fork()
        if child == 0:   # only file calls here, then out without Python's cleanup
            code = 1
            try:
                if nobody is not None:
                    os.setegid(nobody.pw_gid)
                    os.seteuid(nobody.pw_uid)
                try:
                    os.unlink(tmp_path / "old" / "sub" / "graph.onnx")
                    code = 2   # the refusal remove_tree mends did not happen
                except PermissionError:
                    remove_tree(tmp_path / "old")
                    code = 0
            finally:
                os._exit(code)
        assert os.waitpid(child, 0)[1] >> 8 == 0
        assert not (tmp_path / "old").exists()
        assert (tmp_path / "outside").stat().st_mode & 0o777 == 0o500   # a link's target is not the tree's
    finally:
        if nobody is not None:
            shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_family_with_file_options_and_no_declared_request_is_refused_and_pictures_travel_as_arrays():
    from types import SimpleNamespace

    from edgegen.families import get
    from edgegen.serving.requests import served

    with pytest.raises(ConfigError, match="family 'generic'.*--inputs, a file on the caller's disk"):
        served(get("generic"), None)   # its graph route is what serves it
    upscaling = {f.name: f for f in served(get("sr"), None).inputs}
    picture = upscaling["image"]
    assert (picture.dtype, picture.dims, picture.required, picture.form) == ("uint8", (-1, -1, -1), True, "array")
    assert "max_megapixels" not in upscaling and "tile" in upscaling   # a client lifted the server's cap with it
    label = {f.name: f for f in served(get("wavenet"), None).inputs}["labels"]   # one clip: one label
    assert (label.dims, label.form) == ((1,), "value")
    control = served(get("controlnet"), SimpleNamespace(image_shape=[1, 8, 8]))
    assert {f.name: f.dims for f in control.inputs}["control"] == (-1, 1, 8, 8)
    assert control.answer_many is None   # its calls carry a picture each: not merged
    picture = Field("control", "float32", (-1, 1, 2, 2), form="array")
    sent = np.zeros((1, 1, 2, 2), np.float32)
    assert arguments((picture,), {"control": sent})["control"] is sent


def test_request_arguments_become_the_pipelines_keywords():
    fields = (Field("n", "int64"), Field("sampler", "string"), Field("labels", "int64", (-1,), form="value or list"),
              Field("stop", "string", (-1,), form="list"), Field("prompt", "string", required=True))
    got = arguments(fields, {"n": np.array([4]), "sampler": np.array([b"ddim"], dtype=object),
                             "labels": np.array([3]), "stop": np.array([b"\n", b"#"], dtype=object),
                             "prompt": np.array(["x".encode()], dtype=object)})
    assert got == {"n": 4, "sampler": "ddim", "labels": 3, "stop": ["\n", "#"], "prompt": "x"}
    assert type(got["n"]) is int
    assert arguments(fields[2:3], {"labels": np.array([1, 2])}) == {"labels": [1, 2]}
    with pytest.raises(edgegen.errors.InputError, match="'prompt': expected it, found none"):
        arguments(fields, {})
    with pytest.raises(edgegen.errors.InputError, match="request input 'prompt': expected UTF-8 text, found a byte that "
                                                        "is not UTF-8 at offset 1$"):
        arguments(fields, {"prompt": np.array([b"a\xff"], dtype=object)})


def test_the_command_line_writes_a_repository(trained, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["triton", str(trained["gan"][1]), "--out", str(out), "--max-batch-size", "4",
                 "--no-dynamic-batching", "--instances", "2"]) == 0
    config = read_config(out / "gan")
    assert (config.max_batch_size, config.instance_group[0].count) == (4, 2)
    assert not config.HasField("dynamic_batching")
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert main(["triton", str(trained["gan"][1]), "--out", str(out)]) == 2   # exists: refused, kept
    assert read_config(out / "gan").instance_group[0].count == 2
    assert main(["triton", str(trained["gan"][1]), "--out", str(out), "--force"]) == 0
    assert read_config(out / "gan").instance_group[0].count == 1
    capsys.readouterr()


def test_models_named_on_the_command_line_serve_one_package_twice(trained, tmp_path, capsys):
    """An operator serving a package at two precisions (or two packages of one manifest name):
    the model folder took the manifest's name, so the second was refused with no way around it."""
    out, gan = tmp_path / "repo", str(trained["gan"][1])
    assert main(["triton", gan, gan, "--out", str(out), "--name", "gan-a", "--name", "gan-b"]) == 0
    assert main(["triton", gan, "--out", str(out), "--name", "gan-python", "--graph-backend", "python"]) == 0
    assert {p.name for p in out.iterdir()} == {"gan-a", "gan-b", "gan-python"}
    for name in ("gan-a", "gan-b", "gan-python"):
        assert read_config(out / name).name == name   # Triton requires the folder's name there
    assert read_config(out / "gan-python").backend == "python" and (out / "gan-a" / "1" / "model.onnx").is_file()
    capsys.readouterr()
    for names, said in (([], "model 'gan': expected one package per model name, found 2 packages named so (--name gives "
                             "each its own"),
                        (["one"], "names (--name): expected one per package, in order (2), found 1"),
                        (["x", "x"], "model 'x': expected one package per model name, found 2 packages named so"),
                        (["ok", ".hidden"], "name (--name): expected letters, digits")):
        flags = [f for name in names for f in ("--name", name)]
        assert main(["triton", gan, gan, "--out", str(tmp_path / "refused"), *flags]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ConfigError, match=r"names \(--name\): expected one per package, in order \(1\), found 'gan-a'"):
        write_repository([gan], tmp_path / "refused", names="gan-a")


def test_a_full_disk_while_copying_a_package_is_one_line_and_leaves_nothing(trained, tmp_path, monkeypatch, capsys):
    import errno

    def full(source, destination, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(destination))

    monkeypatch.setattr(shutil, "copyfile", full)
    assert main(["triton", str(trained["vae"][1]), "--out", str(tmp_path / "repo"), "--route", "pipeline"]) == 2
    err = capsys.readouterr().err
    assert "expected a copy of" in err and "No space left on device" in err and "more files)" in err
    assert err.count("\n") == 1 and "[(" not in err   # was shutil.Error's list of every file's tuple
    assert not (tmp_path / "repo").exists()   # made for the run, and left empty: removed


def test_a_full_disk_names_where_it_was_writing(trained, tmp_path, monkeypatch, capsys):
    """A copy's OSError names the source first (shutil's sendfile path sets the destination as
    filename2): "'pkg/decoder.onnx': No space left on device" blamed the package's disk. A full
    disk under a file's write named no file at all: the file is named (review 166)."""
    import errno

    def full(source, destination, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(source), None, str(destination))

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", full)
        assert main(["triton", str(trained["vae"][1]), "--out", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: '.*decoder.onnx' to '.*repo.*model.onnx': No space left on device \(OSError\)$", err.strip())
    package = tmp_path / "vae"
    shutil.copytree(trained["vae"][1], package)

    def fsync(fd):   # as a write to a full disk fails: an OSError without a file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edgegen.storage.os.fsync", fsync)
    assert main(["optimize", str(package), "--precision", "fp16", "--no-speed-check"]) == 2
    assert re.search(rf"error: '{re.escape(str(package))}/\w+\.fp16\.[0-9a-f]{{12}}\.onnx': No space left on device "
                     r"\(OSError\)$", capsys.readouterr().err.strip())
    # one that still names no file (a library's own write): where the command writes is named
    from edgegen.cli import _system_error

    assert _system_error(OSError(errno.ENOSPC, "No space left on device"), str(package)) == \
        f"writing {str(package)!r}: No space left on device (OSError)"


# -- a real server ---------------------------------------------------------------------------------

def _server_env_or_skip():
    try:
        pytriton_root()
    except ConfigError as exc:
        pytest.skip(f"no Triton server environment: {exc}")


def test_a_python_backend_model_holds_the_package_with_only_the_precision_it_serves(package_copy, tmp_path):
    """A repository copied every variant whatever --precision served (a Llama's other variants are
    gigabytes the model never reads): now the fp32 graphs and the served precision's variant only,
    the copy's manifest listing only that one, and it runs as the package does."""
    import json

    from edgegen.optimize import optimize_package
    from edgegen.package import VARIANT_FILE, Package

    pkg = package_copy("gan")
    for precision in ("fp16", "int8"):
        optimize_package(pkg, precision, target="tensorrt", progress=lambda *a, **k: None)
    variants = json.loads((pkg / "edgegen.json").read_text())["variants"]
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        write_repository([str(pkg)], out, RepositoryOptions(graph_backend="python", precision=precision), report=QUIET)
        copy = out / "gan" / "1" / "package"
        held = sorted(p.name for p in copy.iterdir() if VARIANT_FILE.match(p.name))
        assert held == ([] if precision == "fp32" else [variants["fp16"]["generator"]["file"]])
        assert sorted(Package(copy).manifest.variants) == ([] if precision == "fp32" else ["fp16"])
        z = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        served, source = (edgegen.load(p, backend="ort-cpu", precision=precision).sessions["generator"].run({"z": z})
                          for p in (copy, pkg))
        np.testing.assert_array_equal(served["image"], source["image"])


def test_force_refuses_to_lose_an_operators_changes_inside_a_model_folder(trained, tmp_path):
    """--force replaced a config.pbtxt tuned by hand (instance_group) and deleted notes in 1/
    without a word: only the folder's top level was checked."""
    out = tmp_path / "models"
    options = RepositoryOptions(graph_backend="python")
    write_repository([str(trained["gan"][1])], out, options, report=QUIET)
    config = out / "gan" / "config.pbtxt"
    written = config.read_text()
    assert written.startswith("# written by edgegen triton; --force replaces it only as written (sha256 of the lines "
                              "below: ") and read_config(out / "gan").name == "gan"   # Triton's parser skips the mark
    config.write_text(written.replace("count: 1", "count: 2"))
    with pytest.raises(OutputExistsError, match=r"expected its config.pbtxt as edgegen triton wrote it, found it "
                                                r"changed since: replacing the folder would lose that"):
        write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    assert "count: 2" in config.read_text()
    unmarked = written.split("\n", 1)[1]   # an older edgegen's: replaced where it is what this run writes
    config.write_text(unmarked)
    write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    assert config.read_text() == written
    config.write_text(unmarked.replace("count: 1", "count: 2"))   # no mark, and not what edgegen writes
    # an older edgegen's layout (its parameters), changed by hand or by what this edgegen serves: which
    # one cannot be told, and the message says both, with the mv to run (helper 94: it blamed the user),
    # out of the repository (it was mv repo/gan repo/gan.old: a folder Triton loads, failing its start)
    aside = re.escape(str(out.resolve().parent / f"{out.name}.gan.old"))
    with pytest.raises(OutputExistsError, match=r"found an older edgegen's \(no mark: written before edgegen marked its "
                                                r"configs\), which differs from what this run writes, by what this "
                                                r"edgegen serves \(new request inputs\) or by a change of yours.*move "
                                                rf"it out of the repository, .*\(mv '.*gan' '{aside}'\), and run again"):
        write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    config.write_text("name: \"gan\"\nbackend: \"python\"\n")   # no edgegen parameter in it: someone's own
    with pytest.raises(OutputExistsError, match="found no mark of edgegen's"):
        write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    config.write_text(written + "\n")   # an editor's trailing newline changes nothing
    write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    config.write_text(written)
    (out / "gan" / "1" / "NOTES.txt").write_text("tuned for the night shift")
    (out / "gan" / "1" / "__pycache__").mkdir()   # the server's own
    with pytest.raises(OutputExistsError, match=r"expected only what edgegen writes in version 1/, found NOTES.txt there"):
        write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    assert (out / "gan" / "1" / "NOTES.txt").is_file()
    # two folders of changes are both said, in one run (the second was found only once the first was mended)
    write_repository([str(trained["vae"][1])], out, options, report=QUIET)
    (out / "vae" / "1" / "NOTES.txt").write_text("mine too")
    with pytest.raises(OutputExistsError, match=r"output '.*gan': expected only what edgegen writes.*; and output "
                                                r"'.*vae': expected only what edgegen writes"):
        write_repository([str(trained["gan"][1]), str(trained["vae"][1])], out, options, overwrite=True, report=QUIET)
    # a folder of the user's own files among them is said with the rest (it stopped the run alone)
    shutil.rmtree(out / "vae")
    (out / "vae").mkdir()
    (out / "vae" / "readme.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"output '.*gan': expected only what edgegen writes.*; and output "
                                                r"'.*vae': expected a Triton model folder to replace"):
        write_repository([str(trained["gan"][1]), str(trained["vae"][1])], out, options, overwrite=True, report=QUIET)
    shutil.rmtree(out / "vae")
    (out / "gan" / "1" / "NOTES.txt").unlink()
    write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    assert config.read_text() == written
    # a tuned folder a killed write had moved aside (the only copy) is put back, then checked as any other
    config.write_text(written.replace("count: 1", "count: 2"))
    os.replace(out / "gan", out / ".gan.edgegen-4242.old")
    with pytest.raises(OutputExistsError, match="found it changed since"):
        write_repository([str(trained["gan"][1])], out, options, overwrite=True, report=QUIET)
    assert "count: 2" in config.read_text()


def test_what_a_killed_write_left_in_a_repository_is_cleaned_by_the_next_and_refused_by_the_server(trained, tmp_path):
    """A kill during `edgegen triton` leaves a model's staging folder (or an old one moved aside) in
    the repository, which Triton loads as a model and fails to start on, blaming a backend. The next
    write cleans every model's (putting back a moved-aside one that is the only copy), and
    local_server says what it is before starting."""
    out = tmp_path / "models"
    write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="python"), report=QUIET)
    staging = out / ".gan.k3x9q2ab.partial"
    shutil.copytree(out / "gan", staging)             # the kill came mid-copy of gan
    shutil.copytree(out / "gan", out / ".vae.edgegen-4242.old")   # and once between moving vae aside and switching it in
    with pytest.raises(ConfigError, match=re.escape(f"model repository {str(out)!r}: expected model folders only, "
                                                    "found '.gan.k3x9q2ab.partial' and 1 more, left by a killed edgegen "
                                                    "triton")):
        with local_server(out):
            pass
    said = []
    write_repository([str(trained["flow2d"][1])], out, report=said.append)   # another model: cleaned all the same
    assert said[:2] == ["removed .gan.k3x9q2ab.partial, left by a killed edgegen triton (Triton would load it as a model)",
                        "restored vae from .vae.edgegen-4242.old, the only copy of it, moved aside by a killed edgegen triton"]
    assert sorted(p.name for p in out.iterdir()) == ["flow2d", "gan", "vae"]
    # a hidden folder of the user's named alike is theirs: it was restored as a model, or unlinked as a file
    (out / ".notes.20261206.old").mkdir()
    (out / ".cfg.v2.deadbeef.tmp").mkdir()
    write_repository([str(trained["flow2d"][1])], out, overwrite=True, report=QUIET)
    assert sorted(p.name for p in out.iterdir()) == [".cfg.v2.deadbeef.tmp", ".notes.20261206.old", "flow2d", "gan", "vae"]


@pytest.fixture(scope="module")
def server(repository):
    _server_env_or_skip()
    with local_server(repository) as running:
        yield running
    assert running.process.poll() is not None   # stopped, whatever the tests did


def _inputs(module, values: dict):
    datatypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.float64): "FP64",
                 np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}
    made = []
    for name, array in values.items():
        tensor = module.InferInput(name, array.shape, datatypes[array.dtype])
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


def test_served_results_equal_the_pipeline_in_this_process(server, trained):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    z = np.random.default_rng(1).standard_normal((3, edgegen.load(trained["gan"][1]).latent_dim), dtype=np.float32)
    for module, url in ((http, server.http_url), (grpc, server.grpc_url)):
        client = module.InferenceServerClient(url)
        image = client.infer("gan", _inputs(module, {"z": z})).as_numpy("image")
        np.testing.assert_array_equal(image, edgegen.load(trained["gan"][1], threads=1).generate(z))
        arguments = {"n": np.array([[2]]), "seed": np.array([[5]]), "steps": np.array([[3]]), "labels": np.array([[7]]),
                     "sampler": np.array([[b"ddim"]], dtype=object), "guidance_scale": np.array([[2.5]])}
        (images,) = client.infer("diffusion", _inputs(module, arguments)).as_numpy("images")   # one request: one row
        expected = edgegen.load(trained["diffusion"][1], threads=1)(2, seed=5, steps=3, labels=7, sampler="ddim", guidance_scale=2.5)
        # the server's environment has numpy 1.26 (the wheel pins numpy<2), this one numpy 2, whose
        # scalar promotion (NEP 50) rounds some float32 steps of the sampler differently: in-process
        # runs of the same package under the two numpys differ by as much (measured 1e-6)
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)
    samples = http.InferenceServerClient(server.http_url).infer(
        "flow2d", _inputs(http, {"n": np.array([5]), "seed": np.array([0]), "temperature": np.array([0.7])}))
    np.testing.assert_array_equal(samples.as_numpy("samples"), edgegen.load(trained["flow2d"][1], threads=1)(5, seed=0, temperature=0.7))


def test_a_served_diffusion_request_may_start_from_a_picture(server, trained):
    """img2img and inpainting through Triton: the picture travels as an array, one row per request."""
    import tritonclient.http as http

    from edgegen.training.data import load_images

    images = load_images("digits", image_size=8).test[:1]
    mask = np.zeros((1, 1, 8, 8), np.float32)
    mask[..., 4:] = 1
    client = http.InferenceServerClient(server.http_url)
    pipe = edgegen.load(trained["diffusion"][1], threads=1)
    for pictures, expected in (({"strength": np.array([[0.5]])}, pipe.img2img(np.repeat(images, 2, 0), strength=0.5,
                                                                                steps=4, seed=3)),
                               ({"mask": mask[None]}, pipe.inpaint(np.repeat(images, 2, 0), mask, steps=4, seed=3))):
        values = {"image": images[None], "n": np.array([[2]]), "steps": np.array([[4]]), "seed": np.array([[3]]), **pictures}
        (answer,) = client.infer("diffusion", _inputs(http, values)).as_numpy("images")
        np.testing.assert_allclose(answer, expected, rtol=0, atol=1e-5)   # numpy 1 and 2: see above


def test_a_callers_mistake_is_a_400_with_edgegens_message(server):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException, match=r"\[400\] labels: expected class ids from 0 to 9, found 30"):
        client.infer("diffusion", _inputs(http, {"labels": np.array([[30]]), "steps": np.array([[2]])}))
    with pytest.raises(InferenceServerException, match="sampler"):
        client.infer("diffusion", _inputs(http, {"sampler": np.array([[b"nope"]], dtype=object)}))
    assert client.is_model_ready("diffusion")   # and it still serves


def test_concurrent_diffusion_requests_are_merged_and_each_gets_its_own_images(server, trained):
    """Triton's batcher hands the model requests queued together; they run as one batch through
    the denoiser, each with its own seed, labels and count, and one bad request fails alone."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    calls = [dict(n=2, seed=1, labels=3, sampler="euler-a"), dict(n=1, seed=2, labels=8, sampler="euler-a"),
             dict(n=3, seed=3, sampler="euler-a"), dict(n=1, seed=4, labels=99, sampler="euler-a")]

    def send(call):
        values = {k: np.array([[v.encode()]], dtype=object) if isinstance(v, str) else np.array([[v]])
                  for k, v in {**call, "steps": 4}.items()}
        try:
            return http.InferenceServerClient(server.http_url).infer("diffusion", _inputs(http, values)).as_numpy("images")[0]
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(send, calls))
    pipe = edgegen.load(trained["diffusion"][1], threads=1)
    # numpy 1 and 2 (see above), and the merged batch of 6 rows, whose denoiser calls round otherwise
    # than a call's alone, which Euler ancestral's steps carry on: measured 1.2e-5 at most
    for call, answer in zip(calls[:3], answers):
        np.testing.assert_allclose(answer, pipe(steps=4, **call), rtol=0, atol=5e-5)
    assert isinstance(answers[3], InferenceServerException) and "class ids" in str(answers[3])
    statistics = http.InferenceServerClient(server.http_url).get_inference_statistics("diffusion")
    batches = {int(b["batch_size"]) for b in statistics["model_stats"][0]["batch_stats"]}
    assert max(batches) > 1, f"expected requests merged into one execution, found batch sizes {batches}"


def test_gpt_streams_token_by_token_through_decoupled_mode(server, gpt_package):
    import tritonclient.grpc as grpc

    answers = queue.Queue()
    client = grpc.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        values = {"prompt": np.array([b"def "], dtype=object), "max_new_tokens": np.array([12]),
                  "greedy": np.array([True])}
        client.async_stream_infer("gpt", _inputs(grpc, values), enable_empty_final_response=True)
        pieces = []
        while True:
            result, error = answers.get(timeout=60)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            pieces.append(result.as_numpy("text")[0].decode())
    finally:
        client.stop_stream()
    assert len(pieces) > 1, "expected the text in pieces as the tokens come, found it in one"
    assert "".join(pieces) == edgegen.load(gpt_package, threads=1).generate("def ", max_new_tokens=12, do_sample=False)


def test_a_request_its_client_cancels_stops_the_pipeline_and_the_next_is_served(server, trained):
    """A diffusion request of minutes whose gRPC client cancels it, or whose deadline passes (a
    client gone): the pipeline ran to its end before, holding the instance; it stops at its next
    step now, says so in the server's log, and the next request is answered."""
    import time

    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(server.grpc_url)
    long = {"n": np.array([[1024]]), "steps": np.array([[500]]), "seed": np.array([[0]])}
    said = "diffusion: a request cancelled by its client stopped after sampler step "
    for way in ("cancel", "deadline"):
        answers = queue.Queue()
        call = client.async_infer("diffusion", _inputs(grpc, long), callback=lambda result, error: answers.put(error),
                                  client_timeout=2 if way == "deadline" else None)
        time.sleep(2)   # past the batcher's 0.3 s wait: the request is running, not queued
        if way == "cancel":
            call.cancel()
        assert re.search("CANCELLED|DEADLINE", str(answers.get(timeout=30))), way
        for _ in range(120):
            if server.log.read_text(errors="replace").count(said) == (1 if way == "cancel" else 2):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"{way}: expected {said!r} in the server's log, found {server.log.read_text().count(said)} "
                        "within a minute")
    short = {"n": np.array([[1]]), "steps": np.array([[2]]), "seed": np.array([[1]])}
    (images,) = client.infer("diffusion", _inputs(grpc, short), client_timeout=120).as_numpy("images")
    np.testing.assert_allclose(images, edgegen.load(trained["diffusion"][1], threads=1)(1, steps=2, seed=1), atol=1e-5)


def test_a_stream_its_client_cancels_stops_before_its_next_piece(gpt_package):
    """The decoupled GPT model checks its response sender between pieces (no server needed)."""
    import types

    from edgegen.families import get
    from edgegen.serving.requests import served

    sent, logged = [], []
    sender = types.SimpleNamespace(is_cancelled=lambda: len(sent) == 3, send=lambda response=None, flags=0:
                                   sent.append(flags or response))
    fake = types.SimpleNamespace(
        Tensor=lambda name, value: value, get_input_tensor_by_name=lambda request, name: request.values.get(name),
        InferenceResponse=lambda output_tensors, error=None: "piece", TRITONSERVER_RESPONSE_COMPLETE_FINAL="final",
        Logger=types.SimpleNamespace(log_info=logged.append))
    model = TritonPythonModel()
    model.pb, model.route, model.batched, model.name = fake, "pipeline", False, "gpt"
    model.pipe = edgegen.load(gpt_package, threads=1)
    model.request = served(get("gpt"), model.pipe.config)
    value = lambda array: types.SimpleNamespace(as_numpy=lambda: np.asarray(array))  # noqa: E731
    request = types.SimpleNamespace(values={"prompt": value([b"def "]), "max_new_tokens": value([40])},
                                    get_response_sender=lambda: sender)
    model._stream(request)
    assert sent == ["piece", "piece", "piece", "final"] and logged == ["gpt: a request cancelled by its client stopped "
                                                                       "after 3 pieces"]
    # a config made not decoupled by hand answers in one response: GPT's stream takes no callback,
    # which the cancellation check handed it (a TypeError since GPT's generate became stoppable)
    request.is_cancelled = lambda: False
    assert model._answer(request) == "piece"   # the fake's response: answered, not raised


def test_a_request_cancelled_mid_loop_is_answered_cancelled_and_an_older_triton_runs_it_through(trained):
    """The pipeline route's callback (no server needed): a diffusion request whose client went away
    stops after the step where Triton first says so; on a Triton before 23.10, whose requests have
    no is_cancelled, the request is answered as before."""
    import types

    from edgegen.families import get
    from edgegen.serving.requests import served

    logged, asked = [], []

    class TritonError:
        CANCELLED, INVALID_ARG = "cancelled", "400"

        def __init__(self, message, code):
            self.message, self.code = message, code

    fake = types.SimpleNamespace(
        Tensor=lambda name, value: (name, value), get_input_tensor_by_name=lambda request, name: request.values.get(name),
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(outputs=output_tensors, error=error),
        TritonError=TritonError, Logger=types.SimpleNamespace(log_info=logged.append))
    model = TritonPythonModel()
    model.pb, model.route, model.batched, model.name = fake, "pipeline", False, "diffusion"
    model.pipe = edgegen.load(trained["diffusion"][1], threads=1)
    model.request = served(get("diffusion"), model.pipe.config)
    value = lambda array: types.SimpleNamespace(as_numpy=lambda: np.asarray(array))  # noqa: E731
    values = {"n": value([2]), "steps": value([6]), "seed": value([1])}
    cancelled = types.SimpleNamespace(values=values, is_cancelled=lambda: asked.append(1) or len(asked) >= 2)
    answer = model._answer(cancelled)
    assert answer.error.code == "cancelled" and answer.outputs == [] and len(asked) == 2
    assert logged == ["diffusion: a request cancelled by its client stopped after sampler step 2"]
    older = model._answer(types.SimpleNamespace(values=values))
    assert older.error is None
    np.testing.assert_array_equal(dict(older.outputs)["images"], model.pipe(2, steps=6, seed=1))
    # a (done, total) loop's line says what it counts (helper 92: "stopped at 1 of 8" said nothing)
    from edgegen.serving import triton_model

    model.pipe, model.name = types.SimpleNamespace(counts="audio samples"), "wavenet"
    with pytest.raises(triton_model._Cancelled):
        model._stop_if_cancelled(types.SimpleNamespace(is_cancelled=lambda: True))(8000, 60000)
    assert logged[-1] == "wavenet: a request cancelled by its client stopped at 8000 of 60000 audio samples"


def test_a_request_past_the_models_max_count_is_the_callers_mistake(trained, tmp_path):
    """edgegen triton --max-count: one request for 60,000 audio samples held its instance for the
    requests behind it, and no option capped it."""
    import types

    out = tmp_path / "repo"
    write_repository([str(trained["diffusion"][1])], out, RepositoryOptions(max_count=4, threads=1), report=QUIET)
    assert read_config(out / "diffusion").parameters["edgegen_max_count"].string_value == "4"
    with pytest.raises(ConfigError, match=r"max_count \(--max-count\) 4, a pipeline-route request's largest count, "
                                          r"where no model takes one \(gan: graph route"):
        write_repository([str(trained["gan"][1])], tmp_path / "other", RepositoryOptions(max_count=4))
    with pytest.raises(ConfigError, match="max_count: expected an integer of at least 0, found -1"):
        write_repository([str(trained["diffusion"][1])], tmp_path / "other", RepositoryOptions(max_count=-1))

    class TritonError:
        INVALID_ARG = "400"

        def __init__(self, message, code):
            self.message, self.code = message, code

    fake = types.SimpleNamespace(
        Tensor=lambda name, value: (name, value), get_input_tensor_by_name=lambda request, name: request.get(name),
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(outputs=output_tensors, error=error),
        TritonError=TritonError)
    import json
    import sys

    from edgegen.serving import triton_model

    config = read_config(out / "diffusion")   # the cap as initialize reads it from the config edgegen wrote
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(triton_model, "NUMPY_2", False)
        patch.setitem(sys.modules, "triton_python_backend_utils",
                      types.SimpleNamespace(using_decoupled_model_transaction_policy=lambda config: False))
        model = TritonPythonModel()
        model.initialize({"model_config": json.dumps({"max_batch_size": config.max_batch_size, "parameters": {
            k: {"string_value": v.string_value} for k, v in config.parameters.items()}}),
            "model_repository": str(out / "diffusion"), "model_version": "1", "model_name": "diffusion"})
    assert model.max_count == 4
    model.pb = fake
    value = lambda array: types.SimpleNamespace(as_numpy=lambda: np.asarray(array))  # noqa: E731
    big, small = ({"n": value([[n]]), "steps": value([[2]]), "seed": value([[1]])} for n in (5, 4))
    refused, answered = model._merged([big, small])   # one request's mistake fails that one alone
    assert refused.error.message == "request input 'n': expected at most 4 (this model's --max-count), found 5"
    assert answered.error is None and dict(answered.outputs)["images"].shape[1] == 4


def test_the_server_stops_when_the_block_ends(repository, tmp_path):
    _server_env_or_skip()
    small = tmp_path / "one"
    shutil.copytree(repository / "gan", small / "gan")
    with local_server(small) as running:
        pid = running.pid
    assert running.process.poll() is not None
    import os

    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_a_tensorrt_backend_model_holds_the_engine_built_here(trained, tmp_path, monkeypatch):
    """No TensorRT here: edgegen's engine cache is replaced by a stand-in; what is checked is
    where the engine goes and that Triton may not batch beyond the engine's profile."""
    import edgegen.runtimes.engines as engines

    built = []

    def fake_cached_engines(path, precision="fp32", *args, **kwargs):
        built.append((str(path), precision))
        return {"generator": (tmp_path / "cache.engine", b"serialized engine")}

    monkeypatch.setattr(engines, "cached_engines", fake_cached_engines)
    out = tmp_path / "repo"
    write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="tensorrt",
                                                                      max_batch_size=64), report=QUIET)
    config = read_config(out / "gan")
    assert (config.platform, config.default_model_filename) == ("tensorrt_plan", "model.plan")
    assert config.max_batch_size == 16   # the default profile's largest batch (batch 1:1:16)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (out / "gan" / "1" / "model.plan").read_bytes() == b"serialized engine"
    assert built == [(str(trained["gan"][1]), "fp32")] * 2   # before any folder is written, then read into it


def test_a_tensorrt_model_is_refused_before_any_model_is_written(trained, tmp_path):
    """Without TensorRT (this machine), a repository of a pipeline-route model and a TensorRT one
    was refused after the first was written, leaving it and an --out made for the run."""
    if all(importlib.util.find_spec(m) for m in ("tensorrt", "cuda")):
        pytest.skip("TensorRT is here: the refusal is for a machine without it")
    out = tmp_path / "repo"
    with pytest.raises(BackendError, match="backend 'tensorrt': expected the tensorrt and cuda-python packages"):
        write_repository([str(trained["diffusion"][1]), str(trained["gan"][1])], out,
                         RepositoryOptions(graph_backend="tensorrt"), report=QUIET)
    assert not out.exists()


def test_a_one_value_per_item_tensor_travels_as_one_dim_reshaped_away():
    """cGAN's labels are [batch]: Triton needs a dim beyond the batch, so [1] reshaped to []."""
    from edgegen.serving.triton import _graph_field, _Plan, config_text
    from edgegen.package import TensorSpec

    labels, z = (_graph_field(TensorSpec(name, dtype, shape), batched=True)
                 for name, dtype, shape in (("labels", "int64", ("batch",)), ("z", "float32", ("batch", 64))))
    plan = _Plan("cgan", "graph", "tensorrt", 16, False, None, "generator", (z, labels), (z,))
    config = text_format.Parse(config_text(plan, RepositoryOptions()), model_config_pb2.ModelConfig())
    by_name = {i.name: i for i in config.input}
    assert list(by_name["labels"].dims) == [1] and list(by_name["labels"].reshape.shape) == []
    assert list(by_name["z"].dims) == [64] and not by_name["z"].HasField("reshape")
    # a TensorRT plan runs on GPU instances whatever --kind says
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_gpt_streams_over_http_generate_stream(server, gpt_package):
    """Triton's HTTP generate_stream endpoint: server-sent events, one per piece of text."""
    import json
    import urllib.request

    body = json.dumps({"prompt": "def ", "max_new_tokens": 12, "greedy": True}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/gpt/generate_stream", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        events = [line[len("data: "):] for line in answer.read().decode().splitlines() if line.startswith("data: {")]
    pieces = [json.loads(event)["text"] for event in events]
    assert len(pieces) > 1
    assert "".join(pieces) == edgegen.load(gpt_package, threads=1).generate("def ", max_new_tokens=12, do_sample=False)


def test_a_server_python_without_edgegen_is_told_to_install_it(trained, tmp_path):
    """A Python-backend model in a server whose Python lacks edgegen: the log said only
    "No module named 'edgegen'"."""
    import subprocess
    import sys

    out = tmp_path / "models"
    write_repository([str(trained["gan"][1])], out, RepositoryOptions(graph_backend="python"), report=QUIET)
    bare = Path(sys.base_prefix) / "bin" / "python3"   # the interpreter the environments were made from: no edgegen
    if subprocess.run([str(bare), "-I", "-c", "import edgegen"], capture_output=True).returncode == 0:
        pytest.skip(f"{bare} has edgegen")
    done = subprocess.run([str(bare), "-I", str(out / "gan" / "1" / "model.py")], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.rstrip().endswith(
        "ModuleNotFoundError: edgegen: expected edgegen's runtime in this Triton server's Python, found none: install "
        "it there (pip install the edgegen wheel; see edgegen's docs/serving.md, 'The server's Python')"), done.stderr


def test_a_missing_server_environment_says_how_to_make_and_name_one(tmp_path, monkeypatch):
    """With edgegen installed from a wheel there is no checkout's .venv-triton: the refusal names env=
    and EDGEGEN_TRITON_ENV, not only the checkout's command."""
    with pytest.raises(ConfigError, match=re.escape(f"Triton server environment {str(tmp_path)!r}: expected "
                                                    "nvidia-pytriton's tritonserver in it, found none (make one: ")
                       + r".*then pass env= or set EDGEGEN_TRITON_ENV to it\)$"):
        pytriton_root(tmp_path)
    # nothing given, in an installed edgegen: it named site-packages/.venv-triton, a path the user never chose
    monkeypatch.delenv("EDGEGEN_TRITON_ENV", raising=False)
    monkeypatch.setattr("edgegen.serving.local_server.DEFAULT_ENV", tmp_path / "site-packages" / ".venv-triton")
    with pytest.raises(ConfigError, match=re.escape("Triton server environment none given (env=, or $EDGEGEN_TRITON_ENV; "
                                                    "a checkout's .venv-triton is taken without either): expected")):
        pytriton_root()


def test_a_server_that_fails_to_start_is_said_by_its_error_lines_and_what_to_write_instead(tmp_path):
    """A failed load is followed by the server's shutdown lines: the cause is its error line, and a
    model that wants a backend this server lacks is told how to write it."""
    from edgegen.serving.local_server import _tail

    log = tmp_path / "tritonserver.log"
    log.write_text("I1204 12:00:00.000001 1 model_lifecycle.cc:469] loading: vae:1\n"
                   "E1204 12:00:00.000002 1 model_lifecycle.cc:638] failed to load 'vae' version 1: Invalid argument: "
                   "unable to find backend library for backend 'onnxruntime', try specifying runtime on the model "
                   "configuration.\n"
                   "E1204 12:00:00.000003 1 stub_launcher.cc:385] Failed to initialize Python stub: ValueError: x\n"
                   "\nAt:\n  model.py(12): initialize\n"
                   + "".join(f"I1204 12:00:01.{i:06d} 1 server.cc:607] shutting down\n" for i in range(40)))
    said = _tail(log)
    assert said.startswith("E1204") and "unable to find backend library for backend 'onnxruntime'" in said
    assert "At:\n  model.py(12): initialize" in said   # an error's continuation lines stay with it
    assert "shutting down" not in said and said.endswith("write the repository with edgegen triton --graph-backend python)")
    # a folder Triton took for a model (a killed write's) is no backend this server lacks: no such advice
    log.write_text("E1204 12:00:00.000002 1 model_lifecycle.cc:638] failed to load '.gan.k3x9q2ab.partial' version 1: "
                   "Invalid argument: unable to find backend library for backend 'gan.k3x9q2ab.partial'\n")
    assert "--graph-backend python" not in _tail(log)
    log.write_text("".join(f"I1204 line {i}\n" for i in range(40)))   # no error line: the tail
    assert _tail(log).splitlines() == [f"I1204 line {i}" for i in range(10, 40)]
    # a server that hangs: the GPU-less start's error line said nothing, and the stub's own line,
    # not a Triton log line, was dropped (helper 92)
    log.write_text("+------+-------+\n| Option | Value |\n+------+-------+\n"
                   "E1205 18:58:52.907801 1 server.cc:241] \"CudaDriverHelper has not been initialized.\"\n"
                   "I1205 18:58:53.000000 1 python_be.cc:2289] TRITONBACKEND_ModelInstanceInitialize: gan_0_0\n"
                   "2026-12-05 18:58:53.1 [W:onnxruntime:, graph.cc:1] a warning of a model's, no failure\n"
                   "/opt/stub/triton_python_backend_stub: error while loading shared libraries: libcudart.so.12: "
                   "cannot open shared object file\n"
                   "I1205 18:58:54.000000 1 server.cc:674] waiting\n")
    assert _tail(log) == ("/opt/stub/triton_python_backend_stub: error while loading shared libraries: libcudart.so.12: "
                          "cannot open shared object file")


def test_a_model_whose_python_backend_needs_the_text_extra_says_so(shipped_package, tmp_path):
    """text2image's prompts go through the tokenizers library: the server's Python needs edgegen's
    text extra, which was found missing at the server's first load only."""
    said = []
    write_repository([str(shipped_package("text2image-digits")), str(shipped_package("gpt-stdlib"))], tmp_path / "r",
                     report=said.append)
    needs = [line for line in said if "needs edgegen's text extra" in line]
    assert needs == ["text2image-digits: its Python backend needs edgegen's text extra in the server's Python (the "
                     "tokenizers library, for its Hugging Face tokenizer)"]   # gpt-stdlib's tokenizer is bytes
