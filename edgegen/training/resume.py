"""Going on with a stopped training (`edgegen train --resume`).

A run's whole state (its model, its trainer's optimizers, schedules, counters and random
generators, torch's generator, its step) is written beside --out as OUT.resume every few minutes
and when the run is stopped (Ctrl-C, SIGTERM: the step under way is finished first), and read
back, so that a resumed run ends with the weights the run would have had unstopped (on the same
machine, with the same torch threads). The file is torch.save's, read with weights_only=True:
tensors, numbers and strings, never code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError, ConfigError, DataError, EdgegenWarning, OutputExistsError
from ..storage import atomic_write_with, file_kind

RESUME_FORMAT = "edgegen.resume/1"
SAVE_EVERY_S = 600.0   # by default a crash or a power cut loses at most ten minutes of training
NESTED_DEPTH = 2       # a trainer's helpers (an EMA's update count) are read this deep


def resume_path(out: str | os.PathLike) -> Path:
    """Where the state of a training of `out` lies: OUT.resume beside it."""
    out = Path(os.path.abspath(out))
    return out.with_name(out.name + ".resume")


@dataclasses.dataclass
class Stopped:
    """A stopped training's state, as read back: `about` (JSON: the family, the arguments, the
    config, the data's fingerprint, the step) and `state` (the tensors)."""
    path: Path
    about: dict
    state: dict


def run_arguments(out, family: str, given: dict, resume: bool, overwrite: bool, defaults: dict, flags: dict,
                  builtin: tuple[str, ...]) -> tuple[Stopped | None, dict, bool]:
    """(the stopped run a resume goes on with, or None; the arguments this run takes and records;
    whether it may replace `out`). A resume takes the stopped run's: those given are refused where
    they differ (a new --lr), but for --data, whose fingerprint is checked once it loads (the folder
    moved, or the default named)."""
    if resume and overwrite:
        raise ConfigError("--resume: expected either it (go on with the stopped training) or --force (start over), "
                          "found both")
    if not resume:
        return None, {k: recorded(v, builtin) for k, v in given.items()}, overwrite
    stopped = read_stopped(out, family)
    arguments = dict(stopped.about["arguments"])

    def differs(name, value) -> bool:   # one left out then, of a default not known here (--image-size): taken,
        had = arguments.get(name)       # and the config's and the data's checks decide once they are built
        if had is None and name not in defaults:
            arguments[name] = recorded(value, builtin)
            return False
        return recorded(value, builtin) != recorded(defaults.get(name) if had is None else had, builtin)

    def said(name, value) -> str:
        had = arguments.get(name)
        was = f"was given {had!r}" if had is not None else f"had the default, {defaults[name]!r}"
        return f"{flags.get(name, '--' + name.replace('_', '-'))} {value!r} where it {was}"

    differing = [said(name, value) for name, value in given.items()
                 if value is not None and name != "data" and differs(name, value)]
    if differing:
        raise ConfigError(f"--resume: expected the options of the stopped training, or none of them, found "
                          f"{'; '.join(differing)} ({str(stopped.path)!r}): leave them out to go on with it")
    if given.get("data") is not None:
        arguments["data"] = recorded(given["data"], builtin)
    return stopped, arguments, stopped.about["overwrite"]


def read_stopped(out, family: str) -> Stopped:
    """The state a stopped training of `out` left, refused where there is none, it is unreadable, or
    it is another family's."""
    path = resume_path(out)
    if not path.exists():
        finished = " (it holds a checkpoint: the training finished)" if Path(out, "config.json").is_file() else ""
        raise CheckpointError(f"--resume: expected the state of a stopped training of {str(out)!r} at {str(path)!r} "
                              f"(a training writes it every 10 minutes, or as --save-every says, and when stopped), found "
                              f"nothing there{finished}")
    stopped = _read(path)
    if stopped.about["family"] != family:
        raise ConfigError(f"--resume: expected a stopped {family} training at {str(path)!r}, found a "
                          f"{stopped.about['family']} one: give 'edgegen train {stopped.about['family']}'")
    return stopped


