import json

import pytest

from edgegen.demo import PRETRAINED, demo_files, demo_models, run_demo
from edgegen.errors import OutputExistsError


def test_shipped_weights_are_safetensors_checkpoints():
    for _, model in demo_models():
        assert sorted(p.name for p in (PRETRAINED / model.name).iterdir()) == ["config.json", "weights.safetensors"]


def test_demo_with_shipped_weights(tmp_path):
    index = run_demo(tmp_path / "demo", iters=5)
    demo = index.parent
    text = index.read_text()
    pictures = [f"{model.name}_samples.png" for family, model in demo_models() if family.name != "gpt"]
    pictures += ["vae-digits_reconstructions.png", "vaegan-digits_reconstructions.png"]
    for picture in pictures:
        assert (demo / picture).read_bytes()[:4] == b"\x89PNG" and f"({picture})" in text
    assert "| decoder | edgegen ort-cpu |" in text and "| generator | torch eager |" in text
    assert "| unet | edgegen ort-cpu |" in text and "| inverse | torch eager |" in text
    assert "| generate | edgegen ort-cpu |" in text and "| generate | torch eager |" in text
    samples = (demo / "gpt-stdlib_samples.txt").read_text()
    assert samples.startswith("def ") and "```python\nimport " in text
    results = json.loads((demo / "results.json").read_text())
    # the shipped models meet the README's anomaly figures
    for name in ("vae-digits", "vaegan-digits", "flow-digits"):
        aucs = results["families"][name]["anomaly_auc"]
        assert aucs["digits_vs_noise"] >= 0.95 and aucs["digits_vs_natural_crops"] >= 0.95
    assert (demo / "pkg" / "gan-digits" / "edgegen.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    # --force replaces what the demo wrote, all of it its own, and refuses a file of the user's in it
    assert {p.name for p in demo.iterdir()} <= demo_files(demo)
    (demo / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="found notes.txt beside it"):
        run_demo(demo, overwrite=True, iters=5)
