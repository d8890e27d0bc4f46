import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch

import edgegen
from edgegen.cli import main
from edgegen.errors import EdgegenError, EdgegenWarning


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_export_generate_info_through_the_command(tmp_path, capsys):
    ckpt, pkg = tmp_path / "ckpt", tmp_path / "pkg"
    code, out, _ = run_cli(capsys, "train", "gan", "--data", "digits", "--out", ckpt, "--steps", "3", "--batch-size", "16")
    assert code == 0 and "wrote checkpoint" in out
    code, out, _ = run_cli(capsys, "export", ckpt, "--out", pkg)
    assert code == 0 and "gate passed at batches [1, 3]" in out
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run_cli(capsys, "generate", pkg, "--n", "16", "--seed", "0", "--out", a)[0] == 0
    assert run_cli(capsys, "generate", pkg, "--n", "16", "--seed", "0", "--out", b)[0] == 0
    assert a.read_bytes() == b.read_bytes()  # same seed, same picture
    run_cli(capsys, "generate", pkg, "--n", "16", "--seed", "1", "--out", b)
    assert a.read_bytes() != b.read_bytes()
    code, out, _ = run_cli(capsys, "info", pkg)
    assert code == 0 and "family    gan" in out and "generator: generator.onnx" in out


def test_train_init_of_a_folder_named_like_a_shipped_model_says_it_took_the_folder(tmp_path, capsys, monkeypatch):
    """The path wins, as everywhere; it was taken without a word (--data warns in the same case)."""
    from edgegen.shipped import checkpoints_dir
    from edgegen.training.checkpoint import load_checkpoint

    shutil.copytree(checkpoints_dir() / "vae-digits", tmp_path / "vae-digits")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "vae", "--init", "vae-digits", "--steps", "1", "--lr", "1e-12", "--out", "out")
    assert code == 0 and "warning: --init 'vae-digits': the folder of that name here, not the shipped model" in err
    assert load_checkpoint(tmp_path / "out").training["init"]["checkpoint"] == str(tmp_path / "vae-digits")


def test_train_init_fine_tunes_a_checkpoint_on_other_data_keeping_its_model(tmp_path, capsys):
    """--init starts from a checkpoint's weights, architecture, size and channels (RGB photographs
    are read as its grey 32x32), records where it started, and refuses what its weights cannot fit."""
    from PIL import Image

    from edgegen.training.checkpoint import load_checkpoint

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    first = tmp_path / "first"
    assert run_cli(capsys, "train", "vae", "--steps", "2", "--latent-dim", "8", "--out", first)[0] == 0
    tuned = tmp_path / "tuned"
    code, out, err = run_cli(capsys, "train", "vae", "--init", first, "--data", folder, "--steps", "1", "--lr", "1e-12",
                             "--seed", "5", "--out", tuned)
    assert code == 0, err
    start, end = load_checkpoint(first), load_checkpoint(tuned)
    assert (end.config.latent_dim, end.config.image_channels, end.config.image_size) == (8, 1, 32)
    weights = dict(end.model.named_parameters())   # seed 5's own start is far from these (batch norm's statistics move)
    assert all(torch.allclose(value, weights[name], atol=1e-6) for name, value in start.model.named_parameters())
    assert end.training["init"] == {"checkpoint": str(first.resolve()), "weights_sha256": start.weights_sha256,
                                    "steps": 2, "data": "digits"}
    assert end.data["source"] == str(folder.resolve())
    code, _, err = run_cli(capsys, "train", "vae", "--init", first, "--latent-dim", "16", "--steps", "1", "--out",
                           tmp_path / "wider")
    assert code == 2 and err.startswith(f"edgegen: error: --init {str(first)!r}: expected weights that fit the model this "
                                        "run builds, found ") and "; the options given change latent_dim 8 -> 16: leave out the options" in err
    code, _, err = run_cli(capsys, "train", "vae", "--init", first, "--channels", "3", "--steps", "1", "--out",
                           tmp_path / "wider")   # the option named, not the data that trained it ('digits')
    assert code == 2 and "; the options given change --channels 1 -> 3: leave out the options" in err, err
    code, _, err = run_cli(capsys, "train", "gan", "--init", first, "--steps", "1", "--out", tmp_path / "gan")
    assert code == 2 and f"--init {str(first)!r}: expected a gan checkpoint to start 'edgegen train gan' from, found a " \
        "vae one" in err
    code, _, err = run_cli(capsys, "train", "vae", "--init", first, "--steps", "1", "--out", first, "--force")
    assert code == 2 and "is the input" in err and load_checkpoint(first).weights_sha256 == start.weights_sha256
    assert not (tmp_path / "wider").exists() and not (tmp_path / "gan").exists()
    code, _, err = run_cli(capsys, "train", "vae", "--init", "", "--steps", "1", "--out", tmp_path / "x")
    assert code == 2 and "--init: expected a path, found an empty one" in err   # not the working folder
    code, _, err = run_cli(capsys, "train", "vae", "--init", "vae", "--steps", "1", "--out", tmp_path / "x")
    assert code == 2 and err.startswith("edgegen: error: --init 'vae': expected a checkpoint folder") \
        and "did you mean the shipped model 'vae-digits'?" in err
    from edgegen.training.train import train

    labelled = train("diffusion", tmp_path / "labelled", steps=1, batch_size=8, progress=False, width=8)   # digits' classes
    code, _, err = run_cli(capsys, "train", "diffusion", "--init", labelled, "--data", folder, "--steps", "1", "--out",
                           tmp_path / "x")
    assert code == 2 and f"--init {str(labelled)!r}: expected data with the checkpoint's classes (10), found data with " \
        "none (a folder's pictures have classes only in subfolders, audio none)" in err
    with patch("edgegen.training.train.load_images", side_effect=AssertionError("the folder was loaded first")):
        with pytest.raises(EdgegenError, match=r"expected data with the checkpoint's classes \(10\)"):   # before it
            train("diffusion", tmp_path / "x", data=str(folder), init=labelled, steps=1, progress=False)
    # a cgan, whose config refuses a folder's no classes itself, says the same (it said its config's words)
    cgan = train("cgan", tmp_path / "cgan", steps=1, batch_size=8, progress=False)
    code, _, err = run_cli(capsys, "train", "cgan", "--init", cgan, "--data", folder, "--steps", "1", "--out", tmp_path / "x")
    assert code == 2 and f"--init {str(cgan)!r}: expected data with the checkpoint's classes (10), found data with " \
        "none" in err
    unlabelled = train("diffusion", tmp_path / "unlabelled", data=str(folder), image_size=8, steps=1, batch_size=4,
                       progress=False, width=8)
    code, _, err = run_cli(capsys, "train", "diffusion", "--init", unlabelled, "--data", "digits", "--steps", "1",
                           "--out", tmp_path / "x")
    assert code == 2 and f"--init {str(unlabelled)!r}: expected data with the checkpoint's classes (none), found data " \
        "with 10: fine-tune it on data of its kind" in err
    shutil.move(folder, tmp_path / "moved")   # fine-tuned again without --data: its own data, gone
    code, _, err = run_cli(capsys, "train", "vae", "--init", tuned, "--steps", "1", "--out", tmp_path / "x")
    assert code == 2 and f"--init {str(tuned)!r}: expected the data it was trained on at {str(folder.resolve())!r}, " \
        "found nothing at that path (moved or deleted?): give --data its new place" in err


