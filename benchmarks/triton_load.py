"""Load test of a Triton model repository written by `edgegen triton`, against a real server on
loopback (the nvidia-pytriton wheel's tritonserver on CPU, from .venv-triton: docs/serving.md),
and the same requests made in-process through edgegen.load, in one run.

Models: gan-digits (graph route: edgegen's Python-backend model, requests merged along the batch
dim), diffusion-digits (its pipeline, 20 steps, one image per request, requests merged into one
sampling loop by sample_batched) and gpt-stdlib (its pipeline, 32 greedy tokens streamed through
decoupled mode over gRPC). For each of concurrency
1, 4 and 16, for a fixed time: throughput, p50/p99 latency, failed requests, and the server's
resident memory (tritonserver and its Python stubs) before and after. The whole run twice:
Triton's dynamic batching on, then off (GPT takes one request at a time per instance either way).

    python benchmarks/triton_load.py [--seconds 4] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import edgegen
from edgegen.bench import write_results
from edgegen.serving.local_server import local_server
from edgegen.serving.triton import RepositoryOptions, write_repository
from edgegen.shipped import find_shipped

MODELS = ("gan-digits", "diffusion-digits", "gpt-stdlib")
CONCURRENCY = (1, 4, 16)
GPT_TOKENS = 32


def shipped_package(name: str) -> Path:
    found = find_shipped(name)
    if found is None:
        from edgegen.export.shipped import export_shipped

        found = export_shipped(name, report=print)
    return Path(found)


def server_rss_mb(pgid: int) -> float:
    """Resident memory of the server's process group: tritonserver and its backend stubs."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


# -- one request of each model, through a server and in-process -----------------------------------

def gan_request(http, client, rng):
    z = rng.standard_normal((1, 64), dtype=np.float32)
    tensor = http.InferInput("z", z.shape, "FP32")
    tensor.set_data_from_numpy(z)
    client.infer("gan-digits", [tensor])


def diffusion_request(http, client, rng):
    tensors = []
    for name, value in (("n", 1), ("seed", int(rng.integers(1 << 30))), ("labels", int(rng.integers(10)))):
        tensor = http.InferInput(name, [1, 1], "INT64")   # one row: the model takes requests batched
        tensor.set_data_from_numpy(np.array([[value]], np.int64))
        tensors.append(tensor)
    client.infer("diffusion-digits", tensors)


def gpt_request(grpc, client, rng):
    """A whole streamed generation; returns when the final response arrives."""
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        tensors = []
        for name, value, datatype in (("prompt", np.array([b"def "], dtype=object), "BYTES"),
                                      ("max_new_tokens", np.array([GPT_TOKENS]), "INT64"),
                                      ("greedy", np.array([True]), "BOOL")):
            tensor = grpc.InferInput(name, value.shape, datatype)
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        client.async_stream_infer("gpt-stdlib", tensors, enable_empty_final_response=True)
        while True:
            result, error = answers.get(timeout=120)
            if error is not None:
                raise error
            if result.get_response().parameters["triton_final_response"].bool_param:
                return
    finally:
        client.stop_stream()


def in_process(packages: dict, threads: int) -> dict:
    """The same work in this process, one request at a time."""
    gan = edgegen.load(packages["gan-digits"], threads=threads)
    diffusion = edgegen.load(packages["diffusion-digits"], threads=threads)
    gpt = edgegen.load(packages["gpt-stdlib"], threads=threads)
    rng = np.random.default_rng(0)
    calls = {"gan-digits": lambda: gan.generate(rng.standard_normal((1, 64), dtype=np.float32)),
             "diffusion-digits": lambda: diffusion(1, seed=int(rng.integers(1 << 30)), labels=int(rng.integers(10))),
             "gpt-stdlib": lambda: gpt.generate("def ", max_new_tokens=GPT_TOKENS, do_sample=False)}
    return {name: timed_loop(call, 20 if name != "gan-digits" else 200) for name, call in calls.items()}


def timed_loop(call, count: int) -> dict:
    call()
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begin)
    return summary(latencies, time.perf_counter() - start, 0)


