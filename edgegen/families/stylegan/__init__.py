"""The StyleGAN family: mapping (z -> w) and synthesis (one w per layer and noise -> image) graphs."""

from ...wording import counted
from .. import DemoModel, Family, GenerationCall, Option, register
from .pipeline import NOISE_MODES, StyleGANConfig, StyleGANPipeline

FAMILY = register(Family(
    name="stylegan",
    summary="StyleGAN2-style generator: truncation, style mixing, interpolation, noise modes",
    pipeline=StyleGANPipeline,
    config=StyleGANConfig,
    graphs=("mapping", "synthesis"),
    picture_outputs=("image",),
    model="edgegen.families.stylegan.model",
    export="edgegen.families.stylegan.export",
    options=(Option("--truncation", "truncation", "truncation psi toward the average w (e.g. 0.7)", {"type": float}, 1.0),
             Option("--noise-mode", "noise_mode", "the synthesis noise", {"choices": NOISE_MODES}, "const")),
    demo=(DemoModel("stylegan-digits", "digits"),),
    showcase="edgegen.families.stylegan.demo",
    bench_generation=lambda pipe, n, steps: GenerationCall(lambda: pipe(n, seed=0), n, "images",
                                                    f"{counted(n, 'image')}: the mapping, then the synthesis"),
    smoke={"train": {"steps": 2, "batch_size": 8, "image_size": 16, "width": 8, "w_dim": 16, "latent_dim": 16}},
    order=50,
))
