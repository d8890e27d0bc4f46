import gc
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgegen
from edgegen.errors import CheckpointError, ConfigError, OutputExistsError, PackageError, ValidationError
from edgegen.cli import main
from edgegen.export import compare, export_checkpoint
from edgegen.package import CHECKPOINT_WEIGHTS, Package
from edgegen.training.checkpoint import CONFIG, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("family, parts", [("vae", {"encoder", "decoder"}), ("gan", {"generator"})])
def test_exported_graphs_are_checked_onnx_with_dynamic_batch(trained, family, parts):
    package = Package(trained[family][1])
    assert set(package.graphs) == parts
    for part in parts:
        model = onnx.load(str(package.graph_path(part)))
        onnx.checker.check_model(model, full_check=True)
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert package.graphs[part].extra["validation"]["batches"] == [1, 3]
        assert package.graphs[part].extra["validation"]["max_abs"] < 1e-4
    assert package.config["data"]["source"] == "digits"


@pytest.mark.parametrize("batch", [1, 7, 16])
def test_runtime_reproduces_pytorch_at_other_batch_sizes(trained, batch):
    model = load_checkpoint(trained["gan"][0]).model
    pipe = edgegen.load(trained["gan"][1])
    z = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = (model.generator_ema(torch.from_numpy(z)).numpy() + 1) / 2
    np.testing.assert_allclose(pipe.sessions["generator"].run({"z": z})["image"], ref, atol=1e-5)
    assert ref.min() >= 0 and ref.max() <= 1


