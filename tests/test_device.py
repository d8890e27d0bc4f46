"""What edgegen reads on a device: a Jetson's identity (doctor) and power sources (bench),
parsed from fixture files of the formats a Jetson and an x86 machine have (tests/fixtures)."""

import time
from pathlib import Path

import pytest

from edgegen import bench, doctor, power
from edgegen.cli import main
from edgegen.targets import this_device_target

FIXTURES = Path(__file__).parent / "fixtures"
JETSON = FIXTURES / "jetson-orin-nano"


def no_commands(command):
    return None


def test_doctor_recognises_a_jetson_from_its_files():
    info = doctor.jetson(JETSON, run=no_commands)
    assert info == {"model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "l4t": "36.4.3",
                    "jetpack": "6.2", "power_mode": "MAXN_SUPER (mode 2)", "cuda": "12.6.68"}
    assert doctor._jetson_target(info) == "--target jetpack6 for export, optimize, check and build"


def test_doctor_prefers_the_jetpack_package_and_nvpmodel_when_they_answer():
    answers = {"dpkg-query": "6.2.1+b38", "nvpmodel": "NV Power Mode: 25W\n1\n"}
    info = doctor.jetson(JETSON, run=lambda command: answers.get(command[0]))
    assert info["jetpack"] == "6.2.1" and info["power_mode"] == "25W"


def test_doctor_on_a_machine_that_is_not_a_jetson(tmp_path):
    assert doctor.jetson(tmp_path, run=no_commands) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R99 (release), REVISION: 1.0, GCID: 1\n")
    info = doctor.jetson(tmp_path, run=no_commands)
    assert info["l4t"] == "99.1.0" and info["jetpack"] is None and info["cuda"] is None
    assert "unknown" in doctor._jetson_target(info)
    assert this_device_target(tmp_path) == "tensorrt"   # a release edgegen has no target for: the desktop's


def test_a_jetson_builds_for_its_own_jetpack_where_no_target_is_named(tmp_path):
    assert this_device_target(JETSON) == "jetpack6"   # L4T 36.4.3
    (tmp_path / "etc").mkdir()
    assert this_device_target(tmp_path) == "tensorrt"   # not a Jetson
    for l4t, target in (("R38 (release), REVISION: 2.0", "jetpack7"), ("R39 (release), REVISION: 2.1", "jetpack7"),
                        ("R35 (release), REVISION: 6.1", "tensorrt"), ("R36 (release), REVISION: 4.0", "jetpack6"),
                        # JetPack 6.0 and its preview carry TensorRT 8.6: jetpack6's 10.3 is not there
                        ("R36 (release), REVISION: 3.0", "tensorrt"), ("R36 (release), REVISION: 2.0", "tensorrt")):
        (tmp_path / "etc" / "nv_tegra_release").write_text(f"# {l4t}, GCID: 1, BOARD: generic\n")
        assert this_device_target(tmp_path) == target, l4t


def test_doctor_keeps_why_no_gpu_is_listed_apart_from_the_gpus(monkeypatch):
    import subprocess

    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor._nvidia_gpus() == ([], "no nvidia-smi")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/" + name)

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired("nvidia-smi", 20)

    assert doctor._nvidia_gpus(run=hangs) == ([], "nvidia-smi present but did not answer (TimeoutExpired)")
    listed = subprocess.CompletedProcess([], 0, stdout="NVIDIA H200, 9.0, 580.1, 143771 MiB\n\n")
    assert doctor._nvidia_gpus(run=lambda *a, **k: listed) == (["NVIDIA H200, 9.0, 580.1, 143771 MiB"], None)
    empty = subprocess.CompletedProcess([], 0, stdout="")
    assert doctor._nvidia_gpus(run=lambda *a, **k: empty) == ([], "nvidia-smi listed none")


def test_jetson_rails_from_sysfs_prefer_the_module_input():
    rails = power.Ina3221(JETSON / "sys/bus/i2c/drivers/ina3221")
    assert rails.problem() is None
    assert list(rails.rails) == ["VDD_IN"] and rails.watts() == pytest.approx(4.8)
    assert power.Ina3221(JETSON / "nothing").problem().startswith("Jetson INA3221: no rails")


