"""The PixelCNN family: a gated PixelCNN sampled pixel by pixel with a cached row loop."""

from ...wording import counted
from .. import DemoModel, Family, GenerationCall, register
from .cli import OPTIONS, check_generate, generate
from .pipeline import PixelCNNConfig, PixelCNNPipeline

FAMILY = register(Family(
    name="pixelcnn",
    summary="gated PixelCNN: exact likelihood, completion, fast row-cached sampling",
    data="digits (default), natural, or a folder of your images, read as grey",
    pipeline=PixelCNNPipeline,
    config=PixelCNNConfig,
    graphs=("network", "links", "row"),
    picture_outputs=(),
    gate="categorical",   # its variants keep the distributions it samples from (optimize.MAX_KL_NATS)
    model="edgegen.families.pixelcnn.model",
    export="edgegen.families.pixelcnn.export",
    options=OPTIONS,
    generate=generate,
    check_generate=check_generate,
    serving="edgegen.families.pixelcnn.cli:served",
    demo=(DemoModel("pixelcnn-digits", "digits"),),
    showcase="edgegen.families.pixelcnn.demo",
    dim_limits=lambda c: {"rows": c.image_shape[-2]},
    bench_dims=lambda c: {"rows": c.image_shape[-2]},   # the links of the whole image: sampling's last, largest call
    step_graphs=("links", "row"),   # a row's links, then a call per pixel of it
    bench_generation=lambda pipe, n, steps: GenerationCall(lambda: pipe(n, seed=0), n, "images",
                                                    f"{counted(n, 'image')}, pixel by pixel with the cached rows"),
    smoke={"train": {"steps": 2, "batch_size": 8, "width": 8, "layers": 2}},
    order=110,
))
