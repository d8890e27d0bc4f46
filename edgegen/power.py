"""Power sources for `edgegen bench`: energy per result beside latency (runtime code).

Where a board or a chip reports its power, bench reads it while an engine runs:
- on a Jetson, a Thor carrier board's INA238 monitor of the input (hwmon's power1_input, in
  microwatts), else the INA3221 monitors' rails in sysfs (hwmon: in*_label, in*_input in mV,
  curr*_input in mA), else the rails `tegrastats` prints;
- NVML on NVIDIA GPUs (the nvidia-ml-py package): the GPU's total energy counter, else its
  power readings (the counter exists from Volta on);
- on x86 CPUs, RAPL's package energy counters (/sys/class/powercap/intel-rapl:N/energy_uj),
  where the kernel lets this user read them (often root only).
The first source found is used. Counters give energy directly; power readings are sampled on a
thread and integrated over time. Where none exists, `find_power_source` says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 0.05
# a Jetson module's input, when it has one; an AGX Orin's VIN_SYS_5V0 is its I/O ports' rail, not
# the input (NVIDIA's forum, jetson-stats' issue 344): there the rails are summed
TOTAL_RAILS = ("VDD_IN", "VIN", "POM_5V_IN")


@dataclass
class Energy:
    source: str
    seconds: float
    joules: float

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class CounterSource:
    """A source with an energy counter: read before and after."""

    name = ""

    def read(self) -> list[int]:   # raw counter values
        raise NotImplementedError

    def joules(self, start: list[int], end: list[int]) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PowerSource:
    """A source with instantaneous power readings, sampled on a thread."""

    name = ""

    def watts(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def unreadable(self, label: str) -> str | None:
        """Why a first reading fails (a sysfs file this user may not read), said as `label`'s; None
        where it reads."""
        try:
            self.watts()
        except (OSError, ValueError) as exc:
            return f"{label}: {exc}"
        return None


# -- RAPL --------------------------------------------------------------------------------------

class Rapl(CounterSource):
    def __init__(self, root: Path = Path("/sys/class/powercap")):
        # the package zones (intel-rapl:0, intel-rapl:1), not their subzones (intel-rapl:0:0): those are inside
        self.zones = [z for z in sorted(root.glob("intel-rapl:*")) if z.name.count(":") == 1]
        self.name = f"RAPL ({', '.join(_text(z / 'name') or z.name for z in self.zones)})"
        self.ranges = [int(_text(z / "max_energy_range_uj") or 0) for z in self.zones]

    def problem(self) -> str | None:
        if not self.zones:
            return "RAPL: no /sys/class/powercap/intel-rapl zones (not an x86 CPU, or a container without them)"
        try:
            self.read()
        except OSError as exc:
            return f"RAPL: {exc.filename}: {exc.strerror} (reading it usually needs root)"
        return None

    def read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def joules(self, start: list[int], end: list[int]) -> float:
        total = 0
        for a, b, wrap in zip(start, end, self.ranges):
            total += b - a if b >= a else b + wrap - a   # the counter wrapped at max_energy_range_uj
        return total / 1e6


# -- Jetson: INA3221 in sysfs, tegrastats ------------------------------------------------------

class Ina238(PowerSource):
    """A Jetson AGX Thor's input power, which its carrier board measures with an INA238 (its
    module's INA3221 rails are parts of it): hwmon's power1_input, in microwatts."""

    def __init__(self, root: Path = Path("/sys/bus/i2c/drivers/ina238")):
        self.root = root
        self.inputs = sorted(root.glob("*/hwmon/hwmon*/power1_input"))
        self.name = "Jetson INA238 (input)"

    def problem(self) -> str | None:
        if not self.inputs:
            return f"Jetson INA238: no power1_input under {self.root} (not a Jetson Thor)"
        if len(self.inputs) > 1:   # which one is the input is not known here: the INA3221 rails are
            return f"Jetson INA238: {len(self.inputs)} monitors under {self.root}, expected the input's alone"
        return self.unreadable("Jetson INA238")

    def watts(self) -> float:
        return int(self.inputs[0].read_text()) / 1e6


class Ina3221(PowerSource):
    """The rails of a Jetson's INA3221 monitors (JetPack 5 and later: hwmon under the ina3221 driver)."""

    def __init__(self, root: Path = Path("/sys/bus/i2c/drivers/ina3221")):
        rails = {}
        for label in sorted(root.glob("*/hwmon/hwmon*/in*_label")):
            channel = label.name[2:-len("_label")]
            name = _text(label)
            if name and not name.lower().startswith("sum"):
                rails[name] = (label.parent / f"in{channel}_input", label.parent / f"curr{channel}_input")
        total = next((r for r in TOTAL_RAILS if r in rails), None)
        self.rails = {total: rails[total]} if total else rails
        self.name = f"Jetson INA3221 rail{'s' if len(self.rails) > 1 else ''} {' + '.join(self.rails)}"

    def problem(self) -> str | None:
        if not self.rails:
            return "Jetson INA3221: no rails under /sys/bus/i2c/drivers/ina3221 (not a Jetson)"
        return self.unreadable("Jetson INA3221")

    def watts(self) -> float:
        return sum(int(volts.read_text()) * int(amps.read_text()) / 1e6 for volts, amps in self.rails.values())


# JetPack 5/6: "VDD_IN 5047mW/4982mW"; JetPack 4: "POM_5V_IN 3517/3493" (current/average, mW)
_TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?\b")