def _read(path: Path, what: str = "--resume",
          advice: str = "move it away to train anew (--force replaces only a state that reads)") -> Stopped:
    """The state at `path`, or a CheckpointError that says it as `what`'s, with `advice`."""
    if (kind := file_kind(path)) not in (None, "a file"):
        raise CheckpointError(f"{what}: expected the state a stopped training wrote at {str(path)!r} (a file), found "
                              f"{kind}: {advice}")
    # torch.load's own words for a file that is not a zip archive speak of torch.save's options (the
    # format edgegen writes is one), and for one this user may not read give only the error's name
    try:
        with open(path, "rb") as file:
            archive = zipfile.is_zipfile(file)
    except OSError as exc:
        raise CheckpointError(f"{what}: expected the state a stopped training wrote at {str(path)!r}, found a file "
                              f"this user cannot read ({exc.strerror or exc}): {advice}") from None
    if not archive:
        raise CheckpointError(f"{what}: expected the state a stopped training wrote at {str(path)!r} "
                              f"({RESUME_FORMAT}), found a file that does not read as one (not a whole zip archive: cut short, "
                              f"or another kind of file): {advice}")
    try:   # mmap: a state of gigabytes is read as it is used, not copied whole first
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        about = json.loads(state.pop("about"))
        if about.get("format") != RESUME_FORMAT:
            raise ValueError(f"format {about.get('format')!r}")
    except Exception as exc:  # noqa: BLE001 - torch's and zipfile's many errors of a cut or foreign file
        raise CheckpointError(f"{what}: expected the state a stopped training wrote at {str(path)!r} "
                              f"({RESUME_FORMAT}), found a file that does not read as one ({type(exc).__name__}: "
                              f"{str(exc)[:200]}): {advice}") from None
    return Stopped(path, about, state)


def refuse_starting_over(out, overwrite: bool) -> None:
    """A new training of an `out` whose earlier training was stopped: refused unless `overwrite`,
    since starting over would replace the stopped one's state (hours of training, maybe)."""
    path = resume_path(out)
    if not os.path.lexists(path):
        return
    # what does not read as a stopped training's state (a file of the user's, a folder) is never
    # replaced: --force replaced it with this run's state, or deleted it when the run ended (review 166)
    try:
        about = _read(path, f"output {str(out)!r}", "move it, or give another --out (edgegen replaces only a state "
                      "that reads as one)").about
    except CheckpointError as exc:
        raise OutputExistsError(str(exc)) from None
    if not overwrite:
        raise OutputExistsError(f"output {str(out)!r}: expected no stopped training of it, found one stopped after step "
                                f"{about['step']} of {about['steps']} ({str(path)!r}): give --resume to go on with it, "
                                "or --force to start over (its state stays until the new training writes its own)")


def recorded(value, builtin: tuple[str, ...]):
    """An argument as the state records it: a path that exists made absolute (a resume may run from
    another folder), a built-in data set's or shipped model's name as given; JSON's own types."""
    if isinstance(value, (str, os.PathLike)) and str(value) not in builtin and os.path.exists(value):
        value = str(Path(value).resolve())
    return json.loads(json.dumps(value, default=str))


def data_fingerprint(images) -> str:
    """The sha256 of what training draws batches from (its examples and labels): a folder changed
    since the run stopped is told from the one it trained on. Hashed in place (a copy of a large
    folder's pictures is hundreds of MB more at the peak, on a Jetson too)."""
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(images.train)).cast("B"))
    if images.train_labels is not None:
        digest.update(memoryview(np.ascontiguousarray(images.train_labels)).cast("B"))
    return digest.hexdigest()


def refuse_another_run(stopped: Stopped, config: dict, fingerprint: str, data: str, init_sha256: str | None) -> None:
    """The run rebuilt from the recorded arguments differs from the stopped one: its data changed
    (pictures added to the folder), its --init checkpoint was trained again, or this edgegen builds
    another config from them."""
    if fingerprint != stopped.about["data_sha256"]:
        raise DataError(f"--resume: expected the data the stopped training drew from, found other data in {data!r} (its "
                        f"sha256 differs; {str(stopped.path)!r}): put the data back as it was, give --data its new "
                        "place, or train anew with --force")
    if init_sha256 != stopped.about["init_sha256"]:
        raise CheckpointError(f"--resume: expected the --init checkpoint the stopped training started from, found "
                              f"{stopped.about['arguments'].get('init')!r} changed since (its weights' sha256 differs): "
                              "put it back, or train anew with --force")
    had = stopped.about["config"]
    if config != had:
        changed = [f"{k} {had.get(k)!r} -> {config.get(k)!r}" for k in sorted({*had, *config}) if had.get(k) != config.get(k)]
        raise ConfigError(f"--resume: expected the model of the stopped training, found another from its options "
                          f"({', '.join(changed)}; it was written by edgegen {stopped.about['edgegen']}): train anew "
                          "with --force")


# -- the state --------------------------------------------------------------------------------------

