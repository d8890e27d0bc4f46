import os

from edgegen.cli import collect_cycles_less_often
from edgegen.cpus import usable_cores

# pytest-xdist (pyproject's addopts): each worker takes its share of the cores for torch's
# threads (set before torch is imported) and for ONNX Runtime's default pools (which read
# ORT_INTRA_OP_NUM_THREADS); two workers of two threads each on two cores contend, and ONNX
# Runtime's threads spin between runs.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = str(max(1, usable_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("OMP_NUM_THREADS", share)
    os.environ.setdefault("ORT_INTRA_OP_NUM_THREADS", share)

collect_cycles_less_often()   # as the command does: each test process's exports spent a tenth of their time there

import shutil
from pathlib import Path

import pytest

from edgegen.export import export_checkpoint
from edgegen.storage import writer_lock
from edgegen.training.train import train

# Tests assert behaviour, never time: bench's pause between engines' blocks (for fair timings on
# a small machine) only slows the suite down.
os.environ.setdefault("EDGEGEN_BENCH_SETTLE_S", "0")

# The modules by their time, measured (--durations), longest first; the rest, each short, follow in
# name order. A module runs whole on one worker (--dist loadfile), and a worker is given its next
# module while it still runs the last two tests of one: a long module left for the end would keep
# one worker busy while the other has nothing left (the demo's minutes, or test_sr's last test).
LONGEST_FIRST = ("test_demo.py", "test_gpt.py", "test_families.py", "test_diffusers_import.py", "test_hybrids.py",
                 "test_autoregressive.py", "test_optimize.py", "test_crash_safety.py", "test_sr.py",
                 "test_quality.py", "test_flow.py", "test_text2image_training.py", "test_cli.py", "test_diffusion.py",
                 "test_serving.py", "test_shipped.py", "test_own_model.py", "test_readme.py", "test_check.py",
                 "test_export.py", "test_data.py", "test_runtime.py", "test_package.py")


@pytest.hookimpl(optionalhook=True)   # pytest without xdist (-p no:xdist) does not know the hook
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per core, at most four: each holds torch and its own module fixtures."""
    return min(4, usable_cores())


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: the rest keep their order


def shared_dir(tmp_path_factory) -> Path:
    """A folder every worker of this run sees: the parent of the workers' own temporary folders
    under xdist (pytest-N/popen-gwK), the run's own without it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def run_cache(tmp_path_factory):
    """edgegen's user cache for this run, shared by its workers and not the developer's
    ~/.cache: what is cached there (the digit judge, shipped models' exports) is made once per
    run, by the first worker that asks, while the others wait for it (writer_lock)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(shared_dir(tmp_path_factory) / "cache"))
        yield


TRAINED_RUNS = {"vae": dict(family="vae", data="digits", steps=15, batch_size=32),
                "gan": dict(family="gan", data="digits", steps=15, batch_size=32),
                "diffusion": dict(family="diffusion", data="digits", steps=15, batch_size=32),
                "flow2d": dict(family="flow", data="moons", steps=300),
                "flow": dict(family="flow", data="digits", steps=30)}


class TrainedModels:
    """trained[name] -> (checkpoint, package), each made on first use by the worker that asks
    first while a worker that asks for the same one waits (writer_lock): one per lock, so a worker
    that needs the GAN does not wait while another trains the flows."""

    def __init__(self, root: Path):
        self.root = root

    def __getitem__(self, name: str) -> tuple[Path, Path]:
        ckpt, pkg = self.root / "ckpt" / name, self.root / "pkg" / name
        done = self.root / f"{name}.complete"
        if done.is_file():   # made: no lock, whose wait message a test capturing stderr would read
            return ckpt, pkg
        with writer_lock(self.root / name, f"training the tests' {name} checkpoint"):
            if not done.is_file():
                for leftover in (ckpt, pkg):   # of a worker that died while making them
                    shutil.rmtree(leftover, ignore_errors=True)
                train(out=ckpt, progress=False, **TRAINED_RUNS[name])
                export_checkpoint(ckpt, pkg)
                done.touch()
        return ckpt, pkg


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Tiny checkpoints (a few steps) and their exported packages, made once per run and read by
    every test (a test that damages one takes package_copy)."""
    return TrainedModels(shared_dir(tmp_path_factory) / "trained")


@pytest.fixture(scope="session")
def shipped_package(run_cache):
    """shipped_package(NAME) -> the shipped NAME's package, exported once per run into the run's
    cache (as a checkout's first use exports it) and read by every test that asks for it; a test
    that changes it works on a copy."""
    from edgegen.export.shipped import export_shipped

    return lambda name: export_shipped(name, report=lambda line: None)


@pytest.fixture
def package_copy(trained, tmp_path):
    """A private copy of a package that a test may damage."""
    def copy(family: str) -> Path:
        dest = tmp_path / f"pkg-{family}"
        shutil.copytree(trained[family][1], dest)
        return dest
    return copy
