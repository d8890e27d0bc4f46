"""The shipped models by name (edgegen/shipped.py) and the edgegen-models distribution (models/):
a name finds the package exported from its checkpoint's very weights, else exports it once into
the cache; a package that drifted from its checkpoint is never used, and the release check and
the wheel build find it."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import edgegen
import edgegen.export
from edgegen import shipped, storage
from edgegen.cli import main
from edgegen.errors import ConfigError, PackageError
from edgegen_models import build as models_build

REPO = Path(__file__).resolve().parent.parent
NAME = "gan-digits"   # small and quick to export


def private_models(tmp_path, monkeypatch, *names: str) -> Path:
    """A private edgegen-models folder with these shipped checkpoints, and a private cache."""
    root = tmp_path / "edgegen_models"
    for name in names:
        shutil.copytree(shipped.checkpoints_dir() / name, root / "checkpoints" / name)
    monkeypatch.setattr(shipped, "models_root", lambda: root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root


@pytest.fixture
def models(tmp_path, monkeypatch):
    return private_models(tmp_path, monkeypatch, NAME)


def perturb_weights(checkpoint: Path) -> None:
    weights = load_file(checkpoint / "weights.safetensors")
    for name, value in weights.items():
        if value.dtype == np.float32:
            weights[name] = value * np.float32(1.01)
    save_file(weights, checkpoint / "weights.safetensors")


def test_a_cache_this_user_cannot_write_is_said_with_what_to_do_instead(models, tmp_path, capsys, monkeypatch):
    """A read-only cache (a shared home, a container's): list promised an export on first use and
    load's hint said to give the name to a command, which then failed (review 184)."""
    import errno

    writable = storage._probe_file_in

    def read_only(folder, path):   # the cache's folder, and the nearest that exists on the way to it
        if folder == tmp_path or tmp_path / "cache" in (folder, *folder.parents):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        writable(folder, path)

    monkeypatch.setattr(storage, "_probe_file_in", read_only)   # root writes anywhere: the refusal is made here
    instead = (r"the cache '.*packages': expected a folder this user can write a folder in, found .*, where the system "
               r"refused one \(Read-only file system\): export it elsewhere with 'edgegen export {} --out DIR' and give "
               r"DIR, or set XDG_CACHE_HOME to a folder this user can write")
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert f"{NAME}  gan         checkpoint only: not exported: the cache cannot be written (below)" in listed
    assert re.search(instead.format("NAME") + "\n$", listed), listed
    with pytest.raises(PackageError, match=f"shipped model '{NAME}': expected its exported package, found none .*: "
                                           + instead.format(NAME)):
        edgegen.load(NAME)
    (tmp_path / "out").mkdir()
    assert main(["generate", NAME, "--n", "2", "--out", str(tmp_path / "out" / "a.png")]) == 2
    assert re.search(instead.format(NAME), capsys.readouterr().err) and not (tmp_path / "out" / "a.png").exists()
    # packages/ itself, where the folders on the way to it take files (a root-owned one a `sudo edgegen` left)
    packages = tmp_path / "cache" / "edgegen" / "packages"
    packages.mkdir(parents=True)

    def packages_read_only(folder, path):
        if folder == packages:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        writable(folder, path)

    monkeypatch.setattr(storage, "_probe_file_in", packages_read_only)
    assert main(["list"]) == 0
    assert "checkpoint only: not exported: the cache cannot be written (below)" in capsys.readouterr().out


def test_a_name_exports_once_into_the_cache_then_finds_it(models, tmp_path, capsys, monkeypatch):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "checkpoint only: exported on first use" in listed and "needs the export extra" not in listed   # it is installed
    assert listed.endswith(f"(a name's first use exports it into {tmp_path / 'cache' / 'edgegen' / 'packages'})\n")
    with monkeypatch.context() as device:   # a runtime-only install: said on the rows it would export
        device.setattr("edgegen.cli.missing_export_modules", lambda: ["torch"])
        assert main(["list"]) == 0
        assert "on first use (needs the export extra: pip install 'edgegen[export]')" in capsys.readouterr().out
    assert main(["generate", NAME, "--n", "4", "--out", str(tmp_path / "a.png")]) == 0
    first = capsys.readouterr()
    assert f"exporting the shipped {NAME} once into {tmp_path / 'cache'}" in first.err
    assert main(["generate", NAME, "--n", "4", "--out", str(tmp_path / "b.png")]) == 0
    assert "exporting" not in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with monkeypatch.context() as upgraded:   # other code now: list says what cache says of the export (review 155)
        earlier = shipped.cache_path(NAME)
        upgraded.setattr(shipped, "code_revision", lambda: "0123456789ab")
        assert main(["list"]) == 0
        assert f"in {earlier}, exported by other code (" in capsys.readouterr().out
    assert edgegen.load(NAME).package.path == shipped.cache_path(NAME)
    assert main(["info", NAME]) == 0   # its variants go into a copy: optimize refuses the shared package
    assert f"'edgegen optimize' adds int8 / fp16 variants to a copy (cp -r {shipped.cache_path(NAME)} pkg-{NAME})" \
        in capsys.readouterr().out
    with monkeypatch.context() as device:   # a runtime-only install: where optimize runs is said
        device.setattr("edgegen.errors.missing_export_modules", lambda: ["torch"])
        assert main(["info", NAME]) == 0
        assert f"pkg-{NAME}), where the export extra is (a runtime-only install cannot))" in capsys.readouterr().out
    assert main(["check", NAME]) == 0
    capsys.readouterr()
    assert main(["build", NAME]) == 2   # the name found: what is missing is TensorRT, not a package
    assert "tensorrt" in capsys.readouterr().err and not (Path.cwd() / NAME).exists()
    assert main(["build", NAME, "--precision", "int8"]) == 2   # the package's own mistakes first, as for a path
    # made on a copy: it said to optimize the shared package, which optimize refuses
    assert (f"expected int8 variants (made by 'edgegen optimize --precision int8' on a copy of a shipped model's package, "
            f"which every use of its name shares: cp -r {shipped.cache_path(NAME)} pkg-{NAME}, edgegen optimize "
            f"pkg-{NAME} --precision int8, then run pkg-{NAME} in its place), found none") in capsys.readouterr().err
    assert main(["build", "no-such-package"]) == 2   # not a name: a path, said missing as a path is
    assert "package 'no-such-package': expected a package directory, found nothing" in capsys.readouterr().err
    # optimize writes into its package: it names the copy to make of the shared one
    assert main(["optimize", NAME, "--precision", "int8"]) == 2
    assert f"optimize a copy (cp -r {shipped.cache_path(NAME)} pkg-{NAME}, then" in capsys.readouterr().err
    # ... and given by the path list and info print (helper 80: it wrote its int8 variant there)
    manifest = (shipped.cache_path(NAME) / "edgegen.json").read_bytes()
    assert main(["optimize", str(shipped.cache_path(NAME)), "--precision", "int8"]) == 2
    assert f"found the package of the shipped model {NAME!r}, which every use of the name shares: optimize a copy " \
           f"(cp -r {shipped.cache_path(NAME)} pkg-{NAME}, then" in capsys.readouterr().err
    assert (shipped.cache_path(NAME) / "edgegen.json").read_bytes() == manifest


def test_export_takes_a_shipped_name_for_its_checkpoint(models, tmp_path, capsys):
    """check advises exporting a shipped package again with --target jetpack6: the name is its
    checkpoint there (it was refused as no checkpoint at that path; helper 79)."""
    out = tmp_path / "pkg"
    assert main(["export", NAME, "--target", "jetpack6", "--out", str(out)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "edgegen.json").read_text())
    assert manifest["name"] == NAME and manifest["provenance"]["opset"] == 18
    assert manifest["provenance"]["source_checkpoint"]["path"] == str((models / "checkpoints" / NAME).resolve())
    # and bench --vs-torch takes the name for the same checkpoint (it found no folder of that name)
    capsys.readouterr()
    assert main(["bench", str(out), "--vs-torch", NAME, "--iters", "2", "--warmup", "1", "--no-energy"]) == 0
    assert "torch eager" in capsys.readouterr().out


def test_build_says_tensorrt_is_missing_before_a_name_exports(models, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is here: build would build")
    assert main(["build", NAME]) == 2
    assert "expected the tensorrt and cuda-python packages" in capsys.readouterr().err
    assert shipped.find_shipped(NAME) is None   # not exported (minutes) only to be refused


def test_generate_refuses_an_option_of_another_family_before_a_name_exports(models, tmp_path, capsys):
    assert main(["generate", NAME, "--steps", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--steps: expected an option of" in capsys.readouterr().err
    assert main(["generate", NAME, "--out", str(tmp_path / "x.gif")]) == 2   # an extension it cannot write, too
    assert not (tmp_path / "cache").exists() and shipped.find_shipped(NAME) is None   # nothing exported


@pytest.mark.parametrize("name, arguments, refusal", [
    ("gan-digits", [], "--out: expected the PNG or JPEG file to write for a gan package, found none"),
    ("wavenet-tones", ["--out", "clip.mp3"], "--out: expected a .wav file to write"),
    ("wavenet-tones", ["--seconds", "0", "--out", "clip.wav"], "--seconds: expected a duration above 0"),
    ("gpt-stdlib", [], "--prompt, --prompt-ids or --chat: expected one of them for a gpt package, found none"),
    ("gpt-stdlib", ["--prompt", "def ", "--out", "text.md"], "expected a .txt file to write"),
    ("text2image-digits", ["--out", "x.png"], "--prompt: expected the text to picture"),
    ("controlnet-digits", ["--out", "x.png"], "--control: expected a picture for the samples"),
    ("sr-photos-x4", ["--out", "x.png"], "--image: expected the picture to upscale"),
    ("sr-photos-x4", ["--image", "in.png", "--out", "x.gif"], "expected an extension among"),
])
def test_generate_refuses_what_needs_no_package_before_a_name_exports(name, arguments, refusal, tmp_path, monkeypatch,
                                                                      capsys):
    """A first use exports the name (up to a minute): a missing option or an --out of the wrong
    format is refused before that, as before any package loads."""
    private_models(tmp_path, monkeypatch, name)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", name, *arguments]) == 2
    assert refusal in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and shipped.find_shipped(name) is None   # nothing exported


def test_a_newer_edgegen_exports_the_name_anew_and_leaves_the_old_export(models, monkeypatch, capsys):
    from edgegen.export.shipped import export_shipped

    old = export_shipped(NAME, report=lambda line: None)
    assert f"-edgegen-{edgegen.__version__}" in old.name
    edgegen_version = edgegen.__version__
    monkeypatch.setattr(edgegen, "__version__", "99.0.0")   # an upgrade: its export may write other graphs
    assert shipped.find_shipped(NAME) is None
    # loading exports nothing: it names the export it found of other code, where it said "none made from its weights"
    with pytest.raises(PackageError, match=rf"expected its exported package, found only {re.escape(str(old))}, exported "
                                           rf"by edgegen {edgegen_version} \(code {shipped.code_revision()}\); this is "
                                           rf"99.0.0 \(code {shipped.code_revision()}\): export them"):
        edgegen.load(NAME)
    new = export_shipped(NAME, report=print)
    assert "exporting the shipped" in capsys.readouterr().out
    assert new != old and new.name.endswith(f"-edgegen-99.0.0+{shipped.code_revision()}") and (old / "edgegen.json").is_file()
    assert edgegen.load(NAME).package.path == new


def test_the_code_an_export_runs_leaves_out_families_command_lines_and_demos():
    """A comment in gpt's generate options made every shipped model's export stale in a checkout
    (helper 151): a family's cli.py and demo.py are not the export's code; its model, export and
    pipeline (which defines its config) are."""
    root = Path(shipped.__file__).resolve().parent
    files = {f.relative_to(root).as_posix() for f in shipped.export_code_files(root)}
    assert {"families/gpt/export.py", "families/gpt/pipeline.py", "families/vae/model.py", "package.py",
            "export/onnx_export.py"} <= files
    assert not {f for f in files if f.endswith(("/cli.py", "/demo.py")) and f.count("/") == 2}


def test_an_edgegen_of_other_code_exports_anew_and_its_earlier_exports_are_stale(models, monkeypatch, capsys):
    """The version stayed 0.1.0 across hundreds of commits: an export by other code (one whose
    graph was fixed since, as StyleGAN's dropped epsilon) is not served as current, from the cache
    or from edgegen-models' folder, where this machine can export again."""
    from edgegen.export.shipped import export_shipped

    old = export_shipped(NAME, report=lambda line: None)
    (carried,) = models_build.build([NAME], models, report=lambda line: None)
    assert shipped.recorded_code(old) == shipped.recorded_code(carried) == shipped.code_revision()
    before = shipped.code_revision()
    monkeypatch.setattr(shipped, "code_revision", lambda: "0123456789ab")   # the code changed
    assert shipped.find_shipped(NAME) is None and models_build.stale([NAME], models) == [NAME]
    with monkeypatch.context() as device:   # a runtime-only device cannot export: it reads what it has
        device.setattr(shipped, "missing_export_modules", lambda: ["torch"])
        device.setattr("edgegen.errors.missing_export_modules", lambda: ["torch"])
        assert shipped.find_shipped(NAME) == carried and models_build.stale([NAME], models) == []
    # loading exports nothing: it reads the carried package, and says so; list says what a command does
    with pytest.warns(edgegen.EdgegenWarning, match=rf"edgegen-models' package in .* was exported by other code "
                                                    rf"\({before}; this edgegen's is 0123456789ab\): loaded as it is"):
        assert edgegen.load(NAME).package.path == carried
    capsys.readouterr()
    assert main(["list"]) == 0
    assert f"in edgegen-models, exported by other code ({before}; this edgegen's is 0123456789ab): exported again " \
        "on first use" in capsys.readouterr().out
    new = export_shipped(NAME, report=lambda line: None)
    version = edgegen.__version__
    assert new.name.endswith(f"-edgegen-{version}+0123456789ab") and edgegen.load(NAME).package.path == new
    # the name edgegen gave an export before it named its version: an earlier edgegen's too
    unversioned = old.parent / old.name.split("-edgegen-")[0]
    shutil.copytree(old, unversioned)
    assert main(["cache"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    cache = old.parent.parent
    assert lines[str(old.relative_to(cache))].endswith(
        f"stale: exported by edgegen {version} (code {before}); this is {version} (code 0123456789ab)")
    assert lines[str(unversioned.relative_to(cache))].endswith(
        "stale: exported by an earlier edgegen, which left its version out of the name")
    assert "stale" not in lines[str(new.relative_to(cache))]
    # a runtime-only install beside it, sharing the cache, cannot tell the code an export ran (its
    # revision leaves the exporter's versions out): it keeps this edgegen's exports for the export side
    monkeypatch.setattr("edgegen.cache.missing_export_modules", lambda: ["torch"])
    assert main(["cache", "--prune"]) == 0
    assert old.is_dir() and new.is_dir() and not unversioned.exists()
    monkeypatch.setattr(edgegen, "__version__", "99.0.0")   # an upgrade's exports are another version's
    assert main(["cache"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines[str(old.relative_to(cache))].endswith(f"stale: exported by edgegen {version} (code {before}); this is "
                                                       "99.0.0 (code 0123456789ab)")


def test_a_damaged_export_in_the_cache_is_said_and_exported_again(models, tmp_path, monkeypatch, capsys):
    """The cache is edgegen's, made from the checkpoint alone: a changed file there was refused on
    every use, with advice to copy or export a package the user never made."""
    from edgegen.export.shipped import export_shipped

    package = export_shipped(NAME, report=lambda line: None)
    graph = package / "generator.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    assert main(["list"]) == 0
    assert f"{NAME}  gan         damaged in {package}: exported again on first use" in capsys.readouterr().out
    assert main(["cache"]) == 0
    assert "stale: damaged (graph 'generator' file 'generator.onnx' expected sha256" in capsys.readouterr().out
    with pytest.raises(PackageError, match=rf"shipped model '{NAME}': expected its export in the cache intact, found "
                                           rf".* damaged \(graph 'generator' file 'generator.onnx' expected sha256 "
                                           r"[0-9a-f]{16}\.\.\., found [0-9a-f]{16}\.\.\.\): give the name to an edgegen"):
        edgegen.load(NAME)   # the runtime's load exports nothing: it says what to do
    assert main(["generate", NAME, "--n", "4", "--out", str(tmp_path / "a.png")]) == 0
    assert f"the export of the shipped {NAME} in {package} is damaged (graph 'generator'" in capsys.readouterr().err
    assert edgegen.load(NAME).package.path == package and shipped.package_damage(package) is None
    assert not [p.name for p in package.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    # the manifest itself unreadable: the folder records no weights, and was taken for none there
    (package / "edgegen.json").write_text('{"format": ')
    assert main(["list"]) == 0 and f"damaged in {package}: exported again" in capsys.readouterr().out
    with pytest.raises(PackageError, match=r"expected its export in the cache intact, found .* damaged \(.*expected "
                                           r"valid JSON"):
        edgegen.load(NAME)
    assert main(["generate", NAME, "--n", "4", "--out", str(tmp_path / "b.png")]) == 0
    assert "is damaged (" in capsys.readouterr().err and edgegen.load(NAME).package.path == package


def test_edgegen_cache_lists_what_this_edgegen_reads_and_prune_removes_the_rest(models, monkeypatch, tmp_path, capsys):
    """After an upgrade the old exports and judges stay in the cache: `edgegen cache` says which
    entries this edgegen never reads, and --prune removes them whole, keeping what it reads, what
    it did not write, and an entry another command is writing now."""
    from edgegen.export.shipped import export_shipped
    from edgegen.storage import writer_lock
    from edgegen.training.classifier import judge_path

    cache = tmp_path / "cache" / "edgegen"
    before = edgegen.__version__
    old = export_shipped(NAME, report=lambda line: None)
    monkeypatch.setattr(edgegen, "__version__", "99.0.0")   # the upgrade
    new = export_shipped(NAME, report=lambda line: None)
    other_weights = cache / "packages" / shipped.cached_export_name(NAME, "0" * 64, shipped.export_version())
    retired = cache / "packages" / shipped.cached_export_name("retired-model", "1" * 64, shipped.export_version())
    for copy in (other_weights, retired):
        shutil.copytree(new, copy)
    leftover = cache / "packages" / f".{new.name}.abcd1234.partial"   # a killed writer's staging folder
    leftover.mkdir()
    (leftover / "edgegen.json").write_text("{}")
    judges = cache / "judges"
    judges.mkdir()
    current_judge = judge_path(8, 1500, 0)   # the name the judge's training writes
    old_judge = judges / f"digits-8px-1500steps-seed0-edgegen-{before}-torch-2.0.0.safetensors"
    notes, key = judges / "notes.txt", cache / "engine.key"
    (cache / "tensorrt").mkdir()
    timing = cache / "tensorrt" / "timing-10.13.0.35-NVIDIA_H200-sm9.0.cache"   # this environment's TensorRT
    old_timing = cache / "tensorrt" / "timing-10.3.0.30-Orin-sm8.7.cache"   # one before the upgrade: never read again
    monkeypatch.setattr("edgegen.cache.tensorrt_version", lambda: "10.13.0.35")
    timing_tmp = timing.parent / f".{timing.name}.k3x9_q2z.tmp"   # a build killed while writing it
    for path in (current_judge, old_judge, notes, key, timing, old_timing, timing_tmp):
        path.write_bytes(b"x" * 32)

    assert main(["cache"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    code = shipped.code_revision()
    stale = {old: f"stale: exported by edgegen {before} (code {code}); this is 99.0.0 (code {code})",
             other_weights: f"stale: exported from other weights than the installed edgegen-models' {NAME}",
             retired: "stale: the installed edgegen-models ships no model of that name",
             leftover: f"stale: a part of {new.name} a killed command left",
             old_judge: f"stale: trained by edgegen {before}; this is 99.0.0",
             timing_tmp: f"stale: a part of {timing.name} a killed command left",
             old_timing: "stale: written by TensorRT 10.3.0.30; this is 10.13.0.35"}
    for path, why in stale.items():
        assert lines[str(path.relative_to(cache))].endswith(why)
    for path in (new, current_judge, notes, key, timing):
        assert "stale" not in lines[str(path.relative_to(cache))]
    total = lines[str(cache) + ":"]
    assert " in 12 entries, " in total and total.endswith(" in 7 stale ones (edgegen cache --prune removes them)")
    # a part of a write running now is said as that, not as a killed command's (helper 79)
    with writer_lock(new, "exporting it in this test"):
        assert main(["cache"]) == 0
    line = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}[str(leftover.relative_to(cache))]
    assert f"being written now by pid {os.getpid()} (" in line and line.endswith(": exporting it in this test)")
    assert "stale" not in line

    # a killed writer's only copy of an old output, moved aside with nothing in its place: put back, not removed
    gone = cache / "packages" / shipped.cached_export_name(NAME, "2" * 64, before)
    moved_aside = gone.parent / f".{gone.name}.edgegen-123.old"
    shutil.copytree(old, moved_aside)
    file_leftover = cache / "packages" / f".{new.name}.wxyz5678.partial"   # a leftover's name on a file: it was
    file_leftover.write_text("x")                                          # said removed, and left
    from edgegen import cache as cache_module

    def remove_whole(path, doing):   # the system refuses one removal: kept, said, and the others go on
        if path == other_weights:   # as the system names it: the lock beside it, in a folder not this user's
            raise PermissionError(13, "Permission denied", str(path.parent / f".{path.name}.lock"))
        return removing(path, doing)

    removing = cache_module.remove_whole
    monkeypatch.setattr(cache_module, "remove_whole", remove_whole)
    with writer_lock(retired, "being written by this test"):
        assert main(["cache", "--prune"]) == 0
    out = capsys.readouterr().out
    assert f"kept {retired}: " in out and "expected no other edgegen command writing it" in out
    assert (f"kept {other_weights}: expected a cache folder this user may write in, found {other_weights.parent} not "
            "writable by this user (Permission denied)") in out
    assert f"restored {gone} from {moved_aside.name}: the only copy" in out
    assert all(f"removed {p} (" in out for p in (old, leftover, old_judge, timing_tmp, file_leftover, old_timing))
    assert out.splitlines()[-1].startswith(f"{cache}: removed 6 stale entries, ")
    assert not any(p.exists() for p in (old, leftover, old_judge, moved_aside, timing_tmp, file_leftover, old_timing))
    assert all(p.exists() for p in (new, current_judge, notes, key, retired, other_weights, gone, timing))
    assert not [p for p in (cache / "packages").iterdir() if p.name.startswith(".")]   # no staging folder left
    assert edgegen.load(NAME).package.path == new

    monkeypatch.setattr(cache_module, "remove_whole", removing)
    assert main(["cache", "--prune"]) == 0
    assert "removed 3 stale entries" in capsys.readouterr().out   # the refused, the busy, the restored (stale too)
    assert not any(p.exists() for p in (retired, other_weights, gone)) and new.exists()


def test_no_home_and_no_cache_variable_is_said_in_one_line(models, tmp_path, monkeypatch, capsys):
    """A container's bare uid: no HOME, no password entry. Path.home()'s RuntimeError was edgegen's
    internal error (exit 3) in list, info and every shipped name; a bare RuntimeError from
    edgegen.load (review 176)."""
    from pathlib import Path

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    for command in (["list"], ["generate", NAME, "--n", "2", "--out", str(tmp_path / "x.png")]):
        assert main(command) == 2
        assert capsys.readouterr().err.endswith("edgegen: error: the cache: expected $XDG_CACHE_HOME (an absolute "
                                                "path) or a home directory to hold edgegen's cache, found neither (HOME "
                                                "is unset and this user has no home in the password database): set "
                                                "XDG_CACHE_HOME or HOME to an absolute path\n")
    with pytest.raises(edgegen.ConfigError, match="the cache: expected"):
        edgegen.load(NAME)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # what the message says to do
    assert main(["list"]) == 0


def test_a_name_in_a_folder_this_user_cannot_search_is_the_shipped_model(models, tmp_path, monkeypatch, capsys):
    """`sudo -u svc edgegen generate gan-digits` from /root: looking for ./gan-digits met EACCES, and
    the command ended with "'gan-digits': Permission denied" (review 176)."""
    import os as os_module

    stat = os_module.stat

    def unsearchable(path, *args, **kwargs):   # as the system answers in a folder without x permission
        if os_module.fspath(path) == NAME:
            raise PermissionError(13, "Permission denied", NAME)
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os_module, "stat", unsearchable)
    assert main(["generate", NAME, "--n", "2", "--out", str(tmp_path / "x.png")]) == 0, capsys.readouterr().err
    assert (tmp_path / "x.png").is_file()


def test_a_cache_folder_a_file_blocks_is_refused_naming_the_variable(models, tmp_path, monkeypatch, capsys):
    """It was the system's NotADirectoryError, after a shipped name's export; a relative
    XDG_CACHE_HOME is ignored, as the XDG spec says."""
    (tmp_path / "a-file").write_text("mine")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    for command in (["cache"], ["generate", NAME, "--n", "2", "--out", str(tmp_path / "x.png")]):
        assert main(command) == 2
        assert capsys.readouterr().err.endswith(f"edgegen: error: the cache '{tmp_path / 'a-file' / 'edgegen'}' "
                                                f"($XDG_CACHE_HOME/edgegen): expected a folder, found a file on the way "
                                                f"to it ('{tmp_path / 'a-file'}')\n")
    assert (tmp_path / "a-file").read_text() == "mine"
    # a file in place of one of its folders: listed as such (it was the system's NotADirectoryError), and kept
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "edgegen").mkdir(parents=True)
    (tmp_path / "cache" / "edgegen" / "packages").write_text("mine")
    assert main(["cache"]) == 0
    assert "packages     0.0 MB  a file where edgegen keeps its packages folder, which it cannot write in until the " \
        "file is moved away" in capsys.readouterr().out
    assert main(["cache", "--prune"]) == 0
    assert (tmp_path / "cache" / "edgegen" / "packages").read_text() == "mine"
    # a folder the system will not write in (/proc) was the system's FileNotFoundError
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/edgegen-nowhere")
    assert main(["generate", NAME, "--n", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.endswith("edgegen: error: the cache '/proc/edgegen-nowhere/edgegen/packages': expected a "
                                            "folder this user can write a folder in, found '/proc', where the system "
                                            "refused one (No such file or directory): export it elsewhere with "
                                            f"'edgegen export {NAME} --out DIR' and give DIR, or set XDG_CACHE_HOME to a "
                                            "folder this user can write\n")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.user_cache_dir() == tmp_path / "home" / ".cache" / "edgegen"
    # a relative HOME made a cache that moved with the working folder: the password database's home (review 184)
    import pwd

    monkeypatch.setenv("HOME", "relhome")
    assert storage.user_cache_dir() == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "edgegen"
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))   # a container's bare uid
    with pytest.raises(ConfigError, match=r"found neither \(HOME is the relative path 'relhome' and this user has no home "
                                          r"in the password database\): set XDG_CACHE_HOME or HOME to an absolute path"):
        storage.user_cache_dir()


def test_edgegen_cache_runs_without_torch(models, tmp_path):
    blocked = "import sys; sys.modules['torch'] = None; from edgegen.cli import main; sys.exit(main(['cache']))"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.endswith("in 0 entries, none stale\n")


def test_the_distributions_package_is_preferred_and_names_its_checkpoint_as_shipped(models):
    from edgegen.training.checkpoint import load_source_checkpoint

    (package,) = models_build.build([NAME], models, report=lambda line: None)
    assert models_build.build([NAME], models, report=lambda line: None) == []   # current: kept
    assert shipped.find_shipped(NAME) == package == models / "packages" / NAME
    assert shipped.shared_package_of(package) == NAME and shipped.shared_package_of(models) is None   # optimize refuses it
    pipe = edgegen.load(NAME)
    assert pipe.package.manifest.provenance["source_checkpoint"]["path"] == f"shipped:{NAME}"
    # optimize and bench --vs-torch find the checkpoint through the shipped name
    assert load_source_checkpoint(pipe.package).path == models / "checkpoints" / NAME
    assert models_build.check([NAME], models, report=lambda line: None) == []


def test_the_distributions_package_needs_no_cache(models, tmp_path, monkeypatch, capsys):
    """A device whose $XDG_CACHE_HOME cannot hold edgegen's cache still runs what edgegen-models carries."""
    models_build.build([NAME], models, report=lambda line: None)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert main(["generate", NAME, "--n", "2", "--out", str(tmp_path / "a.png")]) == 0, capsys.readouterr().err
    assert main(["list"]) == 0   # its rows; then that the cache cannot be written, which no row needs
    listed = capsys.readouterr().out
    assert f"{NAME}  gan         exported, in edgegen-models\n" in listed and "a name's first use" not in listed
    assert edgegen.load(NAME).package.path == models / "packages" / NAME


def test_a_package_that_drifted_from_its_checkpoint_is_not_used(models):
    models_build.build([NAME], models, report=lambda line: None)
    perturb_weights(models / "checkpoints" / NAME)    # new weights, old package
    assert shipped.find_shipped(NAME) is None
    with pytest.raises(PackageError, match="expected its exported package, found none made from its weights"):
        edgegen.load(NAME)
    assert models_build.check([NAME], models, report=lambda line: None) == [
        f"{NAME}: package missing, or exported from other weights"]
    assert _build_backend().stale_packages(models) == [NAME]


def test_the_release_check_finds_a_package_whose_graph_differs_from_a_fresh_export(models):
    """Weights recorded right but the graph exported from others (an export-code change, a
    hand-edited package): only re-exporting and comparing outputs finds it."""
    checkpoint = models / "checkpoints" / NAME
    original = (checkpoint / "weights.safetensors").read_bytes()
    models_build.build([NAME], models, report=lambda line: None)
    perturb_weights(checkpoint)
    edgegen.export.export_checkpoint(checkpoint, models / "packages" / NAME, overwrite=True)
    (checkpoint / "weights.safetensors").write_bytes(original)
    manifest_path = models / "packages" / NAME / "edgegen.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["provenance"]["source_checkpoint"]["weights_sha256"] = shipped.weights_sha256(NAME)
    manifest_path.write_text(json.dumps(manifest))
    problems = models_build.check([NAME], models, report=lambda line: None)
    assert len(problems) == 1 and problems[0].startswith(f"{NAME}: generator differs from a fresh export")


def test_the_release_check_finds_a_package_whose_graph_has_another_form_with_the_same_outputs(models):
    """An export-code change that keeps every output (a node more or less) is found too: the built
    package is older than the code, though its weights and outputs match."""
    import onnx

    from edgegen.package import sha256_file

    (package,) = models_build.build([NAME], models, report=lambda line: None)
    manifest_path = package / "edgegen.json"
    manifest = json.loads(manifest_path.read_text())
    graph_file = package / manifest["graphs"]["generator"]["file"]
    model = onnx.load(str(graph_file))
    model.graph.node.append(onnx.helper.make_node("Constant", [], ["unused"], value_float=1.0))   # read by nothing
    onnx.save(model, str(graph_file))
    manifest["graphs"]["generator"]["sha256"] = sha256_file(graph_file)
    manifest_path.write_text(json.dumps(manifest))
    problems = models_build.check([NAME], models, report=lambda line: None)
    assert problems == [f"{NAME}: generator has another form than a fresh export of its checkpoint (nodes Constant 1 "
                        "where a fresh export has 0): rebuild it"], problems
    # an output of another shape's name (as a decoder's logits took logits_sequence for sequence)
    output = model.graph.output[0]
    output.type.tensor_type.shape.dim[0].dim_param = "rows"
    onnx.save(model, str(graph_file))
    manifest["graphs"]["generator"]["outputs"][0]["shape"][0] = "rows"
    manifest["graphs"]["generator"]["sha256"] = sha256_file(graph_file)
    manifest_path.write_text(json.dumps(manifest))
    (problem,) = models_build.check([NAME], models, report=lambda line: None)
    assert f"(inputs and outputs {output.name} float32[rows, " in problem and f"where a fresh export has {output.name} " \
        "float32[batch, " in problem, problem


def test_the_wheel_build_refuses_missing_packages(models):
    backend = _build_backend()
    assert backend.stale_packages(models) == [NAME]
    models_build.build([NAME], models, report=lambda line: None)
    assert backend.stale_packages(models) == []


def test_the_wheel_build_refuses_a_wheel_that_leaves_out_a_packages_file(tmp_path):
    """Every file an exported package holds goes into the wheel: the patterns of package-data cover
    what an export writes, and a wheel lacking one (held_out.npz once) is refused."""
    import fnmatch
    import zipfile

    tomllib = pytest.importorskip("tomllib")   # Python 3.11's

    backend = _build_backend()
    package = tmp_path / "edgegen_models" / "packages" / "text2image-digits"
    package.mkdir(parents=True)
    names = ["edgegen.json", "unet.onnx", "unet.onnx.data", "tokenizer.json", "held_out.npz"]
    for name in names:
        (package / name).write_bytes(b"x")
    (package / ".edgegen-cache").mkdir()   # the runtime's, never shipped
    patterns = tomllib.loads((REPO / "models" / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "edgegen_models"]
    assert all(any(fnmatch.fnmatch(f"packages/{package.name}/{n}", p) for p in patterns) for n in names), patterns
    with zipfile.ZipFile(tmp_path / "built.whl", "w") as wheel:
        for name in names[:-1]:
            wheel.writestr(f"edgegen_models/packages/{package.name}/{name}", b"x")
    assert backend.files_left_out(tmp_path / "built.whl", tmp_path / "edgegen_models") == [
        f"edgegen_models/packages/{package.name}/held_out.npz"]


def test_the_wheel_build_refuses_files_changed_since_their_export_wherever_the_manifest_records_them(tmp_path):
    """A graph, its external data, a variant, a config record's file (the tokenizer): each changed or
    gone is named, so a damaged package never ships; an unreadable manifest too (review 165)."""
    backend = _build_backend()
    package = tmp_path / "edgegen_models" / "packages" / "text2image-digits"
    package.mkdir(parents=True)
    contents = {"unet.onnx": b"g", "unet.onnx.data": b"d", "unet.int8.0123456789ab.onnx": b"v", "tokenizer.json": b"t"}
    for name, data in contents.items():
        (package / name).write_bytes(data)
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    manifest = {"graphs": {"unet": {"file": "unet.onnx", "sha256": sha["unet.onnx"],
                                    "external_data": {"unet.onnx.data": sha["unet.onnx.data"]}}},
                "variants": {"int8": {"unet": {"file": "unet.int8.0123456789ab.onnx",
                                               "sha256": sha["unet.int8.0123456789ab.onnx"]}}},
                "config": {"text": {"tokenizer": {"file": "tokenizer.json", "sha256": sha["tokenizer.json"]}}},
                "provenance": {"source_checkpoint": {"path": "shipped:text2image-digits", "weights_sha256": "0" * 64}}}
    (package / "edgegen.json").write_text(json.dumps(manifest))
    models = tmp_path / "edgegen_models"
    assert backend.damaged_files(models) == []
    for name in ("unet.onnx.data", "unet.int8.0123456789ab.onnx"):
        (package / name).write_bytes(b"changed")
    (package / "tokenizer.json").unlink()
    assert backend.damaged_files(models) == [f"{package.name}/{n}" for n in
                                             ("unet.onnx.data", "unet.int8.0123456789ab.onnx", "tokenizer.json")]
    (package / "edgegen.json").write_text("{")
    assert backend.damaged_files(models) == [f"{package.name}/edgegen.json"]


def test_the_wheel_is_built_from_the_packages_as_they_are_now(tmp_path, monkeypatch):
    """setuptools keeps build/lib between builds: a file since removed from packages/ (a replaced
    graph) shipped again from there (review 165). A damaged package is refused before building."""
    import zipfile

    backend = _build_backend()
    models = tmp_path / "models" / "edgegen_models"
    (models / "checkpoints").mkdir(parents=True)
    package = models / "packages" / "vae-digits"
    package.mkdir(parents=True)
    (package / "decoder.onnx").write_bytes(b"g")
    (package / "edgegen.json").write_text(json.dumps({"graphs": {"decoder": {
        "file": "decoder.onnx", "sha256": hashlib.sha256(b"g").hexdigest()}}}))
    leftover = tmp_path / "models" / "build" / "lib" / "edgegen_models" / "packages" / "vae-digits" / "encoder.onnx"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"removed since")
    yours = tmp_path / "models" / "build" / "edgegen_models-0.1.0-py3-none-any.whl"   # pip wheel -w build
    yours.write_bytes(b"a wheel built before")

    def setuptools_build(directory, *args):   # what setuptools ships: the packages folder and build/lib's
        with zipfile.ZipFile(Path(directory) / "m.whl", "w") as wheel:
            for path in [*models.rglob("*"), *(tmp_path / "models" / "build" / "lib").rglob("*")]:
                if path.is_file():
                    wheel.write(path, path.relative_to(path.parents[3]).as_posix())
        return "m.whl"

    monkeypatch.setattr(backend, "MODELS", models)
    monkeypatch.setattr(backend._setuptools, "build_wheel", setuptools_build)
    assert backend.build_wheel(str(tmp_path)) == "m.whl"
    with zipfile.ZipFile(tmp_path / "m.whl") as wheel:
        assert sorted(wheel.namelist()) == ["edgegen_models/packages/vae-digits/decoder.onnx",
                                            "edgegen_models/packages/vae-digits/edgegen.json"]
    assert yours.read_bytes() == b"a wheel built before"   # only setuptools' build/lib is removed (review 171)
    (package / "decoder.onnx").write_bytes(b"changed")
    with pytest.raises(SystemExit, match="found vae-digits/decoder.onnx changed or gone since the export; run "
                                         "'python -m edgegen_models.build'"):
        backend.build_wheel(str(tmp_path))


def test_runtime_only_install_without_the_package_says_what_to_do(models, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "onnx") else real_find_spec(name, *a))
    assert main(["generate", NAME, "--out", "x.png"]) == 2
    assert f"shipped model '{NAME}': expected its exported package, found none made from its weights" in \
        capsys.readouterr().err


def test_the_models_build_on_a_runtime_only_install_says_what_it_needs(models, monkeypatch, capsys):
    """A device's install holds the packages: the build finds them current; what needs an export
    (--check, a stale package) says the extra, not ModuleNotFoundError's traceback."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "onnx") else real_find_spec(name, *a))
    assert models_build.main(["--check", NAME]) == 2
    assert "python -m edgegen_models.build --check, which compares each package with a fresh export, needs the " \
        "export extra" in capsys.readouterr().err
    monkeypatch.setattr(models_build, "why_stale", lambda name, root=None: "package damaged (a test's)")
    assert models_build.main([NAME]) == 2 and "python -m edgegen_models.build, which exports again what is not " \
        f"current ({NAME}: package damaged (a test's)), needs the export extra" in capsys.readouterr().err
    monkeypatch.setattr(models_build, "why_stale", lambda name, root=None: None)
    assert models_build.main([NAME]) == 0 and "0 exported, 1 already current" in capsys.readouterr().out


def _build_backend():
    sys.path.insert(0, str(REPO / "models"))
    try:
        import _build_backend
    finally:
        sys.path.pop(0)
    return _build_backend


def test_a_typo_in_a_shipped_name_suggests_the_name(models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", NAME[:-1], "--out", "a.png"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"found nothing at that path (did you mean the shipped model {NAME!r}?)")
    assert main(["info", "nothing-like-any"]) == 2
    assert capsys.readouterr().err.strip().endswith("found nothing at that path (nor a shipped model's name: edgegen list)")
    assert main(["info", "./nothing-like-any"]) == 2   # a path, not a name: nothing to say of names
    assert capsys.readouterr().err.strip().endswith("found nothing at that path")


def test_a_family_name_suggests_its_shipped_models(tmp_path, monkeypatch, capsys):
    """A user who types the family ("vae", "flow") is told the shipped models of it by name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shipped, "shipped_names", lambda: ["flow-digits", "flow-moons", "gan-digits", "vae-digits"])
    assert main(["info", "vae"]) == 2
    assert capsys.readouterr().err.strip().endswith("(did you mean the shipped model 'vae-digits'?)")
    assert main(["generate", "flow", "--out", "a.png"]) == 2
    assert capsys.readouterr().err.strip().endswith("(did you mean one of the shipped models 'flow-digits', 'flow-moons'?)")


def test_a_folder_named_like_a_shipped_model_says_it_hides_the_model(models, tmp_path, monkeypatch, capsys):
    """An empty folder (or any folder that is no package) named vae-digits is read as given: the
    refusal says why the shipped model was not used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    (tmp_path / "mine").mkdir()
    assert main(["generate", NAME, "--out", "a.png"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{NAME!r} is also a shipped model's name, and a folder that exists is read as the package: for the shipped "
        "model, run the command from another folder, or rename this one")
    assert main(["info", "mine"]) == 2
    assert "shipped model" not in capsys.readouterr().err


def test_a_package_folder_named_like_a_shipped_model_is_taken_and_said(package_copy, tmp_path, monkeypatch, capsys):
    """A package of one's own exported as gan-digits was taken in the shipped model's place by
    generate, load, bench, info and optimize without a word, where train --init says so (helper 143)."""
    import warnings

    from edgegen.errors import EdgegenWarning

    monkeypatch.chdir(tmp_path)
    shutil.copytree(package_copy("gan"), tmp_path / NAME)
    assert main(["info", NAME]) == 0
    assert f"warning: {NAME!r}: the folder of that name here, not the shipped model (give the text './{NAME}'" in \
        capsys.readouterr().err
    with pytest.warns(EdgegenWarning, match=f"{NAME!r}: the folder of that name here"):
        edgegen.load(NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        edgegen.load(f"./{NAME}")   # a path: the folder, said by the user


def test_without_the_models_distribution_a_name_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shipped, "models_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    missing = ("the edgegen-models distribution, which holds them, is not installed here (pip install "
               "dist/edgegen_models-*.whl, the wheel built on the development machine beside edgegen's; in a checkout, "
               "pip install -e ./models)")   # not PyPI's: neither distribution is there
    assert main(["list"]) == 0
    assert capsys.readouterr().out == f"no shipped models: {missing}\n"
    with pytest.raises(PackageError, match=re.escape(f"package 'vae-digits': expected a package directory, found nothing "
                                                     f"at that path (if it names a shipped model: {missing})")):
        edgegen.load("vae-digits")
    with pytest.raises(PackageError, match=re.escape(f"shipped model 'sr-photos-x4': expected one of the shipped "
                                                     f"models, found none: {missing}")):
        shipped.find_shipped("sr-photos-x4")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    assert main(["upscale", str(tmp_path / "photo.png"), "--out", str(tmp_path / "x.png")]) == 2
    assert f"{missing}; or pass an exported package with --package\n" in capsys.readouterr().err


def test_remove_whole_keeps_a_folder_whose_reason_to_go_no_longer_holds(tmp_path):
    """Two commands that find one export damaged: the second, after waiting for the first's new
    export, must not remove it."""
    from edgegen.storage import remove_whole

    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "edgegen.json").write_text("{}")
    remove_whole(folder, "test", wait=True, still=lambda: False)
    assert (folder / "edgegen.json").is_file()
    remove_whole(folder, "test", wait=True, still=lambda: True)
    assert not folder.exists() and not list(tmp_path.iterdir())


def test_a_damaged_package_of_the_models_install_says_to_install_it_again(models, tmp_path, capsys):
    """pip installed it: exporting it into the cache would hide the damage, and "copy or export the
    package again" was no advice for a device."""
    (package,) = models_build.build([NAME], models, report=lambda line: None)
    graph = package / "generator.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    assert main(["list"]) == 0 and f"{NAME}  gan         damaged in edgegen-models: install edgegen-models again " \
        "(pip install --force-reinstall --no-deps dist/edgegen_models-*.whl" in capsys.readouterr().out
    for call in (lambda: edgegen.load(NAME), lambda: shipped.resolve(NAME)):
        with pytest.raises(PackageError, match=rf"shipped model '{NAME}': expected the package edgegen-models installed "
                                               r"intact, found .* damaged \(graph 'generator' .*\): install "
                                               r"edgegen-models again"):
            call()
    assert main(["generate", NAME, "--n", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "install edgegen-models again" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    # the build that makes the wheel (the other advice, in a checkout) exports it again; it called it
    # current, and the wheel shipped it (review 165)
    assert models_build.why_stale(NAME, models).startswith("package damaged (graph 'generator' ")
    assert _build_backend().damaged_files(models) == [f"{NAME}/generator.onnx"]
    assert models_build.build([NAME], models, report=lambda line: None) == [package]
    assert models_build.stale([NAME], models) == [] and _build_backend().damaged_files(models) == []
    # a variant's file changed: the wheel build refuses it, so the build must call it stale, not current (review 171)
    manifest_path = package / "edgegen.json"
    manifest = json.loads(manifest_path.read_text())
    variant = package / "generator.fp16.0123456789ab.onnx"
    variant.write_bytes(graph.read_bytes())
    manifest["variants"] = {"fp16": {"generator": {"file": variant.name, "sha256": "0" * 64, "target": "tensorrt",
                                                   "gate": {"passed": True}}}}
    manifest_path.write_text(json.dumps(manifest))
    assert _build_backend().damaged_files(models) == [f"{NAME}/{variant.name}"]
    assert "fp16 variant" in models_build.why_stale(NAME, models)
    assert models_build.build([NAME], models, report=lambda line: None) == [package]
    assert models_build.stale([NAME], models) == [] and _build_backend().damaged_files(models) == []
    assert main(["list"]) == 0 and "damaged in" not in capsys.readouterr().out   # (this test's folder is named so)


def test_bench_exports_a_shipped_name_in_a_process_of_its_own(tmp_path):
    """bench's peak memory was PyTorch's too after it exported a shipped name (446 MB where the
    runtime's is 263): the export runs in a process of its own, whose errors bench says as its own."""
    script = ("import json, sys; from edgegen.cli import main; code = main(sys.argv[1:]); "
              "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-c", script, "bench", NAME, "--iters", "1", "--warmup", "0", "--no-energy"]
    (tmp_path / "cache" / "edgegen").mkdir(parents=True)
    (tmp_path / "cache" / "edgegen" / "packages").write_text("mine")   # a file where the cache's folder goes
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert json.loads(refused.stdout.splitlines()[-1]) == {"code": 2, "torch": False}, refused.stderr
    assert refused.stderr == (f"edgegen: error: the cache {str(tmp_path / 'cache' / 'edgegen' / 'packages')!r}: "
                              f"expected a folder, found a file: export it elsewhere with 'edgegen export {NAME} --out "
                              "DIR' and give DIR, or set XDG_CACHE_HOME to a folder this user can write\n")   # was the system's FileExistsError
    (tmp_path / "cache" / "edgegen" / "packages").unlink()
    ran = subprocess.run([*command, "--json", str(tmp_path / "report.json")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert json.loads(ran.stdout.splitlines()[-1]) == {"code": 0, "torch": False}, ran.stderr
    assert f"exporting the shipped {NAME} once into" in ran.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["peak_rss_mb"]["torch_loaded"] is False and report["package"].startswith(str(tmp_path / "cache"))
