"""edgegen check: TensorRT's parser table applied to packages, without a GPU."""

import hashlib
import json

import onnx
import pytest
from onnx import helper

from edgegen.check import check_package, format_checks, support_table
from edgegen.cli import main
from edgegen.errors import ConfigError
from edgegen.optimize import optimize_package
from edgegen.runtimes.engines import parse_profiles


def test_tables_know_what_jetpack_6_and_7_lack():
    new, jetpack7, old = support_table("10.15"), support_table("10.13"), support_table("10.3")
    assert "Attention" in new["supported"] and "Attention" in old["unsupported"]
    assert "QLinearConv" in new["unsupported"] and "Conv" in old["supported"]
    assert old["opset"] == [9, 20]
    # onnx-tensorrt's changelog: Attention from 10.14, RMSNormalization, RotaryEmbedding and
    # TensorScatter from 10.15; the window ops from 10.4, STFT from 10.5
    llm_ops = {"Attention", "RMSNormalization", "RotaryEmbedding", "TensorScatter"}
    assert llm_ops <= new["supported"] and llm_ops <= jetpack7["unsupported"] and llm_ops <= old["unsupported"]
    windows = {"BlackmanWindow", "HammingWindow", "HannWindow", "STFT"}
    assert windows <= jetpack7["supported"] and windows <= old["unsupported"] and "STFT" not in old["restricted"]
    assert jetpack7["opset"] == [9, 23] and "GroupNormalization" in jetpack7["supported"]
    assert new["restricted"]["RotaryEmbedding"] == "position_ids must be int64"
    assert support_table("10.13.3.9") == jetpack7   # JetPack 7.1's release number: its major.minor's table
    # 10.14 parses Attention, not yet the other three: it was judged by 10.13's table, which refused it
    between = support_table("10.14")
    assert "Attention" in between["supported"] and llm_ops - {"Attention"} <= between["unsupported"]
    with pytest.raises(ConfigError, match="10.15"):
        support_table("9.0")


