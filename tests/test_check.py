"""edgegen check: TensorRT's parser table applied to packages, without a GPU."""

import hashlib
import json

import onnx
import pytest
from onnx import helper

from edgegen.check import check_package, support_table
from edgegen.cli import main
from edgegen.errors import ConfigError
from edgegen.optimize import optimize_package
from edgegen.runtimes.engines import parse_profiles


def test_tables_know_what_jetpack_6_lacks():
    new, old = support_table("10.15"), support_table("10.3")
    assert "Attention" in new["supported"] and "Attention" in old["unsupported"]
    assert "QLinearConv" in new["unsupported"] and "Conv" in old["supported"]
    assert old["opset"] == [9, 20]
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
    assert main(["check", str(pkg), "--profile", "batch=1:8:16"]) == 0
    assert "parses with TensorRT 10.15" in capsys.readouterr().out


def test_check_flags_unsupported_ops_custom_domains_and_nonzero_zero_points(package_copy):
    pkg = package_copy("gan")
    path = pkg / "generator.onnx"
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Unique", ["image"], ["unique_out"], name="unique"))
    model.graph.node.append(helper.make_node("FastGelu", ["image"], ["gelu_out"], name="gelu", domain="com.microsoft"))
    model.graph.initializer.append(helper.make_tensor("zp", onnx.TensorProto.INT8, [], [3]))
    model.graph.initializer.append(helper.make_tensor("scale", onnx.TensorProto.FLOAT, [], [0.1]))
    model.graph.node.append(helper.make_node("QuantizeLinear", ["image", "scale", "zp"], ["q_out"], name="q"))
    onnx.save(model, str(path))
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    (check,) = check_package(pkg)
    assert check.unsupported == {"Unique": 1} and not check.ok
    assert any("com.microsoft.FastGelu" in p for p in check.problems)
    assert any("zero point is not 0" in p for p in check.problems)


def test_profiles_are_checked():
    assert parse_profiles(["batch=1:4:8", "sequence=1:64:512"]) == {"batch": (1, 4, 8), "sequence": (1, 64, 512)}
    for bad in ("batch=1:4", "batch=8:4:1", "batch=a:b:c"):
        with pytest.raises(ConfigError, match="profile"):
            parse_profiles([bad])
