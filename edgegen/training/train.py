"""The training loop shared by every family: data, batches, progress, checkpoint."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..cpus import cgroup_memory_left
from ..errors import CheckpointError, ConfigError, DataError, EdgegenWarning, TrainingError
from ..families import get as get_family, refuse_trainer_signatures
from ..storage import refuse_empty, refuse_output_folder, writer_lock
from ..progress import Progress
from . import family_module
from ..package import CHECKPOINT_WEIGHTS, refuse_output_inside_edgegens, shipped_hint
from ..shipped import checkpoint_named, checkpoints_dir, is_shipped_name, names_shipped_model
from .checkpoint import (CHECKPOINT_KIND, checkpoint_files, data_trained_on, load_checkpoint, make_config, save_checkpoint,
                         saved_config)
from .data import (ImageData, all_grey, data_class_names, data_classes, load_images, refuse_empty_data,
                   refuse_small_image_size, why_no_classes)
from .resume import (StateSaver, StopBetweenSteps, data_fingerprint, refuse_another_run, refuse_starting_over,
                     restore_state, resume_path, run_arguments, say_other_conditions)

MAX_SEED = 2**63 - 1   # torch.manual_seed's largest
MAX_LR = 1000.0
TRAIN_FLAGS = {"data": "--data", "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed",   # train()'s
               "image_size": "--image-size", "channels": "--channels", "init": "--init"}                         # own


def train(family: str, out: str | Path, data: str | None = None, steps: int | None = None, batch_size: int | None = None,
          lr: float | None = None, seed: int | None = None, image_size: int | None = None, channels: int | None = None,
          overwrite: bool = False, progress: bool | None = None, init: str | Path | None = None,
          resume: bool = False, save_every: int | None = None, **model_options) -> Path:
    """Train a family's model on a built-in dataset or the user's data and write a checkpoint.

    data: default the family's DEFAULT_DATA (digits for the image families, stdlib for gpt), or
        with `init` the data that checkpoint was trained on.
    init: a checkpoint (a path, or a shipped model's name) to start from: its weights, its
        architecture and its image size and channels; fine-tuning it on `data`, or training it further.
    seed: of the weights and the data's order; None: 0.
    resume: go on with the training of `out` that was stopped (Ctrl-C, SIGTERM, a crash), from the
        state it left beside `out` (OUT.resume), with the arguments it was given (others given are
        refused where they differ). It ends with the weights the run would have had unstopped.
    save_every: write that state every this many steps; None: every 10 minutes. A stopped run
        writes it too, after the step under way; the finished checkpoint removes it.
    """
    module, declared = family_module(family), get_family(family)
    refuse_trainer_signatures(family, module.Trainer)
    refuse_empty(out, "output")
    if save_every is not None and (isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1):
        raise ConfigError(f"save_every (--save-every): expected a positive number of steps, found {save_every!r}")
    arguments_given = {"data": data, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                       "image_size": image_size, "channels": channels, "init": init, **model_options}
    defaults = {"steps": module.DEFAULT_STEPS, "batch_size": module.DEFAULT_BATCH, "lr": module.DEFAULT_LR, "seed": 0}
    flags = {**TRAIN_FLAGS, **{option.keyword: option.flag for option in declared.train_options}}
    stopped, arguments, overwrite = run_arguments(out, family, arguments_given, resume, overwrite, defaults, flags,
                                                  declared.builtin_data)
    if stopped is not None:   # the stopped run's arguments, whatever was left out now (TRAIN_FLAGS: train()'s order)
        data, steps, batch_size, lr, seed, image_size, channels, init = (arguments[k] for k in TRAIN_FLAGS)
        model_options = {k: v for k, v in arguments.items() if k not in TRAIN_FLAGS}
        save_every = stopped.about["save_every"] if save_every is None else save_every
    steps, batch_size, lr, seed = (defaults[k] if v is None else v for k, v in
                                   (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("seed", seed)))
    refuse_empty_data(data)
    start = _starting_checkpoint(init, family)
    options_given = dict(model_options)
    if start is not None:   # its architecture's options, which a prepare_data reads (gpt's windows), unless given
        model_options = {**_options_of(start, family, options_given), **model_options}
        # a base given anew (a ControlNet's --base) brings its own data (default_data), not the start's
        rebased = any(o.recorded_as and o.keyword in options_given for o in declared.train_options)
        data = _data_of(start, init) if data is None and not rebased else data
    if data is None:   # a ControlNet's: its base's (default_data)
        data = module.default_data(model_options) if hasattr(module, "default_data") else getattr(module, "DEFAULT_DATA", "digits")
    elif data in declared.builtin_data and os.path.exists(data):   # the name wins: said, not silent
        warnings.warn(f"--data {data!r}: the built-in data set, not the {'folder' if os.path.isdir(data) else 'file'} "
                      f"of that name here (give ./{data} to train on it)", EdgegenWarning, stacklevel=2)
    for name, value in (("steps (--steps)", steps), ("batch_size (--batch-size)", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"training {name}: expected a positive integer, found {value!r}")
    if steps < getattr(module, "MIN_STEPS", 1):
        raise ConfigError(f"training steps (--steps): expected at least {module.MIN_STEPS} for {family}, "
                          f"{module.MIN_STEPS_WHY}, found {steps}")
    if not 0 < lr <= MAX_LR:   # NaN fails it too
        raise ConfigError(f"learning rate (--lr): expected a number above 0 and at most {MAX_LR:g} (Adam moves each weight by "
                          f"about the rate per step), found {lr}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed: expected an integer from 0 to {MAX_SEED} (torch's generator), found {seed!r}")
    # what training reads (a data folder, a ControlNet's base checkpoint) is never what it replaces;
    # both refusals come before minutes of training, not after
    given = [*model_options.values(), *([start.path] if start else []),
             *([] if data in declared.builtin_data else [data])]
    reads = [p for p in given if isinstance(p, (str, Path)) and Path(p).exists()]
    refuse_output_inside_edgegens("output", out)
    refuse_output_folder(out, overwrite, CHECKPOINT_WEIGHTS, CHECKPOINT_KIND, reads, checkpoint_files)
    # held while it trains: a second run writing `out` is refused when it starts, not this one after its
    # minutes of training (its output was checked above, and appeared meanwhile); the checkpoint is written under it
    with writer_lock(out, "training it", wait=False):
        if stopped is None:   # under the lock: a run training `out` now is said as that, not as a stopped one
            refuse_starting_over(out, overwrite)
        given_image_size, given_channels = image_size, channels
        if start is not None and not getattr(module, "SHAPE_FROM_BASE", False):
            # the size and channels its weights were made for; data is resized to them (a ControlNet's base fixes its own)
            image_size = getattr(start.config, "image_size", None) if image_size is None else image_size
            channels = getattr(start.config, "image_channels", None) if channels is None else channels
        image_size = getattr(module, "DEFAULT_IMAGE_SIZE", 32) if image_size is None else image_size
        channels = getattr(module, "DEFAULT_CHANNELS", None) if channels is None else channels   # PixelCNN's grey levels
        known = {f.name for f in dataclasses.fields(module.Config)}
        if hasattr(module, "prepare_data"):  # families whose data is not only images (flows: points; gpt: text)
            images, from_data = _prepared(family, module.prepare_data(data, image_size, channels, seed, model_options),
                                          "num_classes" in known)
        else:
            # the config's own refusals (an --image-size of 20) before a folder's minutes of loading, not after
            shape = {"image_size": image_size, "image_channels": channels or 1,   # a cgan on a folder without
                     **({"num_classes": data_classes(data)} if "num_classes" in known else {})}   # classes: refused now
            refuse_small_image_size(image_size)   # the data's own limit, before a family's config says its own otherwise
            if start is not None and "num_classes" in known:   # before a folder's minutes of loading, and before the
                # config's own "num_classes expected at least 1", which would not name --init or the data
                _refuse_other_classes(init, getattr(start.config, "num_classes", 0), shape["num_classes"])
                _say_classes_renamed(init, start.data.get("classes"), data_class_names(data))
            try:
                make_config(family, {**{k: v for k, v in shape.items() if k in known}, **model_options})
            except ConfigError as exc:   # the option given for the field it names: "--channels 3: ... image_channels"
                if shape.get("num_classes") == 0 and os.path.isdir(data):   # a cgan's folder: what keeps it from classes
                    raise ConfigError(f"{exc}; --data {data!r}: {why_no_classes(Path(data))}") from None
                raise _said_as_the_option(exc, {field: (SHAPE_FLAGS[field], value) for field, value in
                                                (("image_channels", given_channels), ("image_size", given_image_size))}) from None
            images = load_images(data, image_size=image_size, channels=channels, seed=seed, classes="num_classes" in known)
            c, h, _ = images.shape
            from_data = {"image_channels": c, "image_size": h}
        if isinstance(images, ImageData) and images.colour_dropped and start is not None and given_channels is None:
            warnings.warn(f"--init {str(init)!r}: its model takes grey pictures, and the folder's colour pictures are "
                          "trained as grey: train without --init to keep their colour", EdgegenWarning, stacklevel=2)
        # a folder's pictures, whichever way they loaded, at a size and channels the family chose (not a base's)
        if isinstance(images, ImageData) and start is None and not getattr(module, "SHAPE_FROM_BASE", False):
            if given_image_size is None:
                _say_default_size_below_pictures(family, images, image_size)
            if channels is None:
                _say_grey_pictures_trained_as_colour(images)
        if (given_image_size is not None or given_channels is not None) and "image_size" not in images.describe():
            option = "--image-size" if given_image_size is not None else "--channels"
            raise ConfigError(f"{option}: expected an option of image data, found {family} training on {data!r}, "
                              "which has no images")
        if "num_classes" in known:
            from_data["num_classes"] = images.num_classes  # 0 (unconditional) for data without classes
        if missing := [name for name in from_data if name not in known]:   # said as the Config's, not the user's, keys
            raise ConfigError(f"family {family!r}: expected its Config to have a field {missing[0]}, which edgegen fills "
                              f"from the data ({missing[0]}={from_data[missing[0]]!r} here), found none")
        started = dataclasses.asdict(start.config) if start is not None else {}
        if start is not None:   # statistics the start's weights hold (a RealNVP's standardization buffers): its own
            from_data = {k: v for k, v in from_data.items() if k not in getattr(module, "KEPT_FROM_INIT", ())}
        try:
            config = make_config(family, {**started, **from_data, **model_options})
        except ConfigError as exc:   # a given option at odds with the start's others: said as the option's
            if start is None or not (changed := _changed_options(start, options_given, family)):
                raise
            raise ConfigError(f"--init {str(init)!r}: expected options that fit the checkpoint's architecture, found "
                              f"{', '.join(changed)}, which its other settings do not take ({exc}): leave out the options "
                              "that change them") from None
        fingerprint = data_fingerprint(images)
        if stopped is not None:   # before the build: a changed folder is said before the model is made
            refuse_another_run(stopped, saved_config(config), fingerprint, data, start and start.weights_sha256)
        _refuse_a_model_training_cannot_hold(module, config, family)
        torch.manual_seed(seed)
        model = module.build(config)
        if start is not None:   # before the trainer, whose copies (an EMA's live twin) start from these weights
            shape_given = {field: value for field, value in (("image_channels", given_channels), ("image_size", given_image_size))
                           if value is not None}
            _load_start(model, start, config, init, options_given, data, shape_given)
        model.train()
        trainer = module.Trainer(model, lr, total_steps=steps)
        if start is not None:   # and after it: a trainer that sets weights of its own (a ControlNet's start) is overruled,
            model.load_state_dict(start.model.state_dict())   # and one that sets them from data (Glow's ActNorm) told
            getattr(trainer, "start_from_trained", lambda: None)()

        # --force over a stopped run: its state stays until this run's first replaces it (this one may fail first)
        resumed = [*stopped.about["resumed"], stopped.about["step"]] if stopped is not None else []
        saver = StateSaver(resume_path(out), {"family": family, "arguments": arguments, "overwrite": overwrite,
                                              "config": saved_config(config), "data_sha256": fingerprint,
                                              "init_sha256": start and start.weights_sha256, "steps": steps,
                                              "save_every": save_every, "resumed": resumed}, model, trainer, save_every,
                           saved_step=stopped.about["step"] if stopped is not None else None)
        done, averages, seconds_before, first = 0, {}, 0.0, {}
        if stopped is not None:
            restore_state(stopped, model, trainer)
            say_other_conditions(stopped)
            done, averages, seconds_before = stopped.about["step"], stopped.about["averages"], stopped.about["seconds"]
            first = stopped.about["first_losses"]
        train_set = torch.from_numpy(images.train)
        if module.DATA_RANGE is not None:  # images in [0, 1] -> the model's range; token ids stay as they are
            low, high = module.DATA_RANGE
            train_set = train_set * (high - low) + low
        train_labels = torch.from_numpy(images.train_labels) if images.train_labels is not None else None
        batch_size = min(batch_size, len(train_set))   # a batch bigger than the data is the whole of it
        # the batches a stopped run drew are drawn again and passed: the order goes on as it would have
        batches = itertools.islice(_batch_indices(len(train_set), batch_size, steps, seed), done, None)
        began = time.perf_counter()
        with Progress(steps, f"train {family}", enabled=progress) as bar, StopBetweenSteps() as stop:
            bar.update(done)
            for step, index in enumerate(batches, done + 1):
                losses = _step(trainer, model, step, lr, train_set[index],
                               train_labels[index] if train_labels is not None else None)
                # Exponential moving averages: a readable trend rather than per-batch noise.
                averages = {k: v if k not in averages else 0.95 * averages[k] + 0.05 * v for k, v in losses.items()}
                first.update({k: v for k, v in losses.items() if k not in first})   # a later stage's, when it starts
                bar.update(1, " ".join(f"{k}={v:.3f}" for k, v in averages.items()))
                if step == steps:   # a stop asked in the last step: delivered once the checkpoint is written
                    break
                asked = stop.asked   # read once: one arriving between two reads stopped the run unsaved (review 163)
                if asked or saver.due(step):
                    _require_finite_weights(model, step, lr)   # a state worth going on from
                    saver.save(step, averages, first, seconds_before + time.perf_counter() - began)
                if asked:
                    saver.said_stopped(step, out)
                    stop.stop()
        _require_finite_weights(model, steps, lr)   # the last update is checked too, before anything is written
        _refuse_exploded_losses(first, averages, steps, lr)
        model.eval()
        training = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                    "seconds": round(seconds_before + time.perf_counter() - began, 1), "final_losses": averages,
                    **({"resumed_after_steps": resumed} if resumed else {})}
        if start is not None:
            training["init"] = {"checkpoint": _said(init), "weights_sha256": start.weights_sha256,
                                "steps": start.training.get("steps"), "data": start.data.get("source", "digits")}
        data_info = {**images.describe(), "seed": seed}
        if data not in declared.builtin_data:   # a path: recorded whole, so export finds it from anywhere
            data_info["source"] = str(Path(data).resolve())
        written = save_checkpoint(out, family, config, model, data_info, training, overwrite=overwrite, reads=reads,
                                  lock_held=True)
        saver.remove()
    if stop.asked:   # Ctrl-C in the last step: the run is done, and the caller (a loop of trainings) stops
        stop.stop()
    return written


def _starting_checkpoint(init, family: str):
    """The checkpoint `init` names (a path, or a shipped model's name), refused unless it is the
    family's; None without one."""
    if init is None:
        return None
    refuse_empty(init, "--init")
    path = checkpoint_named(init)
    if not os.path.exists(path):
        raise CheckpointError(f"--init {str(init)!r}: expected a checkpoint folder (edgegen train writes one) or a "
                              f"shipped model's name, found nothing at that path" + shipped_hint(init))
    if os.path.exists(init) and is_shipped_name(init):   # the path wins, as everywhere: said, not silent
        warnings.warn(f"--init {str(init)!r}: the folder of that name here, not the shipped model (give the name from "
                      "another folder to start from the shipped one)", EdgegenWarning, stacklevel=3)
    start = load_checkpoint(path)
    if start.family != family:
        raise ConfigError(f"--init {str(init)!r}: expected a {family} checkpoint to start 'edgegen train {family}' from, "
                          f"found a {start.family} one")
    return start


def _data_of(start, init) -> str:
    """The data the starting checkpoint was trained on, where --data gives none; refused where it is gone."""
    source, gone = data_trained_on(start.data, get_family(start.family).builtin_data)
    if gone:
        raise DataError(f"--init {str(init)!r}: expected the data it was trained on at {source!r}, found nothing at that "
                        "path (moved or deleted?): give --data its new place, or other data to fine-tune on")
    return source


def _said(init) -> str:
    """`init` as the checkpoint records it: a shipped model's name as such, a path whole."""
    return str(init) if names_shipped_model(init) else str(Path(init).resolve())


def _options_of(start, family: str, given: dict) -> dict:
    """The family's training options (and latent_dim) as the starting checkpoint's config has them,
    but those `given`; an option recorded as a path (a ControlNet's base) that is gone is refused,
    not replaced by the family's default (another base model, without a word)."""
    options = {"latent_dim": getattr(start.config, "latent_dim")} if hasattr(start.config, "latent_dim") else {}
    for option in get_family(family).train_options:
        value = getattr(start.config, option.recorded_as or option.keyword, None)
        if value is None or option.keyword in given:
            continue
        if option.recorded_as and not os.path.exists(value):
            value = _shipped_in_its_place(start, option, value)
        options[option.keyword] = value
    return options


def _shipped_in_its_place(start, option, recorded: str) -> str:
    """A recorded path that is gone: the shipped checkpoint of its name (the checkpoints edgegen
    ships record the folder they were built from; a user's of such a name is told so), else
    refused, naming the flag to give it by."""
    flag = option.flag
    if is_shipped_name(name := Path(recorded).name):
        if Path(start.path).resolve().parent != checkpoints_dir().resolve():   # not a shipped one's record
            warnings.warn(f"--init {str(start.path)!r}: its {flag} checkpoint {recorded!r} is gone: the shipped {name} "
                          f"taken in its place (give {flag} to take another)", EdgegenWarning, stacklevel=3)
        return name
    raise ConfigError(f"--init {str(start.path)!r}: expected its {flag} checkpoint at {recorded!r}, as its config "
                      f"records, found nothing at that path (moved or deleted?): give its new place with {flag}")


def _changed_options(start, options: dict, family: str) -> list[str]:
    """The options given that differ from the starting checkpoint's ("architecture 'llama' -> 'gpt2'"),
    a path recorded as its config's field (a ControlNet's --base) compared as the path it names."""
    fields = {option.keyword: option.recorded_as for option in get_family(family).train_options if option.recorded_as}
    changed = []
    for name, value in options.items():
        had = getattr(start.config, fields.get(name, name), None)
        now = str(Path(checkpoint_named(value)).resolve()) if name in fields else value
        if had is not None and had != now:
            changed.append(f"{'--' + name if name in fields else name} {had!r} -> {value!r}")
    return changed


def _prepared(family: str, returned, classes: bool) -> tuple:
    """A family's prepare_data result, checked before training rather than where the run ends
    (describe() is first read when the checkpoint is written: review 172 lost its training there)."""
    if problem := _preparation_problem(returned, classes):
        raise ConfigError(f"family {family!r}: expected its prepare_data to return (data, {{Config field: value the "
                          "data sets}}), data with train and test arrays [examples, ...], train_labels (None or "
                          f"class ids){', num_classes' if classes else ''} and describe() -> dict, as "
                          "edgegen.training.data.ImageData has (docs/adding-a-family.md, section 1), found "
                          f"{problem}")
    return returned


def _preparation_problem(returned, classes: bool) -> str | None:
    if not (isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], dict)):
        inside = f" ({', '.join(type(item).__name__ for item in returned)})" if isinstance(returned, tuple) else ""
        return f"{type(returned).__name__}{inside}"
    data = returned[0]
    kind = type(data).__name__
    for name in ("train", "test"):
        array = getattr(data, name, None)
        if not (isinstance(array, np.ndarray) and array.ndim >= 2 and len(array)):
            shape = f" of shape {list(array.shape)}" if isinstance(array, np.ndarray) else ""
            return f"{kind}, whose {name} is {type(array).__name__}{shape}"
    for name in ("train_labels", *(("num_classes",) if classes else ())):
        if not hasattr(data, name):
            return f"{kind}, without {name}"
    described = data.describe() if callable(getattr(data, "describe", None)) else None
    return None if isinstance(described, dict) else f"{kind}, whose describe() gives {type(described).__name__}"


