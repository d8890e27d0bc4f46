import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import edgegen
from edgegen.cli import main
from edgegen.errors import ConfigError, HashMismatchError, ManifestError, OutputExistsError, PackageError, \
    UnknownFamilyError
from edgegen.package import FORMAT, Package, copy_package, write_manifest
from edgegen.storage import atomic_write_bytes, staged_directory


def edit_manifest(pkg, change):
    path = pkg / "edgegen.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_package_reads_back_with_its_graphs(trained):
    package = Package(trained["vae"][1])
    assert package.manifest.format == FORMAT
    assert package.family == "vae"
    assert set(package.graphs) == {"encoder", "decoder"}
    enc = package.graphs["encoder"]
    assert [t.name for t in enc.inputs] == ["image"]
    assert enc.inputs[0].shape == ("batch", 1, 32, 32)
    assert [t.name for t in enc.outputs] == ["mu", "logvar"]
    assert enc.extra["validation"]["passed"] is True
    prov = package.manifest.provenance
    assert prov["opset"] == 23 and len(prov["source_checkpoint"]["weights_sha256"]) == 64


def test_missing_package_path(tmp_path):
    with pytest.raises(PackageError, match="found nothing at that path"):
        edgegen.load(tmp_path / "nope")


def test_directory_without_manifest(tmp_path):
    with pytest.raises(PackageError, match="expected edgegen.json"):
        edgegen.load(tmp_path)


def test_manifest_that_is_not_json(package_copy):
    pkg = package_copy("gan")
    (pkg / "edgegen.json").write_text("{not json")
    with pytest.raises(ManifestError, match="expected valid JSON"):
        edgegen.load(pkg)


_WRITTEN = {"file": "generator.int8.onnx", "sha256": "0" * 64, "gate": {"passed": True}}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="edgegen.package/9"), "expected format 'edgegen.package/1', found 'edgegen.package/9' "
                                                     "(written by a newer edgegen: upgrade edgegen to read it)"),
    (lambda d: d.update(format="onnx-bundle/2"), "expected format 'edgegen.package/1', found 'onnx-bundle/2'"),
    (lambda d: d.pop("family"), "missing required field 'family'"),
    (lambda d: d.update(graphs={}), "expected at least one graph"),
    # names the system cannot open: a ValueError, and an OSError from load (one line naming neither package nor field)
    (lambda d: d["graphs"]["generator"].update(file="generator.onnx\u0000"),
     "graphs.generator.file expected a file name the system can open, found 'generator.onnx\\x00' (embedded null byte)"),
    (lambda d: d["graphs"]["generator"].update(file="g" * 300 + ".onnx"),
     "graphs.generator.file expected a file name the system can open, found 'ggg"),
    (lambda d: d.update(variants={"int8": {"generator": {**_WRITTEN, "file": "x\u0000"}}}),
     "variants.int8.generator.file expected a file name the system can open"),
    (lambda d: d.update(variants={"int8": {"generator": {**_WRITTEN, "sha256": "7"}}}),   # not "changed after optimize"
     "variants.int8.generator: expected sha256 to be 64 lowercase hex digits, found '7'"),
    (lambda d: d.update(config=[1, 2]), "expected 'config' to be dict, found list"),
    (lambda d: d["graphs"]["generator"].update(sha256="abc"), "expected sha256 to be 64 lowercase hex digits"),
    (lambda d: d["graphs"]["generator"]["inputs"][0].update(dtype="float99"), "found 'float99'"),
    (lambda d: d["graphs"]["generator"]["inputs"][0].update(shape=["batch", -3]), "found -3"),
    (lambda d: d["graphs"]["generator"].update(file="../../etc/passwd"), "which leaves it"),
    (lambda d: d["graphs"]["generator"].update(file="/etc/passwd"), "found absolute"),
    (lambda d: d["graphs"]["generator"].update(opset="23"), "graphs.generator: expected opset to be a positive integer, "
                                                            "found '23'"),
    (lambda d: d["graphs"]["generator"]["validation"].update(passed=False),   # it loaded and ran without a word
     "graphs.generator.validation: expected the record of a check against PyTorch that passed (passed true: the "
     "export writes no other), found passed False"),
    (lambda d: d["graphs"]["generator"]["validation"].update(max_abs="x"),   # info's internal error (helper 106)
     "graphs.generator.validation.max_abs: expected a number, found 'x'"),
    # variant records: refused where read, not a traceback in info or fp32 run in their place
    (lambda d: d.update(variants={"int8": [1]}), "variants.int8: expected an object of graph records, found [1]"),
    (lambda d: d.update(variants={"int8": {"generator": None}}), "variants.int8.generator: expected an object, found None"),
    (lambda d: d.update(variants={"int8": {"generator": {"refused": "x", "speedup_ort_cpu": "fast"}}}),
     "variants.int8.generator.speedup_ort_cpu: expected a number, found 'fast'"),
    (lambda d: d.update(variants={"int8": {"generator": {**_WRITTEN, "gate": "x"}}}),
     "variants.int8.generator.gate: expected an object, found 'x'"),
    (lambda d: d.update(variants={"int8": {"generator": {**_WRITTEN, "gate": {"passed": False}}}}),
     "a written variant expected a gate that passed (gate.passed true), found gate.passed False"),
    (lambda d: d.update(variants={"fp16": {"generator": {**_WRITTEN, "disabled_optimizers": "QDQPropagation"}}}),
     "disabled_optimizers: expected a list, found 'QDQPropagation'"),
    (lambda d: d.update(variants={"fp16": {"generator": {**_WRITTEN, "disabled_optimizers": [1]}}}),
     "expected a list of ONNX Runtime optimizer names, found [1]"),
])
def test_hand_edited_manifest_is_refused(package_copy, change, message, capsys):
    pkg = package_copy("gan")
    edit_manifest(pkg, change)
    with pytest.raises(ManifestError) as info:
        edgegen.load(pkg)
    assert message in str(info.value)
    assert "edgegen.json" in str(info.value) or "package" in str(info.value)
    assert main(["info", str(pkg)]) == 2 and message in capsys.readouterr().err   # a line, not a traceback


