"""A family defined outside edgegen, as a user's package would: a linear autoencoder (PCA
learned by gradient descent) over small images. Its installed metadata names FAMILY in the
`edgegen.families` entry-point group (a script that cannot install it calls
edgegen.families.register(FAMILY) instead), so edgegen's CLI, demo, bench, optimize, check and build
serve it with no edit to edgegen (docs/adding-a-family.md walks through this package)."""

from edgegen.families import DemoModel, Family, Option

from .pipeline import PCAConfig, PCAPipeline

FAMILY = Family(
    name="pca",
    summary="linear autoencoder over small images (a test family from outside edgegen)",
    pipeline=PCAPipeline,
    config=PCAConfig,
    graphs=("encoder", "decoder"),
    model="edgegen_pca.model",
    export="edgegen_pca.export",
    options=(Option("--spread", "spread", "scale of the latent noise", {"type": float}, 1.0),),
    demo=(DemoModel("pca-digits", "digits"),),
    showcase="edgegen_pca.demo",
    smoke={"train": {"steps": 3, "latent_dim": 4}},
)
