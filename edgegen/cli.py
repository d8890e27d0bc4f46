"""The `edgegen` command. Errors a user can cause print one line and exit 2; --debug shows
the traceback. The training and export commands import torch only when they run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import gc
import json
import math
import os
import signal
import shutil
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__
from .errors import (EXPORT_EXTRA, EXPORT_SIDE_MODULES, ConfigError, EdgegenError, EdgegenWarning, InputError, MissingExtraError,
                     OutputExistsError, ParityError, missing_export_modules, require_export,
                     where_export_runs)
from .package import created_time
from .targets import DEFAULT_OPSET, TARGETS, TENSORRT_TARGETS, describe_targets, get_target
from .wording import counted

EXIT_VERDICT = 1      # a model failed a check: check's parse, optimize's gates, info's load verdict, export's gate (ParityError)
EXIT_USER_ERROR = 2
# an exception edgegen did not expect: Python's own status would be 1, which check, optimize, info
# and export's gate give as verdicts on a model, so a script gating on them would read a crash as one
EXIT_INTERNAL_ERROR = 3
CHECK_REPORT = "edgegen.check/1"   # check --json's format: docs/cli.md lists its fields
SCORE_REPORT = "edgegen.score/1"   # score --json's
OPTIMIZE_REPORT = "edgegen.optimize/1"   # optimize --json's
INFO_REPORT = "edgegen.info/1"     # info --json's
EXIT_PIPE_CLOSED = 128 + 13   # what a shell reports for a command SIGPIPE ended
# the export extra's modules (pyproject.toml): a runtime-only install has none of them
EXPORT_MODULES = (*EXPORT_SIDE_MODULES, "sklearn", "skimage", "matplotlib", "diffusers", "transformers")
PACKAGE_HELP = ("a package directory, or the name of a shipped package (edgegen list; a folder of that name here is "
                "taken first, with a warning)")


# commands that take a shipped model's name, resolved before they run (generate and score resolve their own,
# after checking their options: a shipped name may export first, which takes a while). None writes its
# variants into the shared package (optimize refuses a name); build keeps its engines in the package's
# engine cache, in the user's cache where the package cannot be written (a system-wide install), or --cache-dir.
NAMED_COMMANDS = ("bench", "info", "check", "build")


def _package_or_name(given: str, apart: bool = False) -> str:
    """A package path as given, or the exported package of a shipped model's name: found in
    edgegen-models or the cache, else exported into the cache here when the export extra is."""
    from .shipped import cache_damage, find_shipped, in_models, resolve, shadows_shipped

    if shadows_shipped(given):   # said once; then as ./NAME, which edgegen.load takes without saying it again
        return os.path.join(".", given)
    if not _shipped_name_given(given):
        return given
    found = find_shipped(given)
    if found is None or cache_damage(given, found=found):
        try:
            require_export(f"shipped model {given!r}")
        except MissingExtraError:
            return str(resolve(given))   # raises: says where the packages come from
        if apart:
            return _export_apart(given)
        from .export.shipped import export_shipped
        from .progress import report_to_stderr

        return str(export_shipped(given, report=report_to_stderr))
    # edgegen-models' own, checked as resolve checks it: damaged, said with how to install it again
    return str(resolve(given)) if in_models(found) else str(found)


def _export_apart(name: str) -> str:
    """The shipped `name` exported in a process of its own (bench: PyTorch's libraries, loaded by
    an export here, counted 180 MB in the runtime's peak memory). Its progress, warnings and
    errors are said as this command's; stopped, this command stops it (its cleanup runs)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")   # a fresh interpreter: a fork would share this one's memory
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(target=_export_and_send, args=(name, theirs), name=f"edgegen export {name}")
    child.start()
    theirs.close()
    try:
        with _terminate_as_interrupt():
            outcome = ours.recv()
    except EOFError:   # it ended without a word: killed (out of memory, a signal of its own)
        child.join()
        raise EdgegenError(f"shipped model {name!r}: expected its export to finish, found its process ended by "
                           f"{_ended_by(child.exitcode)} before it did") from None
    except BaseException:   # Ctrl-C or SIGTERM here: the export is stopped by one SIGTERM, and removes what it staged
        child.terminate()
        child.join()
        raise
    child.join()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _ended_by(exitcode: int | None) -> str:
    return f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit status {exitcode}"


def _export_and_send(name: str, pipe) -> None:
    """In the export's own process: the package's path, or the error (edgegen's, or an internal one
    with its traceback), sent back; its warnings in edgegen's one-line form, as the parent's."""
    from .export.shipped import export_shipped
    from .progress import report_to_stderr

    # Ctrl-C reaches the whole process group: the parent stops this process, and a second signal
    # during the cleanup of its staging folder would leave that folder behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with warnings.catch_warnings(), _terminate_as_interrupt():
        warnings.showwarning = _show_warning
        try:
            pipe.send(str(export_shipped(name, report=report_to_stderr)))
        except EdgegenError as exc:
            pipe.send(exc)
        except Terminated:   # stopped by the parent, which says so: no traceback here
            return
        except Exception:  # noqa: BLE001 - edgegen's bug: its traceback, said as the parent's internal error
            pipe.send(RuntimeError(f"the export of the shipped {name} failed:\n{traceback.format_exc()}"))


def _shipped_name_given(given: str) -> bool:
    from .shipped import names_shipped_model

    return names_shipped_model(given)


def _shipped_but_not_exported(given: str) -> bool:
    from .shipped import find_shipped

    return _shipped_name_given(given) and find_shipped(given) is None


def _list_families() -> None:
    """Each registered family: its name, where it comes from, what it is; then those left out, and why."""
    from .families import broken, families, source

    rows = [(f.name, source(f.name), f.summary + ("" if f.model else " (no training side)")) for f in families()]
    width, where_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    print("\n".join(f"{name:<{width}}  {where:<{where_width}}  {summary}" for name, where, summary in rows))
    for name, why in broken().items():
        print(f"{name:<{width}}  {'left out':<{where_width}}  {why}")


def _cmd_list(args) -> None:
    from .shipped import (MODELS_MISSING, MODELS_REINSTALL, cache_damage, cache_path, carried_package,
                          exports_by_other_code, find_shipped, in_models, other_code, package_damage, packages_cache,
                          shipped_family, shipped_names, unwritable_cache)

    if args.families:
        _list_families()
        return
    names = shipped_names()
    if not names:
        print(f"no shipped models: {MODELS_MISSING}")
        return
    # said only where this install lacks it: beside every row it read as a warning where it is installed
    extra = f" (needs the export extra: {EXPORT_EXTRA})" if missing_export_modules() else ""
    # where the cache cannot be written, no command exports a name on its first use
    blocked, exported_on_use = unwritable_cache("NAME"), []

    def first_use(again: str = " again", needs: str = extra) -> str:
        exported_on_use.append(True)
        return f"not exported{again}: the cache cannot be written (below)" if blocked else f"exported{again} on first use{needs}"

    rows = []
    for name in names:
        family = shipped_family(name)
        found = find_shipped(name)
        installed = found is not None and in_models(found)
        where = (f"damaged in edgegen-models: {MODELS_REINSTALL}" if installed and package_damage(found) else
                 "exported, in edgegen-models" if installed else
                 f"damaged in {cache_path(name)}: {first_use()}"
                 if cache_damage(name) else
                 f"exported, in {found}" if found else
                 f"in edgegen-models, {other_code(carried)}: {first_use(needs='')}"
                 if (carried := carried_package(name)) else
                 # as `edgegen cache` says (review 155: list said "checkpoint only" beside cache's stale export)
                 f"in {earlier[-1]}, {other_code(earlier[-1])}: {first_use()}"
                 if (earlier := exports_by_other_code(cache_path(name))) else
                 f"checkpoint only: {first_use('')}")
        rows.append((name, family, where))
    width = max(len(n) for n, _, _ in rows)
    print("\n".join(f"{n:<{width}}  {f:<10}  {w}" for n, f, w in rows))
    if exported_on_use:   # said once, below the rows it concerns
        print(blocked if blocked else f"(a name's first use exports it into {packages_cache()})")


class _Parser(argparse.ArgumentParser):
    """edgegen's parser and, through add_subparsers, every command's: help with defaults, and no
    abbreviated options (argparse would take `--input` for the generic family's `--inputs`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """One line, as edgegen's own errors print, naming where the options are (argparse prints
        its whole usage block first)."""
        self.exit(2, f"{self.prog}: error: {message} ('{self.prog} --help' lists the options)\n")


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: {action.default})".lstrip()


class _GivenOnce(argparse.Action):
    """A family option of one value, refused when given twice: the last one used to win without
    a word (a second --prompt dropped the first, where a user may have meant a batch)."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        if previous is not None:   # said by the command (_family_options), as edgegen's other errors
            namespace.repeated_option = f"{option_string}: expected once, found it given twice ({previous!r} and {values!r})"
        setattr(namespace, self.dest, values)


def _cmd_train(args) -> None:
    from .families import families, get as get_family
    from .training.train import train

    family = get_family(args.family)
    if args.latent_dim is not None and not _has_latent_dim(family.name):
        having = ", ".join(f.name for f in families() if f.model and _has_latent_dim(f.name))
        raise ConfigError(f"--latent-dim: expected an option of a family with a latent vector ({having}), found it "
                          f"given to 'edgegen train {family.name}'")
    options = {"latent_dim": args.latent_dim} if args.latent_dim is not None else {}
    # a run that goes on (--resume) or from a checkpoint (--init) keeps its values where none is given
    fresh = not (args.resume or args.init)
    options.update(_family_options(family, family.train_options, args, "train", defaults=fresh))
    out = train(args.family, args.out, data=args.data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                seed=args.seed, image_size=args.image_size, channels=args.channels, overwrite=args.force,
                init=args.init, resume=args.resume, save_every=args.save_every, **options)
    print(f"wrote checkpoint {out}")


def _has_latent_dim(family: str) -> bool:
    import dataclasses

    from .training import family_module

    return "latent_dim" in {f.name for f in dataclasses.fields(family_module(family).Config)}


def _variant_precisions(out) -> list[str]:
    """The precisions of the variants the package at `out` holds (none where there is no package,
    or its manifest cannot be read: export refuses or replaces it as it is)."""
    from .errors import PackageError
    from .package import MANIFEST_NAME, read_json

    try:
        variants = read_json(Path(out) / MANIFEST_NAME, PackageError).get("variants") or {}
        return sorted(p for p, graphs in variants.items()
                      if isinstance(graphs, dict) and any(isinstance(r, dict) and r.get("file") for r in graphs.values()))
    except (OSError, PackageError, AttributeError):
        return []


