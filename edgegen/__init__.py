"""edgegen: generative models from PyTorch training code to fast engines on edge devices.

Importing edgegen is light: the runtime (numpy, onnxruntime) loads on the first `load()`.
"""

import os

# ONNX Runtime from 1.29 on sends usage telemetry from Linux too, and writes a device identifier into
# the user's cache, unless this is set before it is imported (it reads it once). A product on a device
# sends nothing it did not choose to: off unless the user set it (ORT_DISABLE_TELEMETRY=0 keeps it on).
# Set first, before any import: whatever a later import reaches, the variable is there.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .errors import (  # noqa: E402 - after the variable, as the comment above says
    BackendError,
    CheckpointError,
    ConfigError,
    DataError,
    EdgegenError,
    EdgegenWarning,
    HashMismatchError,
    ImportedSettingWarning,
    InputError,
    ManifestError,
    MissingExtraError,
    NonFiniteError,
    OutputExistsError,
    PackageBusyError,
    PackageError,
    ParityError,
    PrecisionWarning,
    TrainingError,
    UnknownFamilyError,
    ValidationError,
)

__version__ = "0.1.0"


def load(path, backend: str = "auto", threads: int | None = None, cache_dir=None, precision: str = "fp32"):
    """Load the model package at `path` and return its family's pipeline (see edgegen.runtimes.load)."""
    from .runtimes import load as _load

    return _load(path, backend=backend, threads=threads, cache_dir=cache_dir, precision=precision)


def export_pytorch(module, inputs, out, **options):
    """Export a user's own torch.nn.Module through the validation gate into a package of the
    generic family (see edgegen.families.generic.export.export_pytorch; needs the export extra)."""
    from .errors import require_export

    require_export("edgegen.export_pytorch")
    from .families.generic.export import export_pytorch as export

    return export(module, inputs, out, **options)


__all__ = ["load", "export_pytorch", "__version__", "EdgegenError", "PackageError", "ManifestError", "HashMismatchError",
           "CheckpointError", "InputError", "BackendError", "UnknownFamilyError", "DataError", "ConfigError",
           "ValidationError", "ParityError", "OutputExistsError", "NonFiniteError", "PackageBusyError", "MissingExtraError",
           "PrecisionWarning", "TrainingError", "EdgegenWarning", "ImportedSettingWarning"]
