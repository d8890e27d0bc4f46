"""The super-resolution family: a compact GAN upscaler (x2, x3, x4) for images of any size, tiled."""

from .. import DemoModel, Family, Option, register
from .cli import OPTIONS, check_generate, generate
from .pipeline import MAX_TILE_BATCH, TRAINED_SCALES, SRConfig, SRPipeline

FAMILY = register(Family(
    name="sr",
    summary="super-resolution GAN (Real-ESRGAN-style compact generator): any image size, tiled, x2/x3/x4",
    pipeline=SRPipeline,
    config=SRConfig,
    graphs=("upscaler",),
    picture_outputs=("upscaled",),
    gate="detail",   # int8 and fp16 keep the correction, not only the bilinear upscale it corrects
    gate_base="edgegen.families.sr.model:bilinear_base",
    data="natural (default: the shipped photographs, two held out) or a folder of your photographs",
    builtin_data=("natural",),
    model="edgegen.families.sr.model",
    export="edgegen.families.sr.export",
    options=OPTIONS,
    train_options=(Option("--scale", "scale", "upscale factor: 2, 3 or 4", {"type": int, "choices": TRAINED_SCALES}),),
    generate=generate,
    check_generate=check_generate,
    serving="edgegen.families.sr.cli:served",
    grid_flags=False,   # one text, picture, clip or set of arrays: no --n, --nrow, --scale
    seeded=False,       # the picture alone sets the upscale: --seed is refused, not ignored
    demo=(DemoModel("sr-photos-x4", "natural"),),
    showcase="edgegen.families.sr.demo",
    # TensorRT profiles: tiles up to max_tile on a side, batches up to 16
    dim_limits=lambda c: {"batch": MAX_TILE_BATCH, "height": c.max_tile, "width": c.max_tile},
    bench_dims=lambda c: {"batch": c.tile_batch, "height": c.tile, "width": c.tile},   # the runtime's default call
    smoke={"train": {"steps": 2, "batch_size": 2, "image_size": 32, "width": 8, "body_convs": 1},
           "generate": ["--image", "{hint}"], "out": "upscaled.png"},
    commands=("edgegen.families.sr.commands",),
    order=55,
))