def save_state(path: Path, about: dict, model: torch.nn.Module, trainer) -> None:
    """The run's state at a step's end, written whole or not at all (a kill while it writes
    leaves the last one)."""
    state = {"about": json.dumps({"format": RESUME_FORMAT, "edgegen": __version__, "torch": torch.__version__,
                                  "torch_threads": torch.get_num_threads(), **about}),
             "model": model.state_dict(),
             "frozen": [name for name, p in model.named_parameters() if not p.requires_grad],
             "evaluating": [name for name, m in model.named_modules() if not m.training],
             "trainer": trainer.state_dict() if callable(getattr(trainer, "state_dict", None))
             else _attributes(trainer, _held_by(model), NESTED_DEPTH),
             "torch_rng": torch.get_rng_state()}
    atomic_write_with(path, lambda f: torch.save(state, f))


def restore_state(stopped: Stopped, model: torch.nn.Module, trainer) -> None:
    """The stopped run's model and trainer put back, and torch's generator where it was."""
    state = stopped.state
    try:
        model.load_state_dict(state["model"])
        frozen, evaluating = set(state["frozen"]), set(state["evaluating"])
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        for name, m in model.named_modules():
            m.train(name not in evaluating)
        if callable(getattr(trainer, "load_state_dict", None)):
            trainer.load_state_dict(state["trainer"])
        else:   # the same state the trainer holds now, name for name (an older trainer's lacked some)
            if (had := _layout(state["trainer"])) != (has := _layout(_attributes(trainer, _held_by(model), NESTED_DEPTH))):
                raise ValueError(f"its trainer held {', '.join(sorted(set(had) - set(has))) or 'nothing more'}, this "
                                 f"one holds {', '.join(sorted(set(has) - set(had))) or 'nothing more'}")
            _restore_attributes(trainer, state["trainer"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"--resume: expected a state that fits this edgegen's {stopped.about['family']} trainer, "
                              f"found one written by edgegen {stopped.about['edgegen']} that does not ({type(exc).__name__}: "
                              f"{str(exc)[:200]}): train anew with --force") from None


def say_other_conditions(stopped: Stopped) -> None:
    """A resume with other torch threads or another torch than the stopped run's: said, since sums
    in another order make weights that differ slightly from an unstopped run's (docs/cli.md, the seed)."""
    had, has = stopped.about.get("torch_threads"), torch.get_num_threads()
    if had != has:
        warnings.warn(f"--resume: going on with {has} torch threads where the stopped run had {had}: the weights will "
                      f"differ slightly from an unstopped run's (set OMP_NUM_THREADS={had} to match)", EdgegenWarning,
                      stacklevel=3)
    if stopped.about["torch"] != torch.__version__:
        warnings.warn(f"--resume: going on with torch {torch.__version__} where the stopped run had "
                      f"{stopped.about['torch']}: the weights may differ slightly from an unstopped run's", EdgegenWarning,
                      stacklevel=3)


def _held_by(model: torch.nn.Module) -> set[int]:
    return {id(t) for t in [*model.parameters(), *model.buffers()]}


def _layout(state: dict, prefix: str = "") -> dict[str, str]:
    """{dotted attribute name: kind} of an _attributes state."""
    layout = {}
    for name, (kind, saved) in state.items():
        layout[prefix + name] = kind
        if kind == "attributes":
            layout.update(_layout(saved, f"{prefix}{name}."))
    return layout


def _attributes(owner, model_tensors: set[int], depth: int, seen: set[int] | None = None) -> dict:
    """A trainer's state that its attributes hold (a trainer without state_dict()): optimizers and
    schedules (their state_dict), counters and flags, numpy's and torch's generators, tensors, and
    the same of plain helper objects (an EMA's update count), each object once however many names
    reach it. Modules the model holds are its state's; functions and what else a trainer keeps (a
    base's weights it read) are left."""
    seen = set() if seen is None else seen
    state = {}
    for name, value in vars(owner).items():
        if not isinstance(value, (bool, int, float, str, type(None))):
            if id(value) in seen:   # text2image's denoiser is its `live`, `trained` and `ema.source`
                continue
            seen.add(id(value))
        if isinstance(value, torch.nn.Module):
            held = [id(t) in model_tensors for t in [*value.parameters(), *value.buffers()]]
            if not all(held):   # a module of the trainer's own, outside the model
                state[name] = ("state_dict", value.state_dict())
        elif value is None or isinstance(value, (bool, int, float, str)):
            state[name] = ("value", value)
        elif isinstance(value, torch.Tensor):
            state[name] = ("value", value.detach().clone())
        elif isinstance(value, np.random.Generator):
            state[name] = ("numpy_generator", value.bit_generator.state)
        elif isinstance(value, torch.Generator):
            state[name] = ("torch_generator", value.get_state())
        elif callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None)):
            state[name] = ("state_dict", value.state_dict())
        elif depth > 0 and hasattr(value, "__dict__") and not callable(value) and not isinstance(value, type):
            state[name] = ("attributes", _attributes(value, model_tensors, depth - 1, seen))
    return state