def test_a_graph_that_is_a_link_to_itself_or_a_fifo_and_a_manifest_too_deep_are_said_in_one_line(package_copy, tmp_path):
    pkg = package_copy("gan")
    (pkg / "generator.onnx").unlink()
    (pkg / "generator.onnx").symlink_to("generator.onnx")
    with pytest.raises(ManifestError, match=r"graphs.generator.file expected a file name the system can open, found "
                                            r"'generator.onnx' \(Symlink loop"):
        edgegen.load(pkg)
    (pkg / "generator.onnx").unlink()
    os.mkfifo(pkg / "generator.onnx")   # never opened: hashing a FIFO would wait for a writer
    with pytest.raises(PackageError, match="graph 'generator' expected at 'generator.onnx', found something other than a file"):
        edgegen.load(pkg)
    (pkg / "edgegen.json").write_text("[" * 100_000)
    with pytest.raises(ManifestError, match="expected valid JSON, found arrays or objects nested deeper than Python's parser"):
        edgegen.load(pkg)


def test_a_manifest_that_is_a_link_leaving_the_package_is_refused(package_copy, tmp_path):
    pkg = package_copy("gan")
    (pkg / "edgegen.json").rename(tmp_path / "elsewhere.json")
    (pkg / "edgegen.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ManifestError, match="edgegen.json expected a path inside the package, found 'edgegen.json' which "
                                            "leaves it \\(a symbolic link"):
        edgegen.load(pkg)


def test_a_copy_of_a_package_for_triton_never_follows_a_link_out_of_it(package_copy, tmp_path, capsys):
    """A received package's genai_config.json linked to a file outside: triton copied that file, readable by all."""
    pkg = package_copy("gan")
    (tmp_path / "secret.txt").write_text("SECRET")
    (pkg / "genai_config.json").symlink_to(tmp_path / "secret.txt")
    assert main(["triton", str(pkg), "--graph-backend", "python", "--out", str(tmp_path / "repo")]) == 2
    assert f"expected its files inside it, found '{pkg / 'genai_config.json'}', a symbolic link to " in capsys.readouterr().err
    assert not any("SECRET" in p.read_text(errors="replace") for p in tmp_path.joinpath("repo").rglob("*") if p.is_file())
    # a manifest naming '../..' walks no folder outside the package: a link beside it is not the package's
    (pkg / "genai_config.json").unlink()
    (tmp_path / "secret-link.txt").symlink_to(tmp_path / "secret.txt")   # beside the package, not in it
    edit_manifest(pkg, lambda d: d["config"].update(note={"file": "../secret-link.txt"}))
    assert main(["triton", str(pkg), "--graph-backend", "python", "--out", str(tmp_path / "repo")]) == 0


def test_fields_a_newer_edgegen_wrote_at_the_top_of_the_manifest_are_kept_when_it_is_written_again(package_copy):
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d.update(model_card={"license": "apache-2.0"}))
    package = Package(pkg)
    write_manifest(pkg, package.manifest)   # as optimize writes it back
    assert json.loads((pkg / "edgegen.json").read_text())["model_card"] == {"license": "apache-2.0"}
    edgegen.load(pkg)
    package.manifest.foreign_fields["format"] = "stale"   # a field this edgegen writes is never one read back
    assert package.manifest.to_json()["format"] == FORMAT


