"""Crash safety, tested as databases test it: a writer is stopped at each of its fault points in
turn, the same way each time, and what is on disk at that instant must satisfy the invariant:
the package loads, as it was before or as it is after; the next writer cleans what was left.

The kill is simulated in-process (a copy of the disk state is taken at the fault point, then
the writer is unwound), so the loop fits the suite's time; benchmarks/crash_safety.py does the
same with real SIGKILLs in fresh processes. Plus the locks: writers of one package that run at
once both land, in turn."""

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import pytest

import edgegen
from edgegen import storage
from edgegen.errors import EdgegenWarning, OutputExistsError, PackageBusyError
from edgegen.export import export_checkpoint
from edgegen.optimize import optimize_package
from edgegen.package import Package


class Killed(BaseException):
    """The simulated kill: not an Exception, so no handler that a real kill would skip catches it
    (the `except BaseException` cleanups run, but on the live files, after the copy was taken)."""


def _quiet(line):
    pass


def kill_at_each_point(monkeypatch, tmp_path, work, run) -> list[tuple[int, str, object]]:
    """Run `run()` once per fault point it reaches, stopped there; returns (point, its name,
    the directory holding a copy of `work` as the kill left it) for each."""
    log = tmp_path / "points.log"
    monkeypatch.setenv("EDGEGEN_FAULT_LOG", str(log))
    monkeypatch.setattr(storage, "_faults_reached", 0)
    pristine = tmp_path / "pristine"
    shutil.copytree(work, pristine, symlinks=True)
    run()    # once through, counting its points
    points = log.read_text().splitlines()
    assert len(points) >= 4, points
    stopped = []
    for number, line in enumerate(points, start=1):
        shutil.rmtree(work)
        shutil.copytree(pristine, work, symlinks=True)
        snapshot = tmp_path / f"killed-at-{number}"

        def kill(snapshot=snapshot):
            shutil.copytree(work, snapshot, symlinks=True)
            raise Killed

        monkeypatch.setattr(storage, "_kill_self", kill)
        monkeypatch.setattr(storage, "_faults_reached", 0)
        monkeypatch.setenv("EDGEGEN_FAULT_AT", str(number))
        with pytest.raises(Killed):
            run()
        stopped.append((number, line.split(" ", 1)[1], snapshot))
    monkeypatch.delenv("EDGEGEN_FAULT_AT")
    monkeypatch.delenv("EDGEGEN_FAULT_LOG")
    return stopped


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if p.name.endswith((".partial", ".old", ".tmp", ".lock", "-inferred.onnx")))


def variant_files(pkg) -> dict:
    manifest = json.loads((pkg / "edgegen.json").read_text())
    return {p: {part: r.get("file") for part, r in parts.items()} for p, parts in manifest.get("variants", {}).items()}


def test_a_killed_optimize_leaves_the_package_as_before_or_after_and_the_next_run_cleans_up(
        package_copy, tmp_path, monkeypatch):
    """Re-running optimize on a package that has variants, killed at every point: the package
    loads (every hash checks out), its variants are the old ones or the new ones, and the next
    run leaves no temporary file, no unnamed variant and no lock behind."""
    work = tmp_path / "work"
    pkg = package_copy("gan")
    work.mkdir()
    shutil.move(pkg, work / "pkg")
    pkg = work / "pkg"
    optimize_package(pkg, "int8", calibration=16, target="tensorrt", progress=_quiet)
    before = variant_files(pkg)

    def rerun(package=pkg):   # another seed calibrates differently: new bytes, a new file
        optimize_package(package, "int8", calibration=16, target="tensorrt", seed=1, progress=_quiet)

    shutil.copytree(pkg, tmp_path / "reference")
    rerun(tmp_path / "reference")
    after = variant_files(tmp_path / "reference")
    assert after != before
    stopped = kill_at_each_point(monkeypatch, tmp_path, work, rerun)
    outcomes = []
    for number, name, snapshot in stopped:
        Package(snapshot / "pkg")    # loads: every file it names is there, with its hash
        found = variant_files(snapshot / "pkg")
        assert found in (before, after), (number, name, found)
        outcomes.append("after" if found == after else "before")
        edgegen.load(snapshot / "pkg", precision="int8").sample(2, seed=0)
        rerun(snapshot / "pkg")
        assert leftovers(snapshot / "pkg") == [] and leftovers(snapshot) == [], (number, name)
        named = {r for parts in variant_files(snapshot / "pkg").values() for r in parts.values()}
        assert {p.name for p in (snapshot / "pkg").glob("*.int8.*")} == named, (number, name)
    assert "before" in outcomes and "after" in outcomes
    assert len(stopped) >= 5