def test_check_reports_ops_opsets_quantization_and_unprofiled_dims(package_copy, capsys):
    pkg = package_copy("gan")
    optimize_package(pkg, "int8", calibration=16, target="tensorrt", progress=lambda line: None)
    checks = check_package(pkg, "10.15", ["batch=1:8:16"])
    assert [c.part for c in checks] == ["generator", "generator (int8)"]
    assert all(c.ok and not c.unprofiled_dims for c in checks)
    assert "Resize" in checks[0].restricted and "QuantizeLinear" in checks[1].restricted
    old = check_package(pkg, "10.3")
    assert not old[0].ok and "opset 23" in old[0].problems[0] and not old[0].unprofiled_dims
    assert old[0].profile == (("z", (1, 64), (1, 64), (16, 64)),)   # what build derives: batch 1:1:16
    assert main(["check", str(pkg), "--tensorrt", "10.3"]) == 1
    # a full release number, as JetPack and tensorrt.__version__ say it: its major.minor's table
    assert [c.problems for c in check_package(pkg, "10.3.0.30")] == [c.problems for c in old]
    assert main(["check", str(pkg), "--tensorrt", "10.3.0.30"]) == 1
    # judged by 10.3's table: the verdict said "not ready for --target tensorrt", the default target's 10.15
    assert "2 graphs not ready for TensorRT 10.3.0.30 (--tensorrt): generator" in capsys.readouterr().err
    # a release between the tables, or past them (JetPack 7.2's 10.16, refused as tableless): the newest
    # table before it, which its parser has at least, named in the report
    assert main(["check", str(pkg), "--tensorrt", "10.16"]) == 0
    assert "parses (judged by TensorRT 10.15's parser table)" in capsys.readouterr().out
    assert [c.judge for c in check_package(pkg, "10.14.1.48", target="jetpack7")] == ["TensorRT 10.14's parser table"] * 2
    assert main(["check", str(pkg), "--tensorrt", "8.6"]) == 2   # before every table: none judges it
    assert ("expected one of 10.13, 10.14, 10.15, 10.3 (the support tables edgegen keeps; each target's table: tensorrt 10.15, "
            "jetpack6 10.3, jetpack7 10.13, for the releases docs/tensorrt-and-jetson.md says it takes)") in capsys.readouterr().err
    assert main(["check", str(pkg), "--target", "jetpack6"]) == 1   # JetPack 6 is TensorRT 10.3
    out, err = capsys.readouterr()
    assert "will NOT parse (judged by TensorRT 10.3's parser table)" in out
    assert err == ("edgegen: check: 2 graphs not ready for --target jetpack6: generator, generator (int8) (the table above "
                   "says why)\n")
    # --json: the verdicts for a script, stdout holding nothing else
    assert main(["check", str(pkg), "--target", "jetpack6", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["report"] == "edgegen.check/1" and report["target"] == "jetpack6" and err.endswith("build_refuses say why)\n")
    graphs = {g["part"]: g for g in report["graphs"]}
    assert set(graphs) == {"generator", "generator (int8)"} and not graphs["generator"]["ok"]
    assert "opset 23" in graphs["generator"]["problems"][0] and graphs["generator"]["profile"] == [["z", [1, 64], [1, 64],
                                                                                                     [16, 64]]]
    assert main(["check", str(pkg), "--json"]) == 0 and all(g["ok"] for g in json.loads(capsys.readouterr().out)["graphs"])
    assert main(["check", str(pkg), "--profile", "batch=1:8:16"]) == 0
    out = capsys.readouterr().out
    assert "parses (judged by TensorRT 10.15's parser table)" in out
    # a restriction is listed with whether it was checked and met, not as if it were a problem
    assert "  restricted   QuantizeLinear: zero point must be 0 (symmetric) (zero points checked here: met)\n" in out
    assert "  restricted   Resize: nearest or linear;" in out and "(mode and antialiasing checked here: met)" in out


def test_check_flags_unsupported_ops_custom_domains_and_nonzero_zero_points(package_copy):
    pkg = package_copy("gan")
    path = pkg / "generator.onnx"
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Unique", ["image"], ["unique_out"], name="unique"))
    model.graph.node.append(helper.make_node("FastGelu", ["image"], ["gelu_out"], name="gelu", domain="com.microsoft"))
    model.graph.node.append(helper.make_node("MatMulNBits", ["image", "scale"], ["nbits_out"], name="nbits",
                                             domain="com.microsoft"))
    model.graph.initializer.append(helper.make_tensor("zp", onnx.TensorProto.INT8, [], [3]))
    model.graph.initializer.append(helper.make_tensor("scale", onnx.TensorProto.FLOAT, [], [0.1]))
    model.graph.node.append(helper.make_node("QuantizeLinear", ["image", "scale", "zp"], ["q_out"], name="q"))
    # axes a node computes (TensorRT's parser takes a Reduce's axes from an initializer only)
    model.graph.node.append(helper.make_node("Shape", ["image"], ["computed_axes"], name="shape", start=0, end=1))
    model.graph.node.append(helper.make_node("ReduceMean", ["image", "computed_axes"], ["mean_out"], name="mean"))
    # F.interpolate(mode="bicubic", antialias=True): the table's restriction, read from the node's attributes
    model.graph.node.append(helper.make_node("Resize", ["image", "", "scale4"], ["resized"], name="bicubic",
                                             mode="cubic", antialias=1))
    model.graph.initializer.append(helper.make_tensor("scale4", onnx.TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5]))
    onnx.save(model, str(path))
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    (check,) = check_package(pkg)
    assert check.unsupported == {"Unique": 1} and not check.ok
    assert any("com.microsoft.FastGelu" in p for p in check.problems)
    assert any(p.startswith("1 com.microsoft.MatMulNBits node(s): a custom domain TensorRT has no parser for (ONNX "
                            "Runtime's weight-only form: for TensorRT, edgegen optimize --precision int4 --target "
                            "tensorrt writes DequantizeLinear of int4 blocks; int8-weights has no TensorRT form")
               for p in check.problems)
    # JetPack 6's TensorRT 10.3 parses up to opset 20: it was offered the int4 form optimize refuses there
    (check,) = check_package(pkg, target="jetpack6")
    assert any("MatMulNBits node(s): a custom domain TensorRT has no parser for (ONNX Runtime's weight-only form: for "
               "TensorRT, int4 blocks need opset 21, above what TensorRT 10.3 parses; int8-weights has no TensorRT form"
               in p for p in check.problems)
    assert any("zero point is not 0" in p for p in check.problems)
    assert "restricted   QuantizeLinear: zero point must be 0 (symmetric) (zero points checked here: NOT met, above)" \
        in format_checks([check])
    assert "ReduceMean 'mean': axes from 'computed_axes', not an initializer, which TensorRT's parser refuses" \
        in check.problems
    assert "Resize 'bicubic': mode cubic, which TensorRT's parser table does not list (nearest or linear)" in check.problems
    assert "Resize 'bicubic': antialiasing, which TensorRT's parser does not take" in check.problems


def test_a_fused_attention_op_jetpack_7_0_cannot_parse_says_which_export_spells_it_out(package_copy):
    """JetPack 7.0 and 7.1's TensorRT 10.13 reads opset 23 but not its Attention op (parsed from
    10.14 on): the same model exported with --target jetpack7 (opset 21) writes it in MatMuls."""
    pkg = package_copy("gan")
    path = pkg / "generator.onnx"
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Attention", ["image", "image", "image"], ["attention_out"], name="attention"))
    onnx.save(model, str(path))
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    (check,) = check_package(pkg, target="jetpack7")
    assert check.unsupported == {"Attention": 1} and check.problems == [
        "Attention: ONNX's fused op of opset 23 on, which TensorRT 10.13 does not parse (export again with --target "
        "jetpack7, which writes opset 21, where it is spelled in plain ops)"]
    (check,) = check_package(pkg, target="tensorrt")   # 10.15 parses it: no advice
    assert check.ok and "Attention" in check.restricted
    (check,) = check_package(pkg, target="jetpack6")   # the opset's own line advises there, once
    assert [p.split(":")[0] for p in check.problems] == ["opset 23"]


def test_profiles_are_checked():
    assert parse_profiles(["batch=1:4:8", "sequence=1:64:512"]) == {"batch": (1, 4, 8), "sequence": (1, 64, 512)}
    for bad in ("batch=1:4", "batch=8:4:1", "batch=a:b:c", "batch=0:1:4", "past_sequence_length=0:0:0"):
        with pytest.raises(ConfigError, match="profile"):
            parse_profiles([bad])
    # a past-cache dim starts at 0, as its default profile does: the first decode step's cache is empty
    assert parse_profiles(["past_sequence_length=0:1:256"]) == {"past_sequence_length": (0, 1, 256)}


def test_a_profile_of_a_dim_the_graphs_lack_is_refused(package_copy, capsys):
    pkg = package_copy("vae")
    assert main(["check", str(pkg), "--profile", "foo=1:2:3"]) == 2   # was ignored without a word
    assert "--profile: expected dynamic dims of the package's graphs (batch), found 'foo'" in capsys.readouterr().err
    assert main(["check", str(pkg), "--profile", "=1:2:3"]) == 2   # an empty name, shown as one
    assert "(batch), found ''" in capsys.readouterr().err
    assert main(["check", str(pkg), "--profile", "batch=1:2:3", "--profile", "batch=1:1:1"]) == 2   # the last won
    assert "--profile: expected each dim once, found 'batch' twice (1:2:3 and 1:1:1)" in capsys.readouterr().err
    assert main(["check", str(pkg), "--profile", "batch=1:2:3"]) == 0


def test_the_graph_reader_sees_what_onnx_sees(package_copy):
    """check reads graphs without onnx (a device has only onnxruntime): its reader must agree
    with onnx's own parser on the opsets, every node and the zero points."""
    from onnx import numpy_helper

    from edgegen.graph_summary import read_graph_summary

    pkg = package_copy("gan")
    optimize_package(pkg, "int8", calibration=16, target="tensorrt", progress=lambda line: None)
    variant = next(pkg.glob("generator.int8.*.onnx"))
    for path in (pkg / "generator.onnx", variant):
        model = onnx.load(str(path))
        summary = read_graph_summary(path)
        assert summary.opsets == {o.domain: o.version for o in model.opset_import}
        assert [(n.op_type, n.domain, n.name, n.inputs) for n in summary.nodes] == \
            [(n.op_type, n.domain, n.name, tuple(n.input)) for n in model.graph.node]
        small = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.ByteSize() <= 4096}
        assert summary.nonzero_constants == {name for name, value in small.items() if value.any()}
        assert summary.initializer_bytes == {i.name: numpy_helper.to_array(i).nbytes for i in model.graph.initializer}
    assert any(n.op_type == "QuantizeLinear" for n in read_graph_summary(variant).nodes)