def _say_classes_renamed(init, had: list[str] | None, has: list[str] | None) -> None:
    """A start whose classes, as many as the data's, have other names (a cgan of shapes fine-tuned on
    a folder of fruit): each class id's embedding takes the new class, said id by id (helper 158)."""
    if had != has:
        pairs = [f"{i}: {had[i] if had else i} -> {has[i] if has else i}" for i in range(len(had or has))]
        warnings.warn(f"--init {str(init)!r}: its classes become the data's, id by id ({'; '.join(pairs[:6])}"
                      f"{'; ...' if len(pairs) > 6 else ''}): each class's embedding starts from the one it replaces",
                      EdgegenWarning, stacklevel=3)


def _refuse_other_classes(init, had: int, has: int) -> None:
    """Data whose classes are not the starting checkpoint's: the data's doing, not an option's."""
    if had != has:
        why = (" (a folder's pictures have classes only in subfolders, audio none): fine-tune it on its own kind of data, or start from "
               "an unconditional checkpoint of the family") if had and not has else ": fine-tune it on data of its kind"
        raise ConfigError(f"--init {str(init)!r}: expected data with the checkpoint's classes ({had or 'none'}), found "
                          f"data with {has or 'none'}{why}")


def _say_default_size_below_pictures(family: str, images, image_size: int) -> None:
    """A folder of pictures twice the family's default size or more, trained at that default: said,
    since 32-pixel photographs trained an 8x8 diffusion model without a word (helper 150)."""
    if images.least_side is not None and images.least_side >= 2 * image_size:
        warnings.warn(f"--data {images.name!r}: training at {image_size}x{image_size} pixels, the {family} family's "
                      f"default, where the folder's pictures are {images.least_side} pixels or more on their short side: "
                      "give --image-size to train at a larger size (slower, more memory)", EdgegenWarning, stacklevel=3)