def test_a_killed_export_leaves_the_old_package_or_the_new_one(trained, tmp_path, monkeypatch):
    """export --force over an existing package, killed at every point: the output is the old
    package or the new one, whole, never missing; the next export cleans the staging leftovers."""
    work = tmp_path / "work"
    ckpt = trained["gan"][0]
    export_checkpoint(ckpt, work / "pkg", name="old")

    def export_again():
        export_checkpoint(ckpt, work / "pkg", name="new", overwrite=True)

    stopped = kill_at_each_point(monkeypatch, tmp_path, work, export_again)
    seen = set()
    for number, name, snapshot in stopped:
        seen.add(Package(snapshot / "pkg").manifest.name)     # whole: loads with every hash
        export_checkpoint(ckpt, snapshot / "pkg", name="new", overwrite=True)
        assert leftovers(snapshot) == [], (number, name, leftovers(snapshot))
    assert seen == {"old", "new"}       # killed before the switch: old; after it: new


def test_two_optimizes_of_one_package_at_once_both_land(package_copy):
    """int8 and fp16 at the same time: the second waits for the first's lock, then reads the
    manifest the first wrote, so both variants end up in it and no file is orphaned."""
    pkg = package_copy("gan")
    errors = []

    def optimize(precision):
        try:
            optimize_package(pkg, precision, calibration=16, target="tensorrt", progress=_quiet)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=optimize, args=(p,)) for p in ("int8", "fp16")]
    with storage.writer_lock(pkg, "holding it while both start"):
        for t in threads:
            t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    files = variant_files(pkg)
    assert set(files) == {"int8", "fp16"} and all(files[p]["generator"] for p in files)
    assert {p.name for p in pkg.glob("generator.*.*.onnx")} == {files["int8"]["generator"], files["fp16"]["generator"]}


def test_a_writability_probe_whose_file_another_writers_cleanup_removed_still_finds_the_folder_writable(
        tmp_path, monkeypatch):
    """The probe runs before its command waits for the writer lock; the holder's cleanup of
    temporaries (optimize's) removed the probe's file between its making and its removal, and two
    optimizes of one package at once failed as a folder the system refused (seen once in CI)."""
    made = storage._temporary_beside

    def removed_by_another(path, folder):
        fd, tmp = made(path, folder)
        os.unlink(tmp)   # as the lock holder's clean_temporaries does
        return fd, tmp

    monkeypatch.setattr(storage, "_temporary_beside", removed_by_another)
    storage.check_files_writable_in(tmp_path, "package")
    assert storage.can_write_files_in(tmp_path) and list(tmp_path.iterdir()) == []


def test_training_holds_its_output_while_it_trains(tmp_path, monkeypatch):
    """A second run to the same --out started while the first trained: the first, checked at its
    start, was refused at its end after all its training, and nothing told the second (helper 143).
    A run now holds its output's writer lock from its start: the second is refused before it trains."""
    from edgegen.training import train as training

    with storage.writer_lock(tmp_path / "ckpt", "a first training"):
        with monkeypatch.context() as patched:
            patched.setattr(training, "_step", lambda *a, **k: pytest.fail("trained while another run held the output"))
            with pytest.raises(PackageBusyError, match="expected no other edgegen command writing it, found pid "
                                                       rf"{os.getpid()} .*a first training"):
                training.train("gan", tmp_path / "ckpt", steps=1, batch_size=8, progress=False)
    assert training.train("gan", tmp_path / "ckpt", steps=1, batch_size=8, progress=False) == tmp_path / "ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]   # the lock file went with the run