def _hwmon(root: Path, files: dict[str, str]) -> Path:
    """A monitor's hwmon folder under a driver's root, as a Jetson's sysfs lays it out."""
    folder = root / "1-0040" / "hwmon" / "hwmon3"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text + "\n")
    return folder


def test_an_agx_orins_rails_are_summed_its_5v_system_rail_is_not_the_input(tmp_path):
    """An AGX Orin has no VDD_IN: its VIN_SYS_5V0 is the I/O ports' rail, one part of the sum."""
    _hwmon(tmp_path, {"in1_label": "VDD_GPU_SOC", "in1_input": "5000", "curr1_input": "1000",
                      "in2_label": "VDD_CPU_CV", "in2_input": "5000", "curr2_input": "400",
                      "in3_label": "VIN_SYS_5V0", "in3_input": "5000", "curr3_input": "600",
                      "in7_label": "sum of shunt voltages", "in7_input": "1"})
    rails = power.Ina3221(tmp_path)
    assert set(rails.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"} and rails.watts() == pytest.approx(10.0)
    assert power.tegrastats_watts({"VDD_GPU_SOC": 5.0, "VDD_CPU_CV": 2.0, "VIN_SYS_5V0": 3.0}) == 10.0


def test_a_thors_input_from_its_ina238_comes_before_the_module_rails(tmp_path):
    ina238 = tmp_path / "ina238"
    _hwmon(ina238, {"power1_input": "41250000", "in1_input": "19800"})   # microwatts: 41.25 W
    source = power.Ina238(ina238)
    assert source.problem() is None and source.watts() == pytest.approx(41.25)
    _hwmon(tmp_path / "ina3221", {"in1_label": "VDD_GPU", "in1_input": "5000", "curr1_input": "100"})
    found, _ = power.find_power_source((lambda: power.Ina238(ina238), lambda: power.Ina3221(tmp_path / "ina3221")))
    assert found.name == "Jetson INA238 (input)"
    assert power.Ina238(tmp_path / "none").problem().startswith("Jetson INA238: no power1_input under")
    second = ina238 / "1-0041" / "hwmon" / "hwmon4"
    second.mkdir(parents=True)
    (second / "power1_input").write_text("1000000\n")   # two monitors: which is the input is not known
    assert "2 monitors under" in power.Ina238(ina238).problem()
    found, _ = power.find_power_source((lambda: power.Ina238(ina238), lambda: power.Ina3221(tmp_path / "ina3221")))
    assert found.name == "Jetson INA3221 rail VDD_GPU"



def test_a_jetsons_own_monitors_come_before_nvml(tmp_path, monkeypatch):
    """On a Thor NVML may answer too, for the GPU alone: the board's input is the figure (helper 96)."""
    ina238 = tmp_path / "ina238"
    _hwmon(ina238, {"power1_input": "30000000"})
    board, nvml = power.Ina238, power.Nvml
    monkeypatch.setattr(power, "Ina238", lambda: board(ina238))
    monkeypatch.setattr(power, "Nvml", lambda: nvml(FakeNvml()))   # answers, as on a Thor it may
    found, _ = power.find_power_source()
    assert found.name == "Jetson INA238 (input)"


def test_doctor_knows_the_jetpack_7_releases():
    assert [doctor.JETPACK_FOR_L4T[release] for release in ("38.2", "38.4", "39.2")] == ["7.0", "7.1", "7.2"]
    assert doctor._jetson_target({"l4t": "39.2", "jetpack": "7.2"}) == \
        "--target jetpack7 for export, optimize, check and build"
    assert "JetPack 6.0 (L4T 36.3): edgegen's targets are jetpack6 (JetPack 6.1 and 6.2" in \
        doctor._jetson_target({"l4t": "36.3", "jetpack": "6.0"})
    assert "upgrade to 6.1" not in doctor._jetson_target({"l4t": "35.4.1", "jetpack": "5.1.2"})   # Xavier: no JetPack 6


def test_tegrastats_lines_of_jetpack_6_and_4():
    idle, busy = (JETSON / "tegrastats.txt").read_text().splitlines()
    assert power.parse_tegrastats(idle) == {"VDD_IN": 4.832, "VDD_CPU_GPU_CV": 0.52, "VDD_SOC": 1.44}
    assert power.tegrastats_watts(power.parse_tegrastats(busy)) == pytest.approx(15.102)
    old = power.parse_tegrastats((JETSON / "tegrastats-jetpack4.txt").read_text())
    assert old == {"POM_5V_IN": 2.41, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.402}
    assert power.tegrastats_watts(old) == pytest.approx(2.41)
    assert power.tegrastats_watts({"VDD_GPU": 1.0, "VDD_CPU": 2.0}) == 3.0   # no input rail: the sum


def test_rapl_counters_sum_packages_and_survive_a_wrap():
    rapl = power.Rapl(FIXTURES / "x86-rapl/sys/class/powercap")
    assert rapl.problem() is None and rapl.name == "RAPL (package-0, package-1)"
    start = rapl.read()
    assert start == [262143000000, 1000000]   # package zones only, not the core subzone
    end = [5_000_000, 3_000_000]               # package-0 wrapped past max_energy_range_uj
    assert rapl.joules(start, end) == pytest.approx((328850 + 5_000_000 + 2_000_000) / 1e6)
    assert power.Rapl(FIXTURES / "none").problem().startswith("RAPL: no ")


class FakeNvml:
    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return 123_456


def test_nvml_energy_counter_in_millijoules():
    nvml = power.Nvml(FakeNvml())
    assert nvml.problem() is None and nvml.name == "NVML (NVIDIA H200)"
    assert nvml.joules([1000], [3500]) == 2.5


def test_no_power_source_says_why_each_was_not_found():
    source, why = power.find_power_source((lambda: power.Rapl(FIXTURES / "none"),
                                           lambda: power.Ina3221(FIXTURES / "none")))
    assert source is None
    assert why.startswith("no power source: RAPL: no ") and "Jetson INA3221: no rails" in why


class FiveWatts(power.CounterSource):
    """An energy counter that rises at 5 W: joules measured must follow the time taken."""

    name = "a 5 W counter"

    def read(self):
        return [int(time.perf_counter() * 5e6)]

    def joules(self, start, end):
        return (end[0] - start[0]) / 1e6


class SampledTwoWatts(power.PowerSource):
    name = "2 W readings"

    def watts(self):
        return 2.0


@pytest.mark.parametrize("source, watts", [(FiveWatts, 5.0), (SampledTwoWatts, 2.0)])
def test_bench_reports_watts_and_energy_per_result(trained, monkeypatch, source, watts):
    monkeypatch.setattr(power, "find_power_source", lambda: (source(), None))
    report = bench.bench_package(trained["gan"][1], batch=4, iters=5, warmup=1)
    (row,) = report["results"]
    assert row["watts"] == pytest.approx(watts, rel=0.05)
    # energy per result: the power times the time one sample takes (a call makes 4)
    seconds_per_sample = row["watts"] and row["joules_per_result"] / row["watts"]
    assert 0 < seconds_per_sample < 1 and report["energy"].startswith(f"measured with {source.name}")
    assert f" {row['watts']:.2f} | " in bench.format_table(report)


def test_bench_says_when_there_is_no_power_source(trained, monkeypatch, capsys):
    monkeypatch.setattr(power, "find_power_source", lambda: (None, "no power source: none here"))
    assert main(["bench", str(trained["gan"][1]), "--iters", "3", "--warmup", "1"]) == 0
    assert "energy: not measured: no power source: none here" in capsys.readouterr().out
    assert main(["bench", str(trained["gan"][1]), "--iters", "3", "--warmup", "1", "--no-energy"]) == 0
    assert "energy: not measured: not asked for" in capsys.readouterr().out


class NvmlWithoutCounter(FakeNvml):
    """A GPU older than Volta: no energy counter, power readings only."""

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        raise RuntimeError("Not Supported")

    def nvmlDeviceGetPowerUsage(self, handle):
        return 71_500   # mW


def test_nvml_falls_back_to_power_readings_without_the_energy_counter():
    assert power.Nvml(NvmlWithoutCounter()).problem() == "NVML: Not Supported"
    readings = power.NvmlPower(NvmlWithoutCounter())
    assert readings.problem() is None and readings.watts() == 71.5
    assert readings.name == "NVML power readings (NVIDIA H200)"
    source, why = power.find_power_source((lambda: power.Nvml(NvmlWithoutCounter()),
                                           lambda: power.NvmlPower(NvmlWithoutCounter())))
    assert isinstance(source, power.NvmlPower) and why is None
