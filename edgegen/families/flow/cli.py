"""`edgegen generate` for flow packages: 2-D models draw their samples over the learned density."""

from __future__ import annotations

from ...families import GenerateRequest
from ...wording import counted


def generate(pipe, request: GenerateRequest) -> str:
    # --out is a picture's path: the command line checked it before the package loaded
    samples = pipe(request.n, seed=request.seed, **request.options)
    if pipe.is_image:
        return request.write_images(samples)
    from ...errors import NonFiniteError
    from ...plots import save_density_plot

    try:
        save_density_plot(pipe, samples, request.out)
    except NonFiniteError as exc:   # the plot's log densities of samples the temperature drew far out
        temperature = request.options.get("temperature", 1.0)
        if temperature <= 1:
            raise
        raise NonFiniteError(f"--temperature: expected one whose samples' log densities the plot can draw (near 1), "
                             f"found {temperature:g} ({exc})") from None
    return f"wrote {request.out} ({counted(len(samples), 'sample')} over the learned log density, seed {request.seed})"