def _say_grey_pictures_trained_as_colour(images) -> None:
    """A folder whose every picture is grey, trained in colour (a folder's default): said, since
    three equal channels cost three times the data and the first layer's weights for the same
    pictures (helper 150)."""
    if images.least_side is None or images.shape[0] != 3:
        return
    if all_grey(images.train) and all_grey(images.test):
        warnings.warn(f"--data {images.name!r}: every picture is grey, trained as colour (3 equal channels, a folder's "
                      "default): give --channels 1 to train on them as grey", EdgegenWarning, stacklevel=3)


SHAPE_FLAGS = {"image_channels": "--channels", "image_size": "--image-size"}   # train's own, by the config field


def _load_start(model, start, config, init, options_given: dict, data: str, shape_given: dict) -> None:
    """The starting checkpoint's weights into `model`, refused where they do not fit it, naming
    the settings this run changed: the options given (`shape_given`: --channels and --image-size by
    their config fields), or else what the data gives (its classes, points where the checkpoint's
    model took images)."""
    have, want = start.model.state_dict(), model.state_dict()
    unfit = [f"{name} {list(have[name].shape)} where this run's model has {list(want[name].shape)}"
             for name in want if name in have and have[name].shape != want[name].shape]
    unfit += [f"{name} (none in the checkpoint)" for name in want if name not in have]
    unfit += [f"{name} (none in this run's model)" for name in have if name not in want]
    if unfit:
        differing = [f.name for f in dataclasses.fields(config)   # settings, not statistics
                     if getattr(start.config, f.name, None) != getattr(config, f.name)
                     and not isinstance(getattr(config, f.name), (list, tuple, dict))]
        changed = [f"{name} {getattr(start.config, name)!r} -> {getattr(config, name)!r}" for name in differing]
        _refuse_other_classes(init, getattr(start.config, "num_classes", 0), getattr(config, "num_classes", 0))
        given = _changed_options(start, options_given, start.family) + [
            f"{SHAPE_FLAGS[name]} {getattr(start.config, name)!r} -> {value!r}" for name, value in shape_given.items()
            if getattr(start.config, name, value) != value]
        # the data's doing where a setting no option given names differs (Glow's kind, given points),
        # unless a base given sets the model's shape (a ControlNet's --base: its size and channels)
        base_given = getattr(family_module(start.family), "SHAPE_FROM_BASE", False) and any(
            option.recorded_as and option.keyword in options_given for option in get_family(start.family).train_options)
        from_data = [] if base_given else [name for name in differing if name not in {**options_given, **shape_given}]
        why = (f"the options given change {', '.join(given)}: leave out the options that change them"
               if given and not from_data else
               f"the data, {data!r}, changes {', '.join(changed) or 'none'}: give data of the checkpoint's kind (its "
               f"classes, its channels; {start.data.get('source', 'digits')!r} trained it)")
        raise ConfigError(f"--init {str(init)!r}: expected weights that fit the model this run builds, found "
                          f"{len(unfit)} that do not ({'; '.join(unfit[:2])}); {why}")
    model.load_state_dict(have)