def _cmd_export(args) -> int:
    from .export import refuse_package_output

    reads = [p for p in (args.checkpoint, args.from_transformers, args.from_diffusers, args.inputs, args.held_out,
                         args.data, _module_file(args)) if p and os.path.exists(p)]
    refuse_package_output(args.out, args.force, args.name, reads)   # before a module or an import loads, not after
    dropped = _variant_precisions(args.out) if args.force else []
    opset = _target_opset(args)
    options = dict(data=args.data, opset=opset, name=args.name, overwrite=args.force)
    _refuse_module_options_without_module(args)
    if args.module:
        if args.from_diffusers:
            raise ConfigError("--module: expected alone, found --from-diffusers with it")
        out = _export_module(args)
    elif args.from_diffusers:
        if args.checkpoint or args.from_transformers:
            raise ConfigError("--from-diffusers: expected alone (no checkpoint or --from-transformers), found them together")
        from .export.diffusers_import import export_diffusers

        out = export_diffusers(args.from_diffusers, args.out, progress=None, **options)
    elif args.from_transformers:
        from .export import export_transformers

        out = export_transformers(args.checkpoint, args.from_transformers, args.out, **options)
    elif args.checkpoint is None:
        raise ConfigError("export: expected a checkpoint directory, --from-transformers DIR, --from-diffusers DIR or "
                          "--module FILE.py:FACTORY, found none")
    else:
        from .export import export_checkpoint
        from .shipped import checkpoint_named

        # a shipped model's name: its checkpoint (`check` advises exporting it again with --target)
        checkpoint = checkpoint_named(args.checkpoint)
        out = export_checkpoint(checkpoint, args.out, progress=None, **options)
    print(f"wrote package {out}")
    if dropped:   # --force writes a new package: the one it replaced had variants, gone with it without a word
        print(f"edgegen: the package replaced had {', '.join(dropped)} variants, which a new export has none of: run "
              f"edgegen optimize {out} --precision P (with its --target) again for each", file=sys.stderr)
    _print_info(out)
    if args.target is not None and get_target(args.target).uses_tensorrt:
        return _cmd_check(argparse.Namespace(package=out, target=args.target, tensorrt=None, profile=None, json=False))
    return 0


# the options of `export --module` alone (flag: argparse dest), refused with a checkpoint or an import
MODULE_EXPORT_OPTIONS = {"--inputs": "inputs", "--dynamic": "dynamic", "--output-name": "output_name",
                         "--held-out": "held_out", "--limit": "limit", "--atol": "atol", "--rtol": "rtol"}


def _refuse_module_options_without_module(args) -> None:
    """An option of a module's export given to a checkpoint's or an import's: it would be dropped
    without a word, and the user would think it took effect (--limit batch=8)."""
    given = [flag for flag, dest in MODULE_EXPORT_OPTIONS.items() if getattr(args, dest) is not None]
    if given and not args.module:
        route = ("--from-transformers" if args.from_transformers else "--from-diffusers" if args.from_diffusers
                 else "a checkpoint" if args.checkpoint else "no --module")
        raise ConfigError(f"{given[0]}: expected an option of a module's export (with --module), found it with {route}")


def _target_opset(args) -> int:
    """--opset, else the --target's opset, else the default; a --opset the target cannot parse is refused."""
    if args.target is None:
        return DEFAULT_OPSET if args.opset is None else args.opset   # a --opset 0 is refused, not the default
    target = get_target(args.target)
    if args.opset is not None and args.opset > target.opset:
        raise ConfigError(f"--opset {args.opset}: expected at most {target.opset} for target {target.name} "
                          f"({target.description}), found more")
    return target.opset if args.opset is None else args.opset


def _export_module(args):
    """`edgegen export --module model.py:factory --inputs example.npz ...`: a user's own module."""
    from .export import check_opset
    from .families.generic.export import export_pytorch, load_factory, parse_dynamic
    from .runtimes.feeds import parse_dim_sizes, read_feeds

    if args.from_transformers or args.checkpoint or args.data:   # said before what --module alone would need
        raise ConfigError("--module: expected alone (no checkpoint, --from-transformers or --data), found them together")
    if args.inputs is None:
        raise ConfigError("--inputs: expected an .npz of example inputs to trace --module with, found none")
    example, *more = read_feeds(args.inputs)
    if more:
        raise ConfigError(f"--inputs {args.inputs!r}: expected one example feed (held-out feeds go in --held-out), "
                          f"found {1 + len(more)}")
    opset = _target_opset(args)
    check_opset(opset)   # before the user's factory loads its weights
    return export_pytorch(load_factory(args.module), example, args.out, dynamic=parse_dynamic(args.dynamic),
                          output_names=args.output_name, held_out=args.held_out,
                          dim_limits=parse_dim_sizes(args.limit, "--limit"), name=args.name, opset=opset,
                          overwrite=args.force, source=args.module,
                          **{name: value for name, value in (("atol", args.atol), ("rtol", args.rtol)) if value is not None},
                          reads=[p for p in (_module_file(args), args.inputs) if os.path.exists(p)])


def _module_file(args) -> str | None:
    """--module's FILE.py (an importable name reads no file of its own: none that exists)."""
    return args.module.rpartition(":")[0] if args.module else None


def _family_options(family, declared, args, command: str, defaults: bool = True) -> dict:
    """{keyword: value} of the family's options for `command`: the ones given, and (with
    `defaults`) the defaults of the rest; an option of another family given here is refused, not
    ignored."""
    if repeated := getattr(args, "repeated_option", None):
        raise ConfigError(repeated)
    mine = {option.dest for option in declared}
    for dest, option in args.family_options.items():   # every family's, as the parser was built
        if dest not in mine and getattr(args, dest, None) is not None:
            accepted = ", ".join(o.flag for o in declared)
            if command == "train":   # a training option belongs to the family trained, not to packages
                raise ConfigError(f"{option.flag}: expected an option that 'edgegen train {family.name}' takes "
                                  f"({accepted or 'it takes none'}), found it")
            owners = list(args.family_option_users.get(dest, ()))
            owners = ", ".join(owners[:-1]) + (" or " if len(owners) > 1 else "") + owners[-1] if owners else "other"
            raise ConfigError(f"{option.flag}: expected an option of {family.name} packages "
                              f"({accepted or 'they take none'}), found {option.flag}, an option of {owners} packages")
    values = {}
    for option in declared:
        value = getattr(args, option.dest, None)
        value = option.default if value is None and defaults else value
        if value is not None:
            values[option.keyword] = value
    return values


def _default_samples(pipe) -> int:
    """--n's default: a grid of 16 from edgegen's own small models; 1 from a pipeline imported from
    diffusers, where a sample may take seconds to minutes on a CPU (diffusers' pipelines draw 1)."""
    data = getattr(getattr(pipe, "config", None), "data", None)
    return 1 if isinstance(data, dict) and data.get("source") == "diffusers" else 16


def _family_of(given: str) -> str:
    """The family of a package path, or of a shipped model's name without exporting it."""
    from .package import Package
    from .shipped import is_shipped_name, shipped_family

    if os.path.exists(given) or not is_shipped_name(given):
        return Package(given, verify_hashes=False).family   # load() verifies
    return shipped_family(given)


def _cmd_generate(args) -> None:
    from .families import GenerateRequest
    from .families import get as get_family
    from .runtimes import load

    family = get_family(_family_of(args.package))
    grid_given = [flag for flag, value in (("--n", args.n), ("--nrow", args.nrow), ("--scale", args.scale))
                  if value is not None]
    if grid_given and not family.grid_flags:   # refused before the model loads, not ignored
        raise ConfigError(f"{grid_given[0]}: expected an option of packages that draw a grid of images, found it "
                          f"given to a {family.name} package")
    options = _family_options(family, family.options, args, "generate")
    if args.seed is not None and not family.seeded:   # it would change nothing
        raise ConfigError(f"--seed: expected an option of packages that draw at random, found it given to a "
                          f"{family.name} package, whose result the input alone sets")
    family.refuse_tensorrt_for_its_loop(args.backend, "run it on ort-tensorrt or ort-cuda (in Python, its loop without "
                                                      "it, GPT's use_cache=False or WaveNet's fast=False, runs on "
                                                      "TensorRT)")
    seed_given, args.seed = args.seed is not None, 0 if args.seed is None else args.seed
    if args.seed < 0:   # the pipelines' message offers None, which the command line has no way to give
        raise ConfigError(f"--seed: expected a non-negative integer, found {args.seed}")
    try:
        _refuse_before_loading(family, options, args.out, args.package)
    except (InputError, ConfigError) as exc:   # the family's checks name its keywords (batch): the flags here
        raise named_by_flag(exc, family.options) from None
    if args.out is None:   # text to standard output (a grid without --out was refused above)
        _refuse_a_closed_stdout()
    args.package = _package_or_name(args.package)   # a shipped name's export, after the options' checks
    _refuse_out_over_what_generate_reads(args.out, args.package, options)
    pipe = load(args.package, backend=args.backend, threads=args.threads, precision=args.precision)
    args.n = _default_samples(pipe) if args.n is None else args.n
    try:
        _refuse_a_grid_too_large(pipe, family, args)
    except (InputError, ConfigError) as exc:
        raise named_by_flag(exc, family.options) from None

    def write_images(images) -> str:
        from .images import save_grid

        save_grid(images, args.out, nrow=args.nrow, scale=args.scale)
        return (f"wrote {args.out} ({counted(len(images), 'sample')} from {pipe.family} package, seed {args.seed}, "
                f"backend {pipe.backend}, precision {pipe.precision})")

    try:
        if family.generate is None:
            line = write_images(pipe(args.n, seed=args.seed, **options))
        else:
            line = family.generate(pipe, GenerateRequest(args.n, args.seed, args.out, options, write_images, seed_given))
    except (InputError, ConfigError) as exc:
        raise named_by_flag(exc, family.options) from None
    if line:
        print(line)


def _refuse_before_loading(family, options: dict, out, package) -> None:
    """What generate refuses without the package, before it loads (and before a shipped name's
    first export, which takes up to a minute): a grid's --out missing or of a format edgegen
    cannot write, the family's own checks (a required option, --out's format), a folder the
    system refuses. The sampling that follows may take minutes: none of these comes after it."""
    if family.grid_flags:
        from .images import picture_format

        if out is None:
            raise ConfigError(f"--out: expected the PNG or JPEG file to write for a {family.name} package, found none")
        picture_format(out, "RGB")
    if family.check_generate is not None:
        family.check_generate(options, out)
    if out is not None:
        from .storage import check_writable

        if os.path.isdir(package):   # said as what it is, before check_writable's probe file lands in the package
            _refuse_inside_package("--out", out, package)
        check_writable(out, "--out")


def named_by_flag(exc: EdgegenError, declared) -> EdgegenError:
    """A pipeline's refusal of one of generate's arguments ("max_new_tokens: expected ..."), named
    by the flag the command line gave it ("--max-new-tokens: expected ..."); any other, as it is.
    declared: the family's options."""
    flags = {"n": "--n", "seed": "--seed", "nrow": "--nrow", "scale": "--scale",
             **{option.keyword: option.flag for option in declared}}
    return _renamed(exc, flags)


def _renamed(exc: EdgegenError, flags: dict[str, str], given: dict | None = None) -> EdgegenError:
    """`exc` with its first word, a keyword of `flags`, said as that flag. With `given` (keyword ->
    the value the user gave), only where the message names that value or none ("threads: ..."): a
    message about another value is about something else (require_tensorrt's "backend 'tensorrt'"
    beside the user's --backend ort-cpu)."""
    text = str(exc)
    keyword = text.split(":", 1)[0].split(" ", 1)[0]   # "strength 0.1: ..." names the value too
    if keyword not in flags or ":" not in text:
        return exc
    rest = text[len(keyword):]
    if rest.startswith(f" ({flags[keyword]})"):   # "name (--name): ..." names its flag already
        return exc
    value = given[keyword] if given is not None else None
    shown_as = (repr(value), str(value), f"({value})",
                repr(os.path.normpath(value)) if isinstance(value, str) and value else None)   # Path("demo/"): 'demo'
    if given is not None and not rest.startswith(":") and not any(rest.startswith(f" {shown}") for shown in shown_as if shown):
        return exc
    return type(exc)(flags[keyword] + rest)


