"""Importers' common parts for diffusers `save_pretrained` folders (docs/diffusers.md): which
layout a folder holds, each component loaded with diffusers' own classes from safetensors, and
the scheduler's config mapped to one of edgegen's samplers, or refused with what to use.

`edgegen export --from-diffusers DIR` reads model_index.json, finds the family that imports its
denoiser's class (`Family.diffusers_importers`), and hands it the folder.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, EdgegenWarning, ImportedSettingWarning, described, warn_caller
from ..families import families
from ..package import read_json
from ..training.checkpoint import save_pretrained_folder
from .hugging_face import quiet_hugging_face

# diffusers scheduler class -> edgegen sampler (each matches it call for call: tests/test_samplers.py)
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "PNDMScheduler": "pndm",
              "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-a",
              "DPMSolverMultistepScheduler": "dpmpp-2m", "LMSDiscreteScheduler": "lms"}
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")
SHARED_KEYS = ("timestep_spacing", "steps_offset")   # every sampler takes them
VALUE_TYPES = {"num_train_timesteps": int, "beta_start": (int, float), "beta_end": (int, float), "beta_schedule": str,
               "prediction_type": str, "timestep_spacing": str, "steps_offset": int}
# settings edgegen's samplers implement only at these values (diffusers' defaults)
FIXED = {"trained_betas": (None,), "thresholding": (False,), "rescale_betas_zero_snr": (False,),
         "use_karras_sigmas": (False,), "use_exponential_sigmas": (False,), "use_beta_sigmas": (False,),
         "use_lu_lambdas": (False,), "use_flow_sigmas": (False,), "use_dynamic_shifting": (False,),
         "timestep_type": ("discrete",), "interpolation_type": ("linear",), "sigma_min": (None,), "sigma_max": (None,),
         "algorithm_type": ("dpmsolver++",), "solver_order": (2,), "lambda_min_clipped": (-math.inf,),
         "variance_type": (None, "fixed_small", "fixed_large"), "final_sigmas_type": ("zero", "sigma_min")}
# settings that do nothing while a FIXED one keeps its value (the thresholding ratio without thresholding)
INERT = ("dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type")
# euler's own sigmas end at zero; the DPM solver takes either end
_ONLY_FOR = {("final_sigmas_type", "sigma_min"): "dpmpp-2m", ("variance_type", "fixed_small"): "ddpm",
             ("variance_type", "fixed_large"): "ddpm"}


@dataclass(frozen=True)
class SchedulerSettings:
    """A diffusers scheduler as edgegen's DiffusionConfig holds it."""

    schedule: dict        # num_train_timesteps, beta_schedule, beta_start, beta_end, prediction_type
    sampler: str
    sampler_options: dict

    def config_fields(self) -> dict:
        return {**self.schedule, "sampler": self.sampler, "sampler_options": self.sampler_options}


def scheduler_settings(config: dict, where: str) -> SchedulerSettings:
    """A scheduler_config.json -> the sampler and its settings; a class or a setting edgegen's
    samplers do not implement is refused with the name of what to use instead."""
    from ..runtimes.samplers import SAMPLERS

    name = config.get("_class_name")
    if name not in SCHEDULERS:
        raise CheckpointError(f"{where}: expected a scheduler among {', '.join(SCHEDULERS)}, found {name!r} (save the "
                              "pipeline with one of those, e.g. pipe.scheduler = DDIMScheduler.from_config(...))")
    _check_value_types(config, where)
    sampler = SCHEDULERS[name]
    takes, class_takes = SAMPLERS[sampler].options, _settings_taken_by(name)
    # another sampler's settings are kept for it (Stable Diffusion's PNDM config carries DDIM's
    # clip_sample), as diffusers' from_config hands them to the class that takes them
    anyones = {key for s in SAMPLERS.values() for key in s.options}
    options: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("_") or key in SCHEDULE_KEYS or key in INERT:
            continue
        if key in SHARED_KEYS or key in anyones:
            if value is not None:   # None: the class's default, as from_config reads it (DPM's variance_type)
                options[key] = value
            if key not in FIXED:
                continue
        if key not in FIXED:
            raise CheckpointError(f"{where}: {name} setting {key}={_short(value)} is not one edgegen's {sampler} sampler "
                                  "implements; expected only the settings of diffusers' defaults")
        only = _ONLY_FOR.get((key, value)) if isinstance(value, (str, int, float, type(None))) else None
        if value not in FIXED[key] or (only is not None and only != sampler):
            if key not in class_takes:   # from_config carried it from another class (DDIM made of DDPM's config)
                warn_caller(f"{where}: {key}={_short(value)} is not a setting of {name}, which diffusers ignores "
                            "there; so does the import", ImportedSettingWarning)
                continue
            implemented = " or ".join(f"{key}={v!r}" for v in FIXED[key] if _ONLY_FOR.get((key, v), sampler) == sampler)
            raise CheckpointError(f"{where}: {name} with {key}={_short(value)}: edgegen's {sampler} sampler implements "
                                  f"{implemented} only; re-save the scheduler with that, or use one of "
                                  f"{', '.join(SCHEDULERS)} at its defaults")
    schedule = {key: config.get(key, default) for key, default in
                zip(SCHEDULE_KEYS, (1000, "linear", 0.0001, 0.02, "epsilon"))}
    # diffusers' pipelines step DDIM with the unclipped noise estimate (ours default otherwise)
    options["use_clipped_model_output"] = False
    try:   # built once here, so that a schedule the samplers refuse is refused at import
        SAMPLERS[sampler](**schedule, **{k: v for k, v in options.items() if k in (*SHARED_KEYS, *takes)})
    except (ConfigError, TypeError, ValueError) as exc:   # a value of the wrong type too
        raise CheckpointError(f"{where}: {exc}") from None
    return SchedulerSettings(schedule, sampler, options)