def test_the_graph_reader_sizes_weights_and_counts_what_a_decode_step_reads(tmp_path):
    """edgegen bench's memory-bandwidth bound: each initializer's bytes from its dims and type
    (4-bit types two to a byte, external data alike), and a decode step's reads: every weight but
    a table only gathered from, which gives one row a token."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    from edgegen.graph_summary import read_graph_summary

    weights = [numpy_helper.from_array(np.ones((100, 8), np.float32), "untied_embedding"),
               numpy_helper.from_array(np.ones((50, 8), np.float32), "tied_embedding"),
               numpy_helper.from_array(np.ones((8, 100), np.float16), "head"),
               numpy_helper.from_array(np.ones((64, 64), np.float32), "external"),
               numpy_helper.from_array(np.array([1, 2, 3], np.int64), "indices"),
               helper.make_tensor("packed", TensorProto.INT4, [7, 3], np.ones(21, np.int8).tolist()),
               helper.make_tensor("packed_scale", TensorProto.FLOAT, [], [1.0])]
    nodes = [helper.make_node("Gather", ["untied_embedding", "ids"], ["a"]),
             helper.make_node("Gather", ["tied_embedding", "indices"], ["b"]),
             helper.make_node("Transpose", ["tied_embedding"], ["tied_t"]),
             helper.make_node("MatMul", ["a", "head"], ["c"]),
             helper.make_node("MatMul", ["x64", "external"], ["d"]),
             helper.make_node("DequantizeLinear", ["packed", "packed_scale"], ["e"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1]),
                                           helper.make_tensor_value_info("x64", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "bcde"], weights)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="g.data", size_threshold=4096)
    assert (tmp_path / "g.data").stat().st_size == 64 * 64 * 4   # the reader sizes it without reading it
    summary = read_graph_summary(path)
    sizes = {"untied_embedding": 3200, "tied_embedding": 1600, "head": 1600, "external": 16384, "indices": 24,
             "packed": 11, "packed_scale": 4}
    assert summary.initializer_bytes == sizes
    assert summary.weight_bytes_per_token() == sum(sizes.values()) - sizes["untied_embedding"]


def test_the_graph_reader_sizes_every_tensor_type_and_packed_dims():
    """Each data type's bits as onnx stores it (4-bit and 2-bit types packed), and dims in the
    packed encoding protobuf allows besides the one onnx writes."""
    from onnx import TensorProto

    from edgegen.graph_summary import ELEMENT_BITS, _tensor_size

    packed = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2, 27: 6, 28: 6}   # UINT4, INT4, FLOAT4E2M1, UINT2, INT2, FLOAT6s
    for name, code in TensorProto.DataType.items():
        if code not in (TensorProto.UNDEFINED, TensorProto.STRING):
            assert ELEMENT_BITS[code] == packed.get(code, 8 * helper.tensor_dtype_to_np_dtype(code).itemsize), name
    # a TensorProto of dims [3, 300] packed (field 1, length-delimited varints), FLOAT16, named "w"
    tensor = bytes([0x0A, 3, 3, 0xAC, 0x02, 0x10, TensorProto.FLOAT16, 0x42, 1]) + b"w"
    assert _tensor_size(tensor, 0, len(tensor)) == ("w", 3 * 300 * 2)


def test_the_graph_reader_leaves_out_each_op_s_row_lookups(tmp_path):
    """Which inputs a one-token decode step reads only a row of: rotary caches where position ids
    index them (ONNX's op with its 4th input, ONNX Runtime's own, GroupQueryAttention), a table
    gathered under either spelling of the ONNX domain; read whole otherwise. A string tensor is
    its strings' bytes; a weight of an unknown type is refused by name where it is read."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    from edgegen.errors import PackageError
    from edgegen.graph_summary import read_graph_summary

    caches = {name: numpy_helper.from_array(np.ones((16, 4), np.float32), name)
              for name in ("onnx_cos", "onnx_sin", "plain_cos", "plain_sin", "ms_cos", "ms_sin", "gqa_cos", "gqa_sin")}
    words = helper.make_tensor("words", TensorProto.STRING, [3], [b"ab", b"", b"cde"])
    table = numpy_helper.from_array(np.ones((10, 4), np.float32), "table")
    nodes = [helper.make_node("RotaryEmbedding", ["x", "onnx_cos", "onnx_sin", "pos"], ["r1"]),
             helper.make_node("RotaryEmbedding", ["x", "plain_cos", "plain_sin", ""], ["r2"]),   # no position ids
             helper.make_node("RotaryEmbedding", ["x", "pos", "ms_cos", "ms_sin"], ["r3"], domain="com.microsoft"),
             helper.make_node("GroupQueryAttention", ["x", "", "", "", "", "s", "t", "gqa_cos", "gqa_sin"], ["r4"],
                              domain="com.microsoft"),
             helper.make_node("Gather", ["table", "ids"], ["r5"], domain="ai.onnx"),
             helper.make_node("Identity", ["words"], ["r6"])]
    graph = helper.make_graph(nodes, "g", [], [], [*caches.values(), words, table])
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    summary = read_graph_summary(tmp_path / "g.onnx")
    assert summary.initializer_bytes["words"] == 5
    assert summary.weight_bytes_per_token() == 2 * 16 * 4 * 4 + 5   # the caches without position ids, the strings
    unknown = helper.make_tensor("future", TensorProto.FLOAT, [2], [1.0, 2.0])
    unknown.data_type = 99   # a type newer than this reader
    for reads_it in (False, True):
        extra = [helper.make_node("Identity", ["future"], ["r7"])] if reads_it else \
            [helper.make_node("Gather", ["future", "ids"], ["r7"])]
        graph = helper.make_graph(nodes + extra, "g", [], [], [*caches.values(), words, table, unknown])
        onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
        summary = read_graph_summary(tmp_path / "g.onnx")
        assert summary.initializer_bytes["future"] is None
        if reads_it:
            with pytest.raises(PackageError, match=r"g\.onnx.*\['future'\].*update edgegen"):
                summary.weight_bytes_per_token()
        else:   # looked up by row: not counted, so not refused
            assert summary.weight_bytes_per_token() == 2 * 16 * 4 * 4 + 5


