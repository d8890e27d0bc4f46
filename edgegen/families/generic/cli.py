"""`edgegen generate` for generic packages: an .npz of inputs in, an .npz of outputs out."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest
from ...runtimes.feeds import read_feeds, write_feeds
from ...storage import refuse_nameless


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: an .npz --out."""
    if out is None or not str(out).endswith(".npz"):
        raise ConfigError(f"--out: expected the .npz file to write a generic package's outputs to, found {repr(out) if out else 'none'}")
    refuse_nameless(out, ".npz", "--out")


def generate(pipe, request: GenerateRequest) -> str:
    given = request.options.get("inputs")
    feeds = read_feeds(given) if given else pipe.held_out_inputs()[:1]
    outputs = [pipe(feed) for feed in feeds]
    write_feeds(request.out, outputs)
    shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in outputs[0].items())
    return f"wrote {request.out} ({len(outputs)} feed(s) through {pipe.package.manifest.name!r}: {shapes})"
