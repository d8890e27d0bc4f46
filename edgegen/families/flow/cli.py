"""`edgegen generate` for flow packages: 2-D models draw their samples over the learned density."""

from __future__ import annotations

from ...families import GenerateRequest
from ...wording import counted


def generate(pipe, request: GenerateRequest) -> str:
    # --out is a picture's path: the command line checked it before the package loaded
    samples = pipe(request.n, seed=request.seed, **request.options)
    if pipe.is_image:
        return request.write_images(samples)
    from ...plots import save_density_plot

    save_density_plot(pipe, samples, request.out)
    return f"wrote {request.out} ({counted(len(samples), 'sample')} over the learned log density, seed {request.seed})"