def _refuse_a_grid_too_large(pipe, family, args) -> None:
    """The grid of --n pictures at --scale, refused before the sampling where save_grid would
    refuse it after (--n 100000 of 8x8 digits at the default scale: 642 megapixels, after minutes)."""
    if family.grid_flags and args.nrow is not None and args.nrow < 1:   # save_grid would say it after the sampling
        raise InputError(f"nrow: expected a positive number of images per row, found {args.nrow}")
    shape = getattr(getattr(pipe, "config", None), "image_shape", None)
    drawn = [flag for flag, value in (("--nrow", args.nrow), ("--scale", args.scale)) if value is not None]
    if family.grid_flags and drawn and not (shape and len(shape) == 3):   # a 2-D flow's density plot: were ignored
        raise ConfigError(f"{drawn[0]}: expected an option of packages that draw a grid of images, found it given to a "
                          f"{family.name} package that draws no images (its samples are points, plotted over their "
                          "density)")
    if family.grid_flags and args.out is not None and shape and len(shape) == 3:
        from .images import grid_scale
        from .runtimes.pipeline import check_count

        # a count out of range said as such first
        grid_scale(check_count(args.n), shape[-2], shape[-1], args.scale, args.nrow)


def _refuse_output_inside_package(flag: str, out, package) -> None:
    """An output never goes inside the package the command reads (over its manifest, a graph, its
    held-out inputs), and is refused before any work where it could not be written."""
    from .package import refuse_output_inside_edgegens
    from .storage import check_writable

    _refuse_inside_package(flag, out, package)
    check_writable(out, flag)
    refuse_output_inside_edgegens(flag, out)


def _refuse_inside_package(flag: str, out, package) -> None:
    from .storage import resolved

    if resolved(out, flag).is_relative_to(Path(package).resolve()):
        raise OutputExistsError(f"{flag} {str(out)!r}: expected a file outside the package it reads "
                                f"({str(package)!r}), found it inside")


def _refuse_out_over_what_generate_reads(out, package, options: dict) -> None:
    """--out never replaces a file of the package (its graphs, manifest, held-out inputs) or a file
    an option names (--inputs, --image): the output is written after they are read, over them."""
    if out is None:
        return
    _refuse_output_inside_package("--out", out, package)
    _refuse_output_over_inputs("--out", out, options.values())


def _refuse_output_over_inputs(flag: str, out, values) -> None:
    """An output is written after its command read its inputs: never over one of them."""
    from .storage import resolved

    target = resolved(out, flag)
    for value in values:
        try:   # a prompt is a string too, and one too long for a file name is no file
            same = isinstance(value, (str, os.PathLike)) and Path(value).is_file() and Path(value).resolve() == target
        except OSError:
            continue
        if same:
            raise OutputExistsError(f"{flag} {str(out)!r}: expected a file other than the input it reads, found the "
                                    "same file")


def _refuse_other_than_json(option: str, given: str) -> None:
    """A report is written only to a .json name: a slip of the name (`--json out/chord.wav`)
    replaced the user's file with the report, and /dev/stdout's link with a file (the report is
    written under a temporary name and renamed over the name given)."""
    from .storage import refuse_nameless

    refuse_nameless(given, ".json", option)
    suffix = Path(given).suffix
    if suffix.lower() != ".json":
        raise ConfigError(f"{option} {given!r}: expected a file name ending in .json (the report is written there as "
                          f"JSON), found {suffix or 'no extension'}")


def _cmd_bench(args) -> None:
    from .bench import write_report
    from .runtimes.feeds import parse_dim_sizes, parse_sweep

    if args.vs_torch:
        require_export("edgegen bench --vs-torch")
        from .shipped import checkpoint_named

        args.vs_torch = str(checkpoint_named(args.vs_torch))   # a shipped name: its checkpoint, as export takes it
    if args.json is not None:   # "" too: refused, not taken for no --json
        _refuse_output_inside_package("--json", args.json, args.package)   # before the benchmark, not after it
        if args.vs_torch:   # a checkpoint folder, a transformers folder, or FILE.py:FACTORY (the report replaced the .py)
            _refuse_output_over_inputs("--json", args.json, [args.vs_torch, args.vs_torch.rsplit(":", 1)[0]])
            source = Path(args.vs_torch)
            if source.is_dir() and Path(args.json).resolve().is_relative_to(source.resolve()):
                raise OutputExistsError(f"--json {args.json!r}: expected a file outside --vs-torch {args.vs_torch!r}, "
                                        "which the benchmark reads, found it inside")
        _refuse_other_than_json("--json", args.json)
    if not args.generation:
        from .bench import TIMED_AS_TOKENS
        from .families import get as get_family

        family = get_family(_family_of(args.package))
        if family.bench == "tokens":   # was ignored without a word
            raise ConfigError(f"--no-generation: expected a package whose graphs are timed one call at a time, found "
                              f"a {family.name} package, {TIMED_AS_TOKENS}")
    if args.bench_steps is not None and not args.generation:   # was ignored without a word
        raise ConfigError(f"--steps {args.bench_steps}: expected with the whole generation it sets the steps of, found "
                          "--no-generation")
    shapes = parse_dim_sizes(args.shapes, "--shapes")
    if args.sweep is not None and len(args.sweep) > 1:   # the last one was taken without a word
        raise ConfigError(f"--sweep: expected once (the dims it names are set together: height,width=64,128), found "
                          f"it {len(args.sweep)} times")
    sweep = parse_sweep(args.sweep[0] if args.sweep else None) or [{}]
    for flag, dims in (("--shapes", set(shapes)), ("--sweep", set(sweep[0]))):
        if "batch" in dims:   # was taken, then run at --batch's size without a word
            raise ConfigError(f"{flag}: expected dims other than the batch (--batch sets it), found batch")
    if both := sorted(set(shapes) & set(sweep[0])):
        raise ConfigError(f"--shapes and --sweep: expected each dim in one of them, found {', '.join(both)} in both")
    if len(sweep) > 1 and os.path.isdir(args.package):   # every point's sizes before the first is timed
        from .bench import refuse_sizes_off_step
        from .families import package_config
        from .package import Package

        family, config = package_config(Package(args.package, verify_hashes=False))
        for sizes in sweep:
            refuse_sizes_off_step(family, config, {**shapes, **sizes})
    # the whole generation does not change with a sweep's sizes: timed at the first point only
    reports = [_bench_one(args, {**shapes, **sizes}, args.generation and i == 0) for i, sizes in enumerate(sweep)]
    if args.json:
        from .bench import SWEEP_SCHEMA

        # a sweep's file has one form however many points it has, and says it is not one report
        write_report({"report": SWEEP_SCHEMA, "sweep": reports} if args.sweep else reports[0], args.json)
        print(f"wrote {args.json}")


def _torch_held_text(memory: dict) -> str:
    """Where the process held PyTorch before the benchmark, the runtime's peak counts its libraries'
    memory: said."""
    if not memory.get("torch_loaded"):
        return ""
    held = memory.get("held_before")   # None where the system has no /proc (macOS)
    return f"; of it{'' if held is None else f' {held} MB'} held before the package loaded, PyTorch's libraries among it"


def _bench_one(args, shapes: dict, generation: bool) -> dict:
    from .bench import bench_package, format_table, per_token_text, rate_text
    from .package import fp32_graphs_note

    try:
        report = bench_package(args.package, batch=args.batch, iters=args.iters, warmup=args.warmup,
                               backend=args.backend, threads=args.threads, vs_torch=args.vs_torch, precision=args.precision,
                               shapes=shapes, energy=args.energy, prompt_lookup=args.prompt_lookup, generation=generation,
                               steps=args.bench_steps if generation else None)
    except MemoryError:   # the batch (and the sizes) are what the user sets: say so
        raise ConfigError(f"--batch {args.batch}" + "".join(f", {d} {n}" for d, n in shapes.items())
                          + ": expected a batch this machine's memory holds, found it running out of memory") from None
    print(f"{report['package']}: {report['family']}, backend {report['backend']}, precision {report['precision']}, "
          f"batch {report['batch']}" + "".join(f", {d} {n}" for d, n in report.get("shapes", {}).items())
          + f", threads {report['threads']}, {counted(report['iters'], 'iter')}; "
          f"peak RSS {report['peak_rss_mb']['runtime']} MB (runtime), {report['peak_rss_mb']['process']} MB (process)"
          + _torch_held_text(report["peak_rss_mb"]))
    if note := fp32_graphs_note(report["precision"], report["fp32_graphs"]):
        print(note)
    if "generation" in report:
        g = report["generation"]
        made = (f" ({g['tokens_per_call']} made in all: the model emitted its end token)"
                if g["tokens_per_call"] < g["new_tokens"] * report["batch"] else "")
        print(f"greedy generation: {g['prompt_tokens']}-token prompts, {g['new_tokens']} new tokens{made}; streamed at batch 1: "
              f"time to first token p50 {g['ttft_ms_p50']:.2f} ms (p90 {g['ttft_ms_p90']:.2f}), {per_token_text(g)}")
        bound = g["bound"]
        if "not_measured" in bound:
            print(f"memory-bandwidth bound: not measured: {bound['not_measured']}")
        else:
            print(f"memory-bandwidth bound: a decode step reads {bound['weights_mb'] + bound['kv_cache_mb']:.1f} MB "
                  f"(weights {bound['weights_mb']:.1f}, KV cache {bound['kv_cache_mb']:.1f} after "
                  f"{bound['after_tokens']:g} tokens); at {bound['bandwidth_gb_s']:.1f} GB/s "
                  f"({bound['bandwidth_measured_by']}) that takes {bound['bound_ms']:.3f} ms; TPOT p50 is "
                  f"{bound['tpot_over_bound']:.2f}x that" + (BELOW_THE_BOUND if bound["tpot_over_bound"] < 1 else ""))
    if "prompt_lookup" in report:
        lookup = report["prompt_lookup"]
        print(f"prompt lookup, {lookup['drafts']} drafts per call: {lookup['speedup_p50']:.2f}x the plain loop's "
              f"generation p50, tokens {'the same' if lookup['same_tokens'] else 'not the same'} (greedy)")
    print(format_table(report))
    if "whole_generation" in report:
        g = report["whole_generation"]
        energy = f", {g['joules_per_result'] * 1e3:.3f} mJ per result at {g['watts']:.2f} W" if "watts" in g else ""
        print(f"whole generation ({g['what']}): p50 {g['p50_ms']:.1f} ms, p90 {g['p90_ms']:.1f} ms, mean "
              f"{g['mean_ms']:.1f} ms over {counted(g['calls'], 'run')}, {rate_text(g['per_s'])} {g['unit']}/s (from the "
              f"mean){energy}")
    return report


def _abridged(value, longest: int = 8):
    """The config for a terminal: long lists of numbers (StyleGAN's average w) shortened."""
    if isinstance(value, dict):
        return {k: _abridged(v, longest) for k, v in value.items()}
    if isinstance(value, list) and len(value) > longest:
        return [*value[:3], f"... {len(value)} values"]
    return value


def _classes_line(config: dict, family: str) -> str:
    """A class-conditional package's classes as its family's flag takes them: "3: 0 circle, 1
    square, 2 star (--label takes a name or an id)"; "" for a model without classes."""
    from .runtimes.pipeline import class_names_in, numbered_names

    count = config.get("num_classes")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return ""
    takes = f"{_labels_flag(family) or 'labels='} takes"
    names = class_names_in(config.get("data"))
    if names is None or len(names) != count:
        return f"{count}: ids 0 to {count - 1} ({takes} an id)"
    more = f", ... {count - 12} more" if count > 12 else ""
    if numbered_names(names):   # "1 10" would read as label 1 being 10: the names alone, which --label takes
        return f"{count}: {', '.join(map(repr, names[:12]))}{more} ({takes} a name: some are numbers)"
    return f"{count}: {', '.join(f'{i} {name}' for i, name in enumerate(names[:12]))}{more} ({takes} a name or an id)"


