"""`edgegen upscale`, the super-resolution family's own command (declared in `Family.commands`).

Command-line glue, like edgegen/cli.py: with --package it runs on the runtime alone; without
one it exports the shipped model, which needs the export extra (imported only then)."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import EXPORT_EXTRA, ConfigError, MissingExtraError, PackageError
from ...shipped import find_shipped, names_shipped_model, shipped_family
from .cli import OPTIONS, check_picture_and_tiling, read_for_upscale, upscale_picture
from .pipeline import TRAINED_SCALES


def shipped_package(scale: int, cache: str | os.PathLike | None = None, report=lambda line: None) -> Path:
    """The package of the shipped x`scale` model (edgegen-models): the exported one it carries,
    else exported once into the user's cache (shipped.py, which says so through `report`), then reused."""
    from ...families import get

    names = [m.name for m in get("sr").demo]
    name = next((n for n in names if n.endswith(f"-x{scale}")), None)
    if name is None:
        trains = (f"; train one (edgegen train sr --scale {scale}) and pass its exported package with --package"
                  if scale in TRAINED_SCALES else f" (edgegen trains x{', x'.join(map(str, TRAINED_SCALES))})")
        raise ConfigError(f"--scale {scale}: expected a scale with a shipped model ({', '.join(names)}), found none"
                          + trains)
    try:
        found = find_shipped(name, cache)
    except PackageError as exc:   # edgegen-models not installed
        raise PackageError(f"{exc}; or pass an exported package with --package") from None
    if found is not None:
        return found
    try:
        from ...export.shipped import export_shipped
    except ImportError as exc:
        raise MissingExtraError(f"the shipped {name} model: exporting it needs the export extra ({EXPORT_EXTRA}), "
                                f"found {exc.name} missing; or pass an exported package with "
                                "--package") from None
    return export_shipped(name, cache, report=report)


def add_commands(sub, runtime_options) -> None:
    """`edgegen upscale IMAGE --out OUT [--package PKG | --scale 4] [--tile --overlap --tile-batch
    --max-megapixels] [--force]`."""
    from ...package import PRECISIONS

    p = sub.add_parser("upscale", help="upscale a picture with a super-resolution package (default: the shipped x4 model)")
    p.add_argument("image", help="the picture to upscale (PNG, JPEG, or anything Pillow reads)")
    p.add_argument("--out", required=True, help="the picture to write; its extension picks the format (.png, .jpg)")
    p.add_argument("--package", default=None, help="a super-resolution package (default: the shipped model for "
                                                    "--scale: edgegen-models' package where it carries one, else "
                                                    "exported once into ~/.cache/edgegen)")
    p.add_argument("--scale", type=int, default=None, help="the upscale factor; picks the shipped model when no "
                                                          "--package is given (default 4)")
    for option in OPTIONS[1:]:
        p.add_argument(option.flag, dest=option.keyword, help=option.help, **option.kwargs)
    p.add_argument("--force", action="store_true", help="replace the picture --out names if it exists")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="run the package's int8 or fp16 variant (made by edgegen optimize) (default fp32)")
    runtime_options(p)
    p.set_defaults(func=_cmd_upscale)


def _cmd_upscale(args) -> None:
    from ...cli import named_by_flag
    from ...errors import InputError

    try:
        _upscale(args)
    except InputError as exc:   # the pipeline's "tile: ..." said as the flag given, "--tile: ..."
        raise named_by_flag(exc, OPTIONS[1:]) from None


def _upscale(args) -> None:
    from ...runtimes import load

    if args.scale is not None and args.scale < 2:   # 0 once picked the x4 model, then named it as the conflict
        raise ConfigError(f"--scale: expected an upscale factor of at least 2, found {args.scale}")
    given = {option.keyword: getattr(args, option.keyword) for option in OPTIONS[1:]}
    # before a shipped model's export: the picture's header, the tiling, the output's size at its scale
    check_picture_and_tiling(args.image, args.out, given, "image",
                             None if args.package else 4 if args.scale is None else args.scale)
    picture = read_for_upscale(args.image, args.out, replace=args.force)   # before any export or model load
    from ...cli import _package_or_name
    from ...progress import report_to_stderr

    # its first use exports it, said as generate NAME says it: a minute's wait is not a hang
    if args.package is None:
        package = shipped_package(4 if args.scale is None else args.scale, report=report_to_stderr)
    else:   # a shipped name's family first: a VAE's name was told to export, not that it upscales nothing
        if names_shipped_model(args.package) and (family := shipped_family(args.package)) != "sr":
            raise ConfigError(f"--package {args.package!r}: expected a super-resolution (sr) package or shipped model, "
                              f"found the shipped {family} model of that name")
        package = _package_or_name(args.package)   # a shipped name exported once, as every command's
    pipe = load(package, backend=args.backend, threads=args.threads, precision=args.precision)
    if pipe.family != "sr":
        raise ConfigError(f"--package {str(package)!r}: expected a super-resolution (sr) package, found a "
                          f"{pipe.family} package")
    if args.scale is not None and args.scale != pipe.scale:
        raise ConfigError(f"--scale {args.scale}: expected the factor of the package given, x{pipe.scale} "
                          f"({str(args.package or package)!r}), found x{args.scale}")
    print(upscale_picture(pipe, picture, args.out, progress=None,
                          **{keyword: value for keyword, value in given.items() if value is not None}))