def _settings_taken_by(scheduler: str) -> set[str]:
    """The settings diffusers' `scheduler` class takes; it ignores the others a config holds."""
    import inspect

    import diffusers

    return set(inspect.signature(getattr(diffusers, scheduler).__init__).parameters) - {"self"}


def _check_value_types(config: dict, where: str) -> None:
    for key, kind in VALUE_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, kind) or isinstance(value, bool)):
            expected = {int: "an integer", str: "a string"}.get(kind, "a number")
            raise CheckpointError(f"{where}: expected {key} to be {expected}, found {_short(value)}")


def _short(value: Any) -> str:
    """A setting's value as a one-line message says it: a thousand trained betas as their first few."""
    said = repr(value)
    if len(said) <= 80:
        return said
    return f"{said[:60]}... ({len(value)} values)" if isinstance(value, (list, tuple)) else f"{said[:60]}..."


# -- the folder --------------------------------------------------------------------------------

def read_layout(folder: str | Path) -> tuple[Path, dict]:
    """The folder and its model_index.json: {component: [library, class]}."""
    folder = save_pretrained_folder(folder, "diffusers pipeline")
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"diffusers pipeline {str(folder)!r}: expected model_index.json in it (the folder "
                              "DiffusionPipeline.save_pretrained writes), found none")
    layout = read_json(index, CheckpointError)
    if not isinstance(layout, dict):
        raise CheckpointError(f"{index}: expected an object, found {type(layout).__name__}")
    return folder, layout


def component_class(folder: Path, layout: dict, component: str) -> str | None:
    entry = layout.get(component)
    if entry is None:
        return None
    if not (isinstance(entry, list) and len(entry) == 2):
        raise CheckpointError(f"{folder / 'model_index.json'}: expected {component!r} as [library, class], found {entry!r}")
    return entry[1]


