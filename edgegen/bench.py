"""`edgegen bench`: latency of every graph of a package, optionally beside PyTorch eager in
the same run. The runtime half needs no torch; --vs-torch imports it."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .cpus import session_threads, usable_cores
from .errors import ConfigError, EdgegenWarning, PackageError
from .runtimes.session import ROWS_PER_CALL
from .families import GenerationCall
from .families import get as get_family
from .metrics import percentiles_ms
from .package import Package, TensorSpec
from .wording import counted
from .storage import atomic_write_text
from .progress import Progress

ROUNDS = 10  # the engines take turns in this many blocks, so drift in machine load hits both alike
REPORT_SCHEMA = "edgegen.bench/1"   # bench --json's format: docs/cli.md lists its fields
SWEEP_SCHEMA = "edgegen.bench-sweep/1"   # bench --sweep --json's: a REPORT_SCHEMA report per point
SETTLE_S = 0.1   # the pause before each block, for the last engine's spinning threads to sleep
SETTLE_ENV = "EDGEGEN_BENCH_SETTLE_S"   # overrides it: 0 where timings do not matter (the test suite)
MAX_SETTLE_S = 60.0   # a pause beyond it is a typo (milliseconds given as seconds), not a setting
REWARM_S = 0.01        # about how long the untimed calls after each pause run (interleaved_timings)
REWARM_CALLS = 3       # and the most of them
REWARM_BELOW_S = 1.0   # none for a call this long: its wake is lost in it
BANDWIDTH_MIB = 256   # the matrix read_bandwidth reads: larger than the caches of the CPUs edgegen targets
BANDWIDTH_REPEATS = 8


def settle_seconds() -> float:
    """The pause that lets the threads of what ran last stop spinning: SETTLE_S, or SETTLE_ENV's."""
    given = os.environ.get(SETTLE_ENV)
    if given is None:
        return SETTLE_S
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_SETTLE_S:   # nan too
        raise ConfigError(f"{SETTLE_ENV}: expected seconds from 0 to {MAX_SETTLE_S:g} (the pause before each timed "
                          f"block; default {SETTLE_S:g}), found {given!r}")
    return seconds


# The vector instructions ONNX Runtime's CPU kernels (MLAS) choose their code by: a model name such
# as "AMD EPYC" names CPUs with and without AVX-512, and int4's MatMulNBits, for one, runs other
# kernels with AVX-512 VNNI than with AVX2 alone; on ARM (a Jetson), the dot-product and i8mm ones.
CPU_FEATURES = ("avx2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8",
                "asimd", "asimddp", "i8mm", "sve", "bf16")


def machine_info() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        cpuinfo = ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or "")
    import onnxruntime

    return {"cpu": cpu, "cpu_features": cpu_features(cpuinfo), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "arch": platform.machine(), "os": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "host": platform.node(),
            "load_average": load_average()}