def test_export_refuses_existing_output_and_keeps_it(trained, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError):
        export_checkpoint(trained["gan"][0], out)
    assert (out / "mine.txt").read_text() == "keep"
    # --force replaces only what edgegen wrote: a folder of other files stays
    with pytest.raises(OutputExistsError, match=r"expected an edgegen package to replace \(edgegen.json in it\) or an "
                                                r"empty folder, found a folder of other files \(mine.txt\)"):
        export_checkpoint(trained["gan"][0], out, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep"
    (out / "mine.txt").unlink()
    export_checkpoint(trained["gan"][0], out, overwrite=True)   # an empty folder
    assert (out / "edgegen.json").is_file()
    first = (out / "edgegen.json").read_text()
    export_checkpoint(trained["gan"][0], out, overwrite=True, name="again")   # a package
    assert (out / "edgegen.json").read_text() != first


def test_export_never_replaces_its_own_input(trained, tmp_path):
    """Exporting a folder onto itself, or onto a package folder that holds it, would delete the
    checkpoint the export read: refused, with or without --force, and the input stays."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["gan"][0], ckpt)
    before = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(OutputExistsError, match="is the input"):
        export_checkpoint(ckpt, ckpt, overwrite=True)
    pkg = export_checkpoint(ckpt, tmp_path / "pkg")
    shutil.copytree(ckpt, pkg / "ckpt")   # a checkpoint kept inside a package folder
    with pytest.raises(OutputExistsError, match="holds the input"):
        export_checkpoint(pkg / "ckpt", pkg, overwrite=True)
    assert sorted(p.name for p in ckpt.iterdir()) == before and (pkg / "ckpt" / "weights.safetensors").is_file()
    assert main(["export", str(ckpt), "--out", str(ckpt), "--force"]) == 2
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_gate_refuses_a_graph_with_nan_and_writes_nothing(trained, tmp_path):
    ckpt = load_checkpoint(trained["vae"][0])
    with torch.no_grad():
        ckpt.model.decoder.fc.weight[0, 0] = float("nan")
    broken = save_checkpoint(tmp_path / "broken", "vae", ckpt.config, ckpt.model, ckpt.data, ckpt.training)
    out = tmp_path / "pkg"
    with pytest.raises(ValidationError) as info:
        export_checkpoint(broken, out)
    message = str(info.value)
    assert "package not written" in message
    assert "graph 'decoder' image @ batch 1" in message and "NaN/Inf" in message
    assert "graph 'encoder'" not in message  # the encoder is fine and is not blamed
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_gate_reports_numbers_when_tolerance_is_missed(trained, tmp_path, monkeypatch):
    """A graph that differs from PyTorch by more than the tolerance is refused with its numbers."""
    from edgegen.export import spec as spec_module
    from edgegen.families.gan import export as gan_export

    ckpt = trained["gan"][0]   # made, when this test asks first, before the gate is made strict
    strict = spec_module.GraphSpec(*[getattr(gan_export.SPEC.graphs[0], f) for f in
                                     ("part", "submodule", "inputs", "outputs", "realistic_inputs")], atol=0.0, rtol=0.0)
    monkeypatch.setattr(gan_export, "SPEC", spec_module.ExportSpec("gan", (strict,), gan_export.SPEC.runtime_config, False))
    with pytest.raises(ValidationError, match=r"graph 'generator' image @ batch 1: max abs [0-9.e-]+, max rel [0-9.e-]+ \[MISMATCH\]"):
        export_checkpoint(ckpt, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_compare_numbers():
    ref = np.array([1.0, 2.0, -4.0], np.float32)
    ok = compare("y", 2, ref + 1e-6, ref, atol=1e-5, rtol=0)
    assert ok.passed and ok.max_abs == pytest.approx(1e-6, rel=0.1)
    bad = compare("y", 2, ref * 1.01, ref, atol=1e-5, rtol=1e-3)
    assert not bad.passed and bad.max_rel == pytest.approx(0.01, rel=1e-3) and bad.max_abs == pytest.approx(0.04, rel=1e-3)
    nan = compare("y", 2, np.array([np.nan, 2, -4], np.float32), ref, atol=1, rtol=1)
    assert not nan.passed and not nan.finite and "NaN/Inf" in nan.line()
    inf_ref = compare("y", 2, ref, np.array([np.inf, 2, -4], np.float32), atol=1, rtol=1)
    assert not inf_ref.passed


def test_checkpoint_is_safetensors_and_json_without_pickle(trained):
    ckpt_dir = trained["vae"][0]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [CONFIG, CHECKPOINT_WEIGHTS]
    meta = json.loads((ckpt_dir / CONFIG).read_text())
    assert meta["format"] == "edgegen.checkpoint/1" and meta["family"] == "vae"
    assert meta["config"]["latent_dim"] == 16 and meta["data"]["source"] == "digits"
    assert meta["training"]["steps"] == 15
    # safetensors: an 8-byte header length, a JSON header of tensor offsets, then raw tensor bytes
    raw = (ckpt_dir / CHECKPOINT_WEIGHTS).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    assert len(raw) == 8 + header_len + end


@pytest.mark.parametrize("name", ["", "../../evil", ".hidden", "two words", "a/b"])
def test_a_package_name_a_model_folder_cannot_take_is_refused(trained, tmp_path, capsys, name):
    """--name "" fell back to the default without a word; "../../evil" was recorded, and Triton's
    repository named a folder after it."""
    code = main(["export", str(trained["vae"][0]), "--out", str(tmp_path / "pkg"), "--name", name])
    assert code == 2 and capsys.readouterr().err.endswith(
        f"edgegen: error: name (--name): expected letters, digits, '_', '.' and '-', not starting with '.' or '-' "
        f"(a model folder's name), found {name!r}\n")   # the flag once
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("name, folder", [("gan-digits", "gan-digits"), ("my model", "my_model"), (".", "model"),
                                          ("..", "model"), (".hidden/x", "hidden_x"), ("-v", "v")])
def test_a_triton_model_folder_takes_the_name_export_takes_or_a_safe_one(name, folder):
    """The name rule is export's (PACKAGE_NAME); an older package's name, or a default from a
    folder, is made one: never "." or ".." (the repository itself, or its parent), never hidden."""
    from types import SimpleNamespace

    from edgegen.serving.triton import model_name

    assert model_name(SimpleNamespace(manifest=SimpleNamespace(name=name))) == folder


def test_checkpoint_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="found nothing at that path"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="expected config.json in it"):
        load_checkpoint(tmp_path / "empty")
    # each said for what it is where the other is expected
    ckpt, pkg = trained["vae"]
    with pytest.raises(CheckpointError, match=r"expected a checkpoint \('edgegen train' writes one\), found an edgegen "
                                              r"package \(edgegen.json\)"):
        load_checkpoint(pkg)
    with pytest.raises(PackageError, match=r"expected a package \('edgegen export' writes one\), found a checkpoint: "
                                           r"export it first"):
        Package(ckpt)
    for marker, route, what in (("model.safetensors", "--from-transformers", "a transformers save_pretrained folder"),
                                ("model_index.json", "--from-diffusers", "a diffusers pipeline")):
        (tmp_path / route).mkdir()   # what users bring from Hugging Face, given where a package is expected
        (tmp_path / route / marker).write_text("")
        with pytest.raises(PackageError, match=rf"found {what}: import it first \(edgegen export {route} DIR --out "
                                               r"PACKAGE\)$"):
            Package(tmp_path / route)
        with pytest.raises(CheckpointError, match=rf"in it, found none \({what}: import it with edgegen export {route} "
                                                  r"DIR\)$"):   # and where a checkpoint is expected
            load_checkpoint(tmp_path / route)
    from edgegen.export import model_type

    with pytest.raises(CheckpointError, match=r"transformers checkpoint .*: expected a save_pretrained directory, "
                                              r"found a file"):   # its config.json given for the folder
        model_type(tmp_path / "--from-transformers" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"found no config.json in it \(a diffusers pipeline: import it with "
                                              r"edgegen export --from-diffusers DIR\)$"):
        model_type(tmp_path / "--from-diffusers")
    with pytest.raises(CheckpointError, match=r"found no config.json in it$"):   # not the option already given
        model_type(tmp_path / "--from-transformers")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG).write_text((trained["vae"][0] / CONFIG).read_text())
    (bad / CHECKPOINT_WEIGHTS).write_bytes((trained["gan"][0] / CHECKPOINT_WEIGHTS).read_bytes())
    with pytest.raises(CheckpointError, match=r"expected weights of the vae model described by config.json, found tensors "
                                              r"\d+ missing \(encoder\..*\); \d+ not in the model \(.*\)$"):
        load_checkpoint(bad)
    meta = json.loads((trained["vae"][0] / CONFIG).read_text())
    meta["config"]["depth"] = 3
    (bad / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"found unknown \['depth'\]"):
        load_checkpoint(bad)
    (bad / CHECKPOINT_WEIGHTS).write_bytes(b"not safetensors")
    meta["config"].pop("depth")
    (bad / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="expected a safetensors file"):
        load_checkpoint(bad)


def test_gan_checkpoints_from_before_output_layer_load_as_resize(tmp_path):
    """A GAN checkpoint written before the sub-pixel output layer existed has no
    output_layer in its config: it loads with the resize + conv layer it was trained with."""
    import json

    from edgegen.training.checkpoint import load_checkpoint
    from edgegen.training.train import train

    ckpt = train("gan", tmp_path / "old", steps=1, batch_size=8, progress=False, width=8, output_layer="resize")
    meta = json.loads((ckpt / "config.json").read_text())
    del meta["config"]["output_layer"]
    (ckpt / "config.json").write_text(json.dumps(meta))
    assert load_checkpoint(ckpt).config.output_layer == "resize"
    new = train("gan", tmp_path / "new", steps=1, batch_size=8, progress=False, width=8)
    assert load_checkpoint(new).config.output_layer == "subpixel"


def test_sibling_matmuls_fuse_into_one_and_compute_the_same():
    """fuse_sibling_matmuls: MatMuls reading one input with constant weights become one MatMul
    and a Split; a MatMul whose weight is computed, or that reads another input, stays."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgegen.export.graph_rewrites import fuse_sibling_matmuls

    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal((8, width)).astype(np.float32) for name, width in (("wq", 8), ("wk", 4), ("wv", 4),
                                                                                           ("wo", 8))}
    weights["wu"] = rng.standard_normal((8, 4)).astype(np.float32)
    # q, k, v: unnamed nodes; wo is read twice (by r and by s): a shared weight stays unfused, and
    # so does its sibling wu
    nodes = [helper.make_node("MatMul", ["x", w], [w.replace("w", "")]) for w in ("wq", "wk", "wv")]
    nodes += [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "wo"], ["o"], name="wo"),
              helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("MatMul", ["s", "wo"], ["so"]),
              helper.make_node("MatMul", ["s", "wu"], ["su"]),
              helper.make_node("MatMul", ["x", "y"], ["xy"], name="computed")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 8]) for n in ("x",)] +
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, None]) for n in ("q", "k", "v", "o", "so", "su", "xy")],
        [numpy_helper.from_array(w, n) for n, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": rng.standard_normal((2, 3, 8)).astype(np.float32), "y": rng.standard_normal((8, 5)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    fused = fuse_sibling_matmuls(model)
    onnx.checker.check_model(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("MatMul") == 5 and ops.count("Split") == 1    # q, k, v as one; the rest stay
    assert {i.name for i in fused.graph.initializer} == {"wq.fused", "wq.fused.split", "wo", "wu"}
    named = [n.name for n in fused.graph.node if n.name]
    assert len(set(named)) == len(named)
    after = ort.InferenceSession(fused.SerializeToString()).run(None, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_default_name_from_a_folder_fits_the_name_rule(trained, tmp_path):
    """A checkpoint folder "my gan 7" made a package named "my gan 7", which --name refuses and
    Triton's repository renamed (helper 78)."""
    import shutil

    from edgegen.package import name_from_folder

    ckpt = shutil.copytree(trained["gan"][0], tmp_path / "my gan 7")
    assert Package(export_checkpoint(ckpt, tmp_path / "pkg")).manifest.name == "my_gan_7"
    assert [name_from_folder(n) for n in ("ok-1.2", ".hidden", "..", "-x y")] == ["ok-1.2", "hidden", "model", "x_y"]


def test_two_exports_of_one_checkpoint_are_the_same_bytes_under_source_date_epoch(trained, tmp_path, monkeypatch,
                                                                                  capsys):
    """A pipeline caching on a package's hash never hit: the manifest held the time of the export
    (helper 90). With SOURCE_DATE_EPOCH every file of the package is the same bytes."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ckpt = trained["vae"][0]
    first, second = (export_checkpoint(ckpt, tmp_path / run / "pkg") for run in ("a", "b"))
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir()) and "edgegen.json" in files
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert json.loads((first / "edgegen.json").read_text())["provenance"]["created"] == "2023-11-14T22:13:20+00:00"
    for wrong in ("yesterday", "-5", "1.5", "\u00b2", "\u0663", "99999999999999"):   # '²' and '٣' pass str.isdigit
        monkeypatch.setenv("SOURCE_DATE_EPOCH", wrong)
        with pytest.raises(ConfigError, match=f"SOURCE_DATE_EPOCH: expected whole seconds since 1970-01-01 UTC .*, "
                                              f"found '{wrong}'"):
            export_checkpoint(ckpt, tmp_path / "c" / "pkg")
    assert not (tmp_path / "c").exists()
    # a CI template's unfilled variable: numpy, imported under scipy and scikit-learn, reads it too and
    # failed on '' with a bare ValueError (status 3, helper 92), so a command that may import them
    # refuses it first; one of the runtime alone reads it nowhere and runs (helper 94)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")
    for command in (["train", "vae", "--steps", "1", "--out", str(tmp_path / "e")],
                    ["bench", str(first), "--vs-torch", str(ckpt), "--iters", "2"]):
        assert main(command) == 2
        assert capsys.readouterr().err == ("edgegen: error: SOURCE_DATE_EPOCH: expected whole seconds since 1970-01-01 "
                                           "UTC (the time a build records), found '' (unset it for the time now)\n")
    assert main(["generate", str(first), "--n", "2", "--out", str(tmp_path / "two.png")]) == 0
    assert main(["info", str(first)]) == 0
    # torch.onnx records each node's Python stack, paths of this install: one checkpoint's graphs
    # differed by where edgegen lay, and a package carried the paths of the machine that made it
    install = str(Path(edgegen.__file__).resolve().parent.parent).encode()
    assert not any(install in (first / f).read_bytes() for f in files if f.endswith(".onnx"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    third = export_checkpoint(ckpt, tmp_path / "d" / "pkg")
    assert json.loads((third / "edgegen.json").read_text())["provenance"]["created"] > "2025"


def test_log_sigmoid_is_rewritten_in_subgraphs_and_a_sigmoid_read_elsewhere_stays():
    """Log(Sigmoid(x)) is -inf below -88; the rewrite reached the top-level graph only, not an If's
    branches (a torch.cond: review 171), and must keep a Sigmoid that something else reads."""
    import onnxruntime
    from onnx import TensorProto, helper

    from edgegen.export.graph_rewrites import stable_log_sigmoid

    def branch(name: str, sign: float) -> onnx.GraphProto:
        nodes = [helper.make_node("Mul", ["x", f"{name}_sign"], [f"{name}_in"]),
                 helper.make_node("Sigmoid", [f"{name}_in"], [f"{name}_s"]),
                 helper.make_node("Log", [f"{name}_s"], [f"{name}_out"])]
        sign_value = helper.make_tensor(f"{name}_sign", TensorProto.FLOAT, [], [sign])
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
                                 [sign_value])

    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["chosen"], then_branch=branch("then", 1.0),
                              else_branch=branch("else", -1.0)),
             helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Log", ["s"], ["logged"])]
    float_x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    graph = helper.make_graph(nodes, "g", [float_x], [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3])
                                                      for n in ("chosen", "logged", "s")],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = stable_log_sigmoid(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Sigmoid") == 1   # read by a graph output: kept
    for body in (model.graph.node[2].attribute[0].g, model.graph.node[2].attribute[1].g):
        assert [n.op_type for n in body.node] == ["Mul", "Neg", "Softplus", "Neg"]   # its Sigmoid read by nothing else
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in (np.array([-100.0, 60.0, 50.0], np.float32), np.array([100.0, -1.0, -2.0], np.float32)):
        chosen, logged, sigmoid = session.run(None, {"x": x})
        expected = torch.nn.functional.logsigmoid(torch.from_numpy(x if x.sum() > 0 else -x)).numpy()
        np.testing.assert_allclose(chosen, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(logged, torch.nn.functional.logsigmoid(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(sigmoid, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-7)


def test_each_opsets_table_of_aten_translations_is_built_once_a_process(monkeypatch):
    """torch.onnx.export builds its table of ATen translations anew on every call, two thirds of
    a small module's export; edgegen's exports build each opset's once, again where an operator
    library was loaded since (review 188: torch.ao's quantized_decomposed was refused after a first
    export), and the custom translation one export adds (bool-mask attention below opset 23) stays
    out of the table the next one copies. torch.onnx.export called outside edgegen builds its own."""
    from torch.onnx._internal.exporter import _registration

    from edgegen.export import onnx_export
    from edgegen.package import TensorSpec

    class Attend(torch.nn.Module):
        def forward(self, q, mask):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    built = []
    original = _registration.ONNXRegistry.__dict__["from_torchlib"].__func__
    original = getattr(original, "edgegen_original", original)   # torch's own, where an export put edgegen's over it

    def counted(cls, opset_version):
        built.append(opset_version)
        return original(cls, opset_version=opset_version)

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(counted))
    monkeypatch.setattr(onnx_export, "_TORCHLIB_REGISTRIES", {})
    inputs = (TensorSpec("q", "float32", ("batch", 2, 5, 4)), TensorSpec("mask", "bool", ("batch", 1, 5, 5)))
    example = {"q": np.ones((2, 2, 5, 4), np.float32), "mask": np.ones((2, 1, 5, 5), bool)}

    def export(opset):
        return onnx_export.export_module(Attend(), "model", inputs, ("y",), example, opset)

    export(23)   # a process's first export loads operator libraries of torch's own (prims, onnx): built again after
    built.clear()
    onnx_export._TORCHLIB_REGISTRIES.clear()
    graphs = [export(opset) for opset in (18, 18, 23)]
    assert built == [18, 23]
    ops = [{node.op_type for node in graph.graph.node} for graph in graphs]
    assert "ReduceMax" in ops[0] and ops[1] == ops[0] and "Attention" in ops[2]   # each export its own translations
    tables = onnx_export._TORCHLIB_REGISTRIES.values()
    assert not any(entry.is_custom for table in tables for entries in table.functions.values() for entry in entries)

    @torch.library.custom_op("edgegen_tests::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:   # an operator library loaded since: the table may differ
        return x * 2

    export(18)
    assert built == [18, 23, 18]
    # as many operators as before, other ones: one library dropped and another loaded (review 189)
    dropped = torch.library.Library("edgegen_tests_dropped", "DEF")
    dropped.define("one(Tensor x) -> Tensor")
    export(18)
    del dropped
    gc.collect()
    loaded = torch.library.Library("edgegen_tests_loaded", "DEF")
    loaded.define("one(Tensor x) -> Tensor")
    export(18)
    assert built == [18, 23, 18, 18, 18]
    torch.onnx.export(Attend(), tuple(torch.from_numpy(example[name]) for name in ("q", "mask")), dynamo=True,
                      opset_version=18, verbose=False)
    assert built == [18, 23, 18, 18, 18, 18]
