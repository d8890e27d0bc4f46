"""`edgegen check pkg --target tensorrt`: without a GPU, what TensorRT's ONNX parser will
refuse or take only with restrictions in each graph of a package (and its variants), from
the parser's operator support matrix kept in edgegen/data/tensorrt_onnx_ops.json, and which
dynamic dims have no optimization profile yet."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, missing_export_modules, not_one_of
from .graph_summary import GraphSummary, read_graph_summary
from .package import Package, refuse_other_names
from .runtimes.backends import tensorrt_installed, tensorrt_version
from .runtimes.engines import package_profiles, parser_errors, tensorrt_form_advice
from .targets import INT4_OPSET, TARGETS, TENSORRT_TARGETS, get_target, release_mismatch

TABLE = Path(__file__).parent / "data" / "tensorrt_onnx_ops.json"


@dataclass
class GraphCheck:
    part: str
    file: str
    opset: int
    nodes: int
    unsupported: dict[str, int] = field(default_factory=dict)    # op -> node count
    restricted: dict[str, str] = field(default_factory=dict)     # op -> restriction
    problems: list[str] = field(default_factory=list)            # opset, custom domains
    unprofiled_dims: list[str] = field(default_factory=list)
    profile: tuple = ()      # ((input, min shape, opt shape, max shape), ...): what edgegen build would build
    judge: str = ""          # what decided: a release's parser table, or this machine's own parser
    damaged: str = ""        # why a variant changed since optimize wrote it is not judged
    build_refuses: str = ""  # why edgegen build makes no engine of it, whatever the parser says (ONNX Runtime's form)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.problems and not self.damaged and not self.build_refuses


def table_version(version: str, versions=None) -> str:
    """The table a TensorRT version is judged by: a full release (10.3.0.30, as JetPack and
    tensorrt.__version__ say it) takes its major.minor's; a release between the tables (10.16,
    JetPack 7.2's) the newest before it, whose parser it has at least (its report names that
    table); one before them all, or no version, stays as given, which support_table refuses."""
    versions = versions or json.loads(TABLE.read_text(encoding="utf-8"))["versions"]
    if exact := next((v for v in versions if version == v or version.startswith(f"{v}.")), None):
        return exact
    release = _major_minor(version)
    earlier = [v for v in versions if release is not None and _major_minor(v) <= release]
    return max(earlier, key=_major_minor) if earlier else version


def _major_minor(version: str) -> tuple[int, int] | None:
    """(10, 16) of "10.16" or "10.16.0.1"; None where it is no such version."""
    found = re.match(r"^(\d+)\.(\d+)(\.\d+)*$", version)
    return (int(found[1]), int(found[2])) if found else None


def support_table(version: str) -> dict:
    """{"opset": [lo, hi], "supported": set, "unsupported": set, "restricted": {op: text}} for a TensorRT version."""
    versions = json.loads(TABLE.read_text(encoding="utf-8"))["versions"]
    version = table_version(version, versions)
    if version not in versions:   # a release before every table: the targets say whose table judges what
        by_target = ", ".join(f"{t.name} {t.tensorrt}" for t in TARGETS.values() if t.uses_tensorrt)
        raise ConfigError(not_one_of("TensorRT version", version, sorted(versions), f"the support tables edgegen keeps; "
                                     f"each target's table: {by_target}, for the releases "
                                     f"docs/tensorrt-and-jetson.md says it takes"))
    entry = versions[version]
    base = versions[entry["based_on"]] if "based_on" in entry else entry
    extra = set(entry.get("unsupported_extra", ()))
    return {"opset": entry["opset"], "supported": set(base["supported"]) - extra,
            "unsupported": set(base["unsupported"]) | extra,
            "restricted": {k: v for k, v in base["restricted"].items() if k not in extra}}


def graphs_beyond_target(package: Package, target) -> str | None:
    """Why the package's exported graphs are beyond what a TensorRT target's parser reads (an opset
    above its table's, JetPack 6's TensorRT 10.3 and opset 23; a fused op it lacks, JetPack 7.0's
    10.13 and Attention), saying how to export for it; None where they fit. A variant keeps its
    graph's opset and ops, so optimize for that target cannot help until the export does."""
    table = support_table(target.tensorrt)
    export_first = f"export for it first (edgegen export ... --target {target.name}, which writes opset {target.opset})"
    for part, entry in package.graphs.items():
        opset = entry.extra.get("opset")
        if isinstance(opset, int) and opset > table["opset"][1]:
            return (f"target {target.name}: expected graphs at opset {table['opset'][1]} or below "
                    f"({target.description}), found graph {part!r} at opset {opset}: {export_first}")
        lacking = sorted({n.op_type for n in read_graph_summary(package.graph_path(part)).nodes
                          if n.domain in ("", "ai.onnx")} & set(FUSED_OPSET_OPS) & table["unsupported"])
        if lacking:
            return (f"target {target.name}: expected graphs TensorRT {target.tensorrt} parses "
                    f"({target.description}), found graph {part!r} with ONNX's {', '.join(lacking)}, which it "
                    f"does not: {export_first}, where {'they are' if len(lacking) > 1 else 'it is'} spelled "
                    "in plain ops")
    return None


