"""Packages exported before the family registry (by edgegen at commit 326a1ab, from tiny
checkpoints trained a few steps) still load and generate: the typed runtime configs read the
manifests the old export wrote."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgegen

OLD = Path(__file__).parent / "fixtures" / "packages-before-registry"

CALLS = {
    "vae": lambda pipe: pipe(3, seed=0),
    "diffusion": lambda pipe: pipe(2, steps=2, labels=[1, 2], seed=0),
    "gpt": lambda pipe: np.array(pipe([1, 2, 3], max_new_tokens=3, do_sample=False)),
    "wavenet": lambda pipe: pipe(40, seed=0),
    "stylegan": lambda pipe: pipe(2, seed=0, truncation=0.7),
}


@pytest.mark.parametrize("family", sorted(CALLS))
def test_a_package_exported_before_the_registry_still_loads_and_generates(family, tmp_path):
    pkg = shutil.copytree(OLD / family, tmp_path / family)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    assert manifest["family"] == family and manifest["provenance"]["edgegen"] == "0.1.0"
    pipe = edgegen.load(pkg, backend="ort-cpu")
    out = CALLS[family](pipe)
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all() and np.asarray(out).size > 0
    assert pipe.config.to_json().keys() >= set(manifest["config"])   # every key the old export wrote is read