def test_a_manifest_is_written_as_strict_json(package_copy):
    """A no-op variant's PSNR is infinite: Python wrote it as Infinity, which JSON has not, and other
    languages' parsers refused the manifest (helper 94). Written again, such a figure is null."""
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d["graphs"]["generator"]["validation"].update(max_rel=float("inf")))
    package = Package(pkg)   # an earlier edgegen's Infinity reads as before

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    copy_package(pkg, pkg.parent / "copy", precisions=())   # the copy a Triton model serves writes it too
    copied = json.loads((pkg.parent / "copy" / "edgegen.json").read_text(), parse_constant=refuse)
    assert copied["graphs"]["generator"]["validation"]["max_rel"] is None
    write_manifest(pkg, package.manifest)
    written = json.loads((pkg / "edgegen.json").read_text(), parse_constant=refuse)
    assert written["graphs"]["generator"]["validation"]["max_rel"] is None
    edgegen.load(pkg)


def test_an_output_inside_the_package_is_refused_before_any_file_is_probed_there(package_copy, monkeypatch, capsys):
    """check_writable's probe file landed in the package (and a read-only one was said as unwritable)."""
    import edgegen.storage

    pkg = package_copy("gan")

    def probed(path, flag):
        raise AssertionError(f"probed {path}")

    monkeypatch.setattr(edgegen.storage, "check_writable", probed)
    assert main(["generate", str(pkg), "--out", str(pkg / "x.png")]) == 2
    assert "expected a file outside the package it reads" in capsys.readouterr().err


def test_a_package_path_onnx_runtime_cannot_take_is_said_as_such(package_copy, tmp_path):
    pkg = package_copy("gan")
    odd = tmp_path / os.fsdecode(b"gan\xff")
    pkg.rename(odd)
    with pytest.raises(PackageError, match=r"expected a path ONNX Runtime can open \(UTF-8 text\), found bytes that are not"):
        edgegen.load(odd)


@pytest.mark.parametrize("name", ["my gan", "meta-llama/Llama-3.2-1B", ".."])
def test_an_older_packages_name_loads_and_names_no_folder(package_copy, tmp_path, name):
    """Before check_name (--name was free, and `--out ..` named a package '..') a name could be
    anything: it still loads, and the one folder named after it, Triton's, takes name_from_folder."""
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d.update(name=name))
    assert edgegen.load(pkg).package.manifest.name == name
    assert main(["triton", str(pkg), "--out", str(tmp_path / "repo")]) == 0
    assert [p.parent for p in tmp_path.rglob("config.pbtxt")] == [tmp_path / "repo" / p.name for p in (tmp_path / "repo").iterdir()]