def _restore_attributes(owner, state: dict) -> None:
    for name, (kind, saved) in state.items():
        value = getattr(owner, name)
        if kind == "value":
            if isinstance(value, torch.Tensor):
                value.copy_(saved)
            elif value != saved:   # unchanged values are not set again (a frozen dataclass's)
                setattr(owner, name, saved)
        elif kind == "numpy_generator":
            value.bit_generator.state = saved
        elif kind == "torch_generator":
            value.set_state(saved)
        elif kind == "state_dict":
            value.load_state_dict(saved)
        else:
            _restore_attributes(value, saved)


class StateSaver:
    """Saves a run's state every `every` steps (None: every SAVE_EVERY_S seconds) and when it is
    stopped; removes it once the checkpoint is written. `saved_step`: the step of the state of
    this run on disk (a resumed run's: the step it stopped at), or None."""

    def __init__(self, path: Path, about: dict, model, trainer, every: int | None, saved_step: int | None = None):
        self.path, self.about, self.model, self.trainer, self.every = path, about, model, trainer, every
        self.last, self.saved_step, self.failing = time.monotonic(), saved_step, False

    def save(self, step: int, averages: dict, first: dict, seconds: float) -> None:
        """A state that cannot be written (a full disk) is said once, and the training goes on: the
        state written before stays whole, and the checkpoint at the end is what it is for (a full
        disk's is said then, as an error)."""
        try:
            save_state(self.path, {**self.about, "step": step, "averages": averages, "first_losses": first,
                                   "seconds": seconds}, self.model, self.trainer)
            self.saved_step, self.failing = step, False
        except OSError as exc:
            if not self.failing:
                kept = (f"its state after step {self.saved_step} stays there" if self.saved_step is not None
                        else f"no state of it is there to go on from{self._earlier()}")
                warnings.warn(f"training state after step {step}: expected to write it at {str(self.path)!r}, found the "
                              f"system refusing ({exc.strerror or exc}): the training goes on, and {kept}",
                              EdgegenWarning, stacklevel=3)
            self.failing = True
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every is not None:
            return step % self.every == 0
        return time.monotonic() - self.last >= SAVE_EVERY_S

    def said_stopped(self, step: int, out) -> None:
        family, steps = self.about["family"], self.about["steps"]
        if self.saved_step is None:
            warnings.warn(f"training stopped after step {step} of {steps}: no state of it could be written at "
                          f"{str(self.path)!r}, so it cannot go on{self._earlier()}", EdgegenWarning, stacklevel=3)
            return
        state = "its state" if self.saved_step == step else f"its state after step {self.saved_step} (the last written)"
        warnings.warn(f"training stopped after step {step} of {steps}: {state} is in {str(self.path)!r}; "
                      f"'edgegen train {family} --out {shlex.quote(str(out))} --resume' goes on from there "
                      "(train(..., resume=True) in Python)", EdgegenWarning, stacklevel=3)

    def _earlier(self) -> str:
        """Where this run (started with --force over a stopped one) wrote no state: the stopped one's,
        still there, is what --resume would go on with."""
        return (" (the state there is the earlier training's, stopped before this one started over: --resume goes on "
                "with that)") if self.path.exists() else ""

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class StopBetweenSteps:
    """Ctrl-C and SIGTERM held while a step runs, so that a stopped run's state is a whole step's
    (one arriving within an optimizer's update would leave half the weights updated): `asked` says
    one came; `stop()` then delivers it as it would have been (KeyboardInterrupt, the command's
    own handling of SIGTERM). A second one stops at once, within the step. Outside the main thread
    signals never reach Python code, and nothing is held."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "StopBetweenSteps":
        self.asked: int | None = None
        self.handlers: dict[int, object] = {}
        for signum in self.SIGNALS:
            try:
                handler = signal.getsignal(signum)
                if handler in (signal.SIG_IGN, None):   # ignored (a worker's Ctrl-C, its parent's to handle)
                    continue
                signal.signal(signum, self._note)
            except ValueError:   # not the main thread
                break
            self.handlers[signum] = handler
        return self

    def _note(self, signum, frame) -> None:
        if self.asked is not None:
            self._restore()
            self._deliver(signum, frame)
        self.asked = signum

    def stop(self) -> None:
        self._restore()
        self._deliver(self.asked, None)

    def _deliver(self, signum: int, frame) -> None:
        handler = self.handlers.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)   # the system's own end of the process (SIGTERM's)
        raise KeyboardInterrupt   # a handler that returned: the run is stopped all the same

    def _restore(self) -> None:
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)

    def __exit__(self, *exc) -> None:
        self._restore()
