"""The CPUs a process may use in a container or a cpuset (edgegen/cpus.py), read from a fake
file system's /proc and cgroup files, and the thread count sessions and bench take from them."""

from pathlib import Path

import pytest

import edgegen
from edgegen import cpus
from edgegen.bench import bench_package, cores_text, cpu_features, cpu_text, machine_info
from edgegen.errors import ConfigError


def fake_root(tmp_path: Path, memberships: str, mounts: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(memberships)
    (tmp_path / "proc/self/mountinfo").write_text(mounts)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = ("32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
             "33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")


def test_a_cgroup_v2_quota_above_the_process_cgroup_counts_and_the_smallest_wins(tmp_path):
    """docker --cpus=1.5 on a slice: the process's own cgroup sets none, the one above it does;
    a child's larger quota does not lift its parent's smaller one, nor the other way round."""
    root = fake_root(tmp_path, "0::/app.slice/worker\n", V2_MOUNT,
                     {"sys/fs/cgroup/app.slice/worker/cpu.max": "max 100000\n",
                      "sys/fs/cgroup/app.slice/cpu.max": "150000 100000\n",
                      "sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cpus.cgroup_cpu_quota(root) == 1.5
    (root / "sys/fs/cgroup/app.slice/worker/cpu.max").write_text("400000 100000\n")
    assert cpus.cgroup_cpu_quota(root) == 1.5
    (root / "sys/fs/cgroup/app.slice/worker/cpu.max").write_text("50000 50000\n")   # its own period
    assert cpus.cgroup_cpu_quota(root) == 1.0


def test_a_container_memory_limit_is_read_as_what_it_leaves(tmp_path):
    """docker -m: /proc/meminfo says the host's memory; the cgroup's limit less its usage is what
    a training may take (the least over the cgroup and those above it; v1's "no limit" is none)."""
    root = fake_root(tmp_path / "v2", "0::/app.slice/worker\n", V2_MOUNT,
                     {"sys/fs/cgroup/app.slice/worker/memory.max": "max\n",
                      "sys/fs/cgroup/app.slice/worker/memory.current": "100\n",
                      "sys/fs/cgroup/app.slice/memory.max": "4294967296\n",
                      "sys/fs/cgroup/app.slice/memory.current": "1073741824\n"})
    assert cpus.cgroup_memory_left(root) == 3 << 30
    (root / "sys/fs/cgroup/app.slice/memory.max").write_text("max\n")
    assert cpus.cgroup_memory_left(root) is None
    root = fake_root(tmp_path / "v1", "4:memory:/box\n3:cpu,cpuacct:/box\n", V1_MOUNTS.format(root="/"),
                     {"sys/fs/cgroup/memory/box/memory.limit_in_bytes": "2147483648\n",
                      "sys/fs/cgroup/memory/box/memory.usage_in_bytes": "1073741824\n",
                      "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                      "sys/fs/cgroup/memory/memory.usage_in_bytes": "5\n"})
    assert cpus.cgroup_memory_left(root) == 1 << 30


def test_the_cgroup2_mount_that_holds_the_path_is_read_and_its_escapes_undone(tmp_path):
    mounts = ("29 23 0:25 /other /mnt/other rw - cgroup2 cgroup2 rw\n"
              "30 23 0:26 / /sys/fs/cgroup\\040v2 rw shared:4 master:1 - cgroup2 cgroup2 rw\n")
    root = fake_root(tmp_path, "0::/app\n", mounts, {"sys/fs/cgroup v2/app/cpu.max": "120000 100000\n"})
    assert cpus.cgroup_cpu_quota(root) == 1.2


def test_a_mount_point_that_is_not_utf8_does_not_stop_the_reading(tmp_path):
    root = fake_root(tmp_path, "0::/\n", "", {"sys/fs/cgroup/cpu.max": "200000 100000\n"})
    (root / "proc/self/mountinfo").write_bytes(b"28 23 0:24 / /media/caf\xe9 rw - ext4 /dev/sda1 rw\n" + V2_MOUNT.encode())
    assert cpus.cgroup_cpu_quota(root) == 2.0


def test_a_cgroup_v1_quota_of_a_container_whose_cgroup_is_the_mount(tmp_path):
    """Docker on cgroup v1: the container's cgroup (/docker/<id>) is bind-mounted as the hierarchy's root."""
    root = fake_root(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", V1_MOUNTS.format(root="/docker/abc"),
                     {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cpus.cgroup_cpu_quota(root) == 2.0


def test_a_cgroup_v1_quota_on_the_process_path_below_the_hierarchy_root(tmp_path):
    root = fake_root(tmp_path, "4:cpu,cpuacct:/docker/abc\n", V1_MOUNTS.format(root="/"),
                     {"sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
                      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cpus.cgroup_cpu_quota(root) == 0.5


def test_a_cgroup_v1_path_is_taken_relative_to_its_mount_root_and_other_controllers_are_not_read(tmp_path):
    """The container's own cgroup is the mount: /docker/abc under it would be a different cgroup.
    The memory hierarchy, listed first, holds a quota file of its own that is not the CPU's."""
    mounts = ("33 31 0:30 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
              + V1_MOUNTS.format(root="/docker/abc"))
    root = fake_root(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n", mounts,
                     {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "10000\n",
                      "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
                      "sys/fs/cgroup/memory/cpu.cfs_quota_us": "10000\n",
                      "sys/fs/cgroup/memory/cpu.cfs_period_us": "100000\n"})
    assert cpus.cgroup_cpu_quota(root) == 2.0


@pytest.mark.parametrize("files", [{"sys/fs/cgroup/cpu.max": "max 100000\n"},   # no quota set
                                   {"sys/fs/cgroup/cpu.max": "garbled\n"},
                                   {}])                                          # no cpu controller here
def test_no_quota_where_none_is_set_or_it_cannot_be_read(tmp_path, files):
    assert cpus.cgroup_cpu_quota(fake_root(tmp_path, "0::/\n", V2_MOUNT, files)) is None


def test_no_quota_without_proc_files(tmp_path):
    assert cpus.cgroup_cpu_quota(tmp_path) is None


def test_usable_cores_take_the_affinity_mask_and_the_quota_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    quota = fake_root(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "120000 100000\n"})
    assert cpus.usable_cores(quota) == 2          # 1.2 CPUs of time: 2 threads at once
    assert cpus.usable_cores(tmp_path / "nowhere") == 8
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert cpus.usable_cores(quota) == 1          # a cpuset of one core under a larger quota


def test_physical_cores_count_smt_siblings_once(tmp_path):
    for cpu, siblings in ((0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")):
        topology = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(siblings + "\n")
    assert cpus.physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert cpus.physical_cores({0, 2}, tmp_path) == 1
    assert cpus.physical_cores({0, 4, 5}, tmp_path) == 3   # no topology files: each CPU counts


def smt_host(monkeypatch, logical: int, usable: int) -> None:
    """A host of `logical` CPUs in SMT pairs, the process held to `usable` of them by a quota."""
    monkeypatch.delenv(cpus.ORT_THREADS_ENV, raising=False)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: logical)
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(logical)), raising=False)
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda root=None: usable)
    monkeypatch.setattr(cpus, "physical_cores", lambda some, root=None: len({cpu // 2 for cpu in some}))


def test_default_threads_only_where_the_process_is_held_to_fewer_physical_cores(monkeypatch):
    smt_host(monkeypatch, logical=64, usable=2)
    assert cpus.default_threads() == 2 and cpus.session_threads() == 2
    smt_host(monkeypatch, logical=16, usable=12)    # 12 CPUs of quota, 8 physical cores: ONNX Runtime's 8
    assert cpus.default_threads() is None and cpus.session_threads() == 8
    smt_host(monkeypatch, logical=16, usable=4)
    assert cpus.default_threads() == 4
    monkeypatch.setenv(cpus.ORT_THREADS_ENV, "3")   # the user's own count: ONNX Runtime reads it
    assert cpus.default_threads() is None and cpus.session_threads() == 3
    monkeypatch.setenv(cpus.ORT_THREADS_ENV, "0")   # ONNX Runtime's default: the quota still counts
    assert cpus.default_threads() == 4


def test_sessions_side_by_side_share_the_default_count(monkeypatch):
    """Triton's instances, each its own process: N of them divide the count one session would run."""
    smt_host(monkeypatch, logical=16, usable=12)    # one session: ONNX Runtime's own 8
    assert cpus.shared_threads(1) is None
    assert [cpus.shared_threads(n) for n in (2, 3, 8, 9)] == [4, 2, 1, 1]
    smt_host(monkeypatch, logical=64, usable=2)     # a 2-CPU quota on a big host
    assert [cpus.shared_threads(n) for n in (2, 4)] == [1, 1]
    monkeypatch.setenv(cpus.ORT_THREADS_ENV, "3")   # the user's count per session: left to ONNX Runtime
    assert cpus.shared_threads(4) is None


def test_a_thread_count_in_the_environment_is_read_as_onnx_runtime_reads_it(monkeypatch):
    for value, count in (("3", 3), ("0", None), ("", None)):
        monkeypatch.setenv(cpus.ORT_THREADS_ENV, value)
        assert cpus.named_threads() == count
    for value in (" 2 ", "-1", "many", "\u00b2", "\u0663"):   # ONNX Runtime 1.32 refuses each
        monkeypatch.setenv(cpus.ORT_THREADS_ENV, value)
        with pytest.raises(ConfigError, match="ORT_INTRA_OP_NUM_THREADS: expected a whole number of threads"):
            cpus.named_threads()
    monkeypatch.setenv(cpus.ORT_THREADS_ENV, "100000")   # as --threads 100000 is refused
    with pytest.raises(ConfigError, match=r"ORT_INTRA_OP_NUM_THREADS: expected at most 4 threads per logical core "
                                          r"\(\d+ on this machine\), found 100000"):
        cpus.named_threads()


def test_a_session_held_to_one_core_runs_one_thread(trained, monkeypatch):
    package = trained["gan"][1]   # made, when this test asks first, before the cores are patched
    monkeypatch.delenv(cpus.ORT_THREADS_ENV, raising=False)
    monkeypatch.setattr(cpus, "usable_cores", lambda root=None: 1)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)
    session = edgegen.load(package, backend="ort-cpu").sessions["generator"]
    assert session.threads == 1
    assert session.inference_session.get_session_options().intra_op_num_threads == 1
    named = edgegen.load(trained["gan"][1], backend="ort-cpu", threads=2).sessions["generator"]
    assert named.inference_session.get_session_options().intra_op_num_threads == 2   # a caller's count wins


def test_bench_runs_the_count_a_session_runs_by_default_and_names_it(trained, monkeypatch):
    monkeypatch.setenv(cpus.ORT_THREADS_ENV, "3")
    assert bench_package(trained["gan"][1], batch=1, iters=2, warmup=0)["threads"] == 3
    monkeypatch.delenv(cpus.ORT_THREADS_ENV)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)   # a cpuset of 3
    monkeypatch.setattr(cpus, "physical_cores", lambda some, root=None: len(some))
    assert bench_package(trained["gan"][1], batch=1, iters=2, warmup=0)["threads"] == 3


def test_the_machine_line_says_how_many_cores_the_process_may_use():
    assert cores_text({"cores": 64, "usable_cores": 2}) == "64 cores, 2 usable by this process"
    assert cores_text({"cores": 8, "usable_cores": 8}) == "8 cores"
    assert cores_text({"cores": 8}) == "8 cores"    # a report written before usable_cores was recorded


def test_the_machine_line_names_the_vector_instructions_the_kernels_choose_by():
    """"AMD EPYC" names CPUs with and without AVX-512, which run other int4 kernels: the report says which."""
    xeon = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n" * 2
    orin = "processor\t: 0\nFeatures\t: fp asimd asimddp sha512 i8mm\nCPU part\t: 0xd42\n"
    assert cpu_features(xeon) == ["avx2", "avx512f", "avx512_vnni"]
    assert cpu_features(orin) == ["asimd", "asimddp", "i8mm"]
    assert cpu_features("") == []
    assert cpu_text({"cpu": "Intel Xeon", "cpu_features": ["avx2", "avx512f"]}) == "Intel Xeon with avx2, avx512f"
    assert cpu_text({"cpu": "AMD EPYC"}) == "AMD EPYC"   # a report written before the features were recorded
    assert isinstance(machine_info()["cpu_features"], list)
