"""The CPUs this process may use, where a container or a cpuset holds it to fewer than the machine has.

os.cpu_count() counts the host's CPUs, and ONNX Runtime sizes its default thread pool by the
host's physical cores. Inside `docker run --cpus=2` (a cgroup CPU quota, as a Kubernetes limit
sets) or `--cpuset-cpus=0-1` (an affinity mask) on a many-core host, that is a pool of threads
the process cannot run at once: they spend each period's quota early and then all wait, and
decoding, whose threads meet at every node, stalls (benchmarks/cpu_quota.py: in a 1-CPU quota on
2 cores, int4 decoding at 0.64x the tokens per second of one thread, p90 per token 6-7x). An
affinity mask has a second cost: ONNX Runtime pins its default threads to cores itself, which
fails inside a cgroup cpuset (pthread_setaffinity_np errors in the log) and outside one (taskset)
takes cores the user had kept free.

usable_cores() reads both limits (the affinity mask; a cgroup v2 cpu.max or a v1 CFS quota, on
the process's own cgroup and the ones above it), and default_threads() is what a session takes
when the caller names no thread count: the usable cores where they are fewer than the machine's,
else None (ONNX Runtime's own default: a thread per physical core, which SMT siblings would only
slow, or the count a user set in ORT_INTRA_OP_NUM_THREADS).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

ORT_THREADS_ENV = "ORT_INTRA_OP_NUM_THREADS"


def usable_cores(root: Path = Path("/")) -> int:
    """The CPUs this process may run on at once: its affinity mask, capped by a cgroup CPU quota
    rounded up (1.5 CPUs of quota run 2 threads at once, each part of the time)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def default_threads() -> int | None:
    """A session's intra-op threads when the caller names none (module docstring). A user's
    ORT_INTRA_OP_NUM_THREADS is left to ONNX Runtime, which sizes its default pool by it (1.32
    does; older releases may not read it)."""
    if os.environ.get(ORT_THREADS_ENV):
        return None
    usable = usable_cores()
    return usable if usable < (os.cpu_count() or 1) else None


def named_threads() -> int | None:
    """The count a user set in ORT_INTRA_OP_NUM_THREADS, or None (not set, or not a positive
    whole number: ONNX Runtime itself refuses that when it reads it)."""
    value = os.environ.get(ORT_THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPUs' worth of time a cgroup quota allows this process (the smallest quota on its
    cgroup and those above it), or None where none is set or the files cannot be read. `root`
    is the file system's root (a test's fake one)."""
    try:
        memberships = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in memberships:   # "0::/path" (v2), "4:cpu,cpuacct:/path" (v1)
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        v2 = controllers == ""
        if not v2 and "cpu" not in controllers.split(","):
            continue
        for folder in _cgroup_folders(root, mounts, path, v2):
            quota = _read_quota(folder, v2)
            if quota is not None:
                quotas.append(quota)
    return min(quotas, default=None)


def _cgroup_folders(root: Path, mounts: list[str], path: str, v2: bool) -> list[Path]:
    """The folders of cgroup `path` and of those above it, up to its hierarchy's mount. A mount's
    own root may be a cgroup below the hierarchy's (a container's, bind-mounted): the path is
    taken relative to it, or, where it lies outside (no cgroup namespace), the mount alone."""
    for line in mounts:
        # "36 25 0:30 /mount/root /sys/fs/cgroup/cpu rw,... - cgroup cgroup rw,cpu,cpuacct"
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fs_type, options = tail[0], tail[2].split(",")
        if (fs_type != "cgroup2") if v2 else (fs_type != "cgroup" or "cpu" not in options):
            continue
        mount_root, mount_point = fields[3], root / fields[4].lstrip("/")
        relative = Path(path).relative_to(mount_root) if Path(path).is_relative_to(mount_root) else Path()
        folder = mount_point / relative
        return [folder, *[p for p in folder.parents if p.is_relative_to(mount_point)]]
    return []


def _read_quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:   # "max 100000" (none) or "150000 100000": quota and period in microseconds
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())   # -1: none
        return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
