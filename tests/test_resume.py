"""A stopped training goes on with `train --resume` and ends with the weights it would have had
unstopped: stopped by Ctrl-C (a real SIGINT, held until the step ends), by SIGTERM through the
command line, or by a crash after the last periodic state."""

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from edgegen.cli import main
from edgegen.errors import CheckpointError, ConfigError, DataError, EdgegenWarning, OutputExistsError, TrainingError
from edgegen.training import resume, train as training
from edgegen.training.common import torch_threads
from edgegen.training.resume import resume_path
from edgegen.training.train import train


class PowerCut(BaseException):
    """A crash no handler sees (a kill, a power cut): what is on disk is what the last save wrote."""


def weights(checkpoint) -> str:
    return hashlib.sha256((checkpoint / "weights.safetensors").read_bytes()).hexdigest()


def stop_at(monkeypatch, at: int, stop):
    """Training's steps, with `stop()` called as step `at` finishes its update."""
    real = training._step

    def step(trainer, model, number, lr, x, labels):
        losses = real(trainer, model, number, lr, x, labels)
        if number == at:
            stop()
        return losses

    monkeypatch.setattr(training, "_step", step)
    return real


def send(signum):
    return lambda: os.kill(os.getpid(), signum)


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C as Python handles it in a program (a test worker of pytest-xdist ignores it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


# vae: one optimizer; gan: two, an EMA's count, a step counter; sr: a numpy generator, stopped in its
# adversarial phase (the feature network frozen); glow: a first-batch flag; ldm: stopped in the
# autoencoder's stage, resumed across the switch (the autoencoder frozen, its latent scale measured)
FAMILIES = {
    "vae": {"batch_size": 8},
    "gan": {"batch_size": 8},
    "sr": {"batch_size": 2, "width": 8, "body_convs": 1, "scale": 2, "pixel_fraction": 0.25, "feature_steps": 1},
    "flow": {"batch_size": 8, "kind": "glow"},
    "ldm": {"batch_size": 8},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_run_stopped_by_ctrl_c_resumes_to_the_weights_it_would_have_had(family, tmp_path, monkeypatch):
    options = FAMILIES[family]
    straight = train(family, tmp_path / "straight", steps=8, progress=False, **options)
    real = stop_at(monkeypatch, 5, send(signal.SIGINT))
    with pytest.warns(EdgegenWarning, match="training stopped after step 5 of 8: its state is in .*--resume"):
        with pytest.raises(KeyboardInterrupt):
            train(family, tmp_path / "stopped", steps=8, progress=False, **options)
    assert not (tmp_path / "stopped").exists() and resume_path(tmp_path / "stopped").exists()
    monkeypatch.setattr(training, "_step", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)   # the same threads: nothing to say
        resumed = train(family, tmp_path / "stopped", resume=True, progress=False)   # its options from the state
    assert weights(resumed) == weights(straight)
    assert not resume_path(resumed).exists()


def test_a_crash_resumes_from_the_last_periodic_state(tmp_path, monkeypatch):
    straight = train("gan", tmp_path / "straight", steps=9, batch_size=8, progress=False)

    def crash():
        raise PowerCut()

    real = stop_at(monkeypatch, 7, crash)
    with pytest.raises(PowerCut):
        train("gan", tmp_path / "cut", steps=9, batch_size=8, progress=False, save_every=3)
    monkeypatch.setattr(training, "_step", real)
    from edgegen.training.resume import read_stopped

    assert read_stopped(tmp_path / "cut", "gan").about["step"] == 6   # steps 7's update lost with the crash
    resumed = train("gan", tmp_path / "cut", steps=9, batch_size=8, resume=True, progress=False)   # the same, given
    assert weights(resumed) == weights(straight)
    assert resumed.joinpath("config.json").read_text().count('"resumed_after_steps": [\n') == 1


def test_sigterm_through_the_command_line_saves_and_resume_goes_on(tmp_path, monkeypatch, capsys):
    out = tmp_path / "vae"
    command = ["train", "vae", "--out", str(out), "--steps", "6", "--batch-size", "8", "--lr", "0.002"]
    assert main([*command[:3], str(tmp_path / "straight"), *command[4:]]) == 0
    real = stop_at(monkeypatch, 2, send(signal.SIGTERM))
    assert main(command) == 128 + signal.SIGTERM
    said = capsys.readouterr().err
    assert f"training stopped after step 2 of 6: its state is in '{out}.resume'" in said
    assert f"'edgegen train vae --out {out} --resume' goes on" in said and "edgegen: terminated" in said
    monkeypatch.setattr(training, "_step", real)
    assert main(["train", "vae", "--out", str(out), "--resume"]) == 0
    assert weights(out) == weights(tmp_path / "straight")


def stopped_run(monkeypatch, out, at: int, **options):
    """A vae training of `out` stopped by Ctrl-C after step `at`, its state left beside it."""
    real = stop_at(monkeypatch, at, send(signal.SIGINT))
    with warnings.catch_warnings(), pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("ignore")
        train("vae", out, progress=False, **options)
    monkeypatch.setattr(training, "_step", real)


def test_resume_refusals(tmp_path, monkeypatch):
    out = tmp_path / "vae"
    with pytest.raises(CheckpointError, match=r"--resume: expected the state of a stopped training .* found nothing"):
        train("vae", out, resume=True, progress=False)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, picture in enumerate(np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)):
        Image.fromarray(picture).save(folder / f"{i}.png")
    stopped_run(monkeypatch, out, 1, data=str(folder), steps=3, batch_size=4, image_size=8)
    with pytest.raises(ConfigError, match=r"found --lr 0.5 where it had the default, 0.002 .*leave them out"):
        train("vae", out, lr=0.5, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"found --steps 4 where it was given 3"):
        train("vae", out, steps=4, seed=0, resume=True, progress=False)   # seed 0: the default it had, taken
    with pytest.raises(ConfigError, match="expected either it .* or --force .*, found both"):
        train("vae", out, resume=True, overwrite=True, progress=False)
    with pytest.raises(ConfigError, match="expected a stopped gan training .* found a vae one"):
        train("gan", out, resume=True, progress=False)
    with pytest.raises(OutputExistsError, match="found one stopped after step 1 of 3 .*give --resume .* or --force"):
        train("vae", out, data=str(folder), steps=3, progress=False)
    (folder / "extra.png").write_bytes((folder / "0.png").read_bytes())
    with pytest.raises(DataError, match=r"expected the data the stopped training drew from, found other data in .*sha256"):
        train("vae", out, resume=True, progress=False)
    (folder / "extra.png").unlink()
    with pytest.raises(ConfigError, match="save_every .* expected a positive number of steps, found 0"):
        train("vae", out, resume=True, save_every=0, progress=False)
    state = resume_path(out).read_bytes()
    resume_path(out).write_bytes(state[:len(state) // 2])   # cut short
    with pytest.raises(CheckpointError, match="found a file that does not read as one"):
        train("vae", out, resume=True, progress=False)
    saved = torch.load(io.BytesIO(state), weights_only=True)
    del saved["trainer"]["optimizer"]   # a trainer that held less (an older edgegen's): its Adam moments would be lost
    torch.save(saved, resume_path(out))
    with pytest.raises(CheckpointError, match=r"expected a state that fits this edgegen's vae trainer.*this one holds "
                                              r"optimizer"):
        train("vae", out, resume=True, progress=False)
    resume_path(out).write_bytes(state)
    # --force over it: the stopped state stays until the new run writes its own (a diverging one writes none)
    with pytest.raises(TrainingError):
        train("vae", out, data=str(folder), steps=3, batch_size=4, image_size=8, lr=1000, overwrite=True, progress=False)
    assert resume_path(out).read_bytes() == state
    moved = folder.rename(tmp_path / "moved")
    with torch_threads(torch.get_num_threads() + 1):   # sums in another order: said
        with pytest.warns(EdgegenWarning, match=r"going on with \d+ torch threads where the stopped run had \d+"):
            train("vae", out, data=str(moved), resume=True, progress=False)   # the folder moved: its new place
    assert not resume_path(out).exists()
    with pytest.raises(CheckpointError, match=r"found nothing there \(it holds a checkpoint: the training finished\)"):
        train("vae", out, resume=True, progress=False)


def test_a_file_or_folder_of_the_users_at_the_states_name_is_never_replaced(tmp_path):
    """--force replaced anything at OUT.resume (a user's notes were deleted once the run ended) and a
    folder there failed the run after its training (review 166): only a state that reads is replaced."""
    out = tmp_path / "vae"
    resume_path(out).write_text("my notes")
    for overwrite in (False, True):   # said as what it is, not with torch's advice on torch.save's options
        with pytest.raises(OutputExistsError, match=r"output .*: expected the state a stopped training wrote at .* found "
                                                    r"a file that does not read as one \(not a whole zip archive: cut "
                                                    r"short, or another kind of file\): move it, or give another --out"):
            train("vae", out, steps=2, batch_size=8, overwrite=overwrite, progress=False)
    assert resume_path(out).read_text() == "my notes" and not out.exists()
    resume_path(out).unlink()
    resume_path(out).mkdir()
    with pytest.raises(OutputExistsError, match=r"\(a file\), found a directory: move it"):
        train("vae", out, steps=2, batch_size=8, overwrite=True, progress=False)
    with pytest.raises(CheckpointError, match=r"--resume: .*\(a file\), found a directory: move it away"):
        train("vae", out, resume=True, progress=False)
    assert resume_path(out).is_dir() and not out.exists()


def test_a_state_this_user_cannot_read_is_said_as_that(tmp_path, monkeypatch):
    """An OUT.resume another user wrote (mode 600): torch's PermissionError was said as 'a file
    that does not read as one', which sent the user looking for a damaged file."""
    out = tmp_path / "vae"
    resume_path(out).write_bytes(b"PK")

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(resume, "open", refused, raising=False)   # root reads any file: the refusal is made here
    with pytest.raises(OutputExistsError, match=r"found a file this user cannot read \(Permission denied\): move it"):
        train("vae", out, steps=2, batch_size=8, overwrite=True, progress=False)
    assert resume_path(out).read_bytes() == b"PK" and not out.exists()


def test_a_full_disk_ends_the_training_in_one_line_and_a_state_not_written_lets_it_go_on(tmp_path):
    """A checkpoint the disk cannot hold ended in safetensors' SafetensorError (exit 3, a traceback),
    a state in torch.save's "unexpected pos" RuntimeError, which also ended hours of training
    (review 166). The disk is filled by a file size limit, in a process of its own."""
    out = tmp_path / "vae"
    script = ("import resource, signal, sys\n"
              "from edgegen.cli import main\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
              "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "train", "vae", "--steps", "3", "--batch-size", "8",
                           "--save-every", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    warned = f"edgegen: warning: training state after step 1: expected to write it at '{out}.resume', found the system " \
             "refusing (File too large): the training goes on, and no state of it is there to go on from"
    assert done.stderr.count("training state after step") == 1 and warned in done.stderr, done.stderr
    assert done.stderr.endswith(f"edgegen: error: '{out}': File too large (OSError)\n"), done.stderr
    assert list(tmp_path.iterdir()) == []   # no checkpoint, state, staging folder or temporary file


def test_a_stop_whose_state_cannot_be_written_says_which_state_is_there(tmp_path, monkeypatch):
    from edgegen.training import resume

    real_save = resume.save_state

    def full_after_step_1(path, about, model, trainer):
        if about["step"] > 1:
            raise OSError(28, "No space left on device", str(path))
        real_save(path, about, model, trainer)

    monkeypatch.setattr(resume, "save_state", full_after_step_1)
    stop_at(monkeypatch, 3, send(signal.SIGINT))
    with pytest.warns(EdgegenWarning) as said, pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "vae", steps=5, batch_size=8, save_every=1, progress=False)
    lines = [str(w.message) for w in said]
    assert lines[0].startswith("training state after step 2: expected to write it at ") and \
        lines[0].endswith("(No space left on device): the training goes on, and its state after step 1 stays there")
    assert lines[1].startswith("training stopped after step 3 of 5: its state after step 1 (the last written) is in ")
    assert len(lines) == 2 and resume.read_stopped(tmp_path / "vae", "vae").about["step"] == 1
    monkeypatch.setattr(resume, "save_state", lambda *args: full_after_step_1(*args[:1], {"step": 2}, *args[2:]))
    with pytest.warns(EdgegenWarning) as said, pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "other", steps=5, batch_size=8, save_every=1, progress=False)
    assert [str(w.message).split(":")[0] for w in said] == ["training state after step 1",
                                                            "training stopped after step 3 of 5"]
    assert re.fullmatch(r"training stopped after step 3 of 5: no state of it could be written at .*, so it cannot go on",
                        str(said[1].message))
    # --force over a stopped run on a full disk: the earlier run's state stays, and --resume would take it (review 170)
    with pytest.warns(EdgegenWarning) as said, pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "vae", steps=5, batch_size=8, save_every=1, overwrite=True, progress=False)
    assert str(said[0].message).endswith("no state of it is there to go on from (the state there is the earlier "
                                         "training's, stopped before this one started over: --resume goes on with that)")
    assert str(said[1].message).endswith("so it cannot go on (the state there is the earlier training's, stopped before "
                                         "this one started over: --resume goes on with that)")
    assert resume.read_stopped(tmp_path / "vae", "vae").about["step"] == 1


def test_a_changed_init_and_a_stop_in_the_last_step(tmp_path, monkeypatch):
    start = train("vae", tmp_path / "start", steps=2, batch_size=8, progress=False)
    stopped_run(monkeypatch, tmp_path / "tuned", 1, init=str(start), steps=3, batch_size=8)
    train("vae", start, steps=3, batch_size=8, overwrite=True, progress=False)   # trained again meanwhile
    with pytest.raises(CheckpointError, match="expected the --init checkpoint the stopped training started from, found "
                                              ".* changed since"):
        train("vae", tmp_path / "tuned", resume=True, progress=False)
    stop_at(monkeypatch, 3, send(signal.SIGINT))   # Ctrl-C in the last step: the checkpoint, then the stop
    with pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "last", steps=3, batch_size=8, progress=False)
    assert (tmp_path / "last" / "weights.safetensors").exists() and not resume_path(tmp_path / "last").exists()


def test_a_stop_asked_as_the_saver_decides_is_saved_and_values_left_out_then_are_taken(tmp_path, monkeypatch):
    """A Ctrl-C landing between the loop's two reads of it stopped the run without a state, while
    its warning named one (review 163); an --image-size given at resume, which the stopped run left
    at its default, was refused as differing."""
    from edgegen.training.resume import StateSaver, read_stopped

    due = StateSaver.due

    def interrupted_inside(self, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return due(self, step)

    monkeypatch.setattr(StateSaver, "due", interrupted_inside)
    # asked after step 2's read of it: held to the next step's end, and saved there
    with pytest.warns(EdgegenWarning, match="training stopped after step 3 of 4"), pytest.raises(KeyboardInterrupt):
        train("vae", tmp_path / "vae", steps=4, batch_size=8, progress=False)
    monkeypatch.setattr(StateSaver, "due", due)
    assert read_stopped(tmp_path / "vae", "vae").about["step"] == 3
    assert train("vae", tmp_path / "vae", image_size=32, channels=1, resume=True, progress=False).exists()
