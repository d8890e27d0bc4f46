"""The foundation issue's numbers, side by side in one run:

1. ONNX Runtime CPU vs PyTorch eager at batch 8 for the VAE (encoder, decoder) and the GAN
   generator, on the same checkpoint (`edgegen bench --vs-torch`).
2. The runtime's own overhead over a bare onnxruntime.InferenceSession.run on the same
   graph at batch 1: edgegen's Session.run (input checks) and the whole pipeline call.
3. The VAE's anomaly-score ROC AUC: held-out digits vs uniform noise and vs natural-image crops.

    python benchmarks/foundation.py [--train] [--iters 300] [--out benchmarks/results]

Writes foundation.json and foundation.md into --out. Uses the shipped weights unless --train.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgegen.bench import bench_package, format_table, interleaved_timings, machine_info, write_results
from edgegen.demo import PRETRAINED
from edgegen.export import export_checkpoint
from edgegen.evaluation import anomaly_aucs
from edgegen.training.train import train
from edgegen.runtimes import load
from edgegen.runtimes.ort import session_options


def overhead(pkg: Path, iters: int) -> list[dict]:
    """Median latency of the bare InferenceSession vs edgegen's session and pipeline, batch 1, 1 thread."""
    pipe = load(pkg, backend="ort-cpu", threads=1)
    rows = []
    for part, session in pipe.sessions.items():
        bare = ort.InferenceSession(str(session.path), sess_options=session_options(1), providers=["CPUExecutionProvider"])
        name = session.inputs[0].name
        feed = np.random.default_rng(0).random((1, *session.inputs[0].shape[1:]), dtype=np.float32)
        output_names = [o.name for o in session.outputs]
        call = {"encoder": lambda: pipe.encode(feed), "decoder": lambda: pipe.decode(feed),
                "generator": lambda: pipe.generate(feed)}[part]
        engines = {
            "bare InferenceSession.run": lambda: bare.run(output_names, {name: feed}),
            "edgegen Session.run": lambda: session.run({name: feed}),
            "edgegen pipeline call": call,
        }
        times = interleaved_timings(engines, iters=iters, warmup=50)
        base = float(np.median(times["bare InferenceSession.run"]))
        for engine, t in times.items():
            rows.append({"package": pipe.family, "graph": part, "engine": engine, "p50_us": round(float(np.median(t)) * 1e6, 2),
                         "overhead_pct": round((float(np.median(t)) / base - 1) * 100, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="train the checkpoints here instead of the shipped ones")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgegen-bench-"))
    started = time.perf_counter()
    report = {"machine": machine_info(), "vs_torch": {}, "overhead": [], "anomaly_auc": {}}
    tables = []
    try:
        for family in ("vae", "gan"):
            ckpt = work / "ckpt" / family
            if args.train:
                train(family, ckpt, data="digits")
            else:
                shutil.copytree(PRETRAINED / f"{family}-digits", ckpt)
            pkg = export_checkpoint(ckpt, work / "pkg" / family)
            result = bench_package(pkg, batch=8, iters=args.iters, backend="ort-cpu", vs_torch=ckpt)
            report["vs_torch"][family] = result
            tables.append(f"### {family.upper()}, batch 8, {result['threads']} threads\n\n{format_table(result)}\n")
            report["overhead"] += overhead(pkg, iters=max(args.iters * 10, 1000))
            if family == "vae":
                report["anomaly_auc"] = anomaly_aucs(load(pkg, backend="ort-cpu"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    over = ["| package | graph | engine | p50 (us) | overhead vs bare |", "|---|---|---|---|---|"]
    over += [f"| {r['package']} | {r['graph']} | {r['engine']} | {r['p50_us']:.1f} | {r['overhead_pct']:+.1f}% |"
             for r in report["overhead"]]
    auc = report["anomaly_auc"]
    markdown = "\n".join([
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; onnxruntime {report['machine']['onnxruntime']}.", "",
        *tables,
        "### Runtime overhead over a bare InferenceSession.run, batch 1, 1 thread", "", *over, "",
        f"### VAE anomaly score ROC AUC: digits vs noise {auc['digits_vs_noise']:.3f}, "
        f"digits vs natural crops {auc['digits_vs_natural_crops']:.3f}", ""])
    write_results(args.out, "foundation", report, markdown)


if __name__ == "__main__":
    main()