def _looped_variants(manifest) -> list[str]:
    """The graphs with a variant that the family's generation calls once per step of its loop (a
    denoiser, WaveNet's step) or, for a token model, once per token (its decoder)."""
    family = _family_here(manifest.family)
    looped = set() if family is None else set(manifest.graphs) if family.bench == "tokens" else set(family.step_graphs)
    return sorted({part for parts in manifest.variants.values() for part, record in parts.items()
                   if "file" in record and part in looped})


def _loop_note(manifest) -> str | None:
    """What a looped graph's gate does not measure (review 174: a diffusion model's fp16 passed its
    gate at 30 dB and its samples parted from fp32's by 10 to 18 dB), or None."""
    parts = _looped_variants(manifest)
    if not parts:
        return None
    if (family := _family_here(manifest.family)) and family.bench == "tokens":
        return ("each gate compares the next token at every position of held-out text, each after fp32's own "
                "(teacher-forced); a generation goes on from its own tokens, so after the first that differs its text "
                "parts from fp32's: look at them side by side (docs/optimization.md)")
    return (f"each gate judges one graph call ({', '.join(parts)}); a generation's loop carries each call's error on, so "
            "its result for a seed can part further from fp32's: look at them side by side (docs/optimization.md)")


def _labels_flag(family: str) -> str | None:
    """The generate flag that reaches the pipeline's labels= (--label for edgegen's families, a
    plugin's may name its own); None for a family not installed here or without one."""
    declared = _family_here(family)
    return next((o.flag for o in declared.options if o.keyword == "labels"), None) if declared else None


def _family_here(name: str):
    """The registered family of that name; None for one not installed here (a plugin's package
    read on another machine)."""
    from .errors import UnknownFamilyError
    from .families import get as get_family

    try:
        return get_family(name)
    except UnknownFamilyError:
        return None


def _print_info(path, shipped_name: str | None = None) -> str:
    """The package's manifest, printed; returns what info's status 1 says: why edgegen.load would
    refuse it, or its damaged variants ("" if neither). shipped_name: the shipped model's name the
    package was given by (its variants go into a copy)."""
    from .package import Package

    package = Package(path)
    m = package.manifest
    print(f"package   {package.path}")
    print(f"family    {m.family}   name {m.name!r}   format {m.format}")
    print(f"config    {json.dumps(_abridged(m.config))}")
    if classes := _classes_line(m.config, m.family):
        print(f"classes   {classes}")
    for part, g in m.graphs.items():
        size = package.graph_path(part).stat().st_size
        ins = ", ".join(f"{t.name}: {t.describe()}" for t in g.inputs)
        outs = ", ".join(f"{t.name}: {t.describe()}" for t in g.outputs)
        check = g.extra.get("validation") or {}   # null: no record, as an older export's
        at = f"batches {check['batches']}" if "batches" in check else f"{len(check.get('feeds', []))} feeds (at the traced sizes and others: the manifest lists them)"
        gate = (f"gate {'passed' if check.get('passed') else 'FAILED'} at {at}, "
                f"max abs diff {_number_or_nan(check.get('max_abs')):.2g}") if check else "no gate record"
        print(f"graph     {part}: {g.file} ({size / 1024:.0f} KiB, sha256 {g.sha256[:12]}..., opset {g.extra.get('opset')})")
        print(f"            in  {ins}\n            out {outs}\n            {gate}")
    if not m.variants:   # a plugin's family not installed here: "other precisions'"
        offered = " / ".join(family.variant_precisions()) if (family := _family_here(m.family)) else "other precisions'"
        where = f" to a copy (cp -r {package.path} pkg-{shipped_name})" if shipped_name else ""
        known = "none this edgegen reads" if m.foreign_variants else "none"   # the foreign ones are listed below
        print(f"variants  {known} (fp32 only; 'edgegen optimize' adds {offered} variants{where}{where_export_runs()})")
    for precision, parts in m.variants.items():
        for part, record in parts.items():
            gate = record.get("gate", {})
            made_for = f" for {record['target']}" if record.get("target") else ""
            verdict = (f"{record['file']}{made_for} (gate {gate.get('line')}" + (f", {record['speedup_ort_cpu']:.2f}x fp32's speed on ort-cpu" if "speedup_ort_cpu" in record else "")
                       + ")") if "file" in record else f"not written: {record.get('refused')}"
            print(f"variant   {precision} {part}: {verdict}")
            later = record.get("last_refused")
            if "file" in record and isinstance(later, dict):
                print(f"            kept: a later attempt (target {later.get('target')}) was not written: "
                      f"{later.get('refused')}")
            if "file" in record and str(record.get("weights", "")).startswith("7-bit"):
                print(f"            weights {record['weights']}")
            if "file" in record and record.get("spared_matmuls"):
                from .package import spared_text

                print(f"            {spared_text(record)}")
            if "file" in record and (record.get("ort_form") or record.get("ort_form_declined")):
                print(f"            {record.get('ort_form') or record['ort_form_declined']}")
    if note := _loop_note(m):
        print(f"            {note}")
    for precision in m.foreign_variants:
        print(f"variant   {precision}: a precision edgegen {__version__} does not know (written by a newer edgegen?); "
              "not read here, kept as it is")
    held = m.config.get("held_out")
    if isinstance(held, dict):
        problem = _held_out_problem(package)
        problem = f"; {problem}: optimize then needs --inputs NPZ" if problem else ""
        print(f"held out  {held.get('feeds')} feeds in {held.get('file')} (what optimize calibrates and gates on{problem})")
    p = m.provenance
    made = ", ".join(f"{tool} {p[tool]}" for tool in ("edgegen", "torch", "onnx", "onnxruntime", "opset") if p.get(tool))
    print(f"made by   {made or 'not recorded'}" + (f", {p['created']}" if p.get("created") else ""))
    damaged = [f"damaged   {precision} {part}: {package.missing_variants(precision, part)}"
               for precision, parts in package.damaged_variants.items() for part in parts]
    if damaged:
        print("\n".join(damaged))
    refused = _load_refusal(package)
    if refused:
        print(f"refused   edgegen.load refuses it: {refused}")
    return _info_verdict(package, refused, len(damaged), "listed above")


def _held_out_problem(package) -> str | None:
    """Why optimize would refuse the held-out inputs a package recorded at export, as it reads
    them: "MISSING", "CHANGED since export" (their sha256) or the record's own fault; None where
    they are as recorded, or none were."""
    from .errors import HashMismatchError

    held = package.manifest.config.get("held_out")
    if not isinstance(held, dict):
        return None
    try:
        package.recorded_file(held, "config.held_out", "held-out inputs")
    except HashMismatchError:
        return "CHANGED since export (another sha256)"
    except EdgegenError as exc:
        return "MISSING" if not (package.path / str(held.get("file"))).is_file() else str(exc)
    return None


def _info_verdict(package, refused: str, damaged: int, where: str) -> str:
    """What info's status 1 says: why edgegen.load refuses the package, or its damaged variants ("" if neither)."""
    if refused:
        named = "" if str(package.path) in refused else f"package {str(package.path)!r}: "
        return f"{named}edgegen.load refuses it: {refused}"
    return f"package {str(package.path)!r}: {counted(damaged, 'variant')} damaged ({where})" if damaged else ""


def _info_report(path) -> tuple[dict, str]:
    """info --json: (the report, info's verdict). The manifest as the package holds it, with what
    info finds beyond it: each graph file's size, the damaged variants, and why edgegen.load
    refuses the package (null where it loads)."""
    from .package import Package, strict_json

    package = Package(path)
    damaged = {precision: {part: str(exc) for part, exc in parts.items()}
               for precision, parts in package.damaged_variants.items()}
    refused = _load_refusal(package)
    report = {"report": INFO_REPORT, "edgegen": __version__, "package": str(package.path),
              "graph_bytes": {part: package.graph_path(part).stat().st_size for part in package.manifest.graphs},
              "damaged": damaged, "load_refusal": refused or None, "held_out_problem": _held_out_problem(package),
              "manifest": strict_json(package.manifest.to_json())}
    return report, _info_verdict(package, refused, sum(map(len, damaged.values())), "the report's damaged")


def _load_refusal(package) -> str:
    """Why edgegen.load refuses the package, also printed as info's last line (its family's config
    and graphs, its tokenizer and chat templates: the files, their hashes, and the text extra a
    Hugging Face tokenizer needs), or "": info reads the manifest alone, and a user checks a
    package with it."""
    from .families import package_config
    from .runtimes.chat import load_chat_templates
    from .runtimes.tokenizer import TOKENIZER_KINDS, load_tokenizer

    try:
        _, config = package_config(package)
        tokenizer = getattr(config, "tokenizer", None)
        # edgegen's tokenizer record (a family of another's may keep one of its own under that name)
        if isinstance(tokenizer, dict) and tokenizer.get("kind") in TOKENIZER_KINDS:
            load_tokenizer(package, tokenizer)
            load_chat_templates(package, getattr(config, "chat_templates", None) or {})
    except EdgegenError as exc:
        return str(exc)
    return ""


def _cmd_optimize(args) -> int:
    from .optimize import optimize_package
    from .package import Package

    _refuse_shipped_name(args.package)
    if refused := _load_refusal(Package(args.package)):   # said before the work, not in info's last line after it
        warnings.warn(f"package {args.package!r}: edgegen.load refuses it on this machine ({refused}); optimize goes on, "
                      "and its variants load where that is mended", EdgegenWarning, stacklevel=2)
    # an option of another precision is refused, not ignored (int8 does not take --block-size)
    settings = {"calibration": ("--calibration", ("int8",)), "block_size": ("--block-size", ("int4", "int8-weights")),
                "max_8bit_share": ("--max-8bit-share", ("int4",))}
    given = {name: getattr(args, name) for name in settings if getattr(args, name) is not None}
    for name in given:
        flag, takes = settings[name]
        if args.precision not in takes:
            raise ConfigError(f"{flag}: expected an option of --precision {' or '.join(takes)}, found it given with "
                              f"--precision {args.precision}")
    # with --json, stdout holds the report alone: the run's lines go to stderr, as a progress bar does
    said = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.checkpoint is not None:   # a shipped name: its checkpoint, as export and bench --vs-torch take it
        from .shipped import checkpoint_named

        args.checkpoint = str(checkpoint_named(args.checkpoint))
    records = optimize_package(args.package, args.precision, target=args.target, checkpoint=args.checkpoint,
                               inputs=args.inputs, bar=None, speed_check=args.speed_check, progress=said, **given)
    if args.json:
        print(json.dumps(_optimize_report(args, records), indent=2, allow_nan=False))
    else:
        _print_info(args.package)
    if any("file" in r for r in records.values()):
        return 0
    refused = "; ".join(f"{part}: {r['refused']}" for part, r in records.items())
    return _verdict("optimize", f"wrote no {args.precision} variant ({refused})")


