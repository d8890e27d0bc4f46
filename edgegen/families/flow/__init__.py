"""The normalizing-flow family: RealNVP on 2-D points, Glow on images; exact densities."""

from ...training.data import BUILTIN_IMAGE_DATA
from .. import DemoModel, Family, Option, register
from .cli import generate
from .pipeline import POINT_DATA, FlowConfig, FlowPipeline

FAMILY = register(Family(
    name="flow",
    summary="normalizing flows (RealNVP for points, Glow for images): exact log-likelihood, sampling",
    pipeline=FlowPipeline,
    config=FlowConfig,
    graphs=("forward", "inverse"),
    picture_outputs=("x",),
    gate="density",   # the forward graph's variants keep the log densities, not only z's PSNR
    data="digits (default), natural, a folder of images; moons, circles, blobs (2-D points: RealNVP)",
    builtin_data=(*BUILTIN_IMAGE_DATA, *POINT_DATA),
    model="edgegen.families.flow.model",
    export="edgegen.families.flow.export",
    options=(Option("--temperature", "temperature", "latent temperature (below 1: typical samples)",
                    {"type": float}, 1.0),),
    generate=generate,
    demo=(DemoModel("flow-moons", "moons"), DemoModel("flow-digits", "digits")),
    showcase="edgegen.families.flow.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "hidden": 8}},
    order=90,
))
