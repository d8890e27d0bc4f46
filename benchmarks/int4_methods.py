"""Ways of quantizing a token model's weights to 4 bits, gated as `edgegen optimize --precision
int4` gates them: top-1 agreement with fp32 and the perplexity ratio on held-out text
teacher-forced (docs/optimization.md). ONNX Runtime's quantizers: round-to-nearest symmetric
(edgegen's form) and asymmetric, with and without activations quantized inside MatMulNBits
(accuracy_level 4 or 0), the first and last MatMuls kept at 8 bits or in fp32, HQQ, and GPTQ
calibrated on other held-out windows than the gate's.

    python benchmarks/int4_methods.py [--package gpt-stdlib] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from edgegen import optimize
from edgegen.bench import machine_info, write_results
from edgegen.families import package_config
from edgegen.runtimes import load
from edgegen.runtimes.ort import OrtSession


def rtn(symmetric: bool, bits: int, block: int, level: int = 4):
    settings = dict(block_size=block, is_symmetric=symmetric, bits=bits, quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=("MatMul",), accuracy_level=level)
    return nbits.DefaultWeightOnlyQuantConfig(**settings), settings


def quantized(model, algo, settings: dict, exclude=()) -> onnx.ModelProto:
    quantizer = nbits.MatMulNBitsQuantizer(copy.deepcopy(model), algo_config=algo, nodes_to_exclude=list(exclude),
                                           **settings)
    quantizer.process()
    return quantizer.model.model


def methods(model, weighted: list[str], calibration: list[dict], block: int) -> dict:
    """{label: int4 model} of the decoder."""
    edges, middle = [weighted[0], weighted[-1]], weighted[1:-1]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    made = {}
    for symmetric in (True, False):
        kind = "symmetric" if symmetric else "asymmetric"
        for level in (4, 0):
            made[f"{kind}, accuracy_level {level}"] = quantized(model, *rtn(symmetric, 4, block, level))
        made[f"{kind}, first and last MatMul in 8-bit blocks"] = quantized(
            quantized(model, *rtn(symmetric, 8, block), exclude=middle), *rtn(symmetric, 4, block), exclude=edges)
        made[f"{kind}, first and last MatMul kept fp32"] = quantized(model, *rtn(symmetric, 4, block), exclude=edges)
    made["HQQ"] = quantized(model, nbits.HQQWeightOnlyQuantConfig(block_size=block, bits=4), {"block_size": block, "bits": 4})
    made["GPTQ"] = quantized(model, nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(), block_size=block,
                                                                    op_types_to_quantize=("MatMul",)),
                             {"block_size": block, "bits": 4})
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="gpt-stdlib")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    package = load(args.package, backend="ort-cpu").package
    family, config = package_config(package)
    windows, source, *_ = family.held_out_tokens(package, config, optimize.GATE_BATCHES, 0, extra=16)
    gate_feeds, calibration = windows[:optimize.GATE_BATCHES], windows[optimize.GATE_BATCHES:]   # apart from the gate's
    rows = []
    for part, entry in package.graphs.items():
        model = optimize.weight_matmul_form(onnx.load(str(package.graph_path(part))))
        constants = {i.name for i in model.graph.initializer}
        weighted = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
        fp32 = OrtSession(part, package.graph_path(part), entry.inputs, entry.outputs, threads=None)
        for block in (32, 16):
            for label, variant in methods(model, weighted, calibration, block).items():
                with tempfile.TemporaryDirectory() as scratch:
                    onnx.save(variant, str(Path(scratch) / "int4.onnx"))
                    session = OrtSession(part, Path(scratch) / "int4.onnx", entry.inputs, entry.outputs, threads=None)
                    gate = optimize.gate_variant(package.family, "int4", fp32, session, gate_feeds, None)
                rows.append({"graph": part, "method": label, "block": block, "top1": round(gate.value, 4),
                             "perplexity_ratio": gate.detail["perplexity_ratio"], "passed": gate.passed})
                print(rows[-1], flush=True)
    lines = [f"`python benchmarks/int4_methods.py --package {args.package}`, gated on {source} "
             f"(top-1 at least {optimize.MIN_TOP1}, perplexity at most {optimize.MAX_PERPLEXITY_RATIO}x fp32's):", "",
             "| method | block | top-1 agreement | perplexity ratio | gate |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['block']} | {r['top1']:.3f} | {r['perplexity_ratio']:.3f} | "
              f"{'passed' if r['passed'] else 'refused'} |" for r in rows]
    write_results(args.out, "int4_methods", {"machine": machine_info(), "package": args.package, "rows": rows},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