def _optimize_report(args, records: dict) -> dict:
    """optimize --json: this run's verdict per graph (its record: the file written, or why it was
    refused, with the gate's figures), and the variant file the package now loads at the precision,
    which a refusal leaves as an earlier run wrote it (null where there is none)."""
    from .package import Package, strict_json

    loads = Package(args.package).variant_files(args.precision)
    return {"report": OPTIMIZE_REPORT, "edgegen": __version__, "package": str(args.package),
            "precision": args.precision, "target": args.target,
            "graphs": {part: {**strict_json(record), "in_package": loads.get(part, {}).get("file")}
                       for part, record in records.items()}}


def _refuse_shipped_name(given: str) -> None:
    """optimize writes its variants into the package: a shipped model's package is shared by every use
    of its name (and may lie in a read-only install), so a copy is optimized instead."""
    from .shipped import find_shipped

    if not _shipped_name_given(given):
        return
    found = find_shipped(given)
    copy = f"cp -r {found} pkg-{given}" if found else f"edgegen info {given} exports it and prints its folder: copy that to pkg-{given}"
    raise ConfigError(f"package {given!r}: expected a package directory to write variants into, found the name of a "
                      f"shipped model, whose package every use of the name shares: optimize a copy ({copy}, then "
                      f"edgegen optimize pkg-{given} ...)")




def _cmd_score(args) -> int:
    """Each picture's anomaly score; with a threshold (given, or the --quantile of --normal's
    scores), which score above it: exit status 1 where any does, as check's verdict."""
    from .anomaly import DEFAULT_QUANTILE, calibrated_threshold, check_quantile, check_threshold, noun, \
        said_unreadable, said_unscorable, score_files, scored_files, scores_audio, unscorable
    from .runtimes import load

    if args.quantile is not None and args.normal is None:
        raise ConfigError("--quantile: expected with --normal (the pictures it is a quantile of), found it without")
    if args.normal is not None and args.threshold is not None:
        raise ConfigError("--threshold: expected either it or --normal (which calibrates one), found both")
    quantile = check_quantile(DEFAULT_QUANTILE if args.quantile is None else args.quantile)
    threshold = None if args.threshold is None else check_threshold(args.threshold)
    normal_given = [args.normal] if args.normal is not None else []
    scored_files(args.pictures, "file", audio=None)   # before the package loads, or a shipped name's first export
    scored_files(normal_given, "--normal", audio=None)
    args.package = _package_or_name(args.package)
    pipe = load(args.package, backend=args.backend, threads=args.threads, precision=args.precision)
    audio = scores_audio(pipe)   # a folder's pictures, or its WAV files for a package of audio
    files = scored_files(args.pictures, "clip" if audio else "picture", audio)
    normal = scored_files(normal_given, "--normal", audio)
    fp32_graphs = pipe.package.fp32_graphs(pipe.precision)   # load warned of them: a flow's refused forward variant
    if normal:
        threshold = calibrated_threshold(pipe, normal, quantile, audio)
    scores, unreadable = score_files(pipe, files, audio)
    if failed := unscorable(files, scores):   # scored infinity, above any threshold: said, not hidden in the table
        warnings.warn(f"{said_unscorable(failed, audio)}; scored inf, above any threshold", EdgegenWarning, stacklevel=2)
    above = [None if threshold is None or path in unreadable else bool(score > threshold)
             for path, score in zip(files, scores)]
    calibration = {"normal": str(args.normal), "pictures": len(normal), "quantile": quantile} if normal else None
    if args.json:
        print(json.dumps({"report": SCORE_REPORT, "package": str(args.package), "precision": args.precision,
                          "fp32_graphs": fp32_graphs, "threshold": threshold, "calibration": calibration,
                          "pictures": [{"path": str(path), "score": float(score) if math.isfinite(score) else None,
                                        "above": flag, **({"error": unreadable[path]} if path in unreadable else {})}
                                       for path, score, flag in zip(files, scores, above)]}, indent=2))
    else:
        if calibration:
            print(f"threshold {threshold:.6g}: the {quantile:g} quantile of the scores of {len(normal)} normal "
                  f"{noun(audio)} in {str(args.normal)!r}")
        shown = ["unreadable" if path in unreadable else f"{score:.6g}" for path, score in zip(files, scores)]
        width = max(map(len, shown))
        for path, score, flag in zip(files, shown, above):
            column = "" if flag is None else "above  " if flag else "       "
            print(f"{score:>{width}}  {column}{path}")
    summary = (f"{sum(filter(None, above))} of {len(files)} {noun(audio)} score above {threshold:.6g}"
               + (f" ({len(unreadable)} unreadable)" if unreadable else "")) if threshold is not None else ""
    if summary and not args.json:
        print(summary)
    # a verdict, said on stderr too (a CI log shows a failed step's), as check's and info's; one above any threshold
    # is the station's news, before the files that did not read (a camera's upload cut short), said beside it
    verdict = summary if any(above) else ""
    if unreadable:
        print(f"edgegen: error: score: {said_unreadable(unreadable)}; the others were scored", file=sys.stderr)
    return _verdict("score", verdict) if verdict else EXIT_USER_ERROR if unreadable else 0


def _cmd_check(args) -> int:
    from .check import check_package, format_checks

    args.target = args.target or _this_machines_target(args.tensorrt)
    checks = check_package(args.package, tensorrt=args.tensorrt, profiles=args.profile, target=args.target)
    if args.json:
        print(json.dumps({"report": CHECK_REPORT, "package": str(args.package), "target": args.target,
                          "graphs": [{**dataclasses.asdict(c), "ok": c.ok} for c in checks]}, indent=2))
    else:
        print(format_checks(checks))
    failed = [c.part for c in checks if not c.ok]
    why = "each graph's unsupported, problems, damaged and build_refuses say why" if args.json else \
        "the table above says why"
    # --tensorrt VERSION judged by that release's table, whatever the target (10.3's with the default desktop one)
    judged = f"TensorRT {args.tensorrt} (--tensorrt)" if args.tensorrt else f"--target {args.target}"
    return _verdict("check", f"{counted(len(failed), 'graph')} not ready for {judged}: {', '.join(failed)} "
                             f"({why})") if failed else 0


def _verdict(command: str, why: str) -> int:
    """A model that failed a check (a gate, a parse, a load): said on stderr, which a CI log shows
    for a failed step, beside the report on stdout; the status checks give."""
    print(f"edgegen: {command}: {why}", file=sys.stderr)
    return EXIT_VERDICT


def _this_machines_target(tensorrt: str | None = None) -> str:
    """The TensorRT target where no --target names one: this machine's (a Jetson's JetPack's,
    else tensorrt); with a --tensorrt release that target does not have, tensorrt's."""
    from .targets import release_mismatch, this_device_target

    own = this_device_target()
    return "tensorrt" if tensorrt is not None and release_mismatch(get_target(own), tensorrt, "") else own


def _cmd_build(args) -> None:
    from .runtimes.engines import build_package

    target = get_target(args.target or _this_machines_target())
    engines = build_package(args.package, precision=args.precision, profiles=args.profile,
                            cache_dir=args.cache_dir, target=target)
    print(f"{len(engines)} engine(s) ready in {next(iter(engines.values())).parent}")


# a decode step faster than memory allows: what it means (gpt-stdlib's 3.3 MB read 0.77x)
BELOW_THE_BOUND = (" (below 1x: the step read its bytes faster than memory gives them, from the CPU's caches where they "
                   "fit, as a small model's do, or the bandwidth reading caught a busy moment)")


def _cmd_triton(args) -> None:
    from .serving.triton import RepositoryOptions, write_repository

    options = RepositoryOptions(route=args.route, graph_backend=args.graph_backend, max_batch_size=args.max_batch_size,
                                dynamic_batching=args.dynamic_batching, queue_delay_us=args.queue_delay_us,
                                instances=args.instances, kind=args.kind, precision=args.precision,
                                backend=args.backend, threads=args.threads, max_count=args.max_count)
    models = write_repository([_package_or_name(p) for p in args.packages], args.out, options, overwrite=args.force,
                              names=args.names)
    print(f"{len(models)} model(s) in {args.out}: tritonserver --model-repository {args.out} (docs/serving.md)")


def _cmd_cache(args) -> None:
    from .cache import cache_entries, format_entries, megabytes, prune
    from .storage import user_cache_dir

    root = user_cache_dir()
    entries = cache_entries(root)
    if not args.prune:
        print(format_entries(entries, root))
        return
    removed = prune(entries)
    print(f"{root}: removed {counted(len(removed), 'stale entry', 'stale entries')}, "
          f"{megabytes(sum(e.size for e in removed))}")


def _cmd_info(args) -> int:
    if args.json:
        report, failed = _info_report(args.package)
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        failed = _print_info(args.package, args.named)
    return _verdict("info", failed) if failed else 0


def _cmd_doctor(args) -> None:
    from .doctor import format_report, report

    info = report()
    print(json.dumps(info, indent=2) if args.json else format_report(info))


def _cmd_demo(args) -> None:
    from .demo import run_demo

    index = run_demo(args.out, train_models=args.train, overwrite=args.force, iters=args.iters, only=args.only)
    print(f"wrote {index}")


class _OptionsThatDoNotFit(ConfigError):
    """One family's options that do not fit a command's line: build_parser leaves that family out."""

    def __init__(self, family: str, why: str):
        super().__init__(f"family {family!r}: {why}")
        self.family, self.why = family, why


def _add_family_options(parser, command: str, declared: dict) -> None:
    """One flag per option name across the registered families, its help naming the families
    that take it; defaults stay None here so that a flag given to a family without it is found.
    Called after the command's own flags, which a family's may not take. Built-ins come first,
    whatever a plugin's `order`: where a plugin's option does not fit one of theirs, the plugin is
    the one left out."""
    from .families import is_built_in

    users: dict = {}
    for family, options in sorted(declared.items(), key=lambda item: not is_built_in(item[0])):   # a stable sort
        for option in options:
            users.setdefault(option.dest, []).append((family, option))
    group = parser.add_argument_group(f"family options (each family's own; {command} refuses the others')")
    for dest, taken in users.items():
        first = taken[0][1]
        helps: dict[str, list[str]] = {}   # one help text, the families that share it
        for family, option in taken:
            text = option.help + (f" (default {option.default})" if option.default is not None else "")
            helps.setdefault(text, []).append(family)
        _refuse_a_shared_flag_read_otherwise(taken)
        kwargs = {k: v for k, v in first.kwargs.items()}
        if kwargs.get("action") == "store_true":
            kwargs["default"] = None
        kwargs.setdefault("action", _GivenOnce)
        # --batch_size is read into batch_size, which --batch-size of the command's own fills too
        if any(first.flag in action.option_strings or action.dest == dest for action in parser._actions):
            raise _OptionsThatDoNotFit(taken[0][0], f"option {first.flag} expected a name of its own, found one that "
                                                    f"edgegen {command} already has")
        try:
            group.add_argument(first.flag, dest=dest, help="; ".join(f"{', '.join(names)}: {text}"
                                                                    for text, names in helps.items()), **kwargs)
        except (argparse.ArgumentError, ValueError, TypeError) as exc:   # a flag without --, a type not callable
            raise _OptionsThatDoNotFit(taken[0][0], f"option {first.flag} expected what argparse's add_argument takes, "
                                                    f"found {first.kwargs!r:.80}: {exc}") from None
    # the command's handler refuses an option of another family than the package's: it needs them all
    parser.set_defaults(family_options={dest: taken[0][1] for dest, taken in users.items()},
                        family_option_users={dest: [family for family, _ in taken] for dest, taken in users.items()})