def test_a_variant_of_a_precision_a_newer_edgegen_wrote_is_kept_and_not_read(package_copy, capsys):
    """A device's older runtime refused the whole package for one variant it cannot run; it runs
    fp32 and the precisions it knows, and optimizing here keeps the newer one's record and file."""
    from edgegen.optimize import optimize_package

    pkg = package_copy("gan")
    (pkg / "generator.int3.0123456789abcdef.onnx").write_bytes(b"a newer edgegen's graph")
    record = {"generator": {"file": "generator.int3.0123456789abcdef.onnx", "sha256": "1" * 64, "ternary": True}}
    edit_manifest(pkg, lambda d: d.update(variants={"int3": record}))
    assert edgegen.load(pkg).precision == "fp32"
    with pytest.raises(ConfigError, match="precision 'int3': expected one of fp32, int8, fp16"):
        edgegen.load(pkg, precision="int3")
    assert main(["info", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "variant   int3: a precision edgegen 0.1.0 does not know (written by a newer edgegen?); not read here, " \
           "kept as it is" in out
    assert "variants  none this edgegen reads (fp32 only" in out   # it said "none", then listed one
    optimize_package(pkg, "fp16", target="tensorrt", progress=lambda line: None)
    variants = json.loads((pkg / "edgegen.json").read_text())["variants"]
    assert variants["int3"] == record and "file" in variants["fp16"]["generator"]
    assert (pkg / "generator.int3.0123456789abcdef.onnx").is_file()   # clean-up names only the known precisions' files
    assert edgegen.load(pkg, precision="fp16").precision == "fp16"


def test_symlink_leaving_the_package_is_refused(package_copy, tmp_path):
    pkg = package_copy("gan")
    outside = tmp_path / "outside.onnx"
    os.replace(pkg / "generator.onnx", outside)
    os.symlink(outside, pkg / "generator.onnx")
    with pytest.raises(ManifestError, match=f"leaves it \\(a symbolic link: '{pkg / 'generator.onnx'}' points to "
                                            f"'{outside}'; copy the file in\\)"):
        edgegen.load(pkg)


def test_missing_graph_file(package_copy):
    pkg = package_copy("vae")
    (pkg / "decoder.onnx").unlink()
    with pytest.raises(PackageError, match="graph 'decoder' expected at 'decoder.onnx', found no such file"):
        edgegen.load(pkg)
    (pkg / "decoder.onnx").mkdir()
    with pytest.raises(PackageError, match="graph 'decoder' expected at 'decoder.onnx', found a folder$"):
        edgegen.load(pkg)


def test_changed_graph_file_fails_its_hash(package_copy):
    pkg = package_copy("vae")
    with open(pkg / "decoder.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(HashMismatchError, match=r"graph 'decoder' file 'decoder.onnx' expected sha256 .*changed after "
                                                 r"export: copy or install the package again from where it was made, or export it again\)"):
        edgegen.load(pkg)


def test_manifest_signature_must_match_the_graph_file(package_copy, capsys):
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d["graphs"]["generator"]["inputs"][0].update(name="latent"))
    with pytest.raises(PackageError, match=r"manifest inputs \['latent'\] differ from the graph file's \['z'\] \(the "
                                           r"manifest or the graph file was changed after export"):
        edgegen.load(pkg)
    # check, which reads the graph without ONNX Runtime, refuses it too: it passed, with a profile for 'latent'
    assert main(["check", str(pkg), "--target", "jetpack7"]) == 2
    assert "manifest inputs ['latent'] differ from the graph file's ['z']" in capsys.readouterr().err
    edit_manifest(pkg, lambda d: (d["graphs"]["generator"]["inputs"][0].update(name="z"),
                                  d["graphs"]["generator"]["outputs"][0].update(name="picture")))
    assert main(["check", str(pkg), "--target", "jetpack7"]) == 2
    assert "manifest outputs ['picture'] differ from the graph file's ['image']" in capsys.readouterr().err
    pkg = package_copy("vae")
    # the config agrees with the edited signature, so only the graph file can tell it is wrong
    edit_manifest(pkg, lambda d: (d["graphs"]["decoder"]["inputs"][0].update(shape=["batch", 99]),
                                  d["graphs"]["encoder"]["outputs"][0].update(shape=["batch", 99]),
                                  d["config"].update(latent_dim=99)))
    with pytest.raises(PackageError, match=r"expected the manifest's float32\[batch, 99\], found float32\[batch, \d+\] in "
                                           r"'.*\.onnx' \(the manifest or the graph file was changed after export: "
                                           r"copy or install .*\)$"):
        edgegen.load(pkg)


def test_unknown_family(package_copy):
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d.update(family="hypernet"))
    with pytest.raises(UnknownFamilyError, match="found 'hypernet'"):
        edgegen.load(pkg)


def test_a_package_without_a_graph_its_family_runs_is_refused_at_load_and_by_info(package_copy, monkeypatch, capsys):
    """A manifest that lost a graph (or names another family) is refused when it loads, naming the
    graph, and `edgegen info` says load refuses it; where a family declares no graphs, running
    the missing one is a PackageError, not a KeyError."""
    import dataclasses

    from edgegen import families
    from edgegen.cli import main

    pkg = package_copy("vae")
    edit_manifest(pkg, lambda d: d["graphs"].pop("decoder"))
    message = "expected the graphs of a vae package (encoder, decoder), found encoder: decoder missing"
    with pytest.raises(ManifestError, match=re.escape(message)):
        edgegen.load(pkg)
    capsys.readouterr()
    assert main(["info", str(pkg)]) == 1
    out, err = capsys.readouterr()
    assert f"\nrefused   edgegen.load refuses it: package {str(pkg)!r}: {message}\n" in out
    # and on stderr, which a CI log shows for a failed step (it was on stdout alone: helper 90)
    assert err == f"edgegen: info: edgegen.load refuses it: package {str(pkg)!r}: {message}\n"
    assert main(["generate", str(pkg), "--out", str(pkg.parent / "x.png")]) == 2
    assert capsys.readouterr().err == f"edgegen: error: package {str(pkg)!r}: {message}\n"

    other = package_copy("gan")
    edit_manifest(other, lambda d: d.update(family="vae"))
    with pytest.raises(ManifestError, match=re.escape("(encoder, decoder), found generator: encoder, decoder missing")):
        edgegen.load(other)

    monkeypatch.setitem(families._REGISTRY, "vae", dataclasses.replace(families.get("vae"), graphs=()))
    pipe = edgegen.load(pkg)
    with pytest.raises(PackageError, match="expected a graph 'decoder', which its vae pipeline runs, found encoder"):
        pipe.sample(2)
    assert "decoder" not in pipe.sessions and pipe.sessions.get("decoder") is None

    assert main(["info", str(package_copy("diffusion"))]) == 0   # a sound package: 0, nothing refused
    assert "refused" not in capsys.readouterr().out


