"""Errors a user can cause. Each message names the thing, what was expected and what was found."""


class EdgegenError(Exception):
    """Base class of every error edgegen raises for something the user can fix."""


class PackageError(EdgegenError):
    """A model package is missing, unreadable or inconsistent with its manifest."""


class ManifestError(PackageError):
    """edgegen.json is not valid JSON or does not follow the package schema."""


class HashMismatchError(PackageError):
    """A graph file's sha256 differs from the one recorded in the manifest."""


class CheckpointError(EdgegenError):
    """A training checkpoint is missing, unreadable or does not rebuild its module."""


class InputError(EdgegenError):
    """An input given to a session or a pipeline has the wrong name, dtype or shape."""


class BackendError(EdgegenError):
    """The requested backend is unknown or not available on this machine."""


class UnknownFamilyError(EdgegenError):
    """A family name that edgegen does not know."""


class DataError(EdgegenError):
    """A dataset name or folder that cannot be loaded."""


class ConfigError(EdgegenError):
    """A model or command setting outside what is supported."""


class TrainingError(EdgegenError):
    """A training run that diverged (a loss or a weight no longer finite); nothing is written."""


class ValidationError(EdgegenError):
    """An export that cannot be made as asked (a module torch.export cannot trace, a graph that
    fails on its inputs, one that does not reproduce PyTorch); the package is not written."""


class ParityError(ValidationError):
    """The gate's verdict: an exported graph (or an import) runs but does not reproduce PyTorch's
    (transformers') outputs within its tolerance. `edgegen export` exits 1 on it, as `check` and
    `optimize` do on theirs; the other ValidationErrors, a mistake to mend in the command or the
    module, exit 2."""


class NonFiniteError(EdgegenError):
    """A computation produced NaN or Inf from the values it was given (a guidance scale too large,
    a schedule that underflows); nothing is written."""


class OutputExistsError(EdgegenError):
    """The output path exists and overwriting it was not asked for."""


class PackageBusyError(EdgegenError):
    """Another edgegen command is writing the same package or checkpoint."""


class MissingExtraError(EdgegenError):
    """A command needs a part of edgegen this install left out (the export side on a device)."""


EXPORT_EXTRA = "pip install 'edgegen[export]'"
# what every export-side command imports: a runtime-only install lacks them all
EXPORT_SIDE_MODULES = ("torch", "onnx", "onnxscript", "safetensors")


def missing_export_modules() -> list[str]:
    """The export side's modules this install lacks (a runtime-only install on a device: all)."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):   # a broken install, or a module set to None in sys.modules
            return True

    return [m for m in EXPORT_SIDE_MODULES if absent(m)]


def where_export_runs() -> str:
    """Said after advice to run an export-side command (edgegen optimize): on a runtime-only install,
    where it runs instead; "" where it runs here."""
    return ", where the export extra is (a runtime-only install cannot)" if missing_export_modules() else ""


def require_export(what: str) -> None:
    """MissingExtraError where the export side is not installed (a runtime-only install on a device):
    one line naming `what` and the extra, before any work."""
    missing = missing_export_modules()
    if missing:
        raise MissingExtraError(f"{what} needs the export extra: {EXPORT_EXTRA} (found no {', '.join(missing)} here)")


class EdgegenWarning(UserWarning):
    """Base class of edgegen's warnings: what runs, but not quite as the user may expect."""


class PrecisionWarning(EdgegenWarning):
    """A variant runs here less exactly than its gate measured where it was made."""


class ImportedSettingWarning(EdgegenWarning):
    """A file or setting of an imported model that edgegen does not read or apply."""


def format_mismatch(where: str, expected: str, found) -> str:
    """The message for a file of another format than `expected` ("edgegen.package/1"), saying so
    where a newer edgegen wrote it (the same kind at a higher version)."""
    kind, _, version = expected.rpartition("/")
    found_kind, _, found_version = found.rpartition("/") if isinstance(found, str) else ("", "", "")
    newer = (found_kind == kind and found_version.isdigit() and version.isdigit()
             and int(found_version) > int(version))
    return (f"{where}: expected format {expected!r}, found {found!r}"
            + (" (written by a newer edgegen: upgrade edgegen to read it)" if newer else ""))


def close_match(found: str, known) -> str | None:
    """The known name closest to `found`, where one is close enough to be its typo."""
    import difflib

    close = difflib.get_close_matches(str(found), list(known), n=1)
    return close[0] if close else None


def not_one_of(thing: str, found: str, allowed, what: str = "", known=()) -> str:
    """The message for a name outside a known set: "THING 'x': expected one of a, b (WHAT), found
    'x'", with the closest known name suggested where one is close (a typo), unless `found` is
    among `known`: a real name of another set (a precision another target takes) is no typo."""
    allowed = list(allowed)
    close = None if found in known else close_match(found, allowed)
    return (f"{thing} {found!r}: expected one of {', '.join(allowed) or 'none'}{f' ({what})' if what else ''}, "
            f"found {found!r}" + (f" (did you mean {close!r}?)" if close else ""))


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line, for a one-line error (its type's name where it
    has no message): a library's multi-line text, or its traceback, is not the user's to read."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def described(exc: BaseException) -> str:
    """"Type: first line" of an exception, or its type alone where it has no message: a library's
    failure said in one line with what kind it was."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def warn_caller(message: str, category: type[Warning], remembered: bool = True) -> None:
    """warnings.warn pointed at the first frame outside edgegen: the user's own line, however many of
    edgegen's calls lie between (edgegen.load, then edgegen.runtimes.load, then ...). remembered=False
    for a message that holds a request's own text (a prompt cut short): said each time, and not
    kept in the caller's warning registry, which otherwise grows by one entry per distinct text for
    as long as a service runs."""
    import os
    import sys
    import warnings

    inside = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2   # level 2: warn_caller's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    if remembered or frame is None:
        warnings.warn(message, category, stacklevel=level)
        return
    # no module_globals=: warnings would ask __main__'s loader for its source, and the builtin one of
    # `python -c`, stdin and the REPL raises ImportError instead of warning
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"), registry=None)