TRAINING_BYTES_PER_PARAMETER = 16   # float32 weights, their gradients and Adam's two moments


def _refuse_a_model_training_cannot_hold(module, config, family: str) -> None:
    """A config whose model training could not hold in memory (--latent-dim 100000000: 800 GB of
    weights) is refused, naming its sizes, before torch's allocation fails with a traceback or the
    system kills the process. The parameters are counted on torch's meta device, which allocates
    nothing; a model that cannot be built there is left to build for real."""
    try:
        with torch.device("meta"):
            parameters = list(module.build(config).parameters())
    except Exception:  # noqa: BLE001 - a build that needs real tensors: no estimate, the build itself decides
        return
    # a frozen weight (an EMA copy, a ControlNet's base) has no gradient or Adam moments
    need = sum(p.numel() * (TRAINING_BYTES_PER_PARAMETER if p.requires_grad else 4) for p in parameters)
    available = _available_memory()
    if available is not None and need > available:
        sizes = ", ".join(f"{f.name} {getattr(config, f.name)}" for f in dataclasses.fields(config)
                          if isinstance(getattr(config, f.name), int) and not isinstance(getattr(config, f.name), bool))
        raise ConfigError(f"{family} config: expected a model whose training fits in the {available / 1e9:.1f} GB of "
                          f"memory available, found {sum(p.numel() for p in parameters):,} parameters, about "
                          f"{need / 1e9:.1f} GB with the gradients and Adam's moments of those trained ({sizes})")


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation: Linux's MemAvailable, or what a container's
    memory limit leaves where that is less; None where neither is known."""
    known = [cgroup_memory_left()]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            known += [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    return min((k for k in known if k is not None), default=None)


def _step(trainer, model, step: int, lr: float, x, labels) -> dict[str, float]:
    """One optimizer step; a diverged run (a loss or a weight no longer finite) is a TrainingError,
    before any checkpoint is written, so that it never replaces a good one."""
    try:
        losses = trainer.step(x, labels)
    except RuntimeError:
        _require_finite_weights(model, step, lr)   # a failure of diverged weights is named so; any other stays
        raise
    except ValueError as exc:
        if "Expected more than 1 value per channel when training" not in str(exc):
            raise
        # a batch of one picture through a batch norm of a 1x1 feature map (GAN, VAE at --image-size 8)
        raise ConfigError(f"training: expected a batch of 2 or more, found a batch of {len(x)} reaching a batch "
                          "normalization with one value per channel (a 1x1 feature map): give 3 or more pictures (one "
                          "is held out) and a --batch-size of 2 or more, or a larger --image-size; no checkpoint "
                          "written") from None
    if step == 1:   # the trainer's code is the same every step: judged once, not in the loop's every turn
        _refuse_losses_not_numbers(trainer, losses)
    diverged = sorted(k for k, v in losses.items() if not math.isfinite(v))
    if diverged:
        raise TrainingError(f"training: expected finite losses, found {', '.join(diverged)} = nan or inf at step {step} "
                            f"(the run diverged: try a smaller --lr than {lr:g}); no checkpoint written")
    return losses


def _said_as_the_option(exc: ConfigError, fields: dict) -> ConfigError:
    """A config refusal that names a field an option given set ({field: (flag, value or None)}),
    led by that option: the field's name alone is no flag the user knows."""
    for field, (flag, value) in fields.items():
        if value is not None and field in str(exc):
            return ConfigError(f"{flag} {value}: {exc}")
    return exc