def read_scheduler(folder: Path, pipeline: str | None = None) -> SchedulerSettings:
    """The folder's scheduler as the diffusers `pipeline` (model_index.json's _class_name) runs it."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise CheckpointError(f"diffusers pipeline {str(folder)!r}: expected scheduler/scheduler_config.json, found none")
    config = read_json(path, CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected an object, found {type(config).__name__}")
    return scheduler_settings(_as_the_pipeline_loads_it(config, pipeline, path), str(path))


# what a pipeline's __init__ changes in the scheduler it is handed, so what diffusers runs from a
# folder: DDIMPipeline makes any scheduler a DDIMScheduler of its config; Stable Diffusion's pipelines
# set steps_offset 1 and clip_sample false (a DDIMScheduler() swapped in saves 0 and true, which
# edgegen ran as written: images 0.8 apart from diffusers')
STABLE_DIFFUSION_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                              "StableDiffusionInpaintPipeline")
CLASS_DEFAULTS = {"steps_offset": 0, "clip_sample": {"DDIMScheduler": True, "DDPMScheduler": True}}


def _as_the_pipeline_loads_it(config: dict, pipeline: str | None, path: Path) -> dict:
    name, changed = config.get("_class_name"), {}
    had = {"steps_offset": config.get("steps_offset", CLASS_DEFAULTS["steps_offset"]),   # unset: the class's default
           "clip_sample": config.get("clip_sample", CLASS_DEFAULTS["clip_sample"].get(name, False)), "_class_name": name}
    if pipeline == "DDIMPipeline" and name != "DDIMScheduler":   # whatever the class, one edgegen has a sampler of or not
        changed["_class_name"] = "DDIMScheduler"
    if pipeline in STABLE_DIFFUSION_PIPELINES:
        if had["steps_offset"] != 1:
            changed["steps_offset"] = 1
        if had["clip_sample"] is True:
            changed["clip_sample"] = False
    if changed:
        said = ", ".join(f"{key} {had[key]!r}{'' if key in config else ' (the default)'} as {value!r}"
                         for key, value in changed.items())
        warn_caller(f"{path}: {said}, as diffusers' {pipeline} sets them when it loads this folder (the run it "
                    "gives is the one imported)", ImportedSettingWarning)
    if "_class_name" in changed:
        config = _ddim_scheduler_of(config, path)
    return {**config, **changed}


def _ddim_scheduler_of(config: dict, path: Path) -> dict:
    """The config of the DDIMScheduler that DDIMPipeline makes of another class's (diffusers' own
    from_config: the settings DDIM shares with it, DDIM's defaults for the rest; another class's own,
    Karras sigmas say, go unused, as there). A setting DDIM cannot take is refused by name."""
    from diffusers import DDIMScheduler

    _check_value_types(config, str(path))   # before diffusers reads them (a string beta_start: its TypeError)
    try:
        with quiet_hugging_face(("diffusers",)):
            made = dict(DDIMScheduler.from_config(config).config)
    except Exception as exc:  # noqa: BLE001 - diffusers' own refusals of a value (NotImplementedError for a schedule)
        raise CheckpointError(f"{path}: expected settings diffusers' DDIMScheduler takes (DDIMPipeline makes its "
                              f"{config.get('_class_name')} one), found {described(exc)}") from None
    takes = _settings_taken_by("DDIMScheduler")
    return {key: value for key, value in made.items() if key in takes}


def load_component(folder: Path, layout: dict, component: str, expected: tuple[str, ...]):
    """A model component (unet, vae, text_encoder) in float32 through diffusers' or transformers'
    own from_pretrained, from safetensors only (no pickles), in eval mode."""
    found = component_class(folder, layout, component)
    if found not in expected:
        raise CheckpointError(f"diffusers pipeline {str(folder)!r}: expected {component} to be a "
                              f"{' or '.join(expected)}, found {found!r}")
    for needed, what in ((folder / component, "folder"), (folder / component / "config.json", "config.json")):
        if not needed.exists():   # said as itself: it was "expected safetensors weights, found none", or transformers' own
            raise CheckpointError(f"{needed}: expected the {component} {what} model_index.json names, found nothing "
                                  "at that path")
    weights = sorted((folder / component).glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in (folder / component).glob("*.bin")]
        raise CheckpointError(f"{folder / component}: expected safetensors weights, found "
                              + (f"{pickled} (pickled weights are not loaded; re-save with safe_serialization=True)"
                                 if pickled else "none"))
    import importlib

    import torch

    library = layout[component][0]
    if library not in ("diffusers", "transformers"):
        raise CheckpointError(f"{folder / 'model_index.json'}: expected {component} from diffusers or transformers, "
                              f"found library {library!r}")
    module = importlib.import_module(library)
    # transformers 5 renamed torch_dtype; diffusers without accelerate asks for it unless told not to
    # transformers' shape refusal points at a report its logger (quieted) printed: taken, and said
    # with the tensors by _refuse_partly_loaded, as diffusers' own refusal names them
    more = {"dtype": torch.float32, "ignore_mismatched_sizes": True} if library == "transformers" else {
        "torch_dtype": torch.float32, "low_cpu_mem_usage": False}
    variant = _weights_variant(folder / component, weights)
    try:
        model, loading = getattr(module, found).from_pretrained(str(folder / component), use_safetensors=True,
                                                                output_loading_info=True, variant=variant, **more)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:   # one line, not the library's traceback
        raise CheckpointError(f"{folder / component}: expected the {found} its config.json describes, with its "
                              f"weights, found {library} refusing them: {_loading_failure(exc)}") from None
    _refuse_partly_loaded(folder / component, found, loading)
    return model.eval(), weights


PLAIN_WEIGHTS = re.compile(r"(diffusion_pytorch_model|model)(-\d+-of-\d+)?\.safetensors")
VARIANT_WEIGHTS = re.compile(r"(?:diffusion_pytorch_model|model)\.([A-Za-z0-9_]+)(?:-\d+-of-\d+)?\.safetensors")


def _weights_variant(component: Path, weights: list[Path]) -> str | None:
    """The variant a component's weights were saved as (save_pretrained(variant="fp16") writes
    diffusion_pytorch_model.fp16.safetensors, as many Hub pipelines hold them), where it holds no
    plain ones: loaded as that variant. None where plain weights are there."""
    if any(PLAIN_WEIGHTS.fullmatch(p.name) for p in weights):
        return None
    variants = sorted({m.group(1) for p in weights if (m := VARIANT_WEIGHTS.fullmatch(p.name))})
    if len(variants) > 1:
        raise CheckpointError(f"{component}: expected one set of weights, found variants {', '.join(variants)} and "
                              "no plain ones (keep the one to import, or re-save without variant=)")
    return variants[0] if variants else None


def _loading_failure(exc: Exception) -> str:
    """A from_pretrained failure on one line: torch's state-dict refusal as its size mismatches
    (each "size mismatch for NAME: copying a param with shape A from checkpoint, the shape in current
    model is B"), anything else as its first line."""
    mismatches = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\((\[[\d, ]*\])\) "
                            r"from checkpoint, the shape in current model is torch\.Size\((\[[\d, ]*\])\)", str(exc))
    if mismatches:
        shown = ", ".join(f"{name} {theirs} against the config's {ours}" for name, theirs, ours in mismatches[:3])
        return f"{len(mismatches)} of another shape ({shown}{', ...' if len(mismatches) > 3 else ''})"
    return described(exc)