def load_average() -> float | None:
    """The system's load average over the last minute (runnable processes), None where there is none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


BUSY = 3.0   # a median this many times its engine's fastest call: other work took the cores (a quiet run: ~1.1)
BUSY_CALLS = 10   # fewer calls tell no median apart from a slow first one


def warn_if_busy(results: list[dict], calls: int) -> None:
    """A benchmark whose calls ran far slower than their fastest (another process on the cores) gives
    ratios that mislead (a flow's 2.35x over torch read 12x on a loaded machine): said."""
    if calls < BUSY_CALLS:
        return
    spread = [f"{r['graph']} on {r['engine']} {r['p50_ms'] / r['min_ms']:.1f}x" for r in results
              if r["min_ms"] > 0 and r["p50_ms"] > BUSY * r["min_ms"]]
    if spread:
        load = load_average()
        busy = f" (load average {load:g} on {os.cpu_count()} cores)" if load is not None else ""
        warnings.warn(f"timings: expected each median near its fastest call, found {', '.join(spread[:3])} its fastest"
                      f"{busy}: other work took the cores; run again on an idle machine before comparing",
                      EdgegenWarning, stacklevel=3)


def cpu_features(cpuinfo: str) -> list[str]:
    """Which of CPU_FEATURES /proc/cpuinfo's text lists."""
    from .runtimes.ort import cpu_flags

    flags = cpu_flags(cpuinfo)
    return [feature for feature in CPU_FEATURES if feature in flags]


def cpu_text(machine: dict) -> str:
    """machine_info's CPU in words: its model name and the vector instructions its kernels use."""
    features = machine.get("cpu_features")   # reports of earlier edgegen have none
    return f"{machine['cpu']} with {', '.join(features)}" if features else machine["cpu"]


def cores_text(machine: dict) -> str:
    """machine_info's cores in words: "16 cores", and where a container or cpuset holds this
    process to fewer, how many it may use (the default thread count then)."""
    usable = machine.get("usable_cores")
    held = usable is not None and machine["cores"] is not None and usable < machine["cores"]
    return f"{machine['cores']} cores" + (f", {usable} usable by this process" if held else "")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, or since reset_peak_rss (Linux's VmHWM; where
    there is none, getrusage's, which reports kB on Linux, bytes on macOS)."""
    if (peak := _status_mb("VmHWM")) is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def rss_mb() -> float | None:
    """Resident memory of this process now (Linux's VmRSS; None where there is none)."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float | None:
    """A memory figure of /proc/self/status (its kB) in MB, None where the system has none."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(status.split(f"{field}:", 1)[1].split()[0]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        return None


def reset_peak_rss() -> bool:
    """Start peak_rss_mb over from what this process holds now (Linux 4.0 and later): what ran in
    the process before a benchmark (a shipped model's export, a sweep's earlier points) is not its
    runtime's memory. False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def refuse_sizes_off_step(family, config, shapes: dict[str, int]) -> None:
    """A size between the steps a package's dim takes (Family.multiples): the graph cannot take it
    (ONNX Runtime's error), or gives other results there than the module."""
    for dim, size in shapes.items():
        if size % (step := family.multiples(config).get(dim, 1)):
            raise ConfigError(f"--shapes/--sweep {dim}={size}: expected a multiple of {step}, the step of the sizes the "
                              f"package takes (its export found the graph to match the module only there), found {size}")


def bench_feeds(inputs: tuple[TensorSpec, ...], batch: int, seed: int = 0,
                shapes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Inputs for timing from the manifest alone: uniform [0, 1) floats, zero integers; every
    dynamic dim named 'batch' set to `batch`, the others to `shapes` (as trtexec's --shapes), else 1."""
    rng = np.random.default_rng(seed)
    sizes = {**(shapes or {}), "batch": batch}
    feeds = {}
    for spec in inputs:
        shape = tuple(sizes.get(d, 1) if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


def fixed_rows(pipe) -> int:
    """The rows each call runs where no graph has a dynamic batch: the leading dim every input
    shares (a user's module exported with its batch fixed at 2 runs 2 samples a call), else 1."""
    leading = {spec.shape[0] for s in pipe.sessions.values() for spec in s.inputs if spec.shape}
    (rows,) = leading if len(leading) == 1 else (1,)
    return rows if isinstance(rows, int) else 1


def _timed_batch(pipe, batch: int | None, dims: set, limit: int | None) -> int:
    """The rows each timed call runs: `batch` (default DEFAULT_BATCH, or the package's batch `limit`
    where that is less) on the dynamic batch dim, or where the graphs have none, their own rows
    (fixed_rows), which a --batch other than them cannot change."""
    if "batch" in dims:
        return min(DEFAULT_BATCH, limit or DEFAULT_BATCH) if batch is None else batch
    rows = fixed_rows(pipe)
    if batch not in (None, 1, rows):   # nothing to set it on: every call would time the same shapes
        sizes = "; ".join(f"{spec.name} {spec.dtype}[{', '.join(map(str, spec.shape))}]"
                          for s in pipe.sessions.values() for spec in s.inputs)
        raise ConfigError(f"--batch {batch}: expected a package whose graphs have a dynamic dim named 'batch', "
                          f"found none ({sizes}); time other sizes with --shapes DIM=N")
    return rows


def rewarm_calls(call_s: float) -> int:
    """Untimed calls of an engine whose call takes `call_s` after each pause: about REWARM_S of
    them, at least one and at most REWARM_CALLS, and none for a call of REWARM_BELOW_S or more."""
    return 0 if call_s >= REWARM_BELOW_S else max(1, min(REWARM_CALLS, int(REWARM_S / max(call_s, 1e-9))))


def interleaved_timings(engines: dict[str, Callable[[], object]], iters: int, warmup: int, rounds: int = ROUNDS,
                        progress: bool | None = None, rewarm: int | None = None) -> dict[str, np.ndarray]:
    """Warm each engine up, then time `iters` calls of each, taking turns in `rounds` blocks.
    Before each block the machine settles for SETTLE_S: the engine timed before it leaves its
    thread pool spinning (ONNX Runtime's and OpenMP's pools spin for a while after a call, to
    catch the next one), and on a small machine that pool takes the cores from the engine being
    timed. Measured: int8 timed right after fp32 read 1.6x slower than fp32, and 1.1x faster
    once the pools were let go to sleep. The first calls after the pause wake those threads and
    the caches the other engine's calls took, so with a warm-up asked for each block starts with
    untimed calls (rewarm_calls). Measured on a 0.013 ms graph: 10 iterations, each call the first
    of its block, timed ONNX Runtime at 27x its speed and PyTorch at 270x (20x apart, 2.3x at 200
    iterations); with one untimed call 4.2x apart, with three 1.9x.
    `rewarm`: that many untimed calls instead, whatever a call takes: 1 for calls of a second or more
    whose first after the pause is not their own (a large output's fresh memory: benchmarks/sr.py)"""
    warm_s = {}   # each engine's fastest warm-up call (its first may hold lazy set-up)
    for name, fn in engines.items():
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            warm_s[name] = min(warm_s.get(name, math.inf), time.perf_counter() - start)
    untimed = ({name: rewarm_calls(seconds) if rewarm is None else rewarm for name, seconds in warm_s.items()}
               if len(engines) > 1 else {})
    times = {name: [] for name in engines}
    per_round = max(1, iters // rounds)
    settle = settle_seconds() if len(engines) > 1 else 0.0
    with Progress(iters * len(engines), "bench", enabled=progress) as bar:
        done = 0
        while done < iters:
            block = min(per_round, iters - done)
            for name, fn in engines.items():
                time.sleep(settle)
                for _ in range(untimed.get(name, 0)):
                    fn()
                for _ in range(block):
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
                bar.update(block)
            done += block
    return {name: np.array(t) for name, t in times.items()}


def eager_modules(reference: str | os.PathLike, pipe) -> dict:
    """{graph: torch module} of the package's graphs: from the checkpoint it was exported from (or
    the transformers or diffusers folder it was imported from), or for a family without checkpoints
    from the reference its declaration knows how to load."""
    from .export import source_model

    loader = get_family(pipe.family).eager_modules_function()
    if loader is not None:
        return loader(reference, pipe.package)
    with source_model(pipe.package, reference) as (ckpt, spec):
        return {graph.part: graph.submodule(ckpt.model).eval() for graph in spec.graphs}


def torch_runners(checkpoint: str | os.PathLike, pipe, feeds: dict[str, dict[str, np.ndarray]], threads: int):
    """PyTorch eager runners for the package's graphs (see eager_modules), at `threads` threads
    until bench_package returns (torch_threads_kept)."""
    import torch

    from .export.validate import torch_inputs

    set_torch_threads(threads)
    runners = {}
    for part, module in eager_modules(checkpoint, pipe).items():
        # copies: a module that changes its input in place must not change what ONNX Runtime is timed on
        tensors = torch_inputs(feeds[part], pipe.sessions[part].inputs)

        def run(module=module, tensors=tensors):
            with torch.inference_mode():
                return module(*tensors)

        runners[part] = run
    return runners, torch.__version__


_torch_threads_before: list[int] = []   # torch's count before the eager runners set bench's, while bench runs


def set_torch_threads(threads: int) -> None:
    """torch's process-wide thread count set to bench's for the eager runners, until bench_package
    returns (torch_threads_kept)."""
    import torch

    if not _torch_threads_before:
        _torch_threads_before.append(torch.get_num_threads())
    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads_kept():
    """torch's thread count as the caller had it once bench returns: the eager runners set the
    process-wide count to bench's, and bench runs in a user's process (a notebook that trains next).
    It is read as they first set it, not here: importing torch here counted its libraries (180 MB)
    in the runtime's peak memory, read before the runners are built (review 168)."""
    try:
        yield
    finally:
        if _torch_threads_before:
            import torch

            torch.set_num_threads(_torch_threads_before.pop())


DEFAULT_BATCH = 8   # bench_package's, from Python; the command line's --batch is 1


def bench_package(path: str | os.PathLike, batch: int | None = None, iters: int = 200, warmup: int = 20, backend: str = "auto",
                  threads: int | None = None, vs_torch: str | os.PathLike | None = None, precision: str = "fp32",
                  shapes: dict[str, int] | None = None, energy: bool = True, prompt_lookup: int = 0,
                  generation: bool = True, steps: int | None = None) -> dict:
    """Time every graph of the package; with vs_torch, PyTorch eager on the same inputs, interleaved.
    batch: the size of the dims named batch (default DEFAULT_BATCH; 1 for a package without one).
    shapes: the size of each dynamic dim other than the batch (default: the family's, else 1).
    energy: then run each engine again for ENERGY_SECONDS with the machine's power source read
    (power.py), for watts and joules per result (one result: one batch item).
    prompt_lookup: token packages only: also generate with that many draft tokens per call (prompt
    lookup decoding), side by side with the plain loop.
    generation: then time a whole generation where the family's is more than one graph call
    (time_generation), at `steps` sampler steps where given (else the family's default).
    The report's peak_rss_mb is this call's: the process's peak is started over from what it holds
    now (held_before: PyTorch's libraries, where torch_loaded, count in it)."""
    reset_peak_rss()   # a sweep's earlier points (1.7 GB) were its later ones' peak
    held = {"held_before": rss_mb(), "torch_loaded": "torch" in sys.modules}
    with torch_threads_kept():
        report = _bench_package(path, batch, iters, warmup, backend, threads, vs_torch, precision, shapes, energy,
                                prompt_lookup, generation, steps)
    report["peak_rss_mb"].update(held)
    return report


def _refuse_tensorrt_for_a_loop(family, generation: bool) -> None:
    if family.bench == "tokens":
        family.refuse_tensorrt_for_its_loop("tensorrt", "bench it on ort-tensorrt or ort-cuda")
    elif generation:
        family.refuse_tensorrt_for_its_loop("tensorrt", "bench it on ort-tensorrt or ort-cuda, or its graphs alone on "
                                                        "TensorRT with --no-generation")


def _bench_package(path, batch, iters, warmup, backend, threads, vs_torch, precision, shapes, energy, prompt_lookup,
                   generation, steps) -> dict:
    from .runtimes import load

    settle_seconds()   # a mistyped setting is said before the work, not after the first engine's timing
    for flag, count, least in (("--batch", batch, 1), ("--iters", iters, 1), ("--warmup", warmup, 0)):
        if count is not None and count < least:
            raise ConfigError(f"{flag}: expected at least {least}, found {count}")
    for flag, count in (("--iters", iters), ("--warmup", warmup)):   # 10**12 ran until killed
        if count > MAX_ITERS:
            raise ConfigError(f"{flag}: expected at most {MAX_ITERS} calls per engine (more adds no precision to a "
                              f"median), found {count}")
    if batch is not None and batch > ROWS_PER_CALL:   # --batch 100000 was killed for memory, without a word
        raise ConfigError(f"--batch: expected at most {ROWS_PER_CALL}, the most rows edgegen's pipelines put through a "
                          f"graph in one call (a larger batch runs as calls of that many), found {batch}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"--steps: expected a positive number of sampler steps, found {steps!r}")
    if steps is not None and not generation:
        raise ConfigError("--steps: expected the whole generation it sets, found --no-generation with it")
    if prompt_lookup < 0:
        raise ConfigError(f"--prompt-lookup: expected a number of draft tokens (0 or more), found {prompt_lookup}")
    if backend == "tensorrt":   # a loop that cannot run on its engines, said before they build (minutes)
        from .shipped import resolve as resolve_shipped   # a shipped name, as load() takes it

        _refuse_tensorrt_for_a_loop(get_family(Package(resolve_shipped(path), verify_hashes=False).family), generation)
    pipe = load(path, backend=backend, threads=threads, precision=precision)   # None: load()'s default, as a user's
    threads = session_threads() if threads is None else threads   # that default, named (cpus.py)
    family = get_family(pipe.family)
    if family.bench == "tokens":
        if steps is not None:
            raise ConfigError(f"--steps {steps}: expected a package whose generation runs sampler steps, found a "
                              f"{pipe.family} package, which generates tokens")
        refuse_shapes_for_tokens(pipe, shapes)
        return bench_generation(pipe, path, DEFAULT_BATCH if batch is None else batch, iters, warmup, threads,
                                vs_torch, energy, prompt_lookup)
    if prompt_lookup:
        raise ConfigError(f"--prompt-lookup {prompt_lookup}: expected a package that generates tokens, found the "
                          f"{pipe.family!r} family's")
    dims = {d for s in pipe.sessions.values() for spec in s.inputs for d in spec.shape if isinstance(d, str)}
    batch = _timed_batch(pipe, batch, dims, family.limits(pipe.config).get("batch"))
    whole_call = generation_call(family, pipe, batch, steps) if generation else None
    shapes = {**(family.bench_dims(pipe.config) if family.bench_dims else {}), **(shapes or {})}
    shapes.pop("batch", None)   # --batch sets it
    if unknown := sorted(set(shapes) - dims):   # from --shapes or --sweep: both flags named
        raise ConfigError(f"--shapes/--sweep: expected dynamic dims of the package's graphs other than the batch "
                          f"({', '.join(sorted(dims - {'batch'})) or 'none'}), found {', '.join(unknown)}")
    limits, minimums = family.limits(pipe.config), family.minimums(pipe.config)
    refuse_sizes_off_step(family, pipe.config, shapes)
    beyond = {d: (n, limit) for d, n in {**shapes, "batch": batch}.items()
              if (limit := limits.get(d)) is not None and n > limit and d in dims}
    for dim, (size, limit) in beyond.items():   # timed as asked, but said: the export never checked the graph there
        flag = "--batch " if dim == "batch" else f"--shapes/--sweep {dim}="   # either set it
        # "declares": a module's export gates at its limits, a family's at small sizes (SR's [1, 3])
        warnings.warn(f"{flag}{size}: beyond the largest {dim} the package declares, which its TensorRT profiles "
                      f"are built to ({limit}); timed as asked, at a size where no export checked its outputs",
                      EdgegenWarning, stacklevel=2)
    below = {d: (n, least) for d, n in shapes.items() if (least := minimums.get(d)) and n < least}
    for dim, (size, least) in below.items():   # a user's module: its export checked no size below it
        warnings.warn(f"--shapes/--sweep {dim}={size}: below the smallest {dim} the package declares, which its "
                      f"TensorRT profiles are built from ({least}); timed as asked, at a size where no export checked "
                      "its outputs", EdgegenWarning, stacklevel=2)
    feeds = {part: bench_feeds(s.inputs, batch, shapes=shapes) for part, s in pipe.sessions.items()}
    engines = {(part, f"edgegen {pipe.backend}"): (lambda s=s, f=feeds[part]: s.run(f)) for part, s in pipe.sessions.items()}
    pictures = get_family(pipe.family).picture_outputs
    pixels = {part: output_pixels(fn(), pictures) for (part, _), fn in engines.items()}
    runtime_rss = peak_rss_mb()
    versions = {}
    if vs_torch is not None:
        runners, versions["torch"] = torch_runners(vs_torch, pipe, feeds, threads)
        engines.update({(part, "torch eager"): fn for part, fn in runners.items()})
    timings = interleaved_timings(engines, iters, warmup)
    results = _results(timings, lambda stats: batch * 1e3 / stats["mean_ms"])
    warn_if_busy(results, iters)
    for row in results:   # a loop's step graph makes a step of each row, not the row's sample
        row["unit"] = f"{family.bench_row} steps" if row["graph"] in family.step_graphs else f"{family.bench_row}s"
    energy_note = add_energy(results, engines, batch) if energy else "not asked for"
    for row in results:   # image outputs: megapixels made per second, the figure that compares tile sizes
        if pixels[row["graph"]]:
            row["megapixels_per_s"] = round(pixels[row["graph"]] / 1e3 / row["mean_ms"], 3)
    whole = time_generation(whole_call, iters, warmup, energy) if whole_call else None
    ratios = {}
    for part in pipe.sessions:
        ours, ref = timings.get((part, f"edgegen {pipe.backend}")), timings.get((part, "torch eager"))
        if ref is not None:
            ratios[part] = round(float(np.median(ref) / np.median(ours)), 3)
    return {
        **_what_ran(pipe, path),
        "threads": threads, "batch": batch, "row": family.bench_row, "shapes": shapes, "iters": iters, "warmup": warmup,
        "peak_rss_mb": {"runtime": runtime_rss, "process": peak_rss_mb()},
        "machine": {**machine_info(), **versions},
        "results": results,
        "energy": energy_note,
        "speedup_vs_torch_p50": ratios,
        **({"whole_generation": whole} if whole else {}),
    }


def _what_ran(pipe, path) -> dict:
    """The report's first fields: which report it is (schema, edgegen, when), the package (its path,
    name and each graph file's sha256, which a pipeline compares runs by), and the backend and
    precision it ran at, with the graphs that ran in fp32 under a variant precision (those it has
    no variant of) and why."""
    from . import __version__
    from .package import with_external_data

    package = pipe.package
    # a graph over 2 GB keeps its weights apart: a retrained one's file is the same, its external data not
    files = {part: with_external_data((package.variant_record(part, pipe.precision) or {}).get("sha256") or entry.sha256,
                                      package.external_data(part, pipe.precision))
             for part, entry in package.graphs.items()}
    return {"report": REPORT_SCHEMA, "edgegen": __version__,
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "package": str(Path(path)), "package_name": package.manifest.name, "graphs_sha256": files,
            "family": pipe.family, "backend": pipe.backend, "precision": pipe.precision,
            "fp32_graphs": package.fp32_graphs(pipe.precision)}


GENERATION_SECONDS = 3.0   # a whole generation is timed this long at least (and at least MIN_GENERATIONS times) ...
MAX_ITERS = 100_000        # timed (or warm-up) calls per engine: past this a typo runs for days
MIN_GENERATIONS = 3        # ... and at most --iters times


def generation_call(family, pipe, batch: int, steps: int | None = None) -> GenerationCall | None:
    """The family's whole generation (Family.bench_generation) at its defaults or at `steps` sampler
    steps; None where its generation is one graph call. Made before any timing, so that a --steps
    the family cannot take is refused first."""
    generation = family.bench_generation(pipe, batch, steps) if family.bench_generation else None
    if steps is not None and (generation is None or generation.steps is None):
        raise ConfigError(f"--steps {steps}: expected a package whose generation runs sampler steps (diffusion, "
                          f"latent diffusion, text to image, ControlNet), found a {family.name} package")
    return generation


def time_generation(generation: GenerationCall, iters: int, warmup: int, energy: bool) -> dict:
    """A whole generation (generation_call), timed after the graphs on its own: one takes from
    milliseconds to minutes, so it runs as many times as fill GENERATION_SECONDS (MIN_GENERATIONS
    to `iters`), after one untimed run unless warmup is 0."""
    if warmup:
        generation.call()
    times = [_timed(generation.call)]
    wanted = max(MIN_GENERATIONS, int(np.ceil(GENERATION_SECONDS / max(times[0], 1e-9))))
    times += [_timed(generation.call) for _ in range(min(iters, wanted) - 1)]
    stats = {k: round(v, 3) for k, v in percentiles_ms(np.array(times)).items()}
    record = {"what": generation.what, "steps": generation.steps, "calls": len(times), **stats, "unit": generation.unit,
              "per_s": round(generation.count * 1e3 / stats["mean_ms"], 3)}
    if energy:
        row = {"graph": "generation", "engine": "edgegen"}
        record["energy"] = add_energy([row], {("generation", "edgegen"): generation.call}, generation.count)
        record.update({k: row[k] for k in ("watts", "joules_per_result") if k in row})
    return record


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def add_energy(results: list[dict], engines: dict, results_per_call: int, seconds: float | None = None) -> str:
    """Add watts and joules per result to each row, measured engine by engine with the first
    power source this machine has; returns what measured them, or why nothing could."""
    from .power import find_power_source, measure_energy

    source, why = find_power_source()
    if source is None:
        return why
    try:
        for row in results:
            energy, calls = measure_energy(source, engines[(row["graph"], row["engine"])],
                                           ENERGY_SECONDS if seconds is None else seconds)
            row["watts"] = round(energy.watts, 3)
            row["joules_per_result"] = round(energy.joules / (calls * results_per_call), 6)
    finally:
        source.close()
    return f"measured with {source.name}, each engine run alone for {ENERGY_SECONDS:g} s or more"


def output_pixels(outputs: dict, pictures: tuple[str, ...] | None = None) -> int:
    """Pixels in one call's picture output ([N, C, H, W] floats), 0 for a graph without one.
    pictures: the names of the outputs that are pictures (Family.picture_outputs); None: any
    output of 1, 3 or 4 channels (a user's module, whose outputs edgegen cannot otherwise tell)."""
    for name, array in outputs.items():
        if array.ndim == 4 and array.dtype.kind == "f" and (
                name in pictures if pictures is not None else array.shape[1] in (1, 3, 4)):
            return int(array.shape[0] * array.shape[2] * array.shape[3])
    return 0


def _results(timings: dict, throughput: Callable[[dict], float]) -> list[dict]:
    """One row per (graph, engine): latency percentiles in ms and throughput per second."""
    rows = []
    for (part, engine), seconds in timings.items():
        stats = percentiles_ms(seconds)
        rows.append({"graph": part, "engine": engine, **{k: round(v, 4) for k, v in stats.items()},
                     "throughput_per_s": _rate(throughput(stats))})
    return rows


ENERGY_SECONDS = 1.0   # per engine: power sources update every few to 100 ms
PROMPT_TOKENS, NEW_TOKENS = 32, 128   # the reference generation a token package is timed on


def reference_lengths(context: int) -> tuple[int, int]:
    """(prompt tokens, new tokens) of the generation a token package is timed on: PROMPT_TOKENS
    then NEW_TOKENS where the model's context holds them, else the context split as they are,
    about 1 to 4 (a 64-token context: 12 and 52; an imported Mistral's context is its sliding window)."""
    if context >= PROMPT_TOKENS + NEW_TOKENS:
        return PROMPT_TOKENS, NEW_TOKENS
    if context < 3:   # a prompt token, and two new ones: the time between them is the time per token
        raise ConfigError(f"bench: expected a model whose context holds a prompt and two new tokens, found a context "
                          f"of {context}")
    prompt = max(1, context * PROMPT_TOKENS // (PROMPT_TOKENS + NEW_TOKENS))
    return prompt, context - prompt


TIMED_AS_TOKENS = "timed as whole greedy generations"   # what --no-generation's refusal says of a token package


def refuse_shapes_for_tokens(pipe, shapes: dict | None) -> None:
    """--shapes and --sweep set the sizes graphs are timed at one call at a time; a token package
    is timed as whole generations, which they would not change: refused, not ignored. (`generation`
    does not apply either: its generation is all there is to time, and the command line refuses
    --no-generation for it.)"""
    if shapes:
        prompt, new = reference_lengths(pipe.context)
        raise ConfigError(f"--shapes/--sweep: expected a package whose graphs are timed at sizes, found a {pipe.family} "
                          f"package, {TIMED_AS_TOKENS} of {prompt} + {new} tokens")


def bench_generation(pipe, path, batch: int, iters: int, warmup: int, threads: int, vs_torch=None,
                     energy: bool = True, prompt_lookup: int = 0) -> dict:
    """Token packages: whole greedy generations (reference_lengths: PROMPT_TOKENS in, NEW_TOKENS
    out, where the context holds them) rather than single graph calls; tokens/s per engine, and
    time to first token and per output token from a streamed batch-1 run. --vs-torch adds the checkpoint's own KV-cache loop in PyTorch;
    prompt_lookup the same loop with that many draft tokens per call."""
    calls = max(1, iters // 10)  # a generation is `new_tokens` graph calls
    prompt_tokens, new_tokens = reference_lengths(pipe.context)
    prompts = np.random.default_rng(0).integers(0, pipe.vocab_size, (batch, prompt_tokens)).tolist()
    ours = ("generate", f"edgegen {pipe.backend}")
    engines = {ours: lambda: pipe.generate(prompts, max_new_tokens=new_tokens, do_sample=False)}
    # a model that emits its end-of-text token stops early: count the tokens it really made
    made = engines[ours]()
    generated = sum(len(row) for row in made)
    drafted = ("generate", f"edgegen {pipe.backend}, prompt lookup {prompt_lookup}")
    if prompt_lookup:
        engines[drafted] = lambda: pipe.generate(prompts, max_new_tokens=new_tokens, do_sample=False,
                                                 prompt_lookup_num_tokens=prompt_lookup)
        same_tokens = engines[drafted]() == made
    runtime_rss = peak_rss_mb()
    versions = {}
    if vs_torch is not None:   # as many steps as edgegen's loop took: torch's never stops at the end token
        steps = max(len(row) for row in made)
        engines[("generate", "torch eager")], versions["torch"] = torch_generation(vs_torch, pipe, prompts, steps, threads)
    timings = interleaved_timings(engines, calls, max(1, warmup // 10))
    results = [{**row, "unit": "tokens"} for row in _results(timings, lambda stats: generated * 1e3 / stats["p50_ms"])]
    warn_if_busy(results, calls)
    energy_note = add_energy(results, engines, generated) if energy else "not asked for"   # a result: a token
    ratios = {}
    if vs_torch is not None:
        ratios["generate"] = round(float(np.median(timings[("generate", "torch eager")]) / np.median(timings[ours])), 3)
    lookup = {}
    if prompt_lookup:
        lookup = {"prompt_lookup": {"drafts": prompt_lookup, "same_tokens": same_tokens, "speedup_p50": round(float(
            np.median(timings[ours]) / np.median(timings[drafted])), 3)}}
        if vs_torch is not None:   # its own ratio, as the table's row shows it (speedup_vs_torch_p50: the plain loop's)
            lookup["prompt_lookup"]["speedup_vs_torch_p50"] = round(float(
                np.median(timings[("generate", "torch eager")]) / np.median(timings[drafted])), 3)
    latency = streamed_latency(pipe, prompts[0], new_tokens)
    process_rss = peak_rss_mb()   # before the bandwidth reading's matrix
    bound = decode_bound(pipe, threads, latency["tpot_ms_p50"], prompt_tokens + (new_tokens - 1) / 2)
    return {
        **_what_ran(pipe, path),
        "threads": threads, "batch": batch, "iters": calls, "warmup": max(1, warmup // 10),
        "generation": {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "greedy": True,
                       "tokens_per_call": generated,
                       "throughput": "generated tokens per second (tokens per call / p50)",
                       **latency, "bound": bound},
        "peak_rss_mb": {"runtime": runtime_rss, "process": process_rss},
        "machine": {**machine_info(), **versions},
        "results": results,
        "energy": energy_note,
        "speedup_vs_torch_p50": ratios,
        **lookup,
    }


def decode_bound(pipe, threads: int, tpot_ms: float, tokens: float) -> dict:
    """How far streamed decoding (batch 1) is from the memory-bandwidth limit: the bytes a decode
    step must read after `tokens` (the middle of the streamed run; the pipeline's decode_read_bytes: weights
    as the graph stores them, and the KV cache) over the read bandwidth measured now, and the
    measured TPOT p50 over that; or {"not_measured": why}."""
    why = bound_not_measured(pipe) or ("the streamed run made one token: no time per token to put against it"
                                       if tpot_ms is None else None)
    if why:
        return {"not_measured": why}
    try:
        read = pipe.decode_read_bytes(tokens)
    except PackageError as exc:   # a weight this edgegen cannot size: the timings stand without the bound
        return {"not_measured": str(exc)}
    bandwidth, how = read_bandwidth(threads)
    bound_ms = sum(read.values()) / bandwidth * 1e3
    return {"batch": 1, "weights_mb": round(read["weights"] / 1e6, 3), "kv_cache_mb": round(read["kv_cache"] / 1e6, 3),
            "after_tokens": tokens, "bandwidth_gb_s": round(bandwidth / 1e9, 2), "bandwidth_measured_by": how,
            "bound_ms": round(bound_ms, 6), "tpot_over_bound": round(tpot_ms / bound_ms, 3)}


def bound_not_measured(pipe) -> str | None:
    """Why decode_bound cannot put this pipeline's decoding against the CPU's bandwidth, if so."""
    if not hasattr(pipe, "decode_read_bytes"):
        return f"the {pipe.family!r} family's pipeline does not say what a decode step reads (decode_read_bytes)"
    if pipe.backend != "ort-cpu":
        return f"the bound reads the CPU's memory bandwidth, and backend {pipe.backend} decodes on the GPU"
    if pipe.precision == "fp16":
        return ("ONNX Runtime's CPU kernels may run fp16 weights as float32 converted when the graph loads, "
                "so a decode step need not read the bytes the graph stores")
    return None


def read_bandwidth(threads: int, repeats: int = BANDWIDTH_REPEATS) -> tuple[float, str]:
    """(bytes per second, how they were measured): the best of `repeats` float32 matrix-vector
    products over a BANDWIDTH_MIB matrix, the memory-bound operation a decode step repeats. With
    `threads` BLAS threads where threadpoolctl is installed (the export side has it), else with
    numpy's own count (all cores on most builds). A shared machine's figure moves with its load:
    take the best of several readings where they can be had. It settles first: threads of what
    ran before (an engine's, spinning after their work) would take the cores."""
    time.sleep(settle_seconds())
    rows = BANDWIDTH_MIB * (1 << 20) // 4 // 4096
    matrix, vector = np.ones((rows, 4096), np.float32), np.ones(4096, np.float32)
    try:
        from threadpoolctl import threadpool_limits
        limit, threads_used = threadpool_limits(threads), counted(threads, "thread")
    except ImportError:
        limit, threads_used = contextlib.nullcontext(), "numpy's BLAS threads (threadpoolctl is not installed)"
    best = 0.0
    with limit:
        for _ in range(repeats):
            start = time.perf_counter()
            matrix @ vector
            best = max(best, matrix.nbytes / (time.perf_counter() - start))
    return best, f"float32 matrix-vector product over {BANDWIDTH_MIB} MiB, {threads_used}, best of {repeats}"


def streamed_latency(pipe, prompt: list[int], new_tokens: int = NEW_TOKENS, runs: int = 5) -> dict:
    """Time to first token (p50, p90) and time per output token (p50, p90, mean: the percentiles
    hide a slow token every dozen on a loaded machine, which the tokens per second count) of
    streamed batch-1 generations."""
    first, gaps = [], []
    for _ in range(runs):
        stamps, start = [], time.perf_counter()
        for _token in pipe.stream(prompt, max_new_tokens=new_tokens, do_sample=False):
            stamps.append(time.perf_counter() - start)
        first.append(stamps[0])
        gaps.extend(np.diff(stamps))
    ms = lambda values, q: round(float(np.percentile(values, q)) * 1e3, 4) if values else None  # noqa: E731
    # None where every run made one token (a model that ends its text at once): no time between tokens
    return {"ttft_ms_p50": ms(first, 50), "ttft_ms_p90": ms(first, 90), "tpot_ms_p50": ms(gaps, 50),
            "tpot_ms_p90": ms(gaps, 90), "tpot_ms_mean": round(float(np.mean(gaps)) * 1e3, 4) if gaps else None}


def per_token_text(generation: dict) -> str:
    """The streamed run's time per output token, as the reports print it."""
    if generation["tpot_ms_p50"] is None:
        return "per output token not measured (the model ended its text after one token)"
    return (f"per output token p50 {generation['tpot_ms_p50']:.3f} ms (p90 {generation['tpot_ms_p90']:.3f}, mean "
            f"{generation['tpot_ms_mean']:.3f})")


def torch_generation(checkpoint, pipe, prompts: list[list[int]], new_tokens: int, threads: int):
    """The checkpoint's model generating greedily in PyTorch eager: a token family's model has
    `greedy_cached(prompts, new_tokens)`, its own KV-cache loop."""
    import torch

    from .export import source_model

    with source_model(pipe.package, checkpoint) as (ckpt, _):
        model = ckpt.model
    set_torch_threads(threads)
    ids = torch.tensor(prompts)
    return (lambda: model.greedy_cached(ids, new_tokens)), torch.__version__


def format_table(report: dict) -> str:
    result = "token" if "generation" in report else report.get("row", "sample")
    units = {r.get("unit", f"{result}s") for r in report["results"]}
    # rows of other units (a denoiser's steps beside a decoder's samples): each rate says its own
    unit = f"{next(iter(units))}/s" if len(units) == 1 else "rate"
    megapixels = any("megapixels_per_s" in r for r in report["results"])
    energy = any("watts" in r for r in report["results"])
    basis = "p50" if "generation" in report else "mean"   # a token loop's figures are per p50 call, as the issue's
    head = (f"| graph | engine | p50 ms | p90 ms | p99 ms | mean ms | min ms | {unit} (from the {basis}) |" + (" MP/s |" if megapixels else "")
            + (f" W | mJ/{next(iter(units))[:-1] if len(units) == 1 else 'row'} |" if energy else ""))
    lines = [head + " vs torch |", "|" + "---|" * (9 + megapixels + 2 * energy)]
    torch_p50 = {r["graph"]: r["p50_ms"] for r in report["results"] if r["engine"].startswith("torch")}
    for r in report["results"]:   # each row's own ratio: a prompt-lookup row beside the plain loop's has its own
        ratio = torch_p50[r["graph"]] / r["p50_ms"] if r["graph"] in torch_p50 and not r["engine"].startswith("torch") \
            else None
        mp = (f" {r['megapixels_per_s']:.2f} |" if "megapixels_per_s" in r else " |") if megapixels else ""   # not an image: blank
        joules = f" {r['watts']:.2f} | {r['joules_per_result'] * 1e3:.3f} |" if energy else ""
        lines.append(f"| {r['graph']} | {r['engine']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['mean_ms']:.3f} | {r['min_ms']:.3f} | {rate_text(r['throughput_per_s'])}"
                     f"{'' if len(units) == 1 else ' ' + r.get('unit', f'{result}s') + '/s'} |{mp}{joules} "
                     f"{f'{ratio:.2f}x' if ratio else ''} |")
    if not energy and report.get("energy"):   # a paragraph of its own: right under the table it reads as its last row
        lines += ["", f"energy: not measured: {report['energy']}"]
    return "\n".join(lines)


def _rate(value: float) -> float:
    """A rate per second for the report: to 0.1 from 100 up, four significant digits below (a 60 s
    call's 0.01511 was rounded to 0.0)."""
    return round(value, 1) if value >= 100 else float(f"{value:.4g}")


def rate_text(value: float) -> str:
    """A rate as a table shows it: whole numbers from 100 up, three significant digits below (0.0151)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def write_report(report: dict, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n", follow_symlink=True)


def write_results(folder: str | os.PathLike, name: str, report: dict, markdown: str) -> None:
    """A benchmark script's output: NAME.json and NAME.md in `folder`, and the Markdown on stdout."""
    write_report(report, Path(folder) / f"{name}.json")
    atomic_write_text(Path(folder) / f"{name}.md", markdown, follow_symlink=True)
    print(markdown)
