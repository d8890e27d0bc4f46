import subprocess
import sys
import textwrap

BLOCK_AND_LOAD = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx", "onnxscript", "safetensors", "sklearn", "skimage"):
                raise ImportError(f"blocked for this test: {name}")

    sys.meta_path.insert(0, Block())
    import edgegen, edgegen.package, edgegen.runtimes, edgegen.images, edgegen.bench
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("torch imported despite the block")
    pipe = edgegen.load(sys.argv[1], backend="ort-cpu")
    images = pipe.sample(3, seed=0)
    assert images.shape == (3, 1, 32, 32), images.shape
    mu, logvar = pipe.encode(images)
    assert pipe.anomaly_score(images).shape == (3,)
    edgegen.images.save_grid(images, sys.argv[2])
    blocked = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxscript")]
    assert not blocked, blocked
    print("ok")
""")


def test_runtime_imports_and_runs_where_torch_cannot_be_imported(trained, tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCK_AND_LOAD, str(trained["vae"][1]), str(tmp_path / "g.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert (tmp_path / "g.png").stat().st_size > 0


def test_runtime_sources_never_import_torch_or_onnx():
    """The hard rule from DESIGN.md, checked on the source text too (lazy imports included)."""
    import pathlib
    import re

    import edgegen

    root = pathlib.Path(edgegen.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(torch|onnx|onnxscript)\b", re.M)
    offenders = [str(p) for p in [root / "package.py", *(root / "runtimes").rglob("*.py")] if pattern.search(p.read_text())]
    assert offenders == []
