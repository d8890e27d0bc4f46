"""The WaveNet family: dilated causal convolutions, fast generation with per-layer queues."""

from .. import DemoModel, Family, register
from .pipeline import WaveNetConfig, WaveNetPipeline
from .cli import OPTIONS, generate

FAMILY = register(Family(
    name="wavenet",
    summary="WaveNet on mu-law audio: fast generation with per-layer queues, log-likelihood",
    pipeline=WaveNetPipeline,
    config=WaveNetConfig,
    model="edgegen.families.wavenet.model",
    export="edgegen.families.wavenet.export",
    options=OPTIONS,
    generate=generate,
    demo=(DemoModel("wavenet-tones", "tones"),),
    showcase="edgegen.families.wavenet.demo",
    # one second through the full-sequence graph
    dim_limits=lambda c: {"samples": c.sample_rate},
    order=120,
))
