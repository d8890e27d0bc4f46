"""The WaveNet family: dilated causal convolutions, fast generation with per-layer queues."""

from .. import DemoModel, Family, register
from .cli import OPTIONS, bench_generation, check_generate, generate
from .pipeline import WaveNetConfig, WaveNetPipeline

FAMILY = register(Family(
    name="wavenet",
    summary="WaveNet on mu-law audio: fast generation with per-layer queues, log-likelihood",
    pipeline=WaveNetPipeline,
    config=WaveNetConfig,
    graphs=("network", "step"),
    onnxruntime_loop="fast generation's queues",
    picture_outputs=(),
    gate="categorical",   # its variants keep the distributions it samples from (optimize.MAX_KL_NATS)
    bench_row="clip",   # a graph call's row is a clip: its audio's samples are counted apart
    data="tones (default: synthesized) or a folder of WAV files",
    builtin_data=("tones",),
    model="edgegen.families.wavenet.model",
    export="edgegen.families.wavenet.export",
    options=OPTIONS,
    generate=generate,
    check_generate=check_generate,
    bench_generation=bench_generation,
    step_graphs=("step",),
    serving="edgegen.families.wavenet.cli:served",
    grid_flags=False,   # one text, picture, clip or set of arrays: no --n, --nrow, --scale
    demo=(DemoModel("wavenet-tones", "tones"),),
    showcase="edgegen.families.wavenet.demo",
    # one second through the full-sequence graph
    dim_limits=lambda c: {"samples": c.sample_rate},
    # a window of log_prob's: one clip, a second of audio a call (bench's --batch sets its own batch)
    bench_dims=lambda c: {"batch": 1, "samples": c.sample_rate},
    smoke={"train": {"steps": 2, "batch_size": 2, "residual_channels": 8, "skip_channels": 8, "layers_per_cycle": 3,
                     "dilation_cycles": 1, "train_samples": 256},
           "generate": ["--seconds", "0.01"], "out": "audio.wav"},
    order=120,
))