class FakeTensorRT:
    """Stands in for the tensorrt module's parser API (Builder, network, OnnxParser with its
    errors), to test that check routes a device's own parser verdict; no TensorRT runs here."""

    __version__ = "10.3.0"

    class Logger:
        WARNING = ERROR = 0

        def __init__(self, level):
            pass

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

    class OnnxParser:
        refused: dict = {}

        def __init__(self, network, logger):
            self.errors = []

        def parse_from_file(self, path):
            self.errors = list(self.refused.get(path.rsplit("/", 1)[-1], []))
            return not self.errors

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]


def test_check_asks_the_devices_own_tensorrt_parser_where_it_is_installed(package_copy, monkeypatch, capsys):
    import importlib.machinery
    import sys

    pkg = package_copy("gan")
    fake = FakeTensorRT()
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    FakeTensorRT.OnnxParser.refused = {"generator.onnx": ["In node 3 (Resize): UNSUPPORTED_NODE: mode cubic"]}
    (check,) = check_package(pkg)
    assert check.judge == "this machine's TensorRT 10.3.0 parser" and not check.ok
    assert check.problems == ["TensorRT's parser: In node 3 (Resize): UNSUPPORTED_NODE: mode cubic"]
    assert check.unsupported == {}   # the table is not asked: opset 23 would be refused by 10.3's table
    FakeTensorRT.OnnxParser.refused = {}
    assert main(["check", str(pkg)]) == 0
    assert "parses (judged by this machine's TensorRT 10.3.0 parser)" in capsys.readouterr().out
    (by_table,) = check_package(pkg, "10.3")   # a release named: its table, even where TensorRT is installed
    assert not by_table.ok and by_table.judge == "TensorRT 10.3's parser table"


