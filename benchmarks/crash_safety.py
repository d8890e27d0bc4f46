"""Crash safety under real kills: `edgegen export --force` and `edgegen optimize` run in fresh
processes, each killed by SIGKILL at one of its fault points (edgegen.storage.fault_point, armed
by EDGEGEN_FAULT_AT), every point in turn, for several rounds. After each kill:

1. the package loads through the runtime's checks (every file it names is there, with its hash),
   and it is the old package or the new one (export: by its name; optimize: by its variants);
2. a run of the same command, not killed, succeeds and leaves nothing behind: no staging
   directory, no temporary file, no variant file the manifest does not name, no lock file.

    python benchmarks/crash_safety.py [--rounds 5] [--out benchmarks/results]

On the shipped GAN (models/edgegen_models/checkpoints/gan-digits), whose package is small, so a kill costs a
few seconds, most of it the process starting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgegen.bench import machine_info, write_results
from edgegen.demo import PRETRAINED
from edgegen.package import Package

CHECKPOINT = PRETRAINED / "gan-digits"
LEFTOVER_ENDINGS = (".partial", ".old", ".tmp", ".lock", "-inferred.onnx")


def edgegen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgegen.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def fault_points(command: list[str], work: Path, pristine: Path) -> list[str]:
    """The fault points one unkilled run of `command` passes, in order."""
    _restore(work, pristine)
    log = work.parent / "points.log"
    log.unlink(missing_ok=True)
    result = edgegen(*command, env={"EDGEGEN_FAULT_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def _restore(work: Path, pristine: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work, symlinks=True)


def leftovers(*folders: Path) -> list[str]:
    return sorted(p.name for folder in folders for p in folder.iterdir() if p.name.endswith(LEFTOVER_ENDINGS))


def state(pkg: Path) -> str:
    """What identifies the package's version: its name and the variant files it names."""
    manifest = json.loads((pkg / "edgegen.json").read_text())
    files = sorted(r.get("file", "-") for parts in manifest.get("variants", {}).values() for r in parts.values())
    return f"{manifest['name']} {' '.join(files)}"


def kill_loop(label: str, command: list[str], work: Path, pristine: Path, rounds: int) -> dict:
    """Kill `command` at each of its fault points, `rounds` times over, on a fresh copy of
    `pristine` each time; the old state is the copy's, the new one a whole run's."""
    points = fault_points(command, work, pristine)    # a whole run: its result is the new state
    pkg = work / "pkg"
    old, new = state(pristine / "pkg"), state(pkg)
    record = {"command": f"edgegen {' '.join(command)}", "points": points, "kills": 0, "old": 0, "new": 0,
              "violations": [], "seconds": 0.0}
    start = time.perf_counter()
    for round_ in range(rounds):
        for number, name in enumerate(points, start=1):
            _restore(work, pristine)
            killed = edgegen(*command, env={"EDGEGEN_FAULT_AT": str(number)})
            record["kills"] += 1
            problem = None
            if killed.returncode != -9:
                problem = f"expected death by SIGKILL, found exit {killed.returncode}: {killed.stderr[-300:]}"
            else:
                try:
                    Package(pkg)
                    found = state(pkg)
                    if found in (old, new):
                        record["old" if found == old else "new"] += 1
                    else:
                        problem = f"neither the old nor the new package: {found}"
                except Exception as exc:  # noqa: BLE001 - any failure to load is the violation measured
                    problem = f"does not load: {type(exc).__name__}: {exc}"
            if problem is None:
                again = edgegen(*command)
                left = leftovers(work, pkg)
                if again.returncode != 0 or left or state(pkg) != new:
                    problem = f"the next run: exit {again.returncode}, leftovers {left}, state {state(pkg)}"
            if problem:
                record["violations"].append(f"round {round_ + 1}, point {number} ({name}): {problem}")
            print(f"{label}: kill {record['kills']} at point {number} ({name}): {problem or 'ok'}", flush=True)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over every fault point of each command")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    report = {"machine": machine_info(), "checkpoint": CHECKPOINT.name, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = scratch / "pristine-export"
        assert edgegen("export", str(CHECKPOINT), "--out", str(base / "pkg"), "--name", "old").returncode == 0
        export = ["export", str(CHECKPOINT), "--out", str(scratch / "work" / "pkg"), "--name", "new", "--force"]
        report["export"] = kill_loop("export", export, scratch / "work", base, args.rounds)

        variants = scratch / "pristine-optimize"
        shutil.copytree(base, variants)
        for precision in ("int8", "fp16"):
            first = ["optimize", str(variants / "pkg"), "--precision", precision, "--target", "tensorrt",
                     *(["--calibration", "16"] if precision == "int8" else [])]   # fp16 takes none
            assert edgegen(*first).returncode == 0
        # a re-run over existing variants (the case that used to leave a package unloadable): another
        # calibration makes new int8 bytes, whose file replaces the old one; fp16 must survive either way
        optimize = ["optimize", str(scratch / "work" / "pkg"), "--precision", "int8", "--target", "tensorrt",
                    "--calibration", "24"]
        report["optimize"] = kill_loop("optimize", optimize, scratch / "work", variants, args.rounds)
    write_results(args.out, "crash_safety", report, markdown(report))


def markdown(r: dict) -> str:
    lines = ["# Crash safety under SIGKILL (`python benchmarks/crash_safety.py`)", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores. The shipped {r['checkpoint']}; "
             f"{r['rounds']} rounds over every fault point.", "",
             "| command | fault points | kills | left the old package | left the new one | violations | seconds |",
             "|---|---|---|---|---|---|---|"]
    for key in ("export", "optimize"):
        c = r[key]
        lines.append(f"| `{c['command'].split(' /')[0]} ...` | {len(c['points'])} | {c['kills']} | {c['old']} | "
                     f"{c['new']} | {len(c['violations'])} | {c['seconds']} |")
    for key in ("export", "optimize"):
        lines += ["", f"{key} fault points, in order: " + "; ".join(r[key]["points"])]
        lines += [f"- VIOLATION {v}" for v in r[key]["violations"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