def _refuse_partly_loaded(component: Path, found: str, loading: dict) -> None:
    """A component whose weights do not cover its parameters is refused: from_pretrained fills a missing
    or differently shaped one at random and only logs it, and the export's check compares the graph with
    that same partly random model, so nothing else would tell. Weights the model does not use (an older
    save's buffers) are said, not refused."""
    def named(keys) -> str:
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys)
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    problems = [f"{what} {named(keys)}" for what, keys in (("no weights for", loading.get("missing_keys")),
                                                           ("weights of another shape for", loading.get("mismatched_keys")))
                if keys]
    problems += [str(message) for message in loading.get("error_msgs") or ()]
    if problems:
        raise CheckpointError(f"{component}: expected weights for every parameter of its {found}, found "
                              f"{'; '.join(problems)} (loaded, those would be random)")
    if loading.get("unexpected_keys"):
        warn_caller(f"{component}: weights its {found} does not use were left out: "
                    f"{named(loading['unexpected_keys'])}", EdgegenWarning)


def import_diffusers(folder: str | Path, scratch: Path):
    """A diffusers pipeline folder as (checkpoint, the spec of its graphs), by the family that
    imports its denoiser (Family.diffusers_importers); files it needs beside the weights (a
    tokenizer) go into `scratch`."""
    folder, layout = read_layout(folder)
    denoiser = component_class(folder, layout, "unet")
    known = {cls: f for f in families() for cls in f.diffusers_importers}
    if denoiser not in known:
        raise CheckpointError(f"diffusers pipeline {str(folder)!r} ({layout.get('_class_name')}): expected a unet among "
                              f"{', '.join(known)}, found {denoiser!r}")
    from ..training.checkpoint import Checkpoint
    from .spec import ExportSpec

    with quiet_hugging_face():
        imported = known[denoiser].resolve(known[denoiser].diffusers_importers[denoiser], "")(folder, layout, scratch)
    if not (isinstance(imported, tuple) and len(imported) == 2 and isinstance(imported[0], Checkpoint)
            and isinstance(imported[1], ExportSpec)):
        raise ConfigError(f"the importer of {denoiser!r} pipelines (Family.diffusers_importers): expected (folder, "
                          f"model_index, scratch) -> (Checkpoint, ExportSpec), found it returning {type(imported).__name__}")
    return imported


def export_diffusers(folder: str | Path, out: str | Path, **options) -> Path:
    """`edgegen export --from-diffusers DIR`: imported (import_diffusers), then exported through the gate."""
    from . import export_model, raise_unread_data, refuse_package_output

    refuse_package_output(out, options.get("overwrite", False), options.get("name"), reads=[folder])
    if options.get("data") is not None:   # every imported pipeline's gate draws its own inputs: said before loading
        raise_unread_data(options["data"], "an imported diffusers pipeline")
    with tempfile.TemporaryDirectory(prefix="edgegen-import-") as scratch:
        ckpt, spec = import_diffusers(folder, Path(scratch))
        return export_model(ckpt, out, spec=spec, **options)
