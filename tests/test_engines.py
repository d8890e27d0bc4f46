"""TensorRT engines: the cache key, staleness rules and profile derivation (no GPU needed),
and the whole chain where a GPU and TensorRT are present."""

import importlib.util
import json
import warnings

import numpy as np
import pytest

from edgegen.cli import main
from edgegen.errors import BackendError, ConfigError, EdgegenWarning
from edgegen.package import Package, TensorSpec
from edgegen.families import get as get_family
from edgegen.runtimes.engines import EngineCache, EngineKey, derive_profile, dim_limits

PROFILE = (("z", (1, 64), (1, 64), (16, 64)),)


def _key(**changes):
    fields = dict(graph_sha256="a" * 64, tensorrt="10.3.0", gpu="Orin", compute_capability="8.7", precision="fp32",
                  profile=PROFILE)
    return EngineKey(**{**fields, **changes})


def test_a_cached_engine_is_used_only_for_the_same_key_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    cache = EngineCache(tmp_path / "cache")
    assert cache.lookup("generator", _key()) is None and not cache.rejected   # nothing yet
    cache.store("generator", _key(), b"engine bytes")
    assert cache.lookup("generator", _key()) == b"engine bytes"
    for change, said in ((dict(tensorrt="11.2.0"), "tensorrt '10.3.0'"), (dict(gpu="NVIDIA H200", compute_capability="9.0"), "gpu 'Orin'"),
                         (dict(graph_sha256="b" * 64), "graph_sha256"), (dict(profile=(("z", (1, 64), (4, 64), (8, 64)),)), "profile")):
        assert cache.lookup("generator", _key(**change)) is None
        assert said in cache.rejected[-1] and "rebuilding" in cache.rejected[-1]
    engine = tmp_path / "cache" / "generator.fp32.engine"
    engine.write_bytes(b"engine bytez")                                     # edited by hand
    assert cache.lookup("generator", _key()) is None and "bytes changed" in cache.rejected[-1]
    (tmp_path / "cache" / "generator.fp32.json").write_text("{not json")
    assert cache.lookup("generator", _key()) is None and "unreadable" in cache.rejected[-1]
    cache.store("generator", _key(precision="int8"), b"int8 engine")         # precisions sit side by side
    assert (tmp_path / "cache" / "generator.int8.engine").read_bytes() == b"int8 engine"


def test_only_engines_this_users_edgegen_built_are_trusted(tmp_path, monkeypatch):
    """An engine and a record that matches it, dropped into a package (or built by another
    user, with another engine key), are rebuilt, never handed to TensorRT's deserializer."""
    import hashlib
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "mine"))
    cache = EngineCache(tmp_path / "pkg-cache")
    planted = b"an engine from elsewhere"
    (tmp_path / "pkg-cache").mkdir()
    (tmp_path / "pkg-cache" / "generator.fp32.engine").write_bytes(planted)
    (tmp_path / "pkg-cache" / "generator.fp32.json").write_text(json.dumps(
        {"key": _key().to_json(), "engine_sha256": hashlib.sha256(planted).hexdigest(), "bytes": len(planted)}))
    assert cache.lookup("generator", _key()) is None and "not built by this user's edgegen" in cache.rejected[-1]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
    cache.store("generator", _key(), planted)                 # signed with another user's key
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "mine"))
    assert cache.lookup("generator", _key()) is None and "not built by this user's edgegen" in cache.rejected[-1]
    cache.store("generator", _key(), b"built here")
    assert cache.lookup("generator", _key()) == b"built here"
    key_file = tmp_path / "mine" / "edgegen" / "engine.key"
    assert len(key_file.read_bytes()) == 32 and key_file.stat().st_mode & 0o777 == 0o600
    key_file.write_bytes(b"")              # a key cut short (a crash as it was made): never used as b""
    assert cache.lookup("generator", _key()) is None and len(key_file.read_bytes()) == 32
    cache.store("generator", _key(), b"built here")
    planted_key = key_file.read_bytes()   # a key others may write (a shared cache): another user could sign with it
    key_file.chmod(0o666)
    with pytest.warns(EdgegenWarning, match=r"engine key '.*engine.key': expected a file only this user can write, found "
                                            r"one of mode 666: replaced \(the engines it signed are built again\)"):
        assert cache.lookup("generator", _key()) is None
    assert key_file.read_bytes() != planted_key and key_file.stat().st_mode & 0o777 == 0o600
    # a file system that shows every file as mode 777 (WSL's /mnt/c): the key was replaced at every call
    monkeypatch.setattr("edgegen.runtimes.engines._writable_by_others", lambda path: "one of mode 777")
    kept = key_file.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.lookup("generator", _key()) is None   # (stored under the key replaced above)
        cache.store("generator", _key(), b"built here")
        assert cache.lookup("generator", _key()) == b"built here" and key_file.read_bytes() == kept
    (tmp_path / "pkg-cache" / "generator.fp32.json").write_text("[]")   # a record of another shape: rebuilt
    assert cache.lookup("generator", _key()) is None and "unreadable record" in cache.rejected[-1]


