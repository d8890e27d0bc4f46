"""The generic family: a user's own PyTorch module, exported as one validated graph.

No training side: `edgegen.export_pytorch(module, inputs, out, dynamic=...)` or
`edgegen export --module model.py:factory --inputs example.npz` writes its packages
(docs/bring-your-own-model.md). The runtime runs named arrays in, named arrays out; bench,
optimize (on the held-out inputs recorded at export, or the user's), check and build take
it like any other family."""

from .. import Family, Option, register
from .cli import check_generate, generate
from .pipeline import GenericConfig, GenericPipeline

FAMILY = register(Family(
    name="generic",
    summary="your own PyTorch module: named arrays in, named arrays out (export with --module)",
    pipeline=GenericPipeline,
    config=GenericConfig,
    options=(Option("--inputs", "inputs", "an .npz of the graph's named inputs (default: the first feed "
                    "recorded at export); --out names the .npz of outputs", {"metavar": "NPZ"}, served=False),),
    generate=generate,
    check_generate=check_generate,
    served_graph="model",   # its one graph (generic/export.py GRAPH)
    grid_flags=False,   # one text, picture, clip or set of arrays: no --n, --nrow, --scale
    seeded=False,       # its inputs alone set its outputs: --seed is refused, not ignored
    dim_limits=lambda c: dict(c.dim_limits),
    dim_minimums=lambda c: dict(c.dim_minimums),
    dim_multiples=lambda c: dict(c.dim_multiples),
    bench_dims=lambda c: dict(c.example_dims),
    eager_modules="edgegen.families.generic.export:eager_modules",
    order=900,
))