def parse_tegrastats(line: str) -> dict[str, float]:
    """{rail: watts now} from one tegrastats line (the rails only: RAM, CPU and clocks are skipped)."""
    rails = {}
    for name, now, _average in _TEGRASTATS_RAIL.findall(line):
        if name.startswith(("VDD_", "VIN", "POM_")) or name in TOTAL_RAILS:
            rails[name] = int(now) / 1e3
    return rails


def tegrastats_watts(rails: dict[str, float]) -> float:
    total = next((r for r in TOTAL_RAILS if r in rails), None)
    return rails[total] if total else sum(rails.values())


class Tegrastats(PowerSource):
    """`tegrastats --interval MS` running beside the work; its latest line is the reading."""

    name = "Jetson tegrastats"

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = interval_ms
        self.process = None
        self.latest: dict[str, float] = {}

    def problem(self) -> str | None:
        return None if shutil.which("tegrastats") else "tegrastats: not on PATH (not a Jetson)"

    def start(self) -> None:
        self.process = subprocess.Popen(["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._follow, daemon=True).start()
        deadline = time.monotonic() + 3 * self.interval_ms / 1e3 + 1
        while not self.latest and time.monotonic() < deadline:
            time.sleep(0.01)

    def _follow(self) -> None:
        for line in self.process.stdout:
            rails = parse_tegrastats(line)
            if rails:
                self.latest = rails

    def watts(self) -> float:
        if not self.latest:
            raise OSError("tegrastats printed no power rails")
        return tegrastats_watts(self.latest)

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=5)


# -- NVML --------------------------------------------------------------------------------------

class Nvml(CounterSource):
    """GPU 0's total energy counter (mJ since the driver loaded; Volta and later)."""

    name = "NVML"

    def __init__(self, nvml=None):
        self.nvml, self.handle, self.error, self.gpu = nvml, None, None, "GPU 0"
        try:
            if self.nvml is None:
                import pynvml as nvml_module   # the nvidia-ml-py package

                self.nvml = nvml_module
            self.nvml.nvmlInit()
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(0)
            name = self.nvml.nvmlDeviceGetName(self.handle)
            self.gpu = name.decode() if isinstance(name, bytes) else str(name)
            self.name = f"NVML ({self.gpu})"
            self.read()
        except ImportError:
            self.error = "NVML: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
        except Exception as exc:  # noqa: BLE001 - pynvml raises NVMLError subclasses: no driver, no GPU, no counter
            self.error = f"NVML: {exc}"

    def problem(self) -> str | None:
        return self.error

    def read(self) -> list[int]:
        return [int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))]

    def joules(self, start: list[int], end: list[int]) -> float:
        return (end[0] - start[0]) / 1e3


class NvmlPower(PowerSource):
    """GPU 0's power readings (mW), sampled: for GPUs without the energy counter."""

    def __init__(self, nvml=None):
        self.counter = Nvml(nvml)
        self.name = f"NVML power readings ({self.counter.gpu})"
        self.error = None
        if self.counter.handle is None:
            self.error = self.counter.error
        else:
            try:
                self.watts()
            except Exception as exc:  # noqa: BLE001 - NVMLError: not supported on this GPU
                self.error = f"NVML power readings: {exc}"

    def problem(self) -> str | None:
        return self.error

    def watts(self) -> float:
        return self.counter.nvml.nvmlDeviceGetPowerUsage(self.counter.handle) / 1e3


# -- finding one, measuring with it -------------------------------------------------------------

def find_power_source(candidates=None):
    """(source, None) for the first source that answers, or (None, why none did)."""
    # a Jetson's own monitors first: on a Thor NVML may answer too, for the GPU alone, not the board
    candidates = candidates if candidates is not None else (Ina238, Ina3221, Tegrastats, Nvml, NvmlPower, Rapl)
    reasons = []
    for make in candidates:
        source = make()
        problem = source.problem()
        if problem is None:
            return source, None
        if problem not in reasons:   # NVML's counter and readings fail alike without a driver
            reasons.append(problem)
    return None, "no power source: " + "; ".join(reasons)


def measure_energy(source, work, min_seconds: float = 1.0) -> tuple[Energy, int]:
    """(energy, calls): `work()` called until at least min_seconds have passed, with the source
    read around it (a counter) or sampled beside it (power readings, integrated over time)."""
    if isinstance(source, Tegrastats) and source.process is None:
        source.start()
    calls = 0
    start = time.perf_counter()
    if isinstance(source, CounterSource):
        before = source.read()
        while time.perf_counter() - start < min_seconds:
            work()
            calls += 1
        after = source.read()
        seconds = time.perf_counter() - start
        return Energy(source.name, seconds, source.joules(before, after)), calls
    sampler = _Sampler(source)
    sampler.start()
    try:
        while time.perf_counter() - start < min_seconds:
            work()
            calls += 1
    finally:
        sampler.stop()
    return Energy(source.name, sampler.seconds, sampler.joules), calls


class _Sampler:
    def __init__(self, source: PowerSource):
        self.source, self.joules, self.seconds = source, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_t, last_w = time.perf_counter(), self.source.watts()
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            now, watts = time.perf_counter(), self.source.watts()
            self.joules += (now - last_t) * (watts + last_w) / 2   # trapezoids between readings
            self.seconds += now - last_t
            last_t, last_w = now, watts


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