def test_onnx_runtimes_engines_inside_a_package_are_read_only_where_this_users_edgegen_made_their_folder(
        trained, tmp_path, monkeypatch):
    """ONNX Runtime deserializes every engine in its folder unchecked: engines that came with a
    received package (a colleague's, or copied from another path) were read. No TensorRT here:
    the folder is chosen before ONNX Runtime is asked for anything."""
    import shutil

    from edgegen.package import user_engines_dir
    from edgegen.runtimes.engines import ORT_ENGINES_MARK, ort_engine_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    pkg = shutil.copytree(trained["gan"][1], tmp_path / "mine")
    assert ort_engine_cache(pkg) == pkg / ".edgegen-cache"   # made here, and marked before any engine
    (pkg / ".edgegen-cache" / "ort-tensorrt" / "TensorrtExecutionProvider_graph.engine").write_bytes(b"built here")
    assert ort_engine_cache(pkg) == pkg / ".edgegen-cache"   # read again at the next load
    copy = shutil.copytree(pkg, tmp_path / "copied")          # its engines and mark, at another path
    with pytest.warns(EdgegenWarning, match="not made by this user's edgegen at this path"):
        assert ort_engine_cache(copy) == user_engines_dir(copy)
    received = shutil.copytree(trained["gan"][1], tmp_path / "received")
    (received / ".edgegen-cache" / "ort-tensorrt").mkdir(parents=True)
    (received / ".edgegen-cache" / "ort-tensorrt" / "TensorrtExecutionProvider_graph.engine").write_bytes(b"theirs")
    (received / ".edgegen-cache" / "ort-tensorrt" / ORT_ENGINES_MARK).write_text('{"signature": "0"}')
    with pytest.warns(EdgegenWarning, match=r"engines in .*received/.edgegen-cache/ort-tensorrt' were not made by this "
                                            r"user's edgegen at this path .*: not read, and built in .* instead \(remove"):
        assert ort_engine_cache(received) == user_engines_dir(received)
    assert (received / ".edgegen-cache" / "ort-tensorrt" / "TensorrtExecutionProvider_graph.engine").read_bytes() == b"theirs"
    assert (user_engines_dir(received) / "ort-tensorrt" / ORT_ENGINES_MARK).is_file()
    assert ort_engine_cache(received, cache_dir=tmp_path / "chosen") == tmp_path / "chosen"   # the caller's folder
    def no_key():   # a read-only HOME: the key cannot be made (root passes any mode, so said here)
        raise BackendError("engine key '/home/.cache/edgegen/engine.key': expected a readable, writable file in the "
                           "user's cache (it signs the engines this user builds), found: Read-only file system")

    monkeypatch.setattr("edgegen.runtimes.engines._engine_key", no_key)
    with pytest.raises(BackendError, match="engine key .*; for ONNX Runtime's engines alone, pass edgegen.load's cache_dir="):
        ort_engine_cache(shutil.copytree(trained["gan"][1], tmp_path / "another"))