def _refuse_a_shared_flag_read_otherwise(taken: list) -> None:
    """Families that share a flag share one argparse argument, read as the first declares it: one
    that reads it otherwise (--steps as a float where diffusion's is an int) would get values it
    never asked for, so it is refused by name."""
    def read_as(option) -> tuple:   # argparse's defaults filled in: {} reads as {"type": str}
        kwargs = option.kwargs
        choices = kwargs.get("choices")
        return (kwargs.get("type", str), kwargs.get("action", "store"), None if choices is None else tuple(choices),
                kwargs.get("nargs"))

    def said(option) -> str:
        type_, action, choices, nargs = read_as(option)
        return ", ".join(f"{k} {v}" for k, v in (("type", getattr(type_, "__name__", type_)), ("action", action),
                                                  ("choices", choices), ("nargs", nargs)) if v is not None)

    (first_family, first), *others = taken
    for family, option in others:
        if any(a is not b and a != b for a, b in zip(read_as(option), read_as(first))):   # a type by identity, not name
            raise _OptionsThatDoNotFit(family, f"option {option.flag} expected to be read as {first.flag} of family "
                                               f"{first_family!r} is ({said(first)}), which shares its name, found "
                                               f"{said(option)}: give it a name of its own")


def build_parser() -> argparse.ArgumentParser:
    """edgegen's command line, with every registered family's options. A plugin's family whose
    options do not fit it (a flag a command has, a shared one read otherwise) is left out with a
    warning, as one whose package fails to import is: the rest of edgegen still works."""
    from .families import leave_out

    while True:
        try:
            return _build_parser()
        except _OptionsThatDoNotFit as exc:
            leave_out(exc.family, exc.why)


