"""The ControlNet family: a trainable copy of a diffusion UNet's encoder, steered by a hint image."""

from .. import DemoModel, Family, Option, register
from .cli import OPTIONS, bench_generation, check_generate, generate
from .pipeline import ControlNetConfig, ControlNetPipeline

FAMILY = register(Family(
    name="controlnet",
    summary="ControlNet over a diffusion model: samples that follow a coarse hint image",
    data="the data its --base was trained on, by default (digits, for the shipped diffusion-digits); other data "
         "with a warning",
    pipeline=ControlNetPipeline,
    config=ControlNetConfig,
    graphs=("unet",),
    picture_outputs=(),
    model="edgegen.families.controlnet.model",
    export="edgegen.families.controlnet.export",
    options=OPTIONS,
    train_options=(Option("--base", "base", "the diffusion checkpoint to control (default: the shipped "
                          "diffusion-digits; with --init, the base the checkpoint records, where it is still there)",
                          {"metavar": "CHECKPOINT"}, recorded_as="base_checkpoint"),),
    generate=generate,
    check_generate=check_generate,
    bench_generation=bench_generation,
    step_graphs=("unet",),
    serving="edgegen.families.controlnet.cli:served",
    demo=(DemoModel("controlnet-digits", "digits", checkpoints={"base": "diffusion-digits"}),),
    showcase="edgegen.families.controlnet.demo",
    smoke={"train": {"steps": 2, "batch_size": 8}, "generate": ["--steps", "2", "--control", "{hint}"]},
    order=70,
))