def test_targets_pick_the_opset_and_tensorrt_release(trained, tmp_path, capsys):
    from edgegen.graph_summary import read_graph_summary
    from edgegen.targets import get_target, release_mismatch

    out = tmp_path / "gan-jetpack6"
    assert main(["export", str(trained["gan"][0]), "--out", str(out), "--target", "jetpack6"]) == 0
    assert read_graph_summary(out / "generator.onnx").opset == 18
    assert "parses (judged by TensorRT 10.3's parser table)" in capsys.readouterr().out
    assert main(["export", str(trained["gan"][0]), "--out", str(tmp_path / "x"), "--target", "jetpack6",
                 "--opset", "23"]) == 2
    assert "--opset 23: expected at most 18 for target jetpack6" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["optimize", str(out), "--precision", "fused", "--target", "jetpack6"]) == 2
    assert "precision 'fused': expected one of int8, fp16 (those the jetpack6 target takes" in capsys.readouterr().err
    # a package of opset 23 toward JetPack 6: its variants would be written, then refused by check
    assert main(["optimize", str(trained["gan"][1]), "--precision", "fp16", "--target", "jetpack6"]) == 2
    assert "target jetpack6: expected graphs at opset 20 or below (Jetson Orin on JetPack 6.1 or 6.2 (L4T r36.4): TensorRT " \
        "10.3, CUDA 12.6), found graph 'generator' at opset 23: export for it first (edgegen export ... --target " \
        "jetpack6, which writes opset 18)" in capsys.readouterr().err
    jetpack6, jetpack7 = get_target("jetpack6"), get_target("jetpack7")
    assert release_mismatch(jetpack6, "10.3.0.30") is None and release_mismatch(jetpack7, "10.15.1") is None
    assert "expected TensorRT 10.3 " in release_mismatch(jetpack6, "10.7.0")
    assert release_mismatch(jetpack7, "10.13.3") is None and release_mismatch(jetpack7, "10.16.2.10") is None
    assert "expected TensorRT 10.13 or later" in release_mismatch(jetpack7, "10.7.0")   # JetPack 7.0's is 10.13
    assert release_mismatch(get_target("tensorrt"), "9.0") is None
    # a --tensorrt table the --target's device does not have: its advice would be for another device
    assert main(["check", str(out), "--target", "jetpack7", "--tensorrt", "10.3"]) == 2
    assert capsys.readouterr().err == ("edgegen: error: --target jetpack7: expected TensorRT 10.13 or later (a Jetson "
                                       "Orin or Thor on JetPack 7: TensorRT 10.13 (7.0 and 7.1, L4T r38) or later (7.2, "
                                       "L4T r39: 10.16), CUDA 13), found TensorRT 10.3 (--tensorrt)\n")
    assert main(["check", str(out), "--target", "jetpack6", "--tensorrt", "10.3"]) == 0