def test_onnx_runtimes_engines_of_graphs_changed_in_place_are_removed(trained, tmp_path, monkeypatch):
    """ONNX Runtime names its engines by the graph's path and structure, not its weights: a package
    whose files were replaced by a retrained model's (same layout, same names) ran the old engines."""
    import shutil

    from pathlib import Path

    from edgegen.package import user_engines_dir
    from edgegen.runtimes.engines import ORT_ENGINES_GRAPHS, ort_engine_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    pkg = shutil.copytree(trained["gan"][1], tmp_path / "mine")
    engines = pkg / ".edgegen-cache" / "ort-tensorrt"
    digests = Package(pkg).graph_digests("fp32")
    assert ort_engine_cache(pkg, graphs=digests) == pkg / ".edgegen-cache"
    assert json.loads((engines / ORT_ENGINES_GRAPHS).read_text()) == digests
    for name in ("TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_sm87.engine",
                 "TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_sm87.profile", "TensorrtExecutionProvider_cache_sm87.timing"):
        (engines / name).write_bytes(b"built from the first weights")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ort_engine_cache(pkg, graphs=digests)   # the same graphs: kept, without a word
    assert len(list(engines.glob("TensorrtExecutionProvider*"))) == 3
    # the same graph file, other weights: its digest differs
    changed = {file: "0" * 64 for file in digests}
    with pytest.warns(EdgegenWarning, match=r"ONNX Runtime's engines in .*ort-tensorrt' were built from other graphs than "
                                            r"generator.onnx now \(changed since\): removed, and built again"):
        ort_engine_cache(pkg, graphs=changed)
    assert sorted(p.name for p in engines.glob("TensorrtExecutionProvider*")) == ["TensorrtExecutionProvider_cache_sm87.timing"]
    assert json.loads((engines / ORT_ENGINES_GRAPHS).read_text()) == changed
    # engines an earlier edgegen built, with no record of their graphs: not trusted either
    (engines / ORT_ENGINES_GRAPHS).unlink()
    (engines / "TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_sm87.engine").write_bytes(b"an earlier edgegen's")
    with pytest.warns(EdgegenWarning, match="with no record of the graphs they came from"):
        ort_engine_cache(pkg, graphs=digests)
    assert not list(engines.glob("*.engine"))
    # a variant's graphs beside fp32's: recorded together, neither removing the other's engines
    (engines / "TensorrtExecutionProvider_TRTKernel_graph_main_2_0_0_sm87.engine").write_bytes(b"fp32's")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ort_engine_cache(pkg, graphs={"generator.int8.onnx": "1" * 64})
    assert (engines / "TensorrtExecutionProvider_TRTKernel_graph_main_2_0_0_sm87.engine").exists()
    assert json.loads((engines / ORT_ENGINES_GRAPHS).read_text()) == {**digests, "generator.int8.onnx": "1" * 64}
    # another package's graphs in one cache_dir (recorded by their whole paths): neither removes the other's engines
    shared = tmp_path / "shared"
    for path in ("/a/decoder.onnx", "/b/decoder.onnx"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ort_engine_cache(pkg, cache_dir=shared, graphs={path: "2" * 64})
        (shared / "ort-tensorrt" / f"TensorrtExecutionProvider_{path[1]}.engine").write_bytes(b"built")
    assert len(list((shared / "ort-tensorrt").glob("*.engine"))) == 2
    # engines of other graphs in a package folder this user cannot write in: built in the user's cache
    # instead (removing them failed as PermissionError; root passes any mode, so the probe is patched)
    (engines / "TensorrtExecutionProvider_TRTKernel_graph_main_3_0_0_sm87.engine").write_bytes(b"old weights'")
    monkeypatch.setattr("edgegen.runtimes.engines.can_write_files_in", lambda folder: Path(folder) != engines)
    with pytest.warns(EdgegenWarning, match=r"were built from other graphs than generator.onnx now \(changed since\), "
                                            r"and this user cannot remove them: not read, and built in .* instead"):
        assert ort_engine_cache(pkg, graphs=changed) == user_engines_dir(pkg)
    assert (engines / "TensorrtExecutionProvider_TRTKernel_graph_main_3_0_0_sm87.engine").exists()
    with warnings.catch_warnings():   # its own graphs: read there, the record left as it is
        warnings.simplefilter("error")
        assert ort_engine_cache(pkg, graphs={**digests, "generator.int8.onnx": "1" * 64}) == pkg / ".edgegen-cache"


def test_a_package_this_user_cannot_write_in_keeps_its_engines_in_the_users_cache(trained, tmp_path, monkeypatch):
    """A shipped model installed system-wide (read-only storage, or another user's files) cannot hold
    the engines built from it: they go to the user's cache, a folder per package path, where the
    next build finds them; `edgegen cache` lists them and prunes them once the package is gone.
    Engines built inside a package before it became read-only are still read there. No TensorRT
    here: the device and its builder are stand-ins."""
    import shutil
    import tempfile
    from pathlib import Path

    import edgegen.runtimes.engines as engines
    from edgegen.cache import cache_entries, prune
    from edgegen.errors import BackendError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    monkeypatch.setattr(engines, "device_identity", lambda: ("10.3.0", "Orin", "8.7"))
    built = []
    monkeypatch.setattr(engines, "build_engine", lambda graph, *args: built.append(graph.name) or b"engine")
    read_only = []   # folders the system refuses new files in (this suite may run as root, whom modes do not stop)
    make_temporary = tempfile.mkstemp

    def refused_in_read_only(*args, dir=None, **kwargs):
        if dir is not None and any(Path(dir).resolve().is_relative_to(folder.resolve()) for folder in read_only):
            raise PermissionError(13, "Permission denied")
        return make_temporary(*args, dir=dir, **kwargs)

    monkeypatch.setattr("edgegen.storage.tempfile.mkstemp", refused_in_read_only)
    users = tmp_path / "user" / "edgegen" / "engines"
    quiet = lambda line: None   # noqa: E731

    writable = shutil.copytree(trained["gan"][1], tmp_path / "writable")
    inside = writable / ".edgegen-cache" / "tensorrt" / "generator.fp32.engine"
    assert engines.cached_engines(writable, report=quiet)["generator"][0] == inside
    read_only.append(writable)   # then mounted read-only: its engines are read where they are
    lines = []
    assert engines.cached_engines(writable, report=lines.append)["generator"][0] == inside
    assert built == ["generator.onnx"] and "cached engine matches" in lines[-1] and not users.exists()

    built.clear()
    pkg = shutil.copytree(trained["gan"][1], tmp_path / "system" / "gan-digits")
    read_only.append(pkg)
    path, data, _ = engines.cached_engines(pkg, report=quiet)["generator"]
    folder = path.parent.parent
    assert folder.parent == users and folder.name.startswith("gan-digits-")
    assert (built, data, path.read_bytes()) == (["generator.onnx"], b"engine", b"engine")
    assert not (pkg / ".edgegen-cache").exists()
    (tmp_path / "link").symlink_to(pkg)   # another spelling of the same package: the same folder
    assert engines.cached_engines(tmp_path / "link", report=lines.append)["generator"][0] == path
    assert built == ["generator.onnx"] and "cached engine matches" in lines[-1]

    root = tmp_path / "user" / "edgegen"
    (entry,) = [e for e in cache_entries(root) if e.path == folder]
    assert entry.kind == (f"engines of the package {pkg.resolve()}, built here since this user could not write in it or "
                          "its engines there were not this user's")
    assert entry.stale is None and entry.size > 0
    other = shutil.copytree(trained["gan"][1], tmp_path / "elsewhere" / "gan-digits")
    read_only.extend([other, users])   # nor the user's cache: said, with the way out
    with pytest.raises(BackendError, match=r"engine cache '.*engines/gan-digits-.*': expected a folder this user can "
                                           r"write engines in, found Permission denied \(pass edgegen.load's cache_dir= or "
                                           r"edgegen build's --cache-dir, or set XDG_CACHE_HOME"):
        engines.cached_engines(other, report=quiet)
    shutil.rmtree(pkg)
    (entry,) = [e for e in cache_entries(root) if e.path == folder]
    assert entry.stale == f"the package {pkg.resolve()} is gone"
    assert prune([entry], report=quiet) == [entry] and not folder.exists()
    # a folder given (edgegen build --cache-dir, edgegen.load's cache_dir) holds them as the default's does
    read_only.clear()
    assert engines.cached_engines(writable, cache_dir=tmp_path / "given", report=quiet)["generator"][0] == \
        tmp_path / "given" / "tensorrt" / "generator.fp32.engine"


def test_two_processes_wanting_one_engine_build_it_once(trained, tmp_path, monkeypatch):
    """A second build of the same engine waits on the first's writer lock and reads its engine,
    instead of building another and storing it over the first's (an engine beside the other
    build's record, which the next load would call changed bytes). Threads stand in for the two
    processes (each takes its own flock); the first build waits until the second has reached the
    lock, or has started a build of its own."""
    import shutil
    import threading

    import edgegen.runtimes.engines as engines
    import edgegen.storage as storage

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    monkeypatch.setattr(engines, "device_identity", lambda: ("10.3.0", "Orin", "8.7"))
    second_arrived = threading.Event()
    try_lock = storage._try_lock
    monkeypatch.setattr(storage, "_try_lock", lambda fd: try_lock(fd) or second_arrived.set())
    builds = []

    def build(graph, *args):
        builds.append(threading.current_thread().name)
        if len(builds) == 1:
            second.start()
            assert second_arrived.wait(timeout=60)
        else:
            second_arrived.set()
        return f"engine {len(builds)}".encode()

    monkeypatch.setattr(engines, "build_engine", build)
    pkg = shutil.copytree(trained["gan"][1], tmp_path / "gan")
    said, got = [], {}
    second = threading.Thread(name="second", target=lambda: got.update(
        second=engines.cached_engines(pkg, report=said.append)["generator"]))
    got["first"] = engines.cached_engines(pkg, report=lambda line: None)["generator"]
    second.join(timeout=60)
    assert builds == ["MainThread"] and got["second"] == got["first"]
    assert said[-1] == "generator: another process built its engine meanwhile: using it"
    assert engines.cached_engines(pkg, report=said.append)["generator"][1] == b"engine 1"
    assert "cached engine matches" in said[-1]


def test_an_engine_built_with_a_profile_is_what_later_loads_use(trained, tmp_path, monkeypatch):
    """`edgegen build --profile batch=1:8:32` built an engine that no load used: load, serve and
    bench asked for the default profile, called the engine built for another setup and built the
    default one over it (minutes on a Jetson, each way). No TensorRT here: stand-ins."""
    import shutil

    import edgegen.runtimes.engines as engines
    from edgegen.serving.triton import RepositoryOptions, _engine_batch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    monkeypatch.setattr(engines, "device_identity", lambda: ("10.3.0", "Orin", "8.7"))
    built = []
    monkeypatch.setattr(engines, "build_engine", lambda graph, profile, *args: built.append(profile) or b"engine")
    pkg = shutil.copytree(trained["gan"][1], tmp_path / "gan")
    engines.build_package(pkg, profiles=["batch=1:8:32"], report=lambda line: None)
    said = []
    path, data, profile = engines.cached_engines(pkg, report=said.append)["generator"]
    assert len(built) == 1 and profile == (("z", (1, 64), (8, 64), (32, 64)),) == built[0]
    assert said == ["generator: cached engine matches (Orin, TensorRT 10.3.0, fp32, the profile edgegen build "
                    "--profile gave it)"]
    package = Package(pkg)
    assert engines.load_profiles(package)["generator"] == profile   # what a TensorRT session checks feeds against
    assert _engine_batch(package, "generator", RepositoryOptions(graph_backend="tensorrt", max_batch_size=32)) == 32
    record = pkg / ".edgegen-cache" / "tensorrt" / "generator.fp32.json"
    signed = record.read_text()
    forged = json.loads(signed)
    forged["key"]["profile"][0][3] = [64, 64]   # a record this user's edgegen did not sign steers nothing
    record.write_text(json.dumps(forged))
    assert engines.load_profiles(package)["generator"][0][3] == (16, 64)
    record.write_text(signed)
    engines.cached_engines(pkg, profiles=["batch=1:2:4"], report=lambda line: None)   # another one asked for: built
    assert len(built) == 2 and engines.load_profiles(package)["generator"][0][3] == (4, 64)
    engines.build_package(pkg, report=lambda line: None)   # build without --profile: the default again
    assert built[-1] == (("z", (1, 64), (1, 64), (16, 64)),) and engines.load_profiles(package)["generator"][0][3] == (16, 64)


def test_profiles_come_from_the_manifest_dims(trained):
    package = Package(trained["gan"][1])
    (profile,) = derive_profile(package.graphs["generator"].inputs, dim_limits(package))
    assert profile == ("z", (1, 64), (1, 64), (16, 64))
    (profile,) = derive_profile(package.graphs["generator"].inputs, {}, {"batch": (2, 4, 8)})
    assert profile[1:] == ((2, 64), (4, 64), (8, 64))
    cache = TensorSpec("past_key_values.0.key", "float32", ("batch", 4, "past_sequence_length", 16))
    ids = TensorSpec("input_ids", "int64", ("batch", "sequence"))
    gpt = get_family("gpt")   # a token family declares its sequence dims' limits from its config
    limits = gpt.limits(gpt.config(vocab_size=256, block_size=256, n_layer=1, n_head=4, head_dim=16, n_embd=64,
                                   tokenizer={"kind": "bytes"}))
    assert derive_profile((cache, ids), limits) == (
        ("past_key_values.0.key", (1, 4, 0, 16), (1, 4, 1, 16), (16, 4, 256, 16)),
        ("input_ids", (1, 1), (1, 1), (16, 256)))
    # a family (or a user's export) that declares the batch's limit gets it in the profile
    assert derive_profile((ids,), {"batch": 64, "sequence": 8})[0][3] == (64, 8)
    with pytest.raises(ConfigError, match="--profile frames"):
        derive_profile((TensorSpec("x", "float32", ("batch", "frames")),), {})


def test_build_without_tensorrt_says_what_is_missing(trained, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the gpu test covers build")
    from edgegen.runtimes.backends import no_nvidia_gpu_here

    assert main(["build", str(trained["gan"][1]), "--backend", "tensorrt"]) == 2
    said = ("found tensorrt and cuda missing and no NVIDIA GPU on this machine" if no_nvidia_gpu_here() else
            "found tensorrt and cuda missing (pip install 'edgegen[tensorrt]'; on a Jetson, JetPack's TensorRT and pip "
            "install 'cuda-python>=12.6.1,<13' on JetPack 6, 'cuda-python>=13,<14' on JetPack 7")   # quoted for zsh
    assert said in capsys.readouterr().err   # one message, a name's or a path's
    # the package's own mistakes are said first: each was said as TensorRT missing
    for args, said in ((["--precision", "int8"], "expected int8 variants (made by 'edgegen optimize --precision int8'), "
                                                 "found none"),
                       (["--profile", "foo=1:1:1"], "--profile: expected dynamic dims of the package's graphs"),
                       (["--target", "jetpack6", "--precision", "int8"], "expected int8 variants")):
        assert main(["build", str(trained["gan"][1]), *args]) == 2
        assert said in capsys.readouterr().err


@pytest.mark.gpu
def test_engine_build_then_cache_hit_on_a_gpu(request):
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        pytest.skip("needs TensorRT and cuda-python on an NVIDIA GPU (pip install edgegen[tensorrt])")
    from edgegen.runtimes.engines import build_package

    pkg = request.getfixturevalue("package_copy")("gan")   # after the skip: the fixture trains for a minute
    lines = []
    first = build_package(pkg, report=lines.append)
    assert first["generator"].stat().st_size > 0 and "building" in lines[-1]
    build_package(pkg, report=lines.append)
    assert "cached engine matches" in lines[-1]
    first["generator"].write_bytes(first["generator"].read_bytes()[:-1] + b"\0")
    build_package(pkg, report=lines.append)
    assert any("bytes changed" in line for line in lines) and "building" in lines[-1]
    # the engines against ONNX Runtime fp32 through the same pipeline
    import edgegen

    trt_pipe, ort_pipe = edgegen.load(pkg, backend="tensorrt"), edgegen.load(pkg, backend="ort-cpu")
    z = np.random.default_rng(0).standard_normal((4, trt_pipe.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(trt_pipe.generate(z), ort_pipe.generate(z), atol=2e-3)


def test_the_session_base_refuses_shapes_outside_the_engine_profile():
    """Every backend's session checks feeds the same way; an engine's session also checks its
    profile before any copy to the device (guidance doubles a diffusion batch past it)."""
    from edgegen.errors import InputError
    from edgegen.runtimes.session import Session

    class Echo(Session):
        def _run(self, feeds):
            return feeds

    specs = (TensorSpec("sample", "float32", ("batch", 1, 8, 8)),)
    session = Echo("unet", specs, specs, profile=(("sample", (1, 1, 8, 8), (1, 1, 8, 8), (16, 1, 8, 8)),))
    assert session.run({"sample": np.zeros((16, 1, 8, 8), np.float32)})["sample"].shape[0] == 16
    with pytest.raises(InputError, match=r"'sample': expected dim 'batch' within the engine's profile 1 to 16, "
                                         r"found 32 \(build the engine with --profile batch=MIN:OPT:MAX covering 32\)"):
        session.run({"sample": np.zeros((32, 1, 8, 8), np.float32)})
    with pytest.raises(InputError, match="expected dtype float32"):   # the ordinary feed check comes first
        session.run({"sample": np.zeros((32, 1, 8, 8), np.float64)})


def test_a_pipeline_batch_past_the_engine_profile_runs_in_calls_the_profile_takes():
    """run_rows splits the batch dim into calls of the profile's largest batch and joins the
    rows back in order; inputs without the batch dim go whole to every call, and a graph with an
    output the rows would not join along runs whole (so its profile error stands)."""
    from edgegen.errors import InputError
    from edgegen.runtimes.session import Session

    calls = []

    class Scale(Session):
        def _run(self, feeds):
            calls.append(len(feeds["sample"]))
            return {"prediction": feeds["sample"] * feeds["scale"], "total": feeds["sample"].sum(keepdims=True)}

    specs = (TensorSpec("sample", "float32", ("batch", 1, 8, 8)), TensorSpec("scale", "float32", (1,)))
    prediction = (TensorSpec("prediction", "float32", ("batch", 1, 8, 8)),)
    profile = (("sample", (1, 1, 8, 8), (1, 1, 8, 8), (16, 1, 8, 8)), ("scale", (1,), (1,), (1,)))
    session = Scale("unet", specs, prediction, profile=profile)
    assert session.max_rows == 16
    sample = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
    out = session.run_rows({"sample": sample, "scale": np.array([2.0], np.float32)})
    assert calls == [16, 16, 8]
    np.testing.assert_array_equal(out["prediction"], sample * 2)
    kept = []   # keep: what the caller uses of each call, taken before the next

    def corner(outputs):
        kept.append(outputs["prediction"].shape[0])
        return {"corner": outputs["prediction"][:, :, :1, :1]}

    out = session.run_rows({"sample": sample, "scale": np.array([2.0], np.float32)}, keep=corner)
    assert kept == [16, 16, 8] and list(out) == ["corner"]
    np.testing.assert_array_equal(out["corner"], sample[:, :, :1, :1] * 2)

    joined_wrongly = Scale("unet", specs, prediction + (TensorSpec("total", "float32", (1,)),), profile=profile)
    with pytest.raises(InputError, match="within the engine's profile 1 to 16, found 40"):
        joined_wrongly.run_rows({"sample": sample, "scale": np.array([2.0], np.float32)})

    # an engine whose smallest batch is 4 (--profile batch=4:8:16): a call of fewer rows is padded with
    # copies of its last row, whose outputs are dropped, where it used to be refused by the profile
    calls.clear()
    at_least_4 = Scale("unet", specs, prediction, profile=((("sample", (4, 1, 8, 8), (8, 1, 8, 8), (16, 1, 8, 8)),
                                                            ("scale", (1,), (1,), (1,)))))
    assert at_least_4.min_rows == 4
    for n, sizes in ((18, [16, 4]), (3, [4])):
        out = at_least_4.run_rows({"sample": sample[:n], "scale": np.array([2.0], np.float32)}, keep=corner)
        assert calls[-len(sizes):] == sizes
        np.testing.assert_array_equal(out["corner"], sample[:n, :, :1, :1] * 2)   # n rows, in order
    assert kept[-1] == 3   # keep sees the rows asked for, never the padding


class _OneDeviceContext:
    """A stand-in for TensorRT's execution context and cuda-python's runtime: "device" buffers are
    bytearrays by address, and the engine doubles its input slowly, so that two calls at once
    overlap and mix their buffers unless the session makes them take turns."""

    def __init__(self):
        self.memory, self.shapes = {1: bytearray(64), 2: bytearray(64)}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def execute_async_v3(self, stream):
        import time

        time.sleep(0.002)   # a call's run: long enough for another thread's copies to land meanwhile
        doubled = np.frombuffer(bytes(self.memory[1]), np.float32) * 2
        self.memory[2][:] = doubled.tobytes()
        return True

    def cudaMemcpyAsync(self, destination, source, size, kind, stream):   # noqa: N802 - cuda-python's name
        import ctypes

        if destination in self.memory:
            self.memory[destination][:size] = ctypes.string_at(source, size)
        else:
            ctypes.memmove(destination, bytes(self.memory[source][:size]), size)
        return (0,)

    def cudaStreamSynchronize(self, stream):   # noqa: N802
        return (0,)

    def cudaFree(self, pointer):   # noqa: N802
        return (0,)


def test_a_tensorrt_session_called_from_several_threads_gives_each_its_own_result():
    """The engine's buffers and shapes are its one context's: calls from threads take turns, where
    at once one thread's input was doubled into another's result. (A stand-in device: no GPU here.)"""
    import threading
    from edgegen.runtimes.engines import TensorRTSession
    from edgegen.runtimes.session import Session

    spec = (TensorSpec("x", "float32", ("batch", 4)),)
    session = TensorRTSession.__new__(TensorRTSession)
    Session.__init__(session, "graph", spec, (TensorSpec("y", "float32", ("batch", 4)),),
                     (("x", (1, 4), (1, 4), (4, 4)),))
    device = _OneDeviceContext()
    session._context = session._cudart = device
    session._cudart.cudaMemcpyKind = type("Kinds", (), {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})
    session._stream, session._buffers = None, {"x": 1, "y": 2}
    session._dtypes, session._capacity = {"x": np.dtype(np.float32), "y": np.dtype(np.float32)}, {"x": 64, "y": 64}
    session._one_call_at_a_time = threading.Lock()
    wrong = []

    def calls(value):
        for _ in range(20):
            out = session.run({"x": np.full((1, 4), value, np.float32)})["y"]
            if not (out == 2 * value).all():
                wrong.append((value, out.tolist()))

    threads = [threading.Thread(target=calls, args=(float(v),)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_the_advice_for_an_ort_only_variant_names_a_command_optimize_takes():
    """check advised 'optimize --precision fused --target tensorrt', which optimize refuses (helper 80)."""
    from edgegen.runtimes.engines import tensorrt_form_advice

    assert tensorrt_form_advice("int8") == "edgegen optimize --precision int8 --target tensorrt writes TensorRT's form"
    for precision in ("fused", "int8-weights"):
        assert tensorrt_form_advice(precision).startswith(f"{precision} has no TensorRT form: build from fp32")


def test_the_advice_for_an_ort_only_variant_names_the_target_built_for():
    """build --target jetpack6 on a CPU int4 variant advised 'optimize --target tensorrt', whose
    opset-21 variant JetPack 6's parser then refused (helper 97); jetpack7 was sent there too."""
    from edgegen.runtimes.engines import tensorrt_form_advice

    assert tensorrt_form_advice("int4", "jetpack7") == \
        "edgegen optimize --precision int4 --target jetpack7 writes TensorRT's form"
    assert tensorrt_form_advice("int4", "jetpack6") == (
        "int4 has no form TensorRT 10.3 parses (its blocks need opset 21): build from fp32 (TensorRT fuses by "
        "itself), or from a variant of int8, fp16 made with --target jetpack6")
    # graphs beyond what JetPack 6 reads (opset 23): neither way works before an export for it (review 148)
    assert tensorrt_form_advice("int4", "jetpack6", export_first=True) == (
        "int4 has no form TensorRT 10.3 parses (its blocks need opset 21): its graphs are beyond what TensorRT 10.3 "
        "reads: export again with --target jetpack6, then build from fp32 (TensorRT fuses by itself), or from a "
        "variant of int8, fp16 made with --target jetpack6")
