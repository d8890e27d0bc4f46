"""The CPUs this process may use, where a container or a cpuset holds it to fewer than the machine has.

os.cpu_count() counts the host's CPUs, and ONNX Runtime sizes its default thread pool by the
host's physical cores. Inside `docker run --cpus=2` (a cgroup CPU quota, as a Kubernetes limit
sets) or `--cpuset-cpus=0-1` (an affinity mask) on a many-core host, that is a pool of threads
the process cannot run at once: they spend each period's quota early and then all wait, and
decoding, whose threads meet at every node, stalls (benchmarks/cpu_quota.py: in a 1-CPU quota on
2 cores, int4 decoding at 0.64x-0.65x the tokens per second of one thread, p90 per token 1.9x-7x). An
affinity mask has a second cost: ONNX Runtime pins its default threads to cores itself, which
fails inside a cgroup cpuset (pthread_setaffinity_np errors in the log) and outside one (taskset)
takes cores the user had kept free.

usable_cores() reads both limits (the affinity mask; a cgroup v2 cpu.max or a v1 CFS quota, on
the process's own cgroup and the ones above it). A session the caller names no thread count for
runs session_threads(): the count a user set in ORT_INTRA_OP_NUM_THREADS (ONNX Runtime reads it
itself), else one thread per physical core it may use (SMT siblings would only slow it, which is
why ONNX Runtime counts physical cores), capped by the quota. default_threads() is the count
edgegen passes ONNX Runtime for that: None (ONNX Runtime's own default) unless the process is held
to fewer physical cores than the machine has. Sessions that run side by side, each in its own
process (Triton's model instances), share those cores: shared_threads() divides them.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .errors import ConfigError

ORT_THREADS_ENV = "ORT_INTRA_OP_NUM_THREADS"
# intra-op threads per logical CPU: more than cores only contend (ONNX Runtime's pools spin); a few
# per core are allowed, for whoever measures it, and far more are a mistake (2,000 spinning
# threads hung a tiny run on 2 cores)
MAX_THREADS_PER_CORE = 4


def usable_cores(root: Path = Path("/")) -> int:
    """The CPUs this process may run on at once: its affinity mask, capped by a cgroup CPU quota
    rounded up (1.5 CPUs of quota run 2 threads at once, each part of the time)."""
    cores = len(_affinity())
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def session_threads() -> int:
    """The intra-op threads a session runs when the caller names none (module docstring)."""
    return named_threads() or default_threads() or physical_cores(_all_cpus())


def default_threads() -> int | None:
    """The thread count edgegen passes ONNX Runtime when the caller names none: the physical cores
    this process may use, where a quota or an affinity mask holds it to fewer than the machine's;
    else None, ONNX Runtime's own default (a thread per physical core of the machine; the count in
    ORT_INTRA_OP_NUM_THREADS where a user set one, which ONNX Runtime 1.32 reads)."""
    if named_threads() is not None:
        return None
    usable = min(usable_cores(), physical_cores(_affinity()))
    return usable if usable < physical_cores(_all_cpus()) else None


def shared_threads(sharers: int) -> int | None:
    """The intra-op threads each of `sharers` sessions runs where they run at once, each in its own
    process, on the cores this process may use (Triton's model instances) and the caller names no
    count: the default count divided among them, at least one each. None (the default, as one
    session runs it) for a single session, or where ORT_INTRA_OP_NUM_THREADS names the count."""
    if sharers <= 1 or named_threads() is not None:
        return None
    return max(1, session_threads() // sharers)


def named_threads() -> int | None:
    """The count a user set in ORT_INTRA_OP_NUM_THREADS: None where it is unset, empty or 0 (ONNX
    Runtime's own default); anything but a whole number is refused here, as ONNX Runtime refuses it."""
    value = os.environ.get(ORT_THREADS_ENV, "")
    if not value.isascii() or not value.isdigit():
        if value:
            raise ConfigError(f"{ORT_THREADS_ENV}: expected a whole number of threads (0: ONNX Runtime's default), "
                              f"found {value!r}")
        return None
    most = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if int(value) > most:   # as --threads refuses it: the variable was taken at any size
        raise ConfigError(f"{ORT_THREADS_ENV}: expected at most {MAX_THREADS_PER_CORE} threads per logical core ({most} "
                          f"on this machine), found {value}")
    return int(value) or None


def physical_cores(cpus: set[int], root: Path = Path("/")) -> int:
    """How many physical cores the logical CPUs `cpus` lie on: SMT siblings share one (Linux's
    topology files); where those cannot be read, each CPU counts as one."""
    cores = set()
    for cpu in cpus:
        topology = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            siblings = (topology / "core_cpus_list").read_text().strip()
        except OSError:
            try:
                siblings = (topology / "thread_siblings_list").read_text().strip()
            except OSError:
                siblings = f"cpu{cpu}"
        cores.add(siblings)
    return max(1, len(cores))


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return _all_cpus()


def _all_cpus() -> set[int]:
    return set(range(os.cpu_count() or 1))


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPUs' worth of time a cgroup quota allows this process (the smallest quota on its
    cgroup and those above it), or None where none is set or the files cannot be read. `root`
    is the file system's root (a test's fake one)."""
    quotas = [q for folder, v2 in _controller_folders(root, "cpu") if (q := _read_quota(folder, v2)) is not None]
    return min(quotas, default=None)


MEMORY_FILES = {True: ("memory.max", "memory.current"), False: ("memory.limit_in_bytes", "memory.usage_in_bytes")}
V1_NO_MEMORY_LIMIT = 1 << 62   # cgroup v1 says "no limit" as a page-rounded LONG_MAX


def cgroup_memory_left(root: Path = Path("/")) -> int | None:
    """Bytes this process's cgroup memory limits leave (the least of limit - usage on its cgroup
    and those above it), or None where none is set (a container's `-m 4g` is not in
    /proc/meminfo, which says the host's memory). Beside the CPU quota: the same cgroups."""
    left = []
    for folder, v2 in _controller_folders(root, "memory"):
        limit_file, usage_file = MEMORY_FILES[v2]
        try:
            limit = (folder / limit_file).read_text().strip()
            if limit != "max" and int(limit) < V1_NO_MEMORY_LIMIT:
                left.append(int(limit) - int((folder / usage_file).read_text()))
        except (OSError, ValueError):
            continue
    return max(0, min(left)) if left else None


def _controller_folders(root: Path, controller: str) -> list[tuple[Path, bool]]:
    """(folder, is cgroup v2) of each cgroup this process is in for `controller` ("cpu",
    "memory"), and of those above it; none where /proc cannot be read."""
    try:   # mount points are bytes to the kernel: one that is not UTF-8 must not stop a load
        memberships = (root / "proc/self/cgroup").read_bytes().decode("utf-8", "surrogateescape").splitlines()
        mounts = (root / "proc/self/mountinfo").read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return []
    folders = []
    for line in memberships:   # "0::/path" (v2), "4:cpu,cpuacct:/path" (v1)
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        v2 = controllers == ""
        if not v2 and controller not in controllers.split(","):
            continue
        folders += [(folder, v2) for folder in _cgroup_folders(root, mounts, path, v2, controller=controller)]
    return folders


def _cgroup_folders(root: Path, mounts: list[str], path: str, v2: bool, controller: str = "cpu") -> list[Path]:
    """The folders of cgroup `path` and of those above it, up to its hierarchy's mount. A mount's
    own root may be a cgroup below the hierarchy's (a container's, bind-mounted): the path is
    taken relative to the mount whose root holds it most closely, or, where none holds it (no
    cgroup namespace), relative to none: the first mount alone."""
    candidates = []
    for line in mounts:
        # "36 25 0:30 /mount/root /sys/fs/cgroup/cpu rw,... [optional fields] - cgroup cgroup rw,cpu,cpuacct"
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fs_type, options = tail[0], tail[2].split(",")
        if (fs_type != "cgroup2") if v2 else (fs_type != "cgroup" or controller not in options):
            continue
        candidates.append((Path(_unescape(fields[3])), root / _unescape(fields[4]).lstrip("/")))
    holding = [(mount_root, point) for mount_root, point in candidates if Path(path).is_relative_to(mount_root)]
    if holding:
        mount_root, mount_point = max(holding, key=lambda c: len(c[0].parts))
        folder = mount_point / Path(path).relative_to(mount_root)
    elif candidates:
        folder = mount_point = candidates[0][1]
    else:
        return []
    return [folder, *[p for p in folder.parents if p.is_relative_to(mount_point)]]


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (a space is \\040) back to characters."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _read_quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:   # "max 100000" (none) or "150000 100000": quota and period in microseconds
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())   # -1: none
        return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