PACKAGE = {"holds": "edgegen.json", "kind": "an edgegen package"}


def test_staged_directory_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(out, **PACKAGE) as stage:
            (stage / "half").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_directory_keeps_the_old_output_when_replacing_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "edgegen.json").write_text("{}")
    (out / "precious").write_text("keep me")
    with pytest.raises(OutputExistsError, match="pass --force"):
        with staged_directory(out, **PACKAGE):
            pass
    with pytest.raises(RuntimeError):
        with staged_directory(out, overwrite=True, **PACKAGE):
            raise RuntimeError("boom")
    assert (out / "precious").read_text() == "keep me"
    with staged_directory(out, overwrite=True, **PACKAGE) as stage:
        (stage / "new").write_text("n")
    assert [p.name for p in out.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _system(*command) -> bool:
    """Run a system command (chattr, mount); whether it worked (a user or file system may not allow it)."""
    try:
        return subprocess.run(command, capture_output=True).returncode == 0
    except OSError:
        return False


def _package_folder(out: Path) -> Path:
    out.mkdir()
    (out / "edgegen.json").write_text("{}")
    return out


@pytest.mark.parametrize("flag, said", [("+i", "marked immutable (chattr -i it"), ("+a", "marked append-only (chattr -a it")])
def test_a_folder_output_marked_unmovable_is_refused_before_the_work(tmp_path, flag, said):
    """--force onto a folder chattr had marked ran the whole export, then failed at the rename with
    'Operation not permitted' (review 184)."""
    out = _package_folder(tmp_path / "pkg")
    if not _system("chattr", flag, str(out)):
        pytest.skip(f"this user or file system cannot mark a folder (chattr {flag})")
    try:
        with pytest.raises(OutputExistsError, match=re.escape(said)):
            with staged_directory(out, overwrite=True, **PACKAGE):
                pytest.fail("the work ran")
    finally:
        _system("chattr", "-" + flag[1], str(out))
    assert [p.name for p in out.iterdir()] == ["edgegen.json"]


@pytest.mark.parametrize("how", ["tmpfs", "bind"])
def test_a_mount_point_as_the_output_is_refused_before_the_work(tmp_path, how):
    """An output folder mounted into a container cannot be renamed (EBUSY), only written into; a bind
    mount from the same file system is one os.path.ismount does not tell (review 186)."""
    out = tmp_path / "pkg"
    out.mkdir()
    (tmp_path / "source").mkdir()
    mount = ["-t", "tmpfs", "edgegen-test"] if how == "tmpfs" else ["--bind", str(tmp_path / "source")]
    if not _system("mount", *mount, str(out)):
        pytest.skip("this user cannot mount a file system")
    try:
        (out / "edgegen.json").write_text("{}")
        with pytest.raises(OutputExistsError, match="found a mount point, which cannot be renamed: give a folder inside"):
            with staged_directory(out, overwrite=True, **PACKAGE):
                pytest.fail("the work ran")
    finally:
        _system("umount", str(out))


def test_another_users_output_in_a_sticky_folder_is_refused_before_the_work(tmp_path, monkeypatch):
    """In /tmp (the sticky bit) only a folder's owner, or the folder's, may rename it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    out = _package_folder(shared / "pkg")
    monkeypatch.setattr(os, "geteuid", lambda: out.stat().st_uid + 1)   # not its owner, nor shared's, nor root
    with pytest.raises(OutputExistsError, match="found another user's in .*the sticky bit"):
        with staged_directory(out, overwrite=True, **PACKAGE):
            pytest.fail("the work ran")


def test_staged_directory_replaces_only_what_it_writes_and_never_what_it_reads(tmp_path):
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "src" / "a.py").write_text("code")
    with pytest.raises(OutputExistsError, match=r"found a folder of other files \(src\); edgegen replaces only what"):
        with staged_directory(out, overwrite=True, **PACKAGE):
            pass
    (out / "edgegen.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="that it holds the input"):
        with staged_directory(out, overwrite=True, reads=[out / "src" / "a.py"], **PACKAGE):
            pass
    with pytest.raises(OutputExistsError, match="that it is the input"):
        with staged_directory(out, overwrite=True, reads=[out], **PACKAGE):
            pass
    assert (out / "src" / "a.py").read_text() == "code"
    with pytest.raises(OutputExistsError, match="expected a directory to replace, found a file"):
        with staged_directory(out / "edgegen.json", overwrite=True, **PACKAGE):
            pass
    # a killed atomic write's leftover does not make a folder someone else's; a hidden folder does
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".grid.png.a1b2c3d4.tmp").write_text("")
    (empty / ".pkg.lock").write_text("")                  # a nested output's lock ...
    (empty / ".pkg.ab12cd34.partial").mkdir()             # ... and a killed one's stage
    with staged_directory(empty, overwrite=True, **PACKAGE) as stage:
        (stage / "edgegen.json").write_text("{}")
    assert (empty / "edgegen.json").is_file()
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match=r"found a folder of other files \(.git\)"):
        with staged_directory(project, overwrite=True, **PACKAGE):
            pass
    assert (project / ".git").is_dir()


def test_staged_directory_follows_a_link_and_keeps_the_working_directory(tmp_path, monkeypatch):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    (real / "edgegen.json").write_text("old")
    link.symlink_to(real)
    with staged_directory(link, overwrite=True, **PACKAGE) as stage:
        (stage / "edgegen.json").write_text("new")
    assert link.is_symlink() and (real / "edgegen.json").read_text() == "new"   # the folder replaced, not the link
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]       # no stage left behind
    monkeypatch.chdir(real)   # `--out .`: the process stands in the folder it replaces
    with staged_directory(".", overwrite=True, **PACKAGE) as stage:
        (stage / "edgegen.json").write_text("newer")
    assert Path("edgegen.json").read_text() == "newer" and Path.cwd() == real


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_an_output_named_by_a_link_is_written_through_it_and_the_link_stays(tmp_path, capsys):
    """As a shell's > and Pillow's save do: the user's link is theirs, not edgegen's to replace."""
    (tmp_path / "real.png").write_bytes(b"old")
    (tmp_path / "latest.png").symlink_to("real.png")
    (tmp_path / "report.json").symlink_to("runs/first.json")   # dangling: the file it names is made
    assert main(["generate", "gan-digits", "--n", "2", "--out", str(tmp_path / "latest.png")]) == 0
    assert main(["bench", "gan-digits", "--iters", "2", "--warmup", "1", "--json", str(tmp_path / "report.json")]) == 0
    assert (tmp_path / "latest.png").is_symlink() and (tmp_path / "real.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report.json").is_symlink() and json.loads((tmp_path / "runs" / "first.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.png", "real.png", "report.json", "runs"]
    (tmp_path / "blocked.png").symlink_to("real.png/inside.png")   # where it points, a file is on the way: refused first
    assert main(["generate", "gan-digits", "--n", "2", "--out", str(tmp_path / "blocked.png")]) == 2
    assert "blocked.png': expected a folder to write it in, found a file on the way to it" in capsys.readouterr().err


def test_a_package_file_that_is_a_link_is_replaced_not_written_through(tmp_path):
    """A received package's link could point anywhere: edgegen's own writes never follow one."""
    (tmp_path / "elsewhere").write_bytes(b"theirs")
    (tmp_path / "edgegen.json").symlink_to(tmp_path / "elsewhere")
    atomic_write_bytes(tmp_path / "edgegen.json", b"{}")
    assert (tmp_path / "elsewhere").read_bytes() == b"theirs" and not (tmp_path / "edgegen.json").is_symlink()


def test_a_refused_rename_names_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    """An immutable file (chattr +i) refuses the rename onto it; the message said '.x.json.3gbiam0g.tmp'."""
    def refuse(source, target):
        raise PermissionError(1, "Operation not permitted", source, target)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError) as info:
        atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert info.value.filename == str(tmp_path / "x.json") and list(tmp_path.iterdir()) == []


def test_package_without_hash_check_still_validates_schema(package_copy):
    pkg = package_copy("gan")
    with open(pkg / "generator.onnx", "ab") as f:
        f.write(b"\0")
    assert Package(pkg, verify_hashes=False).graph_path("generator").name == "generator.onnx"
    edit_manifest(pkg, lambda d: d.update(format="edgegen.package/0"))
    with pytest.raises(ManifestError, match="expected format"):
        Package(pkg, verify_hashes=False)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("beta_schedule"), "config: missing required field 'beta_schedule' of a DiffusionConfig"),
    (lambda c: c.update(num_train_timesteps="1000"), r"config.num_train_timesteps: expected int, found str '1000'"),
    (lambda c: c.update(image_shape=[1, 8]), r"image_shape expected \[channels, height, width\], found \[1, 8\]"),
    (lambda c: c.update(beta_start=0.5, beta_end=0.1), "beta_start and beta_end expected 0 < start < end < 1"),
    (lambda c: c.update(null_label=99), r"null_label expected num_classes \(10: the index after the classes, the model's "
                                         r"'no label'\), found 99"),
])
def test_a_bad_config_value_is_found_at_load_time_with_the_field_named(package_copy, change, message):
    """The family's typed config checks the manifest when the package loads, not when sampling
    fails halfway with a KeyError or a numpy error."""
    from edgegen.errors import ManifestError

    pkg = package_copy("diffusion")
    edit_manifest(pkg, lambda d: change(d["config"]))
    with pytest.raises(ManifestError, match=message):
        edgegen.load(pkg)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(sampler_options={"foo": 1}), r"sampler_options expected options some sampler takes .*found \['foo'\]"),
    (lambda c: c.update(sampler_options={"eta": "x"}), "sampler 'ddim' option 'eta': expected a float like its default 0.0, found 'x'"),
    (lambda c: c.update(sampler_options={"clip_sample": 1}), "option 'clip_sample': expected a bool like its default True, found 1"),
])
def test_sampler_settings_any_sampler_would_refuse_are_found_at_load(package_copy, change, message):
    pkg = package_copy("diffusion")
    edit_manifest(pkg, lambda d: change(d["config"]))
    with pytest.raises(ManifestError, match=message):
        edgegen.load(pkg)


def test_settings_some_sampler_cannot_run_still_load():
    """A model that predicts the sample (which PNDM cannot run: the call that picks it says so) and
    diffusers' None for "the class's default" are sound packages."""
    from edgegen.families.diffusion.pipeline import DiffusionConfig

    base = dict(image_shape=[1, 8, 8], num_classes=0, null_label=0, num_train_timesteps=1000, beta_schedule="linear",
                beta_start=0.0001, beta_end=0.02)
    assert DiffusionConfig(**base, prediction_type="sample", sampler="ddim").problems() == []
    assert DiffusionConfig(**base, prediction_type="epsilon", sampler="dpmpp-2m",
                           sampler_options={"variance_type": None}).problems() == []


def test_a_latent_size_that_disagrees_with_the_graphs_is_refused_at_load(package_copy):
    from edgegen.errors import ManifestError

    pkg = package_copy("vae")
    edit_manifest(pkg, lambda d: d["config"].update(latent_dim=5))
    with pytest.raises(ManifestError, match="disagrees with its graphs: latent_dim 5: expected z of graph 'decoder' "
                                            "to have 5 at axis 1, found 16"):
        edgegen.load(pkg)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                         (0o002, 0o664, 0o775)])