def test_a_second_writer_of_a_new_output_is_refused_once_the_first_made_it(trained, tmp_path):
    ckpt = trained["gan"][0]
    with storage.writer_lock(tmp_path / "pkg", "a first export"):
        with pytest.raises(PackageBusyError, match="expected no other edgegen command writing it, found pid "
                                                   rf"{os.getpid()} .*a first export"):
            with storage.writer_lock(tmp_path / "pkg", "a second export", wait=False):
                pass
        export_done = threading.Event()
        results = []

        def second():
            try:
                export_checkpoint(ckpt, tmp_path / "pkg", name="second")
            except OutputExistsError as exc:
                results.append(exc)
            export_done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not export_done.wait(1.0)         # waiting for the lock
        shutil.copytree(trained["gan"][1], tmp_path / "pkg")   # what the first writer made
    thread.join(timeout=120)
    assert len(results) == 1 and "pass --force, or overwrite=True in Python, to replace it" in str(results[0])
    assert Package(tmp_path / "pkg").manifest.name != "second"
    assert leftovers(tmp_path) == []


def test_a_writer_killed_by_sigkill_releases_its_lock(tmp_path):
    """The lock is the system's (flock): a SIGKILLed holder never leaves it held."""
    code = ("import os, signal, sys; from edgegen.storage import writer_lock\n"
            f"with writer_lock({str(tmp_path / 'pkg')!r}, 'dying'):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == -9 and (tmp_path / ".pkg.lock").exists()
    with storage.writer_lock(tmp_path / "pkg", "next", wait=False):
        pass
    assert leftovers(tmp_path) == []


def test_cleaning_touches_only_this_outputs_leftovers_and_restores_a_moved_aside_output(tmp_path):
    """Another output whose name starts the same (ckpt and ckpt.best) keeps its staging folder;
    an old output moved aside by a writer killed before the switch (where the system cannot
    exchange two paths) is put back, since it is the only copy. A user's own hidden copy, named
    alike but without edgegen's mark, is theirs: neither removed nor put in the output's place."""
    for name in (".ckpt.k3j4h2l1.partial", ".ckpt.best.k3j4h2l1.partial", ".ckpt.v2.edgegen-123.old",
                 ".pkg.edgegen-4242.old", ".pkg.20261206.old", ".ckpt.20261206.old"):
        (tmp_path / name).mkdir()
    (tmp_path / ".pkg.edgegen-4242.old" / "edgegen.json").write_text("{}")
    (tmp_path / ".pkg.20261206.old" / "notes.txt").write_text("mine")
    removed = storage.clean_leftovers(tmp_path / "ckpt")
    assert [p.name for p in removed] == [".ckpt.k3j4h2l1.partial"]
    assert (tmp_path / ".ckpt.best.k3j4h2l1.partial").is_dir() and (tmp_path / ".ckpt.v2.edgegen-123.old").is_dir()
    storage.clean_leftovers(tmp_path / "pkg")
    assert (tmp_path / "pkg" / "edgegen.json").is_file() and not (tmp_path / ".pkg.edgegen-4242.old").exists()
    assert (tmp_path / ".pkg.20261206.old" / "notes.txt").is_file() and (tmp_path / ".ckpt.20261206.old").is_dir()
    storage.clean_leftovers(tmp_path / "other")   # nothing of its own beside it: the user's copies are not taken
    assert not (tmp_path / "other").exists() and (tmp_path / ".pkg.20261206.old" / "notes.txt").is_file()
    # one an earlier edgegen named so (the only copy, where a kill came mid-switch) is said, and left (helper 132)
    (tmp_path / ".ckpt.4242.old").mkdir()
    (tmp_path / ".ckpt.4242.old" / "weights.safetensors").write_bytes(b"old")
    with pytest.warns(EdgegenWarning, match=r"\.ckpt\.4242\.old': a folder an earlier edgegen may have moved aside "
                                            r"while it wrote .*\(it holds weights.safetensors\), or a copy of yours: "
                                            r"left as it is; if it is the old ckpt you want back, rename it"):
        storage.clean_leftovers(tmp_path / "ckpt")
    assert (tmp_path / ".ckpt.4242.old" / "weights.safetensors").is_file()
    # a dated copy of the user's (8 digits, no process id) holding the same is not said at every write (helper 134)
    shutil.rmtree(tmp_path / ".ckpt.4242.old")
    (tmp_path / ".ckpt.20261206.old" / "weights.safetensors").write_bytes(b"mine")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        storage.clean_leftovers(tmp_path / "ckpt")


def test_one_lock_however_the_path_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pkg")
    monkeypatch.chdir(tmp_path / "pkg")
    with storage.writer_lock(tmp_path / "pkg", "first"):
        for spelling in (".", tmp_path / "link", tmp_path / "sub" / ".." / "pkg"):
            with pytest.raises(PackageBusyError):
                with storage.writer_lock(spelling, "second", wait=False):
                    pass
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "pkg") == []


