"""The VAE family: a convolutional variational autoencoder (sampling, reconstruction, anomaly score)."""

from .. import DemoModel, Family, register
from .pipeline import VAEConfig, VAEPipeline

FAMILY = register(Family(
    name="vae",
    summary="convolutional variational autoencoder: samples, reconstructions, anomaly scores",
    pipeline=VAEPipeline,
    config=VAEConfig,
    graphs=("encoder", "decoder"),
    picture_outputs=("image",),
    model="edgegen.families.vae.model",
    export="edgegen.families.vae.export",
    demo=(DemoModel("vae-digits", "digits"),),
    served_graph="decoder",
    showcase="edgegen.families.vae.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "image_size": 16, "width": 8}},
    order=10,
))