def _refuse_losses_not_numbers(trainer, losses) -> None:
    """A Trainer.step that returns other than {name: float} (a loss tensor, which the checkpoint's
    JSON cannot hold) is its author's to mend: said at its first step, not after the whole run."""
    if isinstance(losses, dict) and all(isinstance(k, str) and isinstance(v, (float, int)) for k, v in losses.items()):
        return
    found = (", ".join(f"{k}: {type(v).__name__}" for k, v in losses.items()) if isinstance(losses, dict) else
             f"a {type(losses).__name__}")
    raise ConfigError(f"{type(trainer).__module__}.{type(trainer).__name__}.step: expected a dict of Python floats, loss "
                      f"name to value (loss.item()), found {found}")


EXPLODED = 1e6   # a loss this many times its first value (or 1) at the end: diverged, though still finite


def _refuse_exploded_losses(first: dict, averages: dict, steps: int, lr: float) -> None:
    """A run whose losses grew a million-fold and stayed finite (a GAN at --lr 1000 ended at 7e18)
    diverged as surely as one that reached NaN: refused, before a checkpoint replaces a good one."""
    exploded = sorted(k for k, v in averages.items() if abs(v) > EXPLODED * max(1.0, abs(first.get(k, 0.0))))
    if exploded:
        said = ", ".join(f"{k} {first.get(k, 0.0):.3g} -> {averages[k]:.3g}" for k in exploded)
        raise TrainingError(f"training: expected losses that did not explode, found {said} (a moving average) after "
                            f"step {steps} (the run diverged: try a smaller --lr than {lr:g}); no checkpoint written")


def _require_finite_weights(model, step: int, lr: float) -> None:
    bad = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise TrainingError(f"training: expected finite weights, found {bad} holding nan or inf after step {step} "
                            f"(the run diverged: try a smaller --lr than {lr:g}); no checkpoint written")


def _batch_indices(n: int, batch_size: int, steps: int, seed: int):
    """Shuffled epochs of indices, cut into `steps` batches (the last partial batch of an epoch is dropped)."""
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, n)
    produced = 0
    while produced < steps:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            if produced == steps:
                return
            yield torch.from_numpy(order[i:i + batch_size])
            produced += 1
