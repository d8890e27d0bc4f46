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
    import edgegen, edgegen.package, edgegen.runtimes, edgegen.images, edgegen.bench, edgegen.families
    import edgegen.runtimes.engines
    registered = edgegen.families.families()   # every family's declaration, pipeline and CLI hooks
    assert len(registered) >= 12, [f.name for f in registered]
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
    ddpm = edgegen.load(sys.argv[3], backend="ort-cpu")
    for sampler in ("ddpm", "ddim", "dpmpp-2m", "euler", "euler-a"):
        digits = ddpm.sample(2, steps=4, sampler=sampler, labels=[3, 4], seed=0)
    ddpm.inpaint(digits, [[0] * 8] * 4 + [[1] * 8] * 4, steps=4, labels=3)
    ddpm.img2img(digits, strength=0.5, steps=4)
    glow = edgegen.load(sys.argv[4], backend="ort-cpu")
    flow_images = glow.sample(3, seed=0, temperature=0.7)
    assert glow.bits_per_dim(flow_images).shape == (3,)
    assert glow.interpolate(flow_images[:1], flow_images[1:2], steps=3).shape == (1, 3, 1, 8, 8)
    try:   # the Python API's one export-side call says what to install, as the commands do
        edgegen.export_pytorch(object(), {}, "never-written")
    except edgegen.MissingExtraError as exc:
        assert str(exc).startswith("edgegen.export_pytorch needs the export extra: pip install 'edgegen[export]'"), exc
    else:
        raise SystemExit("export_pytorch ran without the export side")
    blocked = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxscript")]
    assert not blocked, blocked
    print("ok")
""")


def test_runtime_imports_and_runs_where_torch_cannot_be_imported(trained, tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCK_AND_LOAD, str(trained["vae"][1]), str(tmp_path / "g.png"),
                             str(trained["diffusion"][1]), str(trained["flow"][1])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert (tmp_path / "g.png").stat().st_size > 0


FORBIDDEN = ("torch", "onnx", "onnxscript")


def imported_modules(tree, package: str = ""):
    """Every module an import statement, __import__ or importlib.import_module names; relative
    imports resolved against `package` (the importing module's package), `from . import x` as
    the submodule it may be."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and package:
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                yield node.args[0].value


def runtime_sources():
    """The runtime side (docs/architecture.md): the package, the runtimes, the registry, and
    each family's declaration, pipeline and CLI hooks."""
    import pathlib

    import edgegen

    root = pathlib.Path(edgegen.__file__).parent
    families = root / "families"
    runtime_parts = ("__init__.py", "pipeline.py", "cli.py")
    return [root / "package.py", root / "errors.py", *(root / "runtimes").rglob("*.py"), families / "__init__.py",
            *(p for p in families.glob("*/*.py") if p.name in runtime_parts)]


def test_runtime_sources_never_import_torch_or_onnx():
    """The hard rule from docs/architecture.md, checked on the source too (lazy imports included)."""
    import ast

    import pathlib

    import edgegen

    root = pathlib.Path(edgegen.__file__).parent.parent
    sources = runtime_sources()
    assert any(p.parent.name == "gan" and p.name == "__init__.py" for p in sources)
    # follow edgegen's own imports from the runtime side, transitively: an indirect import of
    # torch (a runtime module importing a helper that imports torch) counts as much as a direct one
    offenders, seen, todo = [], set(), list(sources)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        relative = path.relative_to(root).with_suffix("")
        package = ".".join(relative.parts[:-1] if relative.name != "__init__" else relative.parts[:-1])
        for module in imported_modules(ast.parse(path.read_text()), package):
            if module.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(root)}: {module}")
            elif module.startswith("edgegen"):
                target = root.joinpath(*module.split("."))
                todo += [t for t in (target.with_suffix(".py"), target / "__init__.py") if t.is_file()]
    assert offenders == []
    assert len(seen) > len(sources)   # the walk went beyond the listed files (images.py, feeds, ...)
    probe = ast.parse("import numpy, torch\nimportlib.import_module('onnx.checker')\n__import__('torch')")
    assert [m for m in imported_modules(probe) if m.split(".")[0] in FORBIDDEN] == ["torch", "onnx.checker", "torch"]


RUNTIME_ONLY_CLI = textwrap.dedent("""
    import importlib.abc, sys

    EXPORT_SIDE = ("torch", "onnx", "onnxscript", "safetensors", "sklearn", "skimage", "matplotlib")

    class Absent(importlib.abc.MetaPathFinder):   # as on a device: the export extra is not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EXPORT_SIDE:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Absent())
    from edgegen.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _runtime_only(*argv):
    return subprocess.run([sys.executable, "-c", RUNTIME_ONLY_CLI, *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


def test_export_side_commands_say_what_to_install_on_a_runtime_only_install(trained, tmp_path):
    ckpt, pkg = trained["gan"]
    for argv in (["train", "gan", "--out", tmp_path / "c"], ["export", ckpt, "--out", tmp_path / "p"],
                 ["optimize", pkg, "--precision", "int8"], ["demo", "--out", tmp_path / "d"],
                 ["bench", pkg, "--vs-torch", ckpt, "--iters", "2"]):
        result = _runtime_only(*argv)
        command = " ".join(map(str, argv[:1] + (["--vs-torch"] if "--vs-torch" in argv else [])))
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.splitlines() == [f"edgegen: error: edgegen {command} needs the export extra: pip install "
                                              "'edgegen[export]' (found no torch, onnx, onnxscript, safetensors here)"]
    assert not any(tmp_path.iterdir())


def test_runtime_only_install_checks_generates_and_benches(trained, tmp_path):
    pkg = trained["gan"][1]
    checked = _runtime_only("check", pkg, "--target", "jetpack6")   # onnx absent: the graph reader
    assert checked.returncode == 1 and "opset 23: TensorRT 10.3 parses opsets 9 to 20 (export again with --target jetpack6, which writes opset 18, on a " \
        "machine with the export extra)" in checked.stdout, checked.stderr
    generated = _runtime_only("generate", pkg, "--n", "4", "--out", tmp_path / "g.jpg")
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "g.jpg").read_bytes()[:3] == b"\xff\xd8\xff"   # JPEG, as its name says
    benched = _runtime_only("bench", pkg, "--iters", "3", "--warmup", "1")
    assert benched.returncode == 0, benched.stderr


def test_onnx_runtimes_telemetry_is_off_unless_the_user_turns_it_on(tmp_path):
    """ONNX Runtime 1.29+ sends usage telemetry from Linux and writes a device identifier into the
    user's cache (Microsoft/DeveloperTools/.onnxruntime/deviceid) as it is imported, unless
    ORT_DISABLE_TELEMETRY is set first: importing edgegen sets it, and a user's own value stands."""
    import os

    import pytest

    def device_id_written(given: str | None) -> bool:
        env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
        env.update({"XDG_CACHE_HOME": str(tmp_path / str(given)), **({"ORT_DISABLE_TELEMETRY": given} if given else {})})
        run = subprocess.run([sys.executable, "-c", "import edgegen, onnxruntime, os; "
                              "print(os.environ['ORT_DISABLE_TELEMETRY'])"], capture_output=True, text=True, env=env,
                             timeout=120)
        assert run.returncode == 0 and run.stdout == f"{given or 1}\n", run.stderr
        return (tmp_path / str(given) / "Microsoft" / "DeveloperTools" / ".onnxruntime" / "deviceid").exists()

    if not device_id_written("0"):   # the user's choice: on
        pytest.skip("this ONNX Runtime writes no telemetry device id, by which the test tells telemetry on")
    assert not device_id_written(None)