def _build_parser() -> argparse.ArgumentParser:
    from .anomaly import DEFAULT_QUANTILE
    from .families import families
    from .package import PRECISIONS, VARIANT_PRECISIONS
    from .runtimes.engines import ENGINE_PRECISIONS
    from .serving.triton import GRAPH_BACKENDS, KINDS, ROUTES

    parser = _Parser(prog="edgegen", description="Generative models from PyTorch to fast edge engines.")
    parser.add_argument("--version", action="version", version=f"edgegen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def runtime_options(p):
        p.add_argument("--backend", default="auto", help="auto, tensorrt (engines built for this GPU), ort-tensorrt, "
                       "ort-cuda or ort-cpu (default: auto)")
        p.add_argument("--threads", type=int, default=None,
                       help="ONNX Runtime intra-op threads, at most 4 per logical core (default: one per physical "
                            "core this process may use, a container's CPU quota counted; or ORT_INTRA_OP_NUM_THREADS)")

    registered = families()
    p = sub.add_parser("train", help="train a model and write a checkpoint",
                       epilog="families: " + "; ".join(f"{f.name}: {f.summary} (--data {f.data})" for f in registered
                                                       if f.model))
    p.add_argument("family", help=", ".join(f.name for f in registered if f.model))
    p.add_argument("--data", default=None,
                   help="the data to train on (default: the family's own; each family's choices are listed below)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the family's)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default: the family's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the family's)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the weights and the data order (default: 0)")
    p.add_argument("--image-size", type=int, default=None, help="default: the family's")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 grey, 3 RGB (default: the data's own: grey digits, RGB photographs and folders)")
    p.add_argument("--latent-dim", type=int, default=None, help="latent size of the families that have one "
                   "(default: the family's)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT", help="start from this checkpoint's weights (a path, "
                   "or a shipped model's name): fine-tune it on --data (default: the data it was trained on), keeping its "
                   "architecture, image size and channels")
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is what edgegen writes there "
                   "(never a folder of other files, nor the command's input); start over where a training of --out "
                   "was stopped")
    p.add_argument("--resume", action="store_true", help="go on with the training of --out that was stopped (Ctrl-C, "
                   "SIGTERM, a crash) from the state it left beside it (OUT.resume), with the options it was given")
    p.add_argument("--save-every", type=int, default=None, metavar="STEPS", help="write the state --resume goes on "
                   "from every STEPS steps (default: every 10 minutes; and when the training is stopped)")
    _add_family_options(p, "train", {f.name: f.train_options for f in registered})
    p.set_defaults(func=_cmd_train, export_side="edgegen train")

    p = sub.add_parser("export", help="export a checkpoint to a validated model package")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="checkpoint directory, or a shipped model's name (edgegen list) for its checkpoint (or, with "
                        "--from-transformers, the architecture: "
                        f"{', '.join(a for f in registered for a in f.importers)}; default: config.json's model_type)")
    p.add_argument("--from-transformers", default=None, metavar="DIR",
                   help="import a Hugging Face save_pretrained directory instead of an edgegen checkpoint")
    p.add_argument("--from-diffusers", default=None, metavar="DIR",
                   help="import a diffusers pipeline's save_pretrained directory (model_index.json): a UNet2DModel "
                        "pipeline (DDPM/DDIM) or a Stable Diffusion layout (docs/diffusers.md)")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--data", default=None, help="data for the validation gate (default: the training data; for a language model imported from "
                        "transformers, the standard library's source through its tokenizer: a text file of yours instead)")
    p.add_argument("--opset", type=int, default=None,
                   help=f"ONNX opset (default: the --target's, else {DEFAULT_OPSET}; 18 is the lowest the exporter writes)")
    p.add_argument("--target", default=None, choices=tuple(TARGETS), help="where the package will run: picks the opset, "
                   "and a TensorRT target checks the graphs with that TensorRT's parser table afterwards (exit status 1 "
                   f"if one will not parse). {describe_targets(tuple(TARGETS))} (default: none, opset {DEFAULT_OPSET})")
    p.add_argument("--name", default=None, help="the package's name: letters, digits, _ . - (default: the checkpoint's folder name)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is what edgegen writes there "
                   "(never a folder of other files, nor the command's input)")
    own = p.add_argument_group("your own PyTorch module (docs/bring-your-own-model.md)")
    own.add_argument("--module", default=None, metavar="FILE.py:FACTORY",
                     help="a function (or module path package.mod:FACTORY) that returns the torch.nn.Module to export")
    own.add_argument("--inputs", default=None, metavar="NPZ", help="example inputs, one array per input name, in "
                     "forward's order (the trace's sizes)")
    own.add_argument("--dynamic", action="append", default=None, metavar="INPUT:AXIS=NAME",
                     help="a dynamic dim (repeatable), e.g. image:0=batch image:2=height (default: axis 0 of every "
                          "input is batch; any --dynamic replaces that, so name axis 0 too to keep a batch; "
                          "none: every shape as the example's)")
    own.add_argument("--output-name", action="append", default=None, help="output names in order (repeatable; "
                     "default output, or output.0, output.1, ...)")
    own.add_argument("--held-out", default=None, metavar="NPZ", help="inputs to gate on and record for optimize "
                     "(default: drawn like the example's values, at sizes the trace did not see)")
    own.add_argument("--limit", action="append", default=None, metavar="NAME=SIZE",
                     help="the largest value of a dynamic dim, for TensorRT profiles (default: batch 16, or the "
                          "example's if larger; others 4x their traced size)")
    own.add_argument("--atol", type=float, default=None, help="the gate's absolute tolerance (default 1e-4; 1e-3 for float16 outputs)")
    own.add_argument("--rtol", type=float, default=None, help="the gate's relative tolerance (default 1e-3; 1e-2 for float16 outputs)")
    p.set_defaults(func=_cmd_export, export_side="edgegen export")

    p = sub.add_parser("generate", help="sample from a package and write a PNG or JPEG grid (or stream text)")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("--n", type=int, default=None, help="samples to draw, for packages that draw a set of them (a "
                   "grid of images, a flow's points; not text, audio, an upscale or a module's arrays); "
                   "with --image, variations of it (default 16 for a model trained with edgegen, the shipped ones "
                   "included; 1 for a pipeline imported from diffusers)")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same samples "
                   "(default 0; refused by packages that draw nothing at random)")
    p.add_argument("--out", default=None, help="the file to write: a grid of images, PNG or JPEG by its extension "
                                               "(families that make text, audio or arrays say what they write below)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="run the package's variant of this precision (edgegen optimize adds them; which a "
                        "package has: edgegen info)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: square grid)")
    p.add_argument("--scale", type=int, default=None, help="pixel upscaling of the grid (default: to ~64 px a picture)")
    runtime_options(p)
    _add_family_options(p, "generate", {f.name: f.options for f in registered})
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("bench", help="measure latency of a package's graphs")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("--batch", type=int, default=1, help="inputs per graph call (at most 256)")
    p.add_argument("--iters", type=int, default=200, help="graph calls per engine (token packages: a tenth as many whole generations)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per engine first (token packages: a tenth "
                   "as many whole generations, at least 1)")
    p.add_argument("--json", default=None, help="write the report as JSON to this .json file")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="run the package's variants of this precision where it has them (edgegen info lists them)")
    p.add_argument("--vs-torch", default=None, metavar="CHECKPOINT",
                   help="also run PyTorch eager from this checkpoint (a shipped model's name for its checkpoint; an "
                        "imported package: the transformers or diffusers folder it came from; a generic package: its "
                        "FILE.py:FACTORY), "
                        "interleaved, and report the ratio")
    p.add_argument("--prompt-lookup", type=int, default=0, metavar="N",
                   help="token packages: also generate with up to N draft tokens per decoder call (prompt lookup "
                        "decoding), interleaved, and report the ratio")
    p.add_argument("--shapes", action="append", default=None, metavar="NAME=SIZE[,NAME=SIZE]",
                   help="the size of each dynamic dim other than the batch, as trtexec's --shapes (default: the "
                        "size the family's runtime calls with: SR's tile, WaveNet's one-second window, PixelCNN's "
                        "whole image of links; the traced sizes of a generic package; else 1)")
    p.add_argument("--energy", default=True, action=argparse.BooleanOptionalAction,
                   help="then run each engine alone for a second with the machine's power source read (a "
                        "Jetson's INA238 input, INA3221 rails or tegrastats, NVML, RAPL): watts and millijoules per result")
    p.add_argument("--generation", default=True, action=argparse.BooleanOptionalAction,
                   help="then time a whole generation at the family's defaults where it is more than one graph call "
                        "(a diffusion sampler's steps, PixelCNN's and WaveNet's loops) (default: True)")
    p.add_argument("--steps", dest="bench_steps", type=int, default=None, metavar="N",
                   help="the whole generation's sampler steps (diffusion families; default: the family's, 20)")
    p.add_argument("--sweep", default=None, action="append", metavar="DIM[,DIM]=SIZE[,SIZE...]",
                   help="time each size in turn, the named dims set together, e.g. height,width=64,128,256 "
                        "(tile sizes of a super-resolution package); one table per size")
    runtime_options(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("optimize", help="add int8, fp16 or weight-only int4 variants of a package's graphs, each "
                                        "behind a quality gate")
    p.add_argument("package", help="a package directory, where the variants are written (a shipped model's: optimize a copy "
                                   "of its package)")
    p.add_argument("--precision", required=True, choices=VARIANT_PRECISIONS,
                   help="fused: fp32 after ONNX Runtime's transformer fusions (the transformer families: "
                        f"{', '.join(f.name for f in registered if f.fusion)}; ort-cpu only); int4 and int8-weights: "
                        "block-wise weight-only quantization of token models (ONNX Runtime's MatMulNBits; int4 for a "
                        "TensorRT target: DequantizeLinear of int4 blocks)")
    p.add_argument("--calibration", type=int, default=None,
                   help="int8: inputs drawn from the checkpoint's data to calibrate activation ranges on, a multiple of 8 "
                        "from 8 to 4096 (default 64; feeds given whole, --inputs or a module's recorded ones, "
                        "calibrate on their first half)")
    p.add_argument("--block-size", type=int, default=None,
                   help="int4 and int8-weights: weights per quantization scale, a power of 2 from 16 to 256 (default 32)")
    p.add_argument("--max-8bit-share", type=float, default=None, metavar="FRACTION",
                   help="int4: where 4 bits on every MatMul lose fp32's predictions, the largest share of the "
                        "MatMul weights (by element) kept at 8 bits (float for a TensorRT target), the MatMuls whose "
                        "4 bits cost the most first, found on held-out windows apart from the gate's; 0 keeps every "
                        "weight at 4 bits (default 0.5)")
    p.add_argument("--target", default="ort-cpu", choices=tuple(TARGETS),
                   help="ort-cpu keeps a variant only where it is faster here; a TensorRT target (tensorrt, jetpack6, "
                        "jetpack7) keeps every one that passes its gate and takes int8, fp16 and (not jetpack6's "
                        "opset 18) int4")
    p.add_argument("--checkpoint", default=None,
                   help="the checkpoint the package was exported from, or a shipped model's name (default: the path its "
                        "manifest records)")
    p.add_argument("--inputs", default=None, metavar="NPZ",
                   help="feeds to calibrate (first half) and gate (second half) on, instead of the checkpoint's data "
                        "(a generic package: default the held-out inputs recorded at export)")
    p.add_argument("--speed-check", action=argparse.BooleanOptionalAction, default=True,
                   help="for ort-cpu, keep a variant only where it runs faster than fp32 here; --no-speed-check keeps "
                        "every variant that passes its quality gate, timing none: the same variants every run (a CI "
                        "step on a shared machine, whose timings differ run to run), or a package optimized on one "
                        "machine for another")
    p.add_argument("--json", action="store_true",
                   help="print this run's verdicts as JSON instead of info's table (its lines go to stderr; docs/cli.md)")
    p.set_defaults(func=_cmd_optimize, export_side="edgegen optimize")

    p = sub.add_parser("check", help="without a GPU: what TensorRT's ONNX parser will refuse in a package")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("--target", default=None, choices=TENSORRT_TARGETS,
                   help=describe_targets(TENSORRT_TARGETS) + " (default: this machine's: on a Jetson its JetPack's, else "
                   "tensorrt; with --tensorrt, tensorrt where this machine's target has another release)")
    p.add_argument("--tensorrt", default=None, metavar="VERSION",
                   help="judge by this TensorRT release's parser table, 10.15, 10.14, 10.13 or 10.3; a release between "
                        "them by the newest before it (10.16 by 10.15's) (default: this machine's own TensorRT parser where the "
                        "tensorrt module is installed, else the target's release)")
    p.add_argument("--profile", action="append", default=None, metavar="NAME=MIN:OPT:MAX",
                   help="an optimization profile for a dynamic dim (repeatable), e.g. batch=1:4:8")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON instead of the table (docs/cli.md)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("build", help="build (or find in the cache) TensorRT engines for a package on this GPU")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("--backend", default="tensorrt", choices=("tensorrt",), help="the engine kind")
    p.add_argument("--target", default=None, choices=TENSORRT_TARGETS,
                   help="refuses to build where this machine's TensorRT is not the target's (default: this machine's: on "
                        "a Jetson its JetPack's, else tensorrt)")
    p.add_argument("--precision", default="fp32", choices=ENGINE_PRECISIONS,
                   help="engine precision: int8 and fp16 build from the variants edgegen optimize added (the "
                        "precision is in the graph)")
    p.add_argument("--profile", action="append", default=None, metavar="NAME=MIN:OPT:MAX",
                   help="optimization profile of a dynamic dim (default, which edgegen check shows: MIN the "
                        "least size the package takes (1; a past cache 0), OPT the family's typical size (the "
                        "runtime's default call: 1 where it names none), MAX the package's limit (batch 16))")
    p.add_argument("--cache-dir", default=None, help="engine cache folder, as edgegen.load's cache_dir: the engines go "
                   "in its tensorrt/ (default: PACKAGE/.edgegen-cache, or ~/.cache/edgegen/engines/NAME-HASH for a "
                   "package this user cannot write in)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("triton", help="write a Triton Inference Server model repository that serves packages",
                       epilog="docs/serving.md: when to embed and when to run Triton, and how a Jetson serves it")
    p.add_argument("packages", nargs="+", metavar="PACKAGE", help=PACKAGE_HELP + " (one or more)")
    p.add_argument("--out", required=True, help="the model repository (created, or added to)")
    p.add_argument("--route", default=None, choices=ROUTES,
                   help="graph: Triton runs the one graph of a GAN, VAE or your own model; pipeline: a Python-backend "
                        "model runs edgegen's pipeline (default: graph where the family's generation is one graph call)")
    p.add_argument("--graph-backend", default="onnxruntime", choices=GRAPH_BACKENDS,
                   help="who runs a graph-route model: Triton's ONNX Runtime backend, its TensorRT backend (an engine "
                        "built here: run this on the device that serves it), or edgegen in Triton's Python backend")
    p.add_argument("--max-batch-size", type=int, default=16, help="graph route: the most items Triton merges into a call")
    p.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=True,
                   help="graph route: let Triton merge queued requests into one call")
    p.add_argument("--queue-delay-us", type=int, default=0,
                   help="how long the dynamic batcher waits for more requests, in microseconds (0: it merges what is "
                        "queued and adds no latency when requests are few)")
    p.add_argument("--instances", type=int, default=1, help="model instances Triton runs side by side")
    p.add_argument("--kind", default="cpu", choices=KINDS, help="where Triton runs graph-route instances")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="serve a variant edgegen optimize wrote")
    p.add_argument("--backend", default="auto", help="edgegen's backend inside Python-backend models: auto, tensorrt, "
                   "ort-tensorrt, ort-cuda or ort-cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="ONNX Runtime threads per instance, Python-backend or onnxruntime backend (0: a "
                        "Python-backend instance takes its share of the cores, the onnxruntime backend its default)")
    p.add_argument("--max-count", type=int, default=0, metavar="N",
                   help="pipeline route: the largest n, num_samples or max_new_tokens a request may ask for, a larger "
                        "one refused as the caller's mistake (0: no cap)")
    p.add_argument("--name", action="append", default=None, dest="names", metavar="NAME",
                   help="the model's name in the repository, once per PACKAGE in order (default: each package's own "
                        "name): the same package at two precisions, or two packages of one name")
    p.add_argument("--force", action="store_true", help="replace model folders that exist in --out (Triton model folders "
                   "only, never a folder of other files)")
    p.set_defaults(func=_cmd_triton)

    p = sub.add_parser("score", help="anomaly scores of pictures (vae, vaegan, pixelcnn, image flows) or audio clips "
                       "(wavenet): higher is less like the training data; with a threshold, exit status 1 where one "
                       "scores above it",
                       epilog="each picture is read as edgegen train reads a folder's: centre-cropped to a square, "
                              "resized to the package's size, grey by luma for a grey model; each WAV file mono, at the "
                              "package's sample rate (docs/python-api.md, \"Anomaly scores\")")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("pictures", nargs="+", metavar="FILES", help="picture files (WAV files for a wavenet package), or "
                   "folders of them (hidden files left out)")
    p.add_argument("--normal", default=None, metavar="FOLDER", help="pictures (or clips) known to be normal, from the "
                   "camera (or microphone) the model will watch: the threshold is the --quantile of their scores")
    p.add_argument("--quantile", type=float, default=None, help=f"with --normal: the fraction of normal pictures at "
                   f"or below the threshold (default {DEFAULT_QUANTILE})")
    p.add_argument("--threshold", type=float, default=None, help="flag pictures scoring above this (one --normal "
                   "calibrated before; see the score's units in docs/python-api.md)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="score with the package's variant of this precision (edgegen optimize adds them)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON for a script (docs/cli.md lists the "
                   "fields), not the table")
    runtime_options(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("info", help="show a package's manifest")
    p.add_argument("package", help=PACKAGE_HELP)
    p.add_argument("--json", action="store_true", help="print the manifest and info's findings as JSON for a script "
                   "(docs/cli.md lists the fields), not the table")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("list", help="the shipped models, by name (edgegen generate NAME)")
    p.add_argument("--families", action="store_true", help="the families instead: edgegen's own and those installed "
                   "packages register (edgegen train FAMILY), and those left out, with why")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("cache", help="what edgegen keeps in the user's cache, and which of it is stale",
                       epilog="the cache: $XDG_CACHE_HOME/edgegen, else ~/.cache/edgegen (docs/cli.md)")
    p.add_argument("--prune", action="store_true", help="remove the entries this edgegen never reads: exports and "
                   "judges of other edgegen versions or weights, engines whose package is gone, and what killed commands left")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("doctor", help="which backends and versions this machine has")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("demo", help="train/export/generate/bench every family and write demo/index.md")
    p.add_argument("--out", default="demo", help="the folder to write the demo into")
    p.add_argument("--train", action="store_true", help="train from scratch instead of using the shipped weights (every "
                   "family: about 90 minutes on 2 cores, what the shipped checkpoints' training took; --only trains fewer)")
    p.add_argument("--iters", type=int, default=200, help="benchmark iterations per engine (a token model's: a tenth as "
                   "many whole generations)")
    p.add_argument("--only", nargs="+", default=None, metavar="FAMILY", help="only these families' models")
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is what edgegen writes there "
                   "(never a folder of other files, nor the command's input)")
    p.set_defaults(func=_cmd_demo, export_side="edgegen demo")

    for family in registered:   # commands a family brings for its use case (edgegen upscale)
        for reference in family.commands:
            try:
                family.command_adder(reference)(sub, runtime_options)
            except Exception as exc:  # noqa: BLE001 - one family's broken commands must not take edgegen down
                cause = exc.__cause__ if isinstance(exc, EdgegenError) and exc.__cause__ else exc   # the import's own
                print(f"edgegen: warning: family {family.name!r}: expected its commands {reference!r} to load, found "
                      f"{type(cause).__name__}: {cause} (the rest of edgegen works without them)", file=sys.stderr)
    parser.commands = sub.choices
    for command in sub.choices.values():   # `edgegen info pkg --debug` too (SUPPRESS: the first one's stands)
        if "--debug" not in command._option_string_actions:   # a family's own command may have one
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show tracebacks for errors (as edgegen --debug)")
    return parser


def _results_on_stdout(args) -> bool:
    """Whether what the command is for goes to standard output (bench's table, info's lines,
    optimize's JSON report), not only a line saying what it wrote (generate's text without --out
    is judged by generate, after a grid's missing --out is said)."""
    if args.command == "bench":
        return getattr(args, "json", None) is None
    return args.command in ("info", "list", "cache", "doctor", "score", "check") or (
        args.command == "optimize" and bool(getattr(args, "json", False)))


def _refuse_a_closed_stdout() -> None:
    """Standard output closed (>&-): print drops the results without a word, and the status was 0."""
    if sys.stdout is None:
        raise ConfigError("standard output: expected it open (edgegen prints its results there), found it closed: "
                          "redirect it to /dev/null to discard them")


def _relative_output(args) -> bool:
    return any(isinstance(path, str) and not os.path.isabs(path) for path in
               (getattr(args, "out", None), getattr(args, "json", None)))


def _refuse_a_deleted_working_directory() -> None:
    """A shell standing in a folder removed since, refused where torch imports (train, export, a
    shipped name's first export: it died in oneMKL's "Cannot load libtorch_cpu.so", status 2,
    blaming the install) and where an output path is relative (a bare FileNotFoundError naming
    nothing: review 176). The runtime's other commands, given absolute paths, run from there."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise ConfigError("the current directory: expected one that exists, found it removed (the shell still stands "
                          "in it): cd to another") from None


@contextlib.contextmanager
def _standard_output_named():
    """sys.stdout, for the command: a write the system refuses there (a redirect to a full disk)
    names standard output; it was said as the --out file, which the command had written."""
    stream = sys.stdout
    if stream is None:   # closed, for a command whose results go elsewhere: print drops its line, as it did
        yield
        return
    sys.stdout = _NamedOutput(stream)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _NamedOutput):   # not one a caller put in meanwhile
            sys.stdout = stream


class _NamedOutput:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._named(self._stream.write, text)

    def flush(self) -> None:
        self._named(self._stream.flush)

    def _named(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            # the reader gone (edgegen info | head: main's quiet ending), a non-blocking stream's partial
            # write, an error without a number: as they are
            if isinstance(exc, (BrokenPipeError, BlockingIOError)) or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, "standard output") from None

    def __getattr__(self, name):   # fileno, isatty, encoding, ...: the stream's own
        return getattr(self._stream, name)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone: the system flags its end with an
    error, which poll reports without a byte written to it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):   # no descriptor (a captured stream), no poll on this system
        return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, EdgegenWarning):
        print(f"edgegen: warning: {message}", file=sys.stderr)
    else:
        (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


class Terminated(BaseException):
    """SIGTERM (timeout, kill, a container stopping) raised in the main thread, as Ctrl-C raises
    KeyboardInterrupt, so that the command's cleanup runs: its staging folder and lock go."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    def terminated(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:   # main() called outside the main thread: the system's handling stays
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# the options the functions they reach name otherwise: export's and train's folder refusals say
# "output '...'", the pipeline's keyword for --prompt-lookup is transformers'
KEYWORDS_OF_OPTIONS = {"out": "output", "prompt_lookup": "prompt_lookup_num_tokens"}


def _said_by_flag(exc: EdgegenError, parser: argparse.ArgumentParser, args) -> EdgegenError:
    """A refusal of a value the user gave, by the keyword the Python function it reached names it
    with (threads, image_size, max_batch_size; "output" for --out), said as the flag. Options left
    at their default are not named: a value from elsewhere (the manifest's checkpoint) is not the
    flag's."""
    given = [a for a in parser.commands[args.command]._actions
             if a.option_strings and getattr(args, a.dest, a.default) != a.default]
    flags = {a.dest: max(a.option_strings, key=len) for a in given}
    values = {a.dest: getattr(args, a.dest) for a in given}
    for dest, keyword in KEYWORDS_OF_OPTIONS.items():
        if dest in flags:
            flags[keyword], values[keyword] = flags[dest], values[dest]
    return _renamed(exc, flags, values)


# Python looks for cyclic garbage after every 700 net allocations, and now and then (after ten
# passes over the younger objects) walks every object the process holds (torch's and onnx's
# modules, over 400,000 objects):
# torch.export's tracing makes and drops objects by the million, and an export spent a tenth of
# its time there. Measured on `edgegen export` of gpt-stdlib and text2image-digits, two runs each:
# collection 1.5-1.6 s and 3.5-4.2 s of 14-49 s with Python's default, 0.4-0.5 and 0.9-1.0 s with
# this, peak memory 0-4% higher. A process edgegen owns (the command line, the test suite) sets it.
COLLECT_AFTER_ALLOCATIONS = 50_000


def collect_cycles_less_often() -> None:
    gc.set_threshold(COLLECT_AFTER_ALLOCATIONS, *gc.get_threshold()[1:])


def main(argv: list[str] | None = None) -> int:
    collect_cycles_less_often()
    try:
        with warnings.catch_warnings():   # a plugin refused as the registry fills: one line, not Python's warning
            warnings.showwarning = _show_warning
            parser = build_parser()
    except EdgegenError as exc:   # a registered family whose declaration does not fit the command line
        print(f"edgegen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - a family's code failing as the command line is built: a bug
        return _internal_error(exc, "edgegen")
    args, unknown = parser.parse_known_args(argv)
    if unknown:   # said by the command's own parser, whose --help lists what it takes (not edgegen's)
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        # numpy reads it as scipy and scikit-learn import (training data, an export's gate), and a bad
        # one was its bare ValueError: refused first where they may; a command of the runtime alone
        # reads it nowhere, and on a device it refused an empty one (helper 94)
        torch_side = getattr(args, "export_side", None) or getattr(args, "vs_torch", None)
        first_export = any(isinstance(given, str) and _shipped_but_not_exported(given) for given in
                           [getattr(args, "package", None), *(getattr(args, "packages", None) or [])])
        if torch_side or first_export or _relative_output(args):
            _refuse_a_deleted_working_directory()
        if torch_side or (args.command in NAMED_COMMANDS and first_export):
            created_time()
        if getattr(args, "export_side", None):
            require_export(args.export_side)
        if args.command == "build" and _shipped_but_not_exported(args.package):
            from .runtimes.backends import require_tensorrt

            require_tensorrt()   # TensorRT missing is said before a shipped name exports (minutes), not after
        if _results_on_stdout(args):
            _refuse_a_closed_stdout()
        with warnings.catch_warnings(), _terminate_as_interrupt(), _standard_output_named():
            warnings.showwarning = _show_warning   # edgegen's own warnings in one line, as its errors
            if args.command in NAMED_COMMANDS:   # a first export here is stopped by SIGTERM as any command's work is
                args.named = args.package if _shipped_name_given(args.package) else None
                # bench's process never loads PyTorch for the export: its memory is the runtime's
                args.package = _package_or_name(args.package, apart=args.command == "bench")
            code = args.func(args)
    except EdgegenError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edgegen: error: {_said_by_flag(exc, parser, args)}", file=sys.stderr)
        # the export gate's verdict on a model (it does not reproduce PyTorch) is check's and optimize's status
        return EXIT_VERDICT if isinstance(exc, ParityError) else EXIT_USER_ERROR
    except (Terminated, KeyboardInterrupt) as stop:
        return _said_stopped(stop)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXPORT_MODULES:
            return _internal_error(exc, f"edgegen {args.command}")
        if args.debug:
            traceback.print_exc()
        print(f"edgegen: error: edgegen {args.command} needs the export extra here: {EXPORT_EXTRA} "
              f"(found no {exc.name})", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError as exc:
        if not _stdout_closed():   # another pipe (a subprocess's, a socket): an error to say
            if args.debug:
                traceback.print_exc()
            print(f"edgegen: error: {_system_error(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        # the reader went away (edgegen info | head): quietly, as cat and grep end there, with
        # the status a shell gives a command SIGPIPE ended; and keep Python's exit flush from
        # raising again on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    except (OSError, MemoryError, UnicodeError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edgegen: error: {_system_error(exc, _written_by(args))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:
        stop = _stop_within(exc)
        if stop is None:
            return _internal_error(exc, f"edgegen {args.command}")
        if args.debug:
            traceback.print_exc()
        # Ctrl-C or SIGTERM landing inside a library that wraps it in its own error (torch.export's
        # TorchExportError, around an import that the interrupt cut short): said as the stop it was
        return _said_stopped(stop)
    return code if isinstance(code, int) else 0


def _internal_error(exc: BaseException, where: str) -> int:
    """A bug of edgegen's (or of a library under it, or of a family's code): the traceback, then one
    line, and its own status beside the verdicts' 1 (Python's own would be 1)."""
    traceback.print_exception(exc)
    if at := _outside_family_at_fault(exc):
        family, place = at
        print(f"edgegen: error in family {family!r}'s code ({place}), which is not edgegen's: {type(exc).__name__} in "
              f"{where}; the traceback above is for its author (docs/adding-a-family.md) (exit status "
              f"{EXIT_INTERNAL_ERROR})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    print(f"edgegen: internal error: {type(exc).__name__} in {where}, not a mistake of yours: the traceback above "
          f"is what to report (exit status {EXIT_INTERNAL_ERROR})", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def _outside_family_at_fault(exc: BaseException) -> tuple[str, str] | None:
    """(family, file:line) where the code last running before the error, libraries' aside, is an
    outside family's own (review 172 saw its mistakes blamed on edgegen); None where it is
    edgegen's (a family calling edgegen, which fails: edgegen's to report), or the registry was
    never read."""
    families = sys.modules.get("edgegen.families")
    if families is None:
        return None
    for frame, line in reversed(list(traceback.walk_tb(exc.__traceback__))):
        module = frame.f_globals.get("__name__", "")
        if family := families.outside_family_of(module):
            return family, f"{frame.f_code.co_filename}:{line}"
        if module.partition(".")[0] == "edgegen":
            return None
    return None


def _said_stopped(stop: BaseException) -> int:
    """SIGTERM or Ctrl-C said in one line, with the status a shell gives a command the signal ended."""
    if isinstance(stop, Terminated):
        print("edgegen: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    print("edgegen: interrupted", file=sys.stderr)
    return 130


def _stop_within(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or Terminated an exception was raised from or while handling, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _number_or_nan(value) -> float:
    """A manifest's figure, or NaN where it is missing or written null (JSON cannot hold infinity)."""
    return float("nan") if value is None else float(value)


def _written_by(args) -> str | None:
    """Where the command writes (its --out, or the package optimize adds variants to), to name
    where the system refused a write that named no file (a full disk under ONNX's own save)."""
    written = getattr(args, "out", None) or (getattr(args, "package", None) if args.command == "optimize" else None)
    return str(written) if written else None


def _system_error(exc: BaseException, written: str | None = None) -> str:
    """One line for what the system refused: a read-only file, a directory where a file was
    expected, a full disk, memory, text the terminal cannot encode. `written`: where the command
    writes, named where the system named no file."""
    if isinstance(exc, MemoryError):
        return "out of memory: expected a smaller request (fewer samples, a smaller size), found it too large for this machine"
    if isinstance(exc, UnicodeEncodeError):   # the character, not only "ordinal not in range(128)"
        return (f"text: expected characters the {exc.encoding} encoding can carry (a terminal's or PYTHONIOENCODING), "
                f"found {exc.object[exc.start:exc.end]!r}: {exc.reason} ({exc.__class__.__name__})")
    if isinstance(exc, UnicodeError):
        return f"text: expected characters this terminal's encoding can carry, found {exc.reason} ({exc.__class__.__name__})"
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        # a folder copy's errors, one (source, destination, why) per file: the first, and how many more
        source, destination, why = exc.args[0][0]
        more = f" (and {len(exc.args[0]) - 1} more files)" if len(exc.args[0]) > 1 else ""
        return f"{str(destination)!r}: expected a copy of {str(source)!r}, found the system refusing it: {why}{more}"
    if getattr(exc, "filename2", None):   # a copy or a rename: a full disk is the destination's, not the source's
        where = f"{str(exc.filename)!r} to {str(exc.filename2)!r}: "
    elif getattr(exc, "filename", None):
        where = f"{exc.filename!r}: "
    else:
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
        where = f"writing {written!r}: " if written and full else ""
    return f"{where}{exc.strerror or exc} ({exc.__class__.__name__})"


if __name__ == "__main__":
    sys.exit(main())