def check_package(path: str | os.PathLike, tensorrt: str | None = None, profiles: list[str] | None = None,
                  target: str = "tensorrt", device_parser: bool | None = None) -> list[GraphCheck]:
    """One GraphCheck per graph and variant. With `device_parser` (default: when the tensorrt
    module is importable and no table version is asked for) this machine's TensorRT parser
    judges each graph; otherwise the table of `tensorrt` (default: the target's release)."""
    chosen = get_target(target, TENSORRT_TARGETS)
    if tensorrt is not None and (mismatch := release_mismatch(chosen, tensorrt, "(--tensorrt)")):
        raise ConfigError(mismatch)   # its advice would be for another device: JetPack 6's, to a JetPack 7 user
    version = table_version(tensorrt or chosen.tensorrt)
    table = support_table(version)
    if device_parser is None:
        device_parser = tensorrt is None and tensorrt_installed()
    package = Package(path)
    derived = package_profiles(package, profiles, strict=False)
    files = [(part, package.graph_path(part), None) for part in package.graphs]
    files += [(f"{part} ({precision})", package.resolve(r["file"], "variant"), (precision, r))
              for precision in package.manifest.variants for part, r in package.variant_files(precision).items()
              if part not in package.damaged_variants.get(precision, {})]
    checks, exported_opsets = [], {}
    # read once, where there are variants: only their advice needs it (the graphs' own lines say their opset)
    export_first = bool(package.manifest.variants) and bool(graphs_beyond_target(package, chosen))
    for part, file, variant in files:
        graph = read_graph_summary(file)
        if variant is None:
            _refuse_another_signature(package, part, graph)
            exported_opsets[part] = graph.opset
        result = GraphCheck(part, file.name, graph.opset, len(graph.nodes))
        if device_parser:
            result.judge = f"this machine's TensorRT {tensorrt_version()} parser"
            result.problems += [f"TensorRT's parser: {error}" for error in parser_errors(file)]
        else:
            result.judge = f"TensorRT {version}'s parser table"
            # a variant above the opsets its graph's export fits: optimize made it so, and exporting
            # again would not help (int4 for another target raises an opset-18 graph's to 21); nor for a
            # precision the target takes in no form (int4 on JetPack 6)
            low, high = table["opset"]
            raised = variant is not None and (low <= exported_opsets[part.split(" ")[0]] <= high
                                              or variant[0] not in chosen.variant_precisions)
            _table_verdict(result, graph, table, version,
                           f"the {variant[0]} variant was made for {variant[1].get('target', 'another target')}: "
                           f"{tensorrt_form_advice(variant[0], chosen.name, export_first)}" if raised else None)
        result.problems += _restriction_violations(graph)
        if variant is not None and variant[1].get("ort_form"):   # parses, maybe, but build makes no engine of it
            precision, record = variant
            result.build_refuses = (f"in ONNX Runtime's form ({record['ort_form']}), made for {record.get('target')}: "
                                    "edgegen build refuses it "
                                    f"({tensorrt_form_advice(precision, chosen.name, export_first)})")
        profile = derived[part.split(" ")[0]]
        if isinstance(profile, list):   # dynamic dims neither the family's limits nor --profile cover
            result.unprofiled_dims = profile
        else:
            result.profile = profile
        checks.append(result)
    # a variant changed since it was made is not judged as if it were the one made; the others are
    return checks + [GraphCheck(f"{part} ({precision})", package.variant_files(precision)[part]["file"], 0, 0,
                                damaged=str(exc))
                     for precision, parts in package.damaged_variants.items() for part, exc in parts.items()]


