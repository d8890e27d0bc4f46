import os
import shutil
from pathlib import Path

import pytest

from edgegen.export import export_checkpoint
from edgegen.training.train import train

# Tests assert behaviour, never time: bench's pause between engines' blocks (for fair timings on
# a small machine) only slows the suite down.
os.environ.setdefault("EDGEGEN_BENCH_SETTLE_S", "0")


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
