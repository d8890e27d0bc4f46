"""The class-conditional GAN family: images of the classes asked for, with the truncation trick."""

from .. import DemoModel, Family, Option, label_option, register
from .cli import generate
from .pipeline import ConditionalGANConfig, ConditionalGANPipeline

FAMILY = register(Family(
    name="cgan",
    summary="class-conditional GAN (conditional batch norm, projection discriminator)",
    data="digits (default), or a folder of class subfolders (data/cats/*.png, data/dogs/*.png)",
    pipeline=ConditionalGANPipeline,
    config=ConditionalGANConfig,
    graphs=("generator",),
    picture_outputs=("image",),
    generate=generate,
    model="edgegen.families.cgan.model",
    export="edgegen.families.cgan.export",
    options=(label_option("random classes"),
             Option("--truncation", "truncation", "redraw latent values beyond this magnitude (e.g. 0.5; "
                    "default: none)", {"type": float})),
    demo=(DemoModel("cgan-digits", "digits"),),
    served_graph="generator",
    showcase="edgegen.families.cgan.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "image_size": 16, "width": 8}},
    order=40,
))