# ONNX's ops of a transformer's layers, by the opset they came in: an export below it decomposes them
FUSED_OPSET_OPS = {"Attention": 23, "RMSNormalization": 23, "RotaryEmbedding": 23, "TensorScatter": 24}


def _judged_by(version: str) -> list:
    """The targets whose parser table is TensorRT `version`'s (JetPack 7's 10.13), for advice."""
    return [t for t in TARGETS.values() if t.tensorrt == version]


def _table_verdict(result: GraphCheck, graph: GraphSummary, table: dict, version: str,
                   opset_advice: str | None = None) -> None:
    """The parser table's verdict on one graph; `opset_advice`: what to do where its opset is out of
    the table's range (default: export again for a target of that table)."""
    low, high = table["opset"]
    targets = _judged_by(version)
    if not low <= graph.opset <= high:
        fits = [t for t in targets if low <= t.opset <= high]
        # a device with the runtime alone exports nowhere: the advice is for the development machine
        where = ", on a machine with the export extra" if missing_export_modules() else ""
        hint = f" ({opset_advice})" if opset_advice else \
            f" (export again with --target {fits[0].name}, which writes opset {fits[0].opset}{where})" if fits else ""
        result.problems.append(f"opset {graph.opset}: TensorRT {version} parses opsets {low} to {high}{hint}")
    ops = Counter((n.domain, n.op_type) for n in graph.nodes)
    for (domain, op), count in sorted(ops.items()):
        if domain not in ("", "ai.onnx"):
            named = targets[0].name if targets else "tensorrt"   # the table's own target, else the desktop's
            int4 = (f"int4 blocks need opset {INT4_OPSET}, above what TensorRT {version} parses" if high < INT4_OPSET
                    else f"edgegen optimize --precision int4 --target {named} writes DequantizeLinear of int4 blocks")
            hint = (f" (ONNX Runtime's weight-only form: for TensorRT, {int4}; int8-weights has no TensorRT form, int8 "
                    "and fp16 do)" if op == "MatMulNBits" else "")
            result.problems.append(f"{count} {domain}.{op} node(s): a custom domain TensorRT has no parser for{hint}")
        elif op in table["unsupported"] or op not in table["supported"]:
            result.unsupported[op] = count
        elif op in table["restricted"]:
            result.restricted[op] = table["restricted"][op]
    fused = sorted(set(result.unsupported) & set(FUSED_OPSET_OPS))
    fits = [t for t in targets if t.opset < min(FUSED_OPSET_OPS.values())]
    # the same model exported below opset 23 spells them in ops this parser takes (where the opset is
    # refused already, its own line gives that advice)
    if fused and fits and low <= graph.opset <= high:
        several = len(fused) > 1
        result.problems.append(f"{', '.join(fused)}: ONNX's fused op{'s' if several else ''} of opset "
                               f"{min(FUSED_OPSET_OPS[op] for op in fused)} on, which "
                               f"TensorRT {version} does not parse (export again with --target {fits[0].name}, which "
                               f"writes opset {fits[0].opset}, where {'they are' if several else 'it is'} spelled in "
                               f"plain ops)")


