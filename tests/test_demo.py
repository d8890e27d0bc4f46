import json

from edgegen.demo import PRETRAINED, run_demo


def test_shipped_weights_are_safetensors_checkpoints():
    for name in ("vae-digits", "gan-digits", "diffusion-digits"):
        assert sorted(p.name for p in (PRETRAINED / name).iterdir()) == ["config.json", "weights.safetensors"]


def test_demo_with_shipped_weights(tmp_path):
    index = run_demo(tmp_path / "demo", iters=5)
    demo = index.parent
    text = index.read_text()
    for picture in ("vae_samples.png", "gan_samples.png", "vae_reconstructions.png", "diffusion_samples.png"):
        assert (demo / picture).stat().st_size > 0 and f"({picture})" in text
    assert "| decoder | edgegen ort-cpu |" in text and "| generator | torch eager |" in text
    assert "| unet | edgegen ort-cpu |" in text
    results = json.loads((demo / "results.json").read_text())
    aucs = results["families"]["vae"]["anomaly_auc"]
    # the shipped VAE meets the README's anomaly figures
    assert aucs["digits_vs_noise"] >= 0.95 and aucs["digits_vs_natural_crops"] >= 0.95
    assert (demo / "pkg" / "gan" / "edgegen.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
