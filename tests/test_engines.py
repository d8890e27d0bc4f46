"""TensorRT engines: the cache key, staleness rules and profile derivation (no GPU needed),
and the whole chain where a GPU and TensorRT are present."""

import importlib.util

import numpy as np
import pytest

from edgegen.cli import main
from edgegen.errors import ConfigError
from edgegen.package import Package, TensorSpec
from edgegen.runtimes.engines import EngineCache, EngineKey, derive_profile, dim_limits

PROFILE = (("z", (1, 64), (1, 64), (16, 64)),)


def _key(**changes):
    fields = dict(graph_sha256="a" * 64, tensorrt="10.3.0", gpu="Orin", compute_capability="8.7", precision="fp32",
                  profile=PROFILE)
    return EngineKey(**{**fields, **changes})


def test_a_cached_engine_is_used_only_for_the_same_key_and_bytes(tmp_path):
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


def test_profiles_come_from_the_manifest_dims(trained):
    package = Package(trained["gan"][1])
    (profile,) = derive_profile(package.graphs["generator"].inputs, dim_limits(package.config))
    assert profile == ("z", (1, 64), (1, 64), (16, 64))
    (profile,) = derive_profile(package.graphs["generator"].inputs, {}, {"batch": (2, 4, 8)})
    assert profile[1:] == ((2, 64), (4, 64), (8, 64))
    cache = TensorSpec("past_key_values.0.key", "float32", ("batch", 4, "past_sequence_length", 16))
    ids = TensorSpec("input_ids", "int64", ("batch", "sequence"))
    limits = dim_limits({"block_size": 256})
    assert derive_profile((cache, ids), limits) == (
        ("past_key_values.0.key", (1, 4, 0, 16), (1, 4, 1, 16), (16, 4, 256, 16)),
        ("input_ids", (1, 1), (1, 1), (16, 256)))
    with pytest.raises(ConfigError, match="--profile frames"):
        derive_profile((TensorSpec("x", "float32", ("batch", "frames")),), {})


def test_build_without_tensorrt_says_what_is_missing(trained, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the gpu test covers build")
    assert main(["build", str(trained["gan"][1]), "--backend", "tensorrt"]) == 2
    assert "tensorrt" in capsys.readouterr().err


@pytest.mark.gpu
def test_engine_build_then_cache_hit_on_a_gpu(package_copy):
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        pytest.skip("needs TensorRT and cuda-python on an NVIDIA GPU (pip install edgegen[tensorrt])")
    from edgegen.runtimes.engines import build_package

    pkg = package_copy("gan")
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