# what _restriction_violations verifies of an op's restriction from the file (the rest, TensorRT's parser tells)
REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSum", "ReduceSumSquare")   # their axes: an initializer only, TensorRT 10.15's matrix
VERIFIED_PART = {"QuantizeLinear": "zero points", "DequantizeLinear": "zero points", "Attention": "past inputs",
                 "Resize": "mode and antialiasing", **{op: "axes" for op in REDUCE_OPS}}
RESIZE_MODES = ("nearest", "linear")   # the parser's table: no cubic


def _refuse_another_signature(package: Package, part: str, graph: GraphSummary) -> None:
    """A graph whose input or output names differ from its manifest's is refused, as load refuses
    it (runtimes.ort): its profiles and verdicts would be for names the graph does not have."""
    entry = package.graphs[part]
    for kind, declared, found in (("input", entry.inputs, graph.inputs), ("output", entry.outputs, graph.outputs)):
        refuse_other_names(part, kind, declared, found)


def _restriction_violations(graph: GraphSummary) -> list[str]:
    """The restrictions edgegen can verify from the file itself (VERIFIED_PART)."""
    problems = []
    for node in graph.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.inputs) > 2:
            if node.inputs[2] in graph.nonzero_constants:
                problems.append(f"{node.op_type} {node.name!r}: zero point is not 0 (TensorRT takes symmetric int8 only)")
        if node.op_type in REDUCE_OPS and len(node.inputs) > 1 and node.inputs[1] \
                and node.inputs[1] not in graph.initializer_bytes:
            problems.append(f"{node.op_type} {node.name!r}: axes from {node.inputs[1]!r}, not an initializer, which "
                            "TensorRT's parser refuses")
        if node.op_type == "Resize":   # F.interpolate(mode="bicubic", antialias=True) writes both
            mode, antialias = node.attributes.get("mode", "nearest"), node.attributes.get("antialias", 0)
            if mode not in RESIZE_MODES:
                problems.append(f"Resize {node.name!r}: mode {mode}, which TensorRT's parser table does not list "
                                f"({' or '.join(RESIZE_MODES)})")
            if antialias:
                problems.append(f"Resize {node.name!r}: antialiasing, which TensorRT's parser does not take")
        if node.op_type == "Attention" and any(name for name in node.inputs[4:]):
            problems.append(f"Attention {node.name!r}: uses past_key / past_value / nonpad_kv_seqlen inputs, "
                            "which TensorRT's parser refuses")
    return problems


def _restriction_state(op: str, problems: list[str]) -> str:
    """Whether a restricted op's use was checked here, and how it came out: a restriction listed
    without a word read as a problem where the file meets it."""
    if op not in VERIFIED_PART:
        return "not checked here: TensorRT's parser tells"
    met = not any(p.startswith(f"{op} ") for p in problems)
    return f"{VERIFIED_PART[op]} checked here: " + ("met" if met else "NOT met, above")


def format_checks(checks: list[GraphCheck]) -> str:
    lines = []
    for c in checks:
        if c.damaged:
            lines.append(f"{c.part}: {c.file}: not judged: {c.damaged}")
            continue
        verdict = "will NOT parse" if c.unsupported or c.problems else "parses"
        lines.append(f"{c.part}: {c.file}, opset {c.opset}, {c.nodes} nodes: {verdict} (judged by {c.judge})"
                     + (", but no engine is built from it" if c.build_refuses else ""))
        lines += [f"  problem      {p}" for p in c.problems]
        lines += [f"  not built    {c.build_refuses}"] if c.build_refuses else []
        lines += [f"  unsupported  {op} x{n}" for op, n in c.unsupported.items()]
        lines += [f"  restricted   {op}: {text} ({_restriction_state(op, c.problems)})" for op, text in c.restricted.items()]
        if c.unprofiled_dims:
            lines.append(f"  no profile   {', '.join(c.unprofiled_dims)} (give --profile NAME=MIN:OPT:MAX)")
        for name, low, opt, high in c.profile:
            if low != high:
                lines.append(f"  profile      {name}: min {list(low)}, opt {list(opt)}, max {list(high)}")
    return "\n".join(lines)
