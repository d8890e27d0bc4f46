"""`edgegen generate` for flow packages: 2-D models draw their samples over the learned density."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest
from ...images import picture_format


def generate(pipe, request: GenerateRequest) -> str:
    if not pipe.is_image:   # refused before the sampling, not after
        if request.out is None:
            raise ConfigError("--out: expected the PNG or JPEG file to write a 2-D flow's density plot to, found none")
        picture_format(request.out, "RGB")
    samples = pipe(request.n, seed=request.seed, **request.options)
    if pipe.is_image:
        return request.write_images(samples)
    from ...plots import save_density_plot

    save_density_plot(pipe, samples, request.out)
    return f"wrote {request.out} ({len(samples)} samples over the learned log density, seed {request.seed})"