def test_train_never_replaces_what_it_reads_and_says_so_before_training(trained, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    (project / "images" / "a.png").write_bytes(b"not read: refused first")
    code, _, err = run_cli(capsys, "train", "vae", "--data", project / "images", "--out", project, "--force")
    assert code == 2 and "holds the input" in err and (project / "images" / "a.png").is_file()
    code, _, err = run_cli(capsys, "train", "controlnet", "--base", trained["diffusion"][0], "--out",
                           trained["diffusion"][0], "--force", "--steps", "1")
    assert code == 2 and "is the input" in err and (trained["diffusion"][0] / "weights.safetensors").is_file()


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """--out "" named the working folder: the checkpoint or package there was replaced without
    --force. A file on the way to --out, or a folder the system refuses, was found after training,
    as the system's error about a lock file."""
    import edgegen.training.train as training

    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "train", "vae", "--steps", "1", "--out", "ckpt")[0] == 0
    weights = (tmp_path / "ckpt" / "weights.safetensors").read_bytes()
    monkeypatch.setattr(training, "load_images", lambda *a, **k: pytest.fail("trained before refusing --out"))
    monkeypatch.chdir(tmp_path / "ckpt")
    for command in (["train", "vae"], ["export", "."]):
        code, _, err = run_cli(capsys, *command, "--out", "")
        assert code == 2 and err == "edgegen: error: --out: expected a path, found an empty one ('')\n"
    assert (tmp_path / "ckpt" / "weights.safetensors").read_bytes() == weights
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("mine")
    for out, refusal in ((tmp_path / "afile" / "ckpt", "expected a folder to write it in, found a file on the way"),
                         ("/proc/edgegen-test/ckpt", "expected a folder this user can write a folder in, found "
                                                     "'/proc', where the system refused one")):
        for command in (["train", "vae"], ["export", "ckpt"]):
            code, _, err = run_cli(capsys, *command, "--out", out)
            assert code == 2 and f"edgegen: error: --out '{out}': {refusal}" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_import_is_refused_before_it_loads_where_its_output_or_name_is(tmp_path, monkeypatch):
    """A 7B import takes minutes: an output it could not write, or a name it could not take, was
    refused only at its end."""
    import edgegen.export as export
    from edgegen.export import diffusers_import

    monkeypatch.setattr(export, "import_transformers", lambda *a: pytest.fail("imported"))
    monkeypatch.setattr(diffusers_import, "import_diffusers", lambda *a: pytest.fail("imported"))
    (tmp_path / "saved").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    for out, options, refusal in (("", {}, "output: expected a path, found an empty one"),
                                  (tmp_path / "empty", {}, r"expected a path that does not exist yet, found one \(pass "
                                                           r"--force"),
                                  # what --force could not replace either: said so, not "pass --force" (helper 78)
                                  (tmp_path / "taken", {}, r"found a folder of other files \(mine.txt\)"),
                                  (tmp_path / "taken", {"overwrite": True}, r"found a folder of other files \(mine.txt\)"),
                                  (tmp_path / "new", {"name": "../up"}, r"name \(--name\): expected letters")):
        for imported in (lambda: export.export_transformers("gpt2", tmp_path / "saved", out, **options),
                         lambda: diffusers_import.export_diffusers(tmp_path / "saved", out, **options)):
            with pytest.raises(EdgegenError, match=refusal):
                imported()
    assert (tmp_path / "taken" / "mine.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_force_replaces_only_what_edgegen_wrote_and_never_files_put_beside_it(tmp_path, monkeypatch, capsys):
    """A file of the user's inside a checkpoint, package or Triton model folder makes --force
    refuse; what edgegen itself added later (variants, the engine cache) does not."""
    import os

    monkeypatch.chdir(tmp_path)
    old_umask = os.umask(0o022)
    try:
        assert run_cli(capsys, "train", "vae", "--steps", "1", "--out", "ckpt")[0] == 0
    finally:
        os.umask(old_umask)
    assert (tmp_path / "ckpt" / "weights.safetensors").stat().st_mode & 0o777 == 0o644   # readable by a service user
    (tmp_path / "ckpt" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "vae", "--steps", "1", "--out", "ckpt", "--force")
    assert code == 2 and "found notes.txt beside it" in err and (tmp_path / "ckpt" / "notes.txt").is_file()
    (tmp_path / "ckpt" / "notes.txt").unlink()
    # a hidden backup named like a killed write's old output, without edgegen's mark, is the user's too
    (tmp_path / "ckpt" / ".config.json.old").write_text("mine")
    code, _, err = run_cli(capsys, "train", "vae", "--steps", "1", "--out", "ckpt", "--force")
    assert code == 2 and "found .config.json.old beside it" in err and (tmp_path / "ckpt" / ".config.json.old").is_file()
    (tmp_path / "ckpt" / ".config.json.old").unlink()
    assert run_cli(capsys, "export", "ckpt", "--out", "pkg")[0] == 0
    assert run_cli(capsys, "optimize", "pkg", "--precision", "fp16", "--target", "tensorrt")[0] == 0
    (tmp_path / "pkg" / ".edgegen-cache").mkdir()
    (tmp_path / "pkg" / "decoder.int8.0123456789ab.onnx").write_bytes(b"a killed optimize's")
    # its variants, cache and a killed run's variant file are edgegen's
    assert run_cli(capsys, "export", "ckpt", "--out", "pkg", "--force")[0] == 0
    (tmp_path / "pkg" / "edgegen.json").write_text("{cut short")   # a broken package: a re-export mends it
    assert run_cli(capsys, "export", "ckpt", "--out", "pkg", "--force")[0] == 0
    (tmp_path / "pkg" / "extras").mkdir()
    (tmp_path / "pkg" / "extras" / "readme.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", "ckpt", "--out", "pkg", "--force")
    assert code == 2 and "found extras beside it" in err and (tmp_path / "pkg" / "extras" / "readme.txt").is_file()
    code, _, err = run_cli(capsys, "triton", "pkg", "--out", "pkg")
    assert code == 2 and "expected a model repository directory, found an edgegen package" in err
    assert run_cli(capsys, "triton", "pkg", "--out", "repo")[0] == 0
    (model,) = [p for p in (tmp_path / "repo").iterdir()]
    (model / "mine.txt").write_text("mine")
    code, _, err = run_cli(capsys, "triton", "pkg", "--out", "repo", "--force")
    assert code == 2 and "found mine.txt beside it" in err and (model / "mine.txt").is_file()


def test_a_training_option_of_another_family_is_refused_before_training(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae", "--scale", "2", "--out", tmp_path / "ckpt")
    assert code == 2 and "--scale: expected an option that 'edgegen train vae' takes (it takes none), found it" in err
    code, _, err = run_cli(capsys, "train", "gpt", "--base", "x", "--out", tmp_path / "ckpt")
    assert code == 2 and "--base: expected an option that 'edgegen train gpt' takes (--architecture" in err
    assert not (tmp_path / "ckpt").exists()


def test_a_zero_size_is_refused_not_taken_for_the_default(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae", "--latent-dim", "0", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "latent_dim and width expected positive, found 0" in err
    code, _, err = run_cli(capsys, "train", "vae", "--image-size", "0", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "error: --image-size: expected an integer of at least 8, found 0" in err   # named by its flag
    # a size no memory holds: refused before the model is built (it was torch's allocation traceback)
    code, _, err = run_cli(capsys, "train", "vae", "--latent-dim", "100000000", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and err.startswith("edgegen: error: vae config: expected a model whose training fits in the ")
    assert "found 614,600,269,057 parameters" in err and "latent_dim 100000000, width 32)" in err
    code, _, err = run_cli(capsys, "train", "vae", "--image-size", "100000", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "--image-size: expected at most 256 for the digits" in err
    code, _, err = run_cli(capsys, "train", "sr", "--image-size", "0", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "sr config: image_size expected a multiple of scale 4 of at least 32, found 0" in err
    # the data's least size first, and a config's refusal of a field led by the option that set it (helper 130: a
    # PixelCNN's "image_size expected positive (image_size >= 2)" where 2 to 7 were refused as under 8, and
    # "image_channels expected 1" for --channels 3)
    code, _, err = run_cli(capsys, "train", "pixelcnn", "--image-size", "1", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "error: --image-size: expected an integer of at least 8, found 1" in err
    code, _, err = run_cli(capsys, "train", "pixelcnn", "--channels", "3", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "error: --channels 3: pixelcnn config: image_channels expected 1" in err
    code, _, err = run_cli(capsys, "train", "vae", "--lr", "0", "--steps", "1", "--out", tmp_path / "ckpt")
    assert code == 2 and "error: learning rate (--lr): expected a number above 0" in err
    assert not (tmp_path / "ckpt").exists()


def test_a_value_refused_past_the_command_line_is_named_by_its_flag(trained, shipped_package, tmp_path, capsys):
    """The functions the options reach name them by their keywords (threads, max_batch_size): the
    command line says the flag the user typed."""
    package = str(trained["vae"][1])
    for args, said in ((["bench", package, "--threads", "0"], "--threads: expected a positive number of intra-op "
                                                              "threads, found 0"),
                       (["triton", package, "--out", tmp_path / "r", "--max-batch-size", "0"],
                        "--max-batch-size: expected an integer of at least 1, found 0"),
                       (["triton", package, "--out", tmp_path / "r", "--queue-delay-us", "-1"],
                        "--queue-delay-us: expected an integer of at least 0, found -1"),
                       (["bench", shipped_package("gpt-stdlib"), "--prompt-lookup", "1000", "--iters", "2"],
                        "--prompt-lookup: expected a whole number of draft tokens from 0 (none) to 255 (a call holds "
                        "them beside one token, within the model's context), found 1000")):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.splitlines()[-1] == f"edgegen: error: {said}"   # the fixture's bars before it
    from edgegen.cli import _renamed
    from edgegen.errors import BackendError, ConfigError

    flags, given = {"backend": "--backend", "name": "--name", "out": "--out"}, {"backend": "ort-cpu", "name": ".x", "out": "o"}
    # a message about another value than the user's is about something else; one naming its flag is left as it is
    for text in ("backend 'tensorrt': expected the tensorrt package", "name (--name): expected letters, found '.x'"):
        assert str(_renamed(BackendError(text), flags, given)) == text
    assert str(_renamed(ConfigError("backend 'ort-cpu': expected ..."), flags, given)) == "--backend 'ort-cpu': expected ..."


def test_a_builtin_data_name_is_not_a_path_training_reads(tmp_path, monkeypatch, capsys):
    """A checkpoint named after its data ("digits") is replaced by --force: --data digits is the
    built-in set, whatever folder of that name the working directory holds."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "train", "vae", "--data", "digits", "--steps", "1", "--out", "digits")[0] == 0
    first = (tmp_path / "digits" / "weights.safetensors").read_bytes()
    assert run_cli(capsys, "train", "vae", "--data", "digits", "--steps", "1", "--seed", "1", "--out", "digits", "--force")[0] == 0
    assert (tmp_path / "digits" / "weights.safetensors").read_bytes() != first


def test_export_and_train_refuse_an_output_folder_inside_a_package_or_checkpoint(trained, tmp_path, capsys):
    """A package written into its own checkpoint made that checkpoint refuse `train --force` after,
    and one inside a package broke its hashes' promise; both are refused before any work."""
    ckpt, pkg = trained["vae"]
    before = sorted(p.name for p in ckpt.iterdir()), sorted(p.name for p in pkg.iterdir())
    for command, inside, kind in ((["export", ckpt, "--out", ckpt / "pkg"], ckpt, "checkpoint"),
                                  (["export", ckpt, "--out", pkg / "nested"], pkg, "package"),
                                  (["train", "vae", "--steps", "1", "--out", pkg / "ckpt"], pkg, "package")):
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and f"edgegen: error: --out {str(command[-1])!r}: expected a path outside edgegen's packages " \
            f"and checkpoints, found it inside the {kind} {str(inside)!r}" in err
    assert (sorted(p.name for p in ckpt.iterdir()), sorted(p.name for p in pkg.iterdir())) == before


def test_bench_and_generate_refuse_an_output_they_cannot_or_must_not_write_before_any_work(package_copy, tmp_path, capsys):
    """--json inside the package would replace its manifest or a graph; an output in a folder the
    system will not write in fails at the end; both are refused first, naming the output."""
    pkg = package_copy("vae")
    manifest = (pkg / "edgegen.json").read_bytes()
    code, _, err = run_cli(capsys, "bench", pkg, "--iters", "2", "--json", pkg / "edgegen.json")
    assert code == 2 and f"--json {str(pkg / 'edgegen.json')!r}: expected a file outside the package it reads" in err
    assert (pkg / "edgegen.json").read_bytes() == manifest
    code, out, err = run_cli(capsys, "bench", pkg, "--iters", "2", "--json", tmp_path)
    assert code == 2 and "expected a file to write, found a directory" in err and out == ""   # nothing ran
    other = package_copy("gan")   # nor inside another package (or a checkpoint), whose hashed files it would replace
    graph = next(other.glob("*.onnx"))
    before = graph.read_bytes()
    for command in (["bench", pkg, "--iters", "2", "--json", graph], ["generate", pkg, "--n", "2", "--out",
                                                                        other / "grid.png"]):
        code, out, err = run_cli(capsys, *command)
        assert code == 2 and out == "" and "expected a path outside edgegen's packages and checkpoints, found it " \
            f"inside the package {str(other)!r}" in err
    assert graph.read_bytes() == before and not (other / "grid.png").exists()
    code, out, err = run_cli(capsys, "bench", pkg, "--iters", "2", "--json", "/proc/edgegen-bench.json")
    # /proc takes no new file, even from root: said as the option's, not as the system's FileNotFoundError
    assert code == 2 and out == "" and err == ("edgegen: error: --json '/proc/edgegen-bench.json': expected a folder this "
                                               "user can write a file in, found '/proc', where the system refused one (No such file or "
                                               "directory)\n")
    with patch("edgegen.families.vae.pipeline.VAEPipeline.sample", side_effect=AssertionError("sampled")):
        code, _, err = run_cli(capsys, "generate", pkg, "--n", "2", "--out", "/proc/x.png")   # before the sampling
    assert code == 2 and err.startswith("edgegen: error: --out '/proc/x.png': ")   # the output, not a temporary name
    code, _, err = run_cli(capsys, "bench", pkg, "--json", tmp_path / "a" / "b" / "r.json", "--shapes", "batch=4")
    assert code == 2 and not (tmp_path / "a").exists()   # the check made no folder for a command refused after it
    # a slip of the name replaced the user's recording with the report
    (tmp_path / "chord.wav").write_bytes(b"RIFF")
    code, out, err = run_cli(capsys, "bench", pkg, "--iters", "2", "--json", tmp_path / "chord.wav")
    assert code == 2 and out == "" and err == (f"edgegen: error: --json {str(tmp_path / 'chord.wav')!r}: expected a file "
                                               "name ending in .json (the report is written there as JSON), found .wav\n")
    assert (tmp_path / "chord.wav").read_bytes() == b"RIFF"
    code, out, err = run_cli(capsys, "bench", pkg, "--iters", "2", "--json", tmp_path / ".json")
    assert code == 2 and "expected a file name before .json, found only the extension (a hidden file)" in err


def test_an_output_the_user_made_read_only_is_refused_not_replaced(package_copy, tmp_path, capsys, monkeypatch):
    """A rename over a file passes its mode, so edgegen's atomic write replaced a grid the user had
    protected with chmod 444; it asks the system whether this user may write it, as cp would."""
    pkg = package_copy("vae")
    grid = tmp_path / "keep.png"
    grid.write_bytes(b"mine")
    grid.chmod(0o444)
    # root may write any file: the check is os.access's, so these tests (often run as root) ask by the mode bits
    monkeypatch.setattr("edgegen.storage.os.access", lambda path, mode: bool(os.stat(path).st_mode & 0o200))
    code, out, err = run_cli(capsys, "generate", pkg, "--n", "2", "--out", grid)
    assert code == 2 and err == (f"edgegen: error: --out {str(grid)!r}: expected a file this user may replace (or none), "
                                 "found a read-only one (chmod u+w it to let edgegen replace it)\n")
    assert grid.read_bytes() == b"mine"
    grid.chmod(0o644)
    assert run_cli(capsys, "generate", pkg, "--n", "2", "--out", grid)[0] == 0 and grid.read_bytes() != b"mine"


def test_a_fifo_a_device_or_a_link_loop_at_an_output_is_refused_not_replaced(package_copy, tmp_path, capsys):
    """The atomic write renames a new file over the name: a FIFO a reader waits on, and a device a
    link points at (as root, /dev/null itself), were replaced with a regular file; a link loop
    ended in a RuntimeError's traceback (review 166)."""
    from edgegen.storage import file_kind

    pkg = package_copy("vae")
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"   # as a link to /dev/null would be (not tried: as root, a fault would replace it)
    link.symlink_to(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop.name)
    for out in (fifo, link):
        code, _, err = run_cli(capsys, "generate", pkg, "--n", "2", "--out", out)
        assert code == 2 and err == (f"edgegen: error: --out {str(out)!r}: expected a regular file to replace (or none), "
                                     "found a FIFO, which writing the output (a new file renamed over the name) "
                                     "would replace\n"), err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert file_kind("/dev/null") == "a character device" and file_kind(loop) == "a symbolic-link loop"
    for command in (["generate", pkg, "--n", "2", "--out", loop], ["bench", pkg, "--iters", "1", "--json", loop],
                    ["export", str(tmp_path / "no-checkpoint"), "--out", loop]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2 and f"{str(loop)!r}: expected a path, found a symbolic-link loop on it" in err, err


def test_a_write_that_fails_is_said_for_the_users_file_whoever_wrote_it(tmp_path):
    """A full disk: torch.save writing through a file raises its own RuntimeError ("unexpected pos")
    in place of the OSError, and any failed write named no file (bench --json: "No space left on
    device (OSError)"); said as the system's error, for the file the user named (review 166). The
    disk is filled by a file size limit, in a process of its own."""
    script = ("import resource, signal, sys, torch\n"
              "from edgegen.storage import atomic_write_with\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
              "for name, write in (('state.pt', lambda f: torch.save(torch.zeros(100000), f)),\n"
              "                    ('report.json', lambda f: f.write(bytes(100000)))):\n"
              "    try:\n"
              "        atomic_write_with(sys.argv[1] + '/' + name, write)\n"
              "    except OSError as exc:\n"
              "        print(exc.filename, exc.strerror, type(exc).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{tmp_path}/state.pt File too large OSError",
                                        f"{tmp_path}/report.json File too large OSError"], done.stdout
    assert list(tmp_path.iterdir()) == []   # no temporary file left


def test_a_benchmarks_peak_memory_is_its_own(trained):
    """What ran in the process before (a shipped name's export: 530 MB where the runtime's is 261;
    a sweep's earlier points: 1,678 MB for 259) was reported as the runtime's peak RSS."""
    from edgegen.bench import bench_package, rss_mb

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs on this system: the peak cannot be reset")
    import mmap

    package = trained["vae"][1]   # trained on first use: before the process's memory is read
    before = rss_mb()
    held = mmap.mmap(-1, 400 * 2**20)   # an export's 400 MB, given back before the benchmark (a numpy array's
    for page in range(0, len(held), mmap.PAGESIZE):   # free may keep it in the allocator's pool: mmap's does not)
        held[page] = 1
    held.close()
    report = bench_package(package, batch=1, iters=2, warmup=0, energy=False, generation=False)
    assert report["peak_rss_mb"]["runtime"] < before + 200, (before, report["peak_rss_mb"])
    assert report["peak_rss_mb"]["torch_loaded"] is True   # this process holds PyTorch: said
    assert 0 < report["peak_rss_mb"]["held_before"] <= report["peak_rss_mb"]["runtime"]


def test_interleaved_timings_time_no_call_that_wakes_an_engine_from_its_pause(monkeypatch):
    """Each block of calls comes after a pause (for the other engine's threads to sleep), and the
    first calls after it wake this engine's threads and caches: with a warm-up asked for, those
    are made untimed (about 10 ms of them, 1 to 3; none for a call of a second or more), and a
    lone engine, which never pauses, gets none."""
    from edgegen import bench

    assert [bench.rewarm_calls(s) for s in (1e-5, 0.004, 0.02, 0.5, 1.0, 30.0)] == [3, 2, 1, 1, 0, 0]
    calls = {"a": 0, "b": 0}

    def engine(name):
        def call():
            calls[name] += 1
        return call

    monkeypatch.setattr(bench, "rewarm_calls", lambda seconds: 3 if seconds < 1 else 0)
    times = bench.interleaved_timings({"a": engine("a"), "b": engine("b")}, iters=20, warmup=2, rounds=10)
    assert {name: len(t) for name, t in times.items()} == {"a": 20, "b": 20}
    assert calls == {"a": 2 + 10 * 3 + 20, "b": 2 + 10 * 3 + 20}   # warm-up, 3 untimed a block, the timed
    calls.update(a=0, b=0)
    bench.interleaved_timings({"a": engine("a"), "b": engine("b")}, iters=20, warmup=0, rounds=10)
    assert calls == {"a": 20, "b": 20}   # no warm-up asked for: every call timed as it comes
    calls.update(a=0)
    bench.interleaved_timings({"a": engine("a")}, iters=20, warmup=2, rounds=10)
    assert calls["a"] == 22
    calls.update(a=0, b=0)   # a caller's own count, for calls past the second whose first pays for fresh memory
    bench.interleaved_timings({"a": engine("a"), "b": engine("b")}, iters=3, warmup=1, rounds=3, rewarm=1)
    assert calls == {"a": 1 + 3 * 1 + 3, "b": 1 + 3 * 1 + 3}


def test_the_bench_table_gives_each_row_its_own_ratio_and_slow_rates_their_digits():
    """The prompt-lookup row showed the plain loop's ratio to torch; a rate below 0.5 per second
    was printed (and written to the JSON) as 0."""
    from edgegen.bench import _results, format_table

    timings = {("generate", "edgegen ort-cpu"): [0.111] * 3, ("generate", "edgegen ort-cpu, prompt lookup 3"): [0.087] * 3,
               ("generate", "torch eager"): [2.9856] * 3, ("upscaler", "edgegen ort-cpu"): [66.16] * 3}
    results = _results(timings, lambda stats: 1e3 / stats["p50_ms"])
    assert results[-1]["throughput_per_s"] == 0.01511
    assert _results({("g", "e"): [1 / 3160493.8] * 3}, lambda stats: 1e3 / stats["p50_ms"])[0]["throughput_per_s"] \
        == pytest.approx(3160493.8, abs=0.1)   # a fast rate keeps its digits
    table = format_table({"results": results, "speedup_vs_torch_p50": {"generate": 26.9}, "energy": ""})
    rows = {tuple(line.split(" | ")[:2]): line for line in table.splitlines()[2:]}
    assert rows["| generate", "edgegen ort-cpu"].endswith(" 26.90x |")
    assert rows["| generate", "edgegen ort-cpu, prompt lookup 3"].endswith(" 34.32x |")
    assert " | 0.0151 | " in rows["| upscaler", "edgegen ort-cpu"]   # the 66 s call's rate


def test_bench_refuses_the_batch_in_shapes_and_sweeps_and_a_dim_in_both(trained, capsys):
    pkg = trained["vae"][1]
    for args, message in ((["--sweep", "batch=1,2"], "--sweep: expected dims other than the batch (--batch sets it)"),
                          (["--shapes", "batch=4"], "--shapes: expected dims other than the batch (--batch sets it)"),
                          (["--sweep", "height,width=32", "--shapes", "height=16,width=16"],
                           "--shapes and --sweep: expected each dim in one of them, found height, width in both"),
                          # the last one won without a word
                          (["--sweep", "height,height=16"], "--sweep 'height,height=16': expected each dim once, "
                                                            "found height twice"),
                          (["--sweep", "height=16", "--sweep", "width=16"], "--sweep: expected once (the dims it names "
                                                                            "are set together"),
                          (["--sweep", "height=16,8,16"], "--sweep 'height=16,8,16': expected each size once, found 16 "
                                                          "more than once"),
                          (["--shapes", "height=16", "--shapes", "height=8"], "--shapes: expected each dim once, found "
                                                                              "height twice (16 and 8)"),
                          # a dim the vae's graphs lack: both flags named, with the dims it has
                          (["--sweep", "height,width=64"], "--shapes/--sweep: expected dynamic dims of the package's "
                                                           "graphs other than the batch (none), found height, width"),
                          # --steps sets the whole generation's steps: with none, it was ignored
                          (["--steps", "4", "--no-generation"], "--steps 4: expected with the whole generation it sets "
                                                                "the steps of, found --no-generation"),
                          # a batch no pipeline runs: it was killed for memory
                          (["--batch", "100000"], "--batch: expected at most 256, the most rows edgegen's pipelines "
                                                  "put through a graph in one call"),
                          # ran until killed
                          (["--iters", str(10**12)], "--iters: expected at most 100000 calls per engine"),
                          (["--warmup", "200000"], "--warmup: expected at most 100000 calls per engine"),
                          (["--json", ""], "--json: expected a path, found an empty one ('')")):   # was ignored
        code, out, err = run_cli(capsys, "bench", pkg, "--iters", "2", *args)
        assert code == 2 and message in err and out == "", err


def test_a_mistyped_settle_setting_is_one_line_before_any_work(trained, package_copy, monkeypatch, capsys):
    """EDGEGEN_BENCH_SETTLE_S=abc (or -1, nan) was a traceback with status 1, from optimize after
    its calibration: a CI script read it as a gate's verdict (helper 90)."""
    for value in ("abc", "-1", "nan", "inf", "120"):
        monkeypatch.setenv("EDGEGEN_BENCH_SETTLE_S", value)
        for command in (["bench", trained["vae"][1], "--iters", "2"], ["optimize", trained["vae"][1], "--precision", "fp16"]):
            code, out, err = run_cli(capsys, *command)
            assert code == 2 and f"EDGEGEN_BENCH_SETTLE_S: expected seconds from 0 to 60 (the pause before each timed " \
                                  f"block; default 0.1), found '{value}'" in err and out == "", (command, err)
    # an optimize that times nothing does not read it
    code, _, err = run_cli(capsys, "optimize", package_copy("vae"), "--precision", "fp16", "--no-speed-check")
    assert code == 0 and "EDGEGEN_BENCH_SETTLE_S" not in err, err


def test_optimize_json_prints_the_runs_verdicts_and_what_the_package_loads(package_copy, monkeypatch, capsys):
    """optimize --json: stdout is the report alone (a script parses it), the run's lines on stderr;
    a refusal says why and which earlier variant the package still loads, and exits 1."""
    import functools

    import edgegen.optimize

    pkg = package_copy("gan")
    command = ["optimize", pkg, "--precision", "int8", "--calibration", "16", "--target", "tensorrt", "--json"]
    code, out, err = run_cli(capsys, *command)
    report = json.loads(out)
    written = report["graphs"]["generator"]
    assert code == 0 and report["report"] == "edgegen.optimize/1" and report["package"] == str(pkg)
    assert (report["precision"], report["target"]) == ("int8", "tensorrt")
    assert written["file"] == written["in_package"] and (pkg / written["file"]).is_file() and written["gate"]["passed"]
    assert f"generator: int8 written for tensorrt ({written['gate']['line']}" in err and "variant" not in out
    monkeypatch.setattr(edgegen.optimize, "optimize_package",
                        functools.partial(edgegen.optimize.optimize_package, gate_threshold=500))
    code, out, err = run_cli(capsys, *command)
    refused = json.loads(out)["graphs"]["generator"]
    assert code == 1 and "missed by" in refused["refused"] and "file" not in refused
    assert refused["in_package"] == written["file"] and not refused["gate"]["passed"]
    assert "edgegen: optimize: wrote no int8 variant" in err


def test_bench_says_when_other_work_took_the_cores(trained, monkeypatch):
    """On a loaded machine a flow's 2.35x over torch read 12x, torch's median 12 to 65 times its
    fastest call, without a word; the report records the load average too."""
    from edgegen import bench

    real = bench.interleaved_timings

    def busy(engines, iters, warmup, **options):   # every call but the fastest ten times slower
        return {k: [min(v)] + [min(v) * 10] * (len(v) - 1) for k, v in real(engines, iters, warmup, **options).items()}

    monkeypatch.setattr(bench, "interleaved_timings", busy)
    with pytest.warns(EdgegenWarning, match=r"^timings: expected each median near its fastest call, found encoder on "
                                            r"edgegen ort-cpu 10\.0x, decoder on edgegen ort-cpu 10\.0x its fastest.*: other work took the cores; run again"):
        report = bench.bench_package(trained["vae"][1], batch=1, iters=10, warmup=0, energy=False, generation=False)
    assert isinstance(report["machine"]["load_average"], float)
    with warnings.catch_warnings():   # three calls tell a median from nothing: not said
        warnings.simplefilter("error")
        bench.bench_package(trained["vae"][1], batch=1, iters=3, warmup=0, energy=False, generation=False)


def test_bench_vs_torch_reads_the_runtimes_peak_before_torch_is_imported(trained, tmp_path):
    """bench --vs-torch imported torch to keep the caller's thread count before the runtime's peak
    was read: the runtime's peak memory counted PyTorch's libraries (259 MB where it is 76), and the
    report said torch was not loaded (review 168). In processes of their own, as on a device."""
    ckpt, pkg = trained["vae"]
    peaks = {}
    for name, more in (("plain", []), ("vs-torch", ["--vs-torch", str(ckpt)])):
        report = tmp_path / f"{name}.json"
        done = subprocess.run([sys.executable, "-m", "edgegen", "bench", str(pkg), "--iters", "3", "--warmup", "0",
                               "--no-energy", "--json", str(report), *more], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        peaks[name] = json.loads(report.read_text())["peak_rss_mb"]
    assert peaks["vs-torch"]["torch_loaded"] is False and peaks["plain"]["torch_loaded"] is False
    assert peaks["vs-torch"]["runtime"] < peaks["plain"]["runtime"] + 60, peaks   # torch's libraries: 180 MB
    assert peaks["vs-torch"]["process"] > peaks["vs-torch"]["runtime"] + 60, peaks   # they count in the process's


def test_bench_writes_the_report(trained, tmp_path, capsys):
    ckpt, pkg = trained["vae"]
    report_path = tmp_path / "bench.json"
    callers = torch.get_num_threads() + 1
    torch.set_num_threads(callers)
    try:
        code, out, _ = run_cli(capsys, "bench", pkg, "--batch", "8", "--iters", "20", "--warmup", "2",
                               "--json", report_path, "--vs-torch", ckpt, "--threads", "1")
        assert torch.get_num_threads() == callers   # bench ran torch at 1 thread, then gave the count back
    finally:
        torch.set_num_threads(callers - 1)
    assert code == 0
    assert "| decoder | edgegen ort-cpu |" in out and "| decoder | torch eager |" in out
    report = json.loads(report_path.read_text())
    assert report["batch"] == 8 and report["threads"] == 1 and report["precision"] == "fp32"
    assert report["backend"] == "ort-cpu" and report["machine"]["cores"] >= 1 and "torch" in report["machine"]
    assert report["peak_rss_mb"]["runtime"] > 0
    rows = {(r["graph"], r["engine"]): r for r in report["results"]}
    assert set(rows) == {("encoder", "edgegen ort-cpu"), ("decoder", "edgegen ort-cpu"),
                         ("encoder", "torch eager"), ("decoder", "torch eager")}
    for row in rows.values():
        assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput_per_s"] > 0
    assert set(report["speedup_vs_torch_p50"]) == {"encoder", "decoder"}
    # which report, of what: a pipeline comparing runs keys them by the graphs' hashes (helper 90)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    assert report["report"] == "edgegen.bench/1" and report["edgegen"] == edgegen.__version__
    assert report["package_name"] == manifest["name"] and report["measured"].endswith("+00:00")
    assert report["graphs_sha256"] == {part: g["sha256"] for part, g in manifest["graphs"].items()}


def test_bench_times_a_whole_generation_beside_the_graphs(trained, tmp_path, capsys):
    """A family whose generation is a loop of graph calls (diffusion: 20 steps, guidance's batch of
    2n) gets a row for the whole generation as `edgegen generate` runs it; one graph families not."""
    report_path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", trained["diffusion"][1], "--batch", "2", "--iters", "4", "--warmup", "1",
                           "--no-energy", "--json", report_path)
    report = json.loads(report_path.read_text())
    whole = report["whole_generation"]
    assert code == 0 and whole["unit"] == "images" and 3 <= whole["calls"] <= 4 and whole["per_s"] > 0
    assert all("megapixels_per_s" not in row for row in report["results"])   # a UNet's prediction is no picture
    assert whole["what"].startswith("2 images, 20 steps of ") and "a batch of 4 per call" in whole["what"]
    assert whole["steps"] == 20
    assert whole["min_ms"] <= whole["p50_ms"] <= whole["p90_ms"]
    assert f"whole generation ({whole['what']}): p50 " in out and " images/s" in out
    assert f" over {whole['calls']} runs, " in out
    code, out, _ = run_cli(capsys, "bench", trained["vae"][1], "--iters", "1", "--warmup", "0", "--no-energy",
                           "--json", report_path)
    report = json.loads(report_path.read_text())
    assert code == 0 and "whole_generation" not in report and "whole generation" not in out
    assert ", 1 iter; peak RSS" in out   # one count, one word: not "1 iters"
    assert {row["graph"] for row in report["results"] if "megapixels_per_s" in row} == {"decoder"}   # its pictures
    code, _, err = run_cli(capsys, "bench", trained["diffusion"][1], "--iters", "2", "--steps", "3", "--no-energy",
                           "--json", report_path)
    assert code == 0 and json.loads(report_path.read_text())["whole_generation"]["what"].startswith("1 image, 3 steps")
    code, _, err = run_cli(capsys, "bench", trained["vae"][1], "--steps", "3")
    assert code == 2 and "--steps 3: expected a package whose generation runs sampler steps" in err
    code, out, err = run_cli(capsys, "bench", trained["diffusion"][1], "--steps", "5000", "--iters", "2")
    assert code == 2 and "steps" in err and "| unet |" not in out   # refused before the graphs are timed


def test_a_sweep_times_the_whole_generation_and_its_steps_at_its_first_point_only(tmp_path, monkeypatch, capsys):
    """No built-in family has both a dim to sweep and sampler steps, so a family of one's own is
    stood in for: each sweep point is benched, --steps and the whole generation go to the first."""
    import torch

    from edgegen import bench, export_pytorch

    pkg = export_pytorch(torch.nn.Tanh(), {"x": np.linspace(-2, 2, 10, dtype=np.float32).reshape(2, 5)}, tmp_path / "pkg",
                         dynamic={"x": {0: "batch", 1: "width"}})
    real, seen = bench.bench_package, []

    def recording(path, generation, steps, **options):
        seen.append((options["shapes"]["width"], generation, steps))
        return real(path, generation=generation, **options)   # the package has no sampler: steps stop here

    monkeypatch.setattr(bench, "bench_package", recording)
    code, out, _ = run_cli(capsys, "bench", pkg, "--sweep", "width=4,8,16", "--steps", "3", "--iters", "2",
                           "--warmup", "0", "--no-energy", "--json", tmp_path / "sweep.json")
    assert code == 0 and seen == [(4, True, 3), (8, False, None), (16, False, None)]
    swept = json.loads((tmp_path / "sweep.json").read_text())
    assert swept["report"] == "edgegen.bench-sweep/1" and [r["shapes"]["width"] for r in swept["sweep"]] == [4, 8, 16]
    assert {r["report"] for r in swept["sweep"]} == {"edgegen.bench/1"}
    # one point: the same form (it was that point's report alone, another layout for the same option)
    code, out, _ = run_cli(capsys, "bench", pkg, "--sweep", "width=4", "--iters", "2", "--warmup", "0", "--no-energy",
                           "--no-generation", "--json", tmp_path / "one.json")
    assert code == 0 and json.loads((tmp_path / "one.json").read_text())["report"] == "edgegen.bench-sweep/1"


def test_a_whole_generation_runs_long_enough_and_as_often_as_iters_allows(monkeypatch):
    import time
    from types import SimpleNamespace

    from edgegen import bench
    from edgegen.errors import ConfigError
    from edgegen.families import GenerationCall

    calls = []

    def generation(seconds, n=1, steps=None):
        return GenerationCall(lambda: calls.append(time.sleep(seconds)), n, "things", f"{n} things", steps)

    record = bench.time_generation(generation(0, 3), iters=7, warmup=1, energy=False)
    assert len(calls) == 1 + 7 and record["calls"] == 7 and record["what"] == "3 things"   # quick: --iters of them
    calls.clear()
    monkeypatch.setattr(bench, "GENERATION_SECONDS", 0.01)
    record = bench.time_generation(generation(0.02), iters=50, warmup=0, energy=False)
    assert len(calls) == record["calls"] == bench.MIN_GENERATIONS   # slow: the fewest, not 50
    assert record["per_s"] == pytest.approx(1e3 / record["mean_ms"], rel=1e-3) and record["mean_ms"] >= 20
    # --steps only where the generation runs sampler steps
    looped = SimpleNamespace(name="loop", bench_generation=lambda pipe, n, steps: generation(0, n))
    stepped = SimpleNamespace(name="sampler", bench_generation=lambda pipe, n, steps: generation(0, n, steps or 20))
    assert bench.generation_call(stepped, None, 2, 4).steps == 4 and bench.generation_call(stepped, None, 2).steps == 20
    assert bench.generation_call(looped, None, 2).steps is None
    with pytest.raises(ConfigError, match="--steps 4: expected a package whose generation runs sampler steps"):
        bench.generation_call(looped, None, 2, 4)
    with pytest.raises(ConfigError, match="found a one package"):
        bench.generation_call(SimpleNamespace(name="one", bench_generation=None), None, 2, 4)
    assert bench.generation_call(SimpleNamespace(name="one", bench_generation=None), None, 2) is None


def test_bench_refuses_prompt_lookup_for_a_package_that_does_not_generate_tokens(trained, capsys):
    code, _, err = run_cli(capsys, "bench", trained["vae"][1], "--iters", "1", "--prompt-lookup", "4")
    assert code == 2 and "--prompt-lookup 4: expected a package that generates tokens, found the 'vae' family's" in err
    code, _, err = run_cli(capsys, "bench", trained["vae"][1], "--iters", "1", "--prompt-lookup", "-2")
    assert code == 2 and "--prompt-lookup: expected a number of draft tokens (0 or more), found -2" in err


def test_bench_refuses_a_checkpoint_the_package_was_not_made_from(trained, tmp_path, capsys):
    import shutil

    from safetensors.numpy import load_file, save_file

    vae, gan = trained["vae"], trained["gan"]
    code, _, err = run_cli(capsys, "bench", vae[1], "--iters", "1", "--vs-torch", tmp_path / "nowhere")
    assert code == 2 and err.endswith(f"found no checkpoint folder at {str(tmp_path / 'nowhere')!r}\n")   # not "pass it"
    code, _, err = run_cli(capsys, "bench", vae[1], "--iters", "1", "--vs-torch", gan[0])
    assert code == 2 and f"checkpoint {str(gan[0])!r}: expected a vae model, the family of the package " \
        f"{str(vae[1])!r}, found a gan model" in err   # said as another family, not only as other weights
    code, _, err = run_cli(capsys, "bench", vae[1], "--iters", "1", "--vs-torch", vae[1])   # the package itself
    assert code == 2 and err.endswith("found an edgegen package (edgegen.json): give the checkpoint it was exported from "
                                      "(edgegen info names it)\n")
    other = shutil.copytree(vae[0], tmp_path / "retrained")
    weights = load_file(other / "weights.safetensors")
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1
    save_file(weights, other / "weights.safetensors")
    code, _, err = run_cli(capsys, "bench", vae[1], "--iters", "1", "--vs-torch", other)
    assert code == 2 and f"checkpoint {str(other)!r}: expected the weights package {str(vae[1])!r} was exported " \
        "from (sha256 " in err


def test_doctor(capsys):
    code, out, _ = run_cli(capsys, "doctor")
    assert code == 0 and "CPUExecutionProvider" in out and "auto picks" in out and "TensorRT" in out
    code, out, _ = run_cli(capsys, "doctor", "--json")
    report = json.loads(out)
    assert "ort-cpu" in report["backends"]
    assert bool(report["nvidia_gpus"]) != bool(report["nvidia_gpus_none_because"])   # GPUs, or why none


@pytest.mark.parametrize("args, message", [
    (["info", "/no/such/pkg"], "package '/no/such/pkg': expected a package directory, found nothing at that path"),
    (["generate", "/no/such/pkg", "--out", "x.png"], "found nothing at that path"),
    (["export", "/no/such/ckpt", "--out", "pkg"], "checkpoint '/no/such/ckpt': expected a directory"),
    (["train", "flowgan", "--out", "x"], "family 'flowgan': expected one of vae, gan"),
    (["train", "vae", "--data", "nowhere", "--out", "x"], "data 'nowhere': expected one of digits, natural"),
    # an option of a module's export was dropped without a word with a checkpoint or an import
    (["export", "/no/such/ckpt", "--limit", "batch=8", "--out", "pkg"],
     "--limit: expected an option of a module's export (with --module), found it with a checkpoint"),
    (["export", "--from-diffusers", "/no/such/dir", "--atol", "1e-3", "--out", "pkg"],
     "--atol: expected an option of a module's export (with --module), found it with --from-diffusers"),
    (["export", "--inputs", "x.npz", "--out", "pkg"], "--inputs: expected an option of a module's export (with "
                                                      "--module), found it with no --module"),
])
def test_user_errors_are_one_line_without_traceback(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("edgegen: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_backend_and_hash_mismatch_from_the_command(package_copy, capsys, tmp_path):
    pkg = package_copy("gan")
    code, _, err = run_cli(capsys, "generate", pkg, "--backend", "gpu", "--out", tmp_path / "x.png")
    assert code == 2 and "backend 'gpu': expected one of" in err
    with open(pkg / "generator.onnx", "ab") as f:
        f.write(b"!")
    code, _, err = run_cli(capsys, "generate", pkg, "--out", tmp_path / "x.png")
    assert code == 2 and "expected sha256" in err
    assert not (tmp_path / "x.png").exists()


def test_debug_shows_the_traceback(capsys):
    code, _, err = run_cli(capsys, "--debug", "info", "/no/such/pkg")
    assert code == 2 and "Traceback" in err and "edgegen: error:" in err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "edgegen.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("edgegen ")
    from pathlib import Path

    exe = Path(sys.executable).parent / "edgegen"  # pip puts console scripts beside the interpreter
    assert exe.is_file(), "the edgegen console script is not installed"
    assert subprocess.run([str(exe), "--help"], capture_output=True, text=True).returncode == 0


def test_what_the_system_refuses_is_one_line_too(package_copy, capsys, tmp_path, monkeypatch):
    """An output under a file, a closed pipe (edgegen info | head), memory, text the terminal
    cannot encode: one line and exit status 2, never a traceback."""
    import os

    pkg = package_copy("gan")
    capsys.readouterr()   # the training and export a first use of the fixture prints, run alone
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "generate", pkg, "--out", tmp_path / "file" / "x.png")
    assert code == 2 and err.startswith("edgegen: error: ") and err.count("\n") == 1
    assert "x.png': expected a folder to write it in, found a file on the way to it" in err

    read_end, write_end = os.pipe()

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return write_end

    os.close(read_end)   # the reader has gone, as `| head` goes after its lines
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = main(["info", str(pkg)])
    monkeypatch.undo()
    os.close(write_end)
    assert code == 141 and capsys.readouterr().err == ""   # quietly, as cat and grep end at `| head`

    # standard output on a full disk (> /dev/full): said as standard output's, where it named --out, which
    # generate had written (review 176)
    class FullDevice(ClosedPipe):
        def write(self, text):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("sys.stdout", FullDevice())
    code = main(["generate", str(pkg), "--n", "2", "--out", str(tmp_path / "g.png")])
    monkeypatch.undo()
    assert code == 2 and (tmp_path / "g.png").is_file()
    assert capsys.readouterr().err.endswith("edgegen: error: 'standard output': No space left on device (OSError)\n")
    monkeypatch.setattr("sys.stdout", None)   # closed (>&-): print dropped info's lines, and the status was 0
    code = main(["info", str(pkg)])
    report = main(["optimize", str(pkg), "--precision", "fp16", "--no-speed-check", "--json"])   # review 180: 0, lost
    written = main(["generate", str(pkg), "--n", "2", "--out", str(tmp_path / "closed.png")])   # its file, its status
    monkeypatch.undo()
    assert code == report == 2 and capsys.readouterr().err.count("standard output: expected it open (edgegen prints "
                                                                 "its results there), found it closed") == 2
    assert written == 0 and (tmp_path / "closed.png").is_file()   # review 178: exit 3, the wrapper writing to None
    # a shell standing in a folder removed since: torch's import died in oneMKL, blaming the install (review 176)
    monkeypatch.setattr("os.getcwd", lambda: (_ for _ in ()).throw(FileNotFoundError(2, "No such file or directory")))
    code = main(["train", "vae", "--steps", "1", "--out", str(tmp_path / "ckpt")])
    relative = main(["generate", str(pkg), "--n", "2", "--out", "rel.png"])   # a bare FileNotFoundError (review 180)
    absolute = main(["generate", str(pkg), "--n", "2", "--out", str(tmp_path / "abs.png")])   # the runtime runs there
    monkeypatch.undo()
    assert code == relative == 2 and capsys.readouterr().err == 2 * (
        "edgegen: error: the current directory: expected one that exists, found it removed (the shell still stands in "
        "it): cd to another\n")
    assert absolute == 0 and (tmp_path / "abs.png").is_file()

    # a broken pipe that is not standard output's (a subprocess's, a socket's) is an error to say
    monkeypatch.setattr("edgegen.cli._print_info", lambda *args: (_ for _ in ()).throw(BrokenPipeError(32, "Broken pipe")))
    code, _, err = run_cli(capsys, "info", pkg)
    assert code == 2 and "Broken pipe (BrokenPipeError)" in err
    monkeypatch.undo()

    for error in (MemoryError(), UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")):
        def fail(args, error=error):
            raise error
        monkeypatch.setattr("edgegen.cli._print_info", lambda path, error=error: fail(None))
        code, _, err = run_cli(capsys, "info", pkg)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert ("out of memory" if isinstance(error, MemoryError) else "surrogates not allowed") in err


def test_grid_flags_are_refused_for_packages_that_draw_no_grid(trained, tmp_path, capsys):
    from edgegen import families

    pkg = trained["gan"][1]
    assert families.get("gan").grid_flags and not families.get("gpt").grid_flags
    assert not families.get("wavenet").grid_flags and not families.get("sr").grid_flags
    assert main(["generate", str(pkg), "--n", "4", "--nrow", "2", "--out", str(tmp_path / "g.png")]) == 0
    # the GAN's declaration as if it drew one picture (as sr does): --n no longer applies
    gan = families.get("gan")
    object.__setattr__(gan, "grid_flags", False)   # Family is frozen
    try:
        assert main(["generate", str(pkg), "--n", "4", "--out", str(tmp_path / "h.png")]) == 2
    finally:
        object.__setattr__(gan, "grid_flags", True)
    assert "--n: expected an option of packages that draw a grid of images, found it given to a gan package" \
        in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()


def test_generate_writes_the_format_its_extension_names_or_refuses_it(trained, tmp_path, capsys):
    ddpm = str(trained["diffusion"][1])
    assert main(["generate", ddpm, "--n", "2", "--steps", "2", "--out", str(tmp_path / "d.jpeg")]) == 0
    assert (tmp_path / "d.jpeg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert main(["generate", ddpm, "--n", "2", "--steps", "2", "--out", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["generate", ddpm, "--n", "1", "--steps", "2", "--out", str(tmp_path / "d.png")]) == 0
    assert f"wrote {tmp_path / 'd.png'} (1 sample from diffusion package, seed 0, backend ort-cpu, precision fp32)" \
        in capsys.readouterr().out
    assert main(["generate", ddpm, "--n", "2", "--steps", "2", "--out", str(tmp_path / "d.gif")]) == 2
    assert "expected an extension among .png, .jpg, .jpeg, found .gif" in capsys.readouterr().err
    assert not (tmp_path / "d.gif").exists()
    assert main(["generate", ddpm, "--n", "2", "--steps", "2", "--out", str(tmp_path / ".PNG")]) == 2   # no name
    assert "expected a file name before .png, found only the extension (a hidden file)" in capsys.readouterr().err
    assert main(["generate", ddpm, "--seed", "-1", "--out", str(tmp_path / "d.png")]) == 2   # "or None" was offered
    assert "edgegen: error: --seed: expected a non-negative integer, found -1\n" == capsys.readouterr().err


def test_generate_out_is_compared_with_options_that_are_files_only(tmp_path):
    """A prompt is a string too: one longer than a file name may be is no file, not an error."""
    from edgegen.cli import _refuse_out_over_what_generate_reads

    _refuse_out_over_what_generate_reads(tmp_path / "story.txt", tmp_path / "pkg", {"prompt": "Once upon a time " * 40})


@pytest.mark.parametrize("stop, said, code", [(KeyboardInterrupt, "edgegen: interrupted", 130),
                                              ("terminated", "edgegen: terminated", 128 + 15)])
def test_a_stop_a_library_wraps_in_its_own_error_is_said_as_the_stop(trained, monkeypatch, capsys, stop, said, code):
    """Ctrl-C landing while torch.export imported a module came out as its TorchExportError: a
    108-line traceback and status 1 (helper 72)."""
    from edgegen import cli

    def wrapped(args):
        try:
            raise cli.Terminated() if stop == "terminated" else stop()
        except BaseException as exc:
            raise RuntimeError("Failed to export the model with torch.export") from exc

    pkg = str(trained["vae"][1])
    capsys.readouterr()   # the fixture's training
    monkeypatch.setattr(cli, "_cmd_info", wrapped)
    assert main(["info", pkg]) == code
    assert capsys.readouterr().err == said + "\n"
    monkeypatch.setattr(cli, "_cmd_info", lambda args: 1 / 0)   # any other error is a bug: its traceback, status 3
    assert main(["info", pkg]) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ZeroDivisionError" in err and err.endswith(
        "edgegen: internal error: ZeroDivisionError in edgegen info, not a mistake of yours: the traceback above is "
        "what to report (exit status 3)\n")

    def missing(args):   # a module edgegen's export side does not name: a broken install, not the extra
        import importlib

        importlib.import_module("not_a_module_edgegen_has")

    monkeypatch.setattr(cli, "_cmd_info", missing)
    assert main(["info", pkg]) == 3 and "ModuleNotFoundError in edgegen info" in capsys.readouterr().err
    monkeypatch.setattr(cli, "build_parser", lambda: {}["a family's code failing"])
    assert main(["info", pkg]) == 3 and "KeyError in edgegen, not a mistake of yours" in capsys.readouterr().err


def test_python_dash_m_edgegen_is_the_command():
    """A CI step calling one interpreter by its path, without the environment's bin on PATH."""
    result = subprocess.run([sys.executable, "-m", "edgegen", "info", "no-such-package"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("edgegen: error: ") and "no-such-package" in result.stderr


def test_a_log_gets_a_line_a_minute_while_long_work_runs(monkeypatch):
    """stderr not a terminal (a CI log): a training of 500 steps printed nothing for its 191 s, then
    one line, and runners that kill a step silent for 10 minutes would kill a long one (helper 90)."""
    import io

    from edgegen import progress

    now = [1000.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    log = io.StringIO()
    with progress.Progress(500, "train vae", stream=log) as bar:
        for step in range(500):
            now[0] += 0.5   # 250 s in all
            bar.update(1, info=f"loss={1 / (step + 1):.3f}")
    assert log.getvalue().splitlines() == ["train vae: 120/500 after 60s loss=0.008", "train vae: 240/500 after 120s loss=0.004",
                                           "train vae: 360/500 after 180s loss=0.003", "train vae: 480/500 after 240s loss=0.002",
                                           "train vae: 500/500 in 250.0s loss=0.002"]
    quiet = io.StringIO()
    with progress.Progress(10, "", stream=quiet) as bar:   # a library call's loop with no label: nothing
        for _ in range(10):
            now[0] += 100
            bar.update()
    monkeypatch.setattr(progress.tqdm, "monitor", None)   # as in a fresh process
    with progress.Progress(10, "export", enabled=False, stream=quiet) as bar:   # progress=False: nothing either
        for _ in range(10):
            now[0] += 100
            bar.update(info="x")
    assert quiet.getvalue() == ""
    assert progress.tqdm.monitor is None   # nor tqdm's monitor thread, which any tqdm starts (helper 151)


def test_progress_false_is_silent_as_the_python_api_says(trained, tmp_path, capsys):
    """export(progress=False) is documented silent, yet printed its summary line; optimize's own
    timings (progress=False) printed 'bench: 8/8 in 0.0s' among its lines (review 91)."""
    from edgegen.export import export_checkpoint
    from edgegen.optimize import speedup_of_calls

    capsys.readouterr()
    export_checkpoint(trained["vae"][0], tmp_path / "pkg", progress=False)
    speedup_of_calls(lambda: None, lambda: None, rounds=2)
    assert capsys.readouterr().err == ""


def test_debug_after_the_command_shows_the_traceback(capsys):
    """`edgegen info x --debug` was refused as an unknown option: --debug went before the command only."""
    for args in (["--debug", "info", "no-such-package"], ["info", "no-such-package", "--debug"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and err.endswith("found nothing at that path (nor a shipped model's name: "
                                                            "edgegen list)\n"), args
    assert main(["info", "no-such-package"]) == 2 and not capsys.readouterr().err.startswith("Traceback")


def test_an_option_a_command_does_not_take_is_said_by_that_commands_parser(capsys, tmp_path):
    """`edgegen train vae --stepz 3` pointed to 'edgegen --help', whose page lists commands, not
    train's options (helper 92); a mistyped value is the command's too. One line, status 2."""
    for args, said in ((["train", "vae", "--stepz", "3", "--out", str(tmp_path / "c")],
                        "edgegen train: error: unrecognized arguments: --stepz 3 ('edgegen train --help' lists the "
                        "options)\n"),
                       (["bench", "x", "--iters", "abc"], "edgegen bench: error: argument --iters: invalid int value: "
                                                          "'abc' ('edgegen bench --help' lists the options)\n")):
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2 and capsys.readouterr().err == said


def test_a_folder_given_with_a_trailing_slash_is_named_by_its_flag(tmp_path, capsys):
    """`--out demo/` (the README's form) was said as "output 'demo'": the Path the demo made of it
    dropped the slash, so the message no longer named the value given, and kept the keyword."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "index.md").write_text("mine")
    code, _, err = run_cli(capsys, "demo", "--out", f"{tmp_path / 'demo'}/", "--only", "vae")
    assert code == 2 and err.startswith(f"edgegen: error: --out {str(tmp_path / 'demo')!r}: expected ")


def test_the_command_looks_for_cyclic_garbage_less_often_than_python_does(capsys):
    """An export spent a tenth of its time in Python's collections at its default threshold of 700
    allocations (edgegen/cli.py): the command raises it for its own process, keeping the rest."""
    import gc

    from edgegen.cli import COLLECT_AFTER_ALLOCATIONS

    kept = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 9)
        assert main(["list"]) == 0
        assert gc.get_threshold() == (COLLECT_AFTER_ALLOCATIONS, 10, 9)
    finally:
        gc.set_threshold(*kept)