def summary(latencies: list[float], seconds: float, failures: int) -> dict:
    ms = np.array(latencies) * 1e3
    return {"requests": len(latencies), "failures": failures, "per_s": len(latencies) / seconds,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def load(server, model: str, concurrency: int, seconds: float) -> dict:
    """`concurrency` clients, each sending its next request when the last one answers."""
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    send = {"gan-digits": (http, gan_request), "diffusion-digits": (http, diffusion_request),
            "gpt-stdlib": (grpc, gpt_request)}[model]
    module, request = send
    url = server.grpc_url if module is grpc else server.http_url
    latencies, failures, lock = [], [0], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        client = module.InferenceServerClient(url)
        rng = np.random.default_rng(index)
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            try:
                request(module, client, rng)
            except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
                with lock:
                    failures[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - begin)

    start = time.perf_counter()
    workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return summary(latencies, time.perf_counter() - start, failures[0])


def run(seconds: float, threads: int, queue_delay_us: int) -> dict:
    packages = {name: shipped_package(name) for name in MODELS}
    results = {"in_process": in_process(packages, threads), "served": {}}
    for batching in (True, False):
        # GPT's pipeline takes one request at a time per instance whatever the setting: measured once
        models = MODELS if batching else ("gan-digits", "diffusion-digits")
        with tempfile.TemporaryDirectory(prefix="edgegen-load-") as scratch:
            repository = Path(scratch) / "models"
            write_repository([str(packages[m]) for m in models], repository,
                             RepositoryOptions(route=None, graph_backend="python", dynamic_batching=batching,
                                               queue_delay_us=queue_delay_us, threads=threads), report=lambda line: None)
            with local_server(repository) as server:
                key = "batching on" if batching else "batching off"
                rows = results["served"][key] = {}
                for model in models:
                    for concurrency in CONCURRENCY:
                        before = server_rss_mb(server.pid)
                        row = load(server, model, concurrency, seconds)
                        row.update(rss_before_mb=before, rss_after_mb=server_rss_mb(server.pid))
                        rows[f"{model} x{concurrency}"] = row
                        print(f"{key:12s} {model:17s} x{concurrency:<2d} {row['per_s']:8.1f}/s p50 {row['p50_ms']:8.2f} ms "
                              f"p99 {row['p99_ms']:8.2f} ms failed {row['failures']} RSS {before:.0f} -> "
                              f"{row['rss_after_mb']:.0f} MB", flush=True)
    return results


def table(results: dict) -> str:
    lines = ["| model | route | concurrency | requests/s | p50 ms | p99 ms | failed | server RSS MB before -> after |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in results["in_process"].items():
        lines.append(f"| {name} | in-process, one at a time | 1 | {row['per_s']:.1f} | {row['p50_ms']:.2f} | "
                     f"{row['p99_ms']:.2f} | 0 | - |")
    for key, rows in results["served"].items():
        for label, row in rows.items():
            name, concurrency = label.split(" x")
            route = key if name != "gpt-stdlib" else "pipeline route, one request at a time"
            lines.append(f"| {name} | Triton, {route} | {concurrency} | {row['per_s']:.1f} | {row['p50_ms']:.2f} | "
                         f"{row['p99_ms']:.2f} | {row['failures']} | {row['rss_before_mb']:.0f} -> "
                         f"{row['rss_after_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="load time per model and concurrency")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, in-process and per server instance")
    parser.add_argument("--queue-delay-us", type=int, default=0, help="the dynamic batcher's wait for more requests")
    parser.add_argument("--out", default="benchmarks/results", help="folder for triton_load.json and .md")
    args = parser.parse_args()
    try:   # no Triton environment made yet, a model not exported: said in one line, as edgegen's commands say it
        results = run(args.seconds, args.threads, args.queue_delay_us)
    except edgegen.EdgegenError as exc:
        raise SystemExit(f"benchmarks/triton_load.py: error: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, "triton_load", results, table(results) + "\n")


if __name__ == "__main__":
    main()