def test_the_folders_a_writer_made_for_its_output_go_when_it_wrote_nothing(tmp_path, capsys):
    """A train refused for its --data left --out's new parents behind (helper 143); a writer that
    wrote its output keeps them, and a folder that held something before is never removed."""
    from edgegen.cli import main

    assert main(["train", "vae", "--out", str(tmp_path / "new" / "deeper" / "ckpt"), "--data", str(tmp_path / "none")]) == 2
    assert "found no such folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with storage.writer_lock(tmp_path / "kept" / "out", "writing"):
        (tmp_path / "kept" / "out").mkdir()
    assert (tmp_path / "kept" / "out").is_dir() and leftovers(tmp_path / "kept") == []
    with storage.writer_lock(tmp_path / "kept" / "other" / "out", "writing"):
        pass
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["out"]


def test_a_file_written_over_a_folder_or_under_a_file_is_refused_naming_the_output(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"output '.*folder': expected a file to write, found a directory"):
        storage.atomic_write_text(tmp_path / "folder", "x")
    with pytest.raises(OutputExistsError, match=r"output '.*afile/x.json': expected a folder to write it in, found a "
                                                r"file on the way to it"):
        storage.atomic_write_text(tmp_path / "afile" / "x.json", "x")
    assert (tmp_path / "afile").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]


def test_a_writer_waiting_on_a_hung_one_says_so_each_minute(tmp_path, monkeypatch, capsys):
    """A holder stopped (SIGSTOP) or hung keeps its flock: the second writer said once who held it
    and then nothing, for as long as a CI job ran (helper 90)."""
    clock = [0.0]
    monkeypatch.setattr(storage.time, "monotonic", lambda: clock[0])
    polls = []

    def poll(seconds):   # each poll 1.5 min of the hang (said as 2, 3, 4 min); the holder lets go at the fourth
        clock[0] += 90
        polls.append(seconds)
        if len(polls) == 4:
            os.close(held)

    monkeypatch.setattr(storage.time, "sleep", poll)
    import fcntl

    held = os.open(tmp_path / ".pkg.lock", os.O_RDWR | os.O_CREAT)
    os.write(held, b"pid 4242 (edgegen export: a hung export)")
    fcntl.flock(held, fcntl.LOCK_EX)
    with storage.writer_lock(tmp_path / "pkg", "the second"):
        pass
    target, holder = repr(str((tmp_path / "pkg").resolve())), "pid 4242 (edgegen export: a hung export)"
    assert capsys.readouterr().err.splitlines() == [
        f"edgegen: waiting for {holder} to finish writing {target}",
        *(f"edgegen: still waiting for {holder} to finish writing {target}, {minutes} min so far" for minutes in (2, 3, 4))]
    assert polls == [storage.LOCK_POLL_S] * 4 and leftovers(tmp_path) == []
