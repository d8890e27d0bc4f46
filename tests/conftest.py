import os

# pytest-xdist (pyproject's addopts): each worker takes its share of the cores for torch's
# threads, set before torch is imported; two workers of two threads each on two cores contend.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import shutil
from pathlib import Path

import pytest

from edgegen.export import export_checkpoint
from edgegen.training.train import train

# Tests assert behaviour, never time: bench's pause between engines' blocks (for fair timings on
# a small machine) only slows the suite down.
os.environ.setdefault("EDGEGEN_BENCH_SETTLE_S", "0")

# The longest modules, measured (--durations), longest first. A module runs whole on one worker
# (--dist loadfile), and workers take the next module as they finish; started last, the demo's
# five minutes would leave one worker idle for most of them.
LONGEST_FIRST = ("test_demo.py", "test_gpt.py", "test_quality.py", "test_families.py", "test_diffusers_import.py",
                 "test_hybrids.py", "test_autoregressive.py", "test_optimize.py")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: a worker per core, at most four: each holds torch, and the session's fixtures
    are built once per worker."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: the rest keep their order


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Tiny checkpoints (a few steps) and their exported packages, shared by the tests."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for family in ("vae", "gan", "diffusion"):
        ckpt = train(family, root / "ckpt" / family, data="digits", steps=15, batch_size=32, progress=False)
        pkg = export_checkpoint(ckpt, root / "pkg" / family)
        out[family] = (ckpt, pkg)
    for name, data, steps in (("flow2d", "moons", 300), ("flow", "digits", 30)):
        ckpt = train("flow", root / "ckpt" / name, data=data, steps=steps, progress=False)
        out[name] = (ckpt, export_checkpoint(ckpt, root / "pkg" / name))
    return out


@pytest.fixture
def package_copy(trained, tmp_path):
    """A private copy of a package that a test may damage."""
    def copy(family: str) -> Path:
        dest = tmp_path / f"pkg-{family}"
        shutil.copytree(trained[family][1], dest)
        return dest
    return copy