def test_written_files_and_directories_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    """Other tools' files are readable by a service user when the umask says so: edgegen's too
    (its temporary names start private, as mkstemp makes them). A file it replaces keeps its mode."""
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "grid.png", b"png")
        with staged_directory(tmp_path / "pkg", **PACKAGE) as stage:
            (stage / "edgegen.json").write_text("{}")
        os.chmod(tmp_path / "grid.png", 0o640)
        atomic_write_bytes(tmp_path / "grid.png", b"png again")
        atomic_write_bytes(tmp_path / "fresh.wav", b"wav")
    finally:
        os.umask(old)
    assert (tmp_path / "pkg").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "pkg" / "edgegen.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "fresh.wav").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "grid.png").stat().st_mode & 0o777 == 0o640 and (tmp_path / "grid.png").read_bytes() == b"png again"


def test_external_data_files_are_found_without_onnx_and_must_be_hashed(package_copy):
    """A graph whose weights sit in a file beside it: that file is read by ONNX Runtime, so the
    package refuses it unless the manifest hashes it, and refuses it changed."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    from edgegen.external_data import external_data_files
    from edgegen.package import external_data_record

    pkg = package_copy("gan")
    graph = pkg / "generator.onnx"
    model = onnx.load(str(graph))
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="generator.weights", size_threshold=1024)
    expected = {t.external_data[0].value for t in _get_all_tensors(onnx.load(str(graph), load_external_data=False))
                if uses_external_data(t)}
    assert external_data_files(graph) == sorted(expected) == ["generator.weights"]
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(HashMismatchError, match="reads external data 'generator.weights', expected its sha256 in the "
                                                "manifest, found none"):
        Package(pkg)
    manifest["graphs"]["generator"]["external_data"] = external_data_record(graph)
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    edgegen.load(pkg).sample(2, seed=0)
    # an engine is its graph's while the weights it read hold: the graph file alone stays the same when they change
    from edgegen.runtimes.engines import _graph_identity

    identity = _graph_identity(Package(pkg), "generator", "fp32")
    assert identity != manifest["graphs"]["generator"]["sha256"]
    from edgegen.bench import bench_package   # and a benchmark report's key to compare runs by

    assert bench_package(pkg, batch=1, iters=1, warmup=0, energy=False)["graphs_sha256"] == {"generator": identity}
    assert Package(pkg).graph_digests() == {"generator.onnx": identity}
    whole = package_copy("vae")   # a graph without external data: its file's sha256, as engines were keyed before
    assert _graph_identity(Package(whole), "decoder", "fp32") == Package(whole).graphs["decoder"].sha256
    manifest["graphs"]["generator"]["external_data"] = {"generator.weights": "0" * 64}   # as if retrained
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    assert _graph_identity(Package(pkg, verify_hashes=False), "generator", "fp32") != identity
    manifest["graphs"]["generator"]["external_data"] = external_data_record(graph)
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with open(pkg / "generator.weights", "r+b") as f:
        f.seek(100)
        f.write(b"\x7f")
    with pytest.raises(HashMismatchError, match="external data 'generator.weights' expected sha256 .*changed after export"):
        Package(pkg)
    assert external_data_files(whole / "decoder.onnx") == []


def test_a_graph_cut_short_or_grown_is_said_so(package_copy, tmp_path):
    """A graph whose hash the manifest was given after it was cut short or had bytes added (a copy
    interrupted, then the manifest mended by hand) was refused in the parser's words ("mmap index
    out of range", "a field runs past its message's end at byte 2573153")."""
    from edgegen.external_data import external_data_files
    from edgegen.graph_summary import read_graph_summary

    whole = (package_copy("gan") / "generator.onnx").read_bytes()
    for name, data in (("cut", whole[: len(whole) // 2]), ("grown", whole + b"\0\0\0")):
        (tmp_path / f"{name}.onnx").write_bytes(data)
        for read in (external_data_files, read_graph_summary):
            with pytest.raises(PackageError, match=rf"{name}.onnx': expected an ONNX protobuf, found a file that ends "
                                                   rf"inside a field at byte {len(data)} \(likely cut short, as an "
                                                   rf"interrupted copy leaves it, or bytes added at its end\)$"):
                read(tmp_path / f"{name}.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x0f" + whole)   # wire type 7: no protobuf at all
    with pytest.raises(PackageError, match=r"found bytes that do not parse \(wire type 7 at byte 1\)"):
        read_graph_summary(tmp_path / "bad.onnx")


@pytest.mark.parametrize("where", ["outside", "absolute"])
def test_external_data_outside_the_package_is_refused_as_the_graph_names_it(package_copy, tmp_path, where):
    """Weights kept beside the package, named by a relative path that climbs out or by an absolute
    one: refused before any hash is read, naming the location the graph gives (an absolute one was
    said as '../../..' relative to the package)."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    pkg = package_copy("gan")
    graph = pkg / "generator.onnx"
    model = onnx.load(str(graph))
    weights = tmp_path / "elsewhere.weights"
    location = str(weights) if where == "absolute" else os.path.relpath(weights, pkg)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=1024)
    onnx.save_model(model, str(graph))   # writes w.bin beside the graph; the graph then names `location`
    os.replace(pkg / "w.bin", weights)
    named = onnx.load(str(graph), load_external_data=False)
    for tensor in named.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(named, str(graph))
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    expected = (f"found absolute {location!r}" if where == "absolute"
                else f"expected a path inside the package, found {location!r} which leaves it")
    with pytest.raises(ManifestError, match=re.escape(expected)):
        Package(pkg)


def test_external_data_of_a_model_function_is_found(tmp_path):
    """A constant inside a model-local function, kept in an external file: ONNX Runtime reads it,
    so it is among the files the package must hash."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    from edgegen.external_data import external_data_files

    weight = numpy_helper.from_array(np.full((256,), 7.0, np.float32), "w")
    (tmp_path / "w.bin").write_bytes(weight.raw_data)
    set_external_data(weight, location="w.bin")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    function = helper.make_function("local", "AddW", ["x"], ["y"],
                                    [helper.make_node("Constant", [], ["c"], value=weight),
                                     helper.make_node("Add", ["x", "c"], ["y"])],
                                    [helper.make_opsetid("", 18)])
    graph = helper.make_graph([helper.make_node("AddW", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [256])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [256])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert external_data_files(tmp_path / "m.onnx") == ["w.bin"]


def test_info_says_a_null_validation_record_is_none(package_copy, capsys):
    """A validation record of null passed the manifest's check and info failed on it (exit 3)."""
    pkg = package_copy("gan")
    edit_manifest(pkg, lambda d: d["graphs"]["generator"].update(validation=None))
    assert main(["info", str(pkg)]) == 0
    assert "no gate record" in capsys.readouterr().out


def test_a_write_callbacks_error_about_another_file_keeps_its_own_name(tmp_path):
    """Only the output's own write errors (a full disk) are said for the output: a callback that
    reads a missing file said that file's error for the output (review 171)."""
    from edgegen.storage import atomic_write_with

    missing = tmp_path / "missing-source"
    with pytest.raises(FileNotFoundError) as raised:
        atomic_write_with(tmp_path / "out.bin", lambda f: f.write(missing.read_bytes()))
    assert raised.value.filename == str(missing) and not (tmp_path / "out.bin").exists()
    with pytest.raises(OSError, match="^no errno$"):
        atomic_write_with(tmp_path / "out.bin", lambda f: (_ for _ in ()).throw(OSError("no errno")))
    assert list(tmp_path.iterdir()) == []
