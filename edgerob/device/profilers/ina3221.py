"""INA3221 power monitors on Jetson boards, read straight from sysfs (no jtop service needed).

Two kernel layouts exist (REFERENCES.md "Devices and sensors"):

- **hwmon** (JetPack 5+): ``/sys/bus/i2c/devices/*/hwmon/hwmon*/in{N}_label``, ``in{N}_input``
  (bus voltage, mV) and ``curr{N}_input`` (mA); watts = mV * mA / 1e6. The hwmon index varies by
  board, so it is globbed.
- **iio** (JetPack 4): ``/sys/bus/i2c/devices/*/iio:device*/rail_name_{N}``,
  ``in_voltage{N}_input`` (mV), ``in_current{N}_input`` (mA) and ``in_power{N}_input`` (mW, used
  when present; V * I otherwise).

Channels that are skipped, and why:

- labels that are "not connected": ``NC`` as a whole token of the name (``NC``, ``NC_1``,
  ``VDD_NC``), the way NVIDIA labels unpopulated channels on AGX Orin's second INA3221. A name that
  merely contains the letters (``VDD_SYNC``) is a real rail and is kept.
- the summation channel: the upstream ina3221 driver exposes ``in7`` labelled
  ``sum of shunt voltages`` (a sum of the other channels' shunt voltages, in mV of shunt drop, not a
  rail). Channel 7 and any label starting "sum of" are skipped; so is any channel without both an
  ``in{N}_input`` and a ``curr{N}_input`` (the unlabelled shunt-voltage channels in4..in6 have no
  current), and a channel whose ``in{N}_enable`` reads 0.

The module total is the input rail where the board has one (``VDD_IN`` on TX2, Xavier NX and the
Orin NX/Nano modules; ``POM_5V_IN`` on Nano): the other rails are *inside* it, so it is never
added to them. Boards without an input rail (AGX Xavier: GPU, CPU, SOC, CV, VDDRQ, SYS5V; AGX
Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO) get the sum of their rails, as the
NVIDIA forum answer for AGX Xavier cited in jetson-stats #51 says and as jtop does. None of those
rails is printed as a sum of the others (``VDD_GPU_SOC`` is one combined supply, not a GPU rail
plus a SOC rail that are also listed), so the sum does not double count; a channel that *is* an
aggregate by name (``sum ...``, ``total``, ``all``) is left out of it. A rail named exactly
``VIN`` (the system input monitor jetson-stats reads on Jetson Thor) is taken as the input rail
after VDD_IN and POM_5V_IN, for the same reason: it contains the others. The helpers below are
shared with the tegrastats and jtop adapters so all three agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PollingProfiler, Reading

# The module's input rail, in order of preference. Everything else on the board is behind it.
# VIN: the carrier-board input monitor on Jetson Thor (it includes the carrier's own draw).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")

_TOKENS = re.compile(r"[^A-Za-z0-9]+")


def _tokens(name: str) -> list[str]:
    return [t for t in _TOKENS.split(name.strip().upper()) if t]


def is_not_connected(name: str) -> bool:
    """True for a channel labelled not-connected: ``NC`` as a whole token (NC, NC_1, VDD_NC)."""
    return "NC" in _tokens(name)


def is_aggregate(name: str) -> bool:
    """True for a channel that is a sum of others by its name (``sum of shunt voltages``,
    ``..._TOTAL``, ``ALL``): never a rail of its own, never added to the rails."""
    toks = _tokens(name)
    return "SUM" in toks or "TOTAL" in toks or toks == ["ALL"]


def input_rail(rails_w: dict[str, float]) -> str | None:
    """The name (as given) of the module input rail among `rails_w`, or None (case-insensitive)."""
    upper = {name.strip().upper(): name for name in rails_w}
    for want in INPUT_RAILS:
        if want in upper:
            return upper[want]
    return None


def module_total_w(rails_w: dict[str, float]) -> float | None:
    """Total module power: the input rail where there is one, else the sum of the connected,
    non-aggregate rails; None when there are no rails at all."""
    name = input_rail(rails_w)
    if name is not None:
        return float(rails_w[name])
    parts = [w for n, w in rails_w.items() if not is_not_connected(n) and not is_aggregate(n)]
    return math.fsum(parts) if parts else None


# ---------------------------------------------------------------------------------------------
# sysfs discovery and reading

I2C_DEVICES = "sys/bus/i2c/devices"


def _read_text(path: Path) -> str:
    """One sysfs file's content (a seam for tests that need a PermissionError)."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read().strip()


def _read_number(path: Path) -> float:
    text = _read_text(path).split()
    if not text:
        raise ValueError(f"{path} is empty")
    return float(text[0])  # some nodes append a unit ("32760 ma")


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: where its readings live and how to turn them into watts."""

    name: str
    layout: str  # "hwmon" (JetPack 5+) or "iio" (JetPack 4)
    device: str  # the i2c device, e.g. "1-0040"
    volt_path: Path | None = None  # mV
    curr_path: Path | None = None  # mA
    power_path: Path | None = None  # mW (iio only)

    @property
    def files(self) -> list[Path]:
        if self.power_path is not None:
            return [self.power_path]
        return [p for p in (self.volt_path, self.curr_path) if p is not None]

    def read_w(self) -> float:
        """Instantaneous watts (raises OSError / ValueError when a node cannot be read)."""
        if self.power_path is not None:
            return _read_number(self.power_path) / 1e3
        return _read_number(self.volt_path) * _read_number(self.curr_path) / 1e6


def _is_ina3221(*name_files: Path) -> bool:
    """True when a `name` file says ina3221 (ina3221x on JetPack 4), or when there is none to
    read (an unnamed node under an i2c device is taken on its sysfs shape)."""
    seen = False
    for f in name_files:
        try:
            text = _read_text(f).lower()
        except OSError:
            continue
        seen = True
        if "ina3221" in text:
            return True
    return not seen


def _hwmon_rails(dev: Path, hwmon: Path) -> list[Rail]:
    rails = []
    labels = []
    for f in hwmon.glob("in*_label"):
        m = re.fullmatch(r"in(\d+)_label", f.name)
        if m:
            labels.append((int(m.group(1)), f))
    for n, f in sorted(labels):
        label = _read_text(f)
        if n == 7 or label.lower().startswith("sum of") or is_aggregate(label):
            continue  # the summation channel, not a rail
        if not label or is_not_connected(label):
            continue
        volt, curr = hwmon / f"in{n}_input", hwmon / f"curr{n}_input"
        if not (volt.exists() and curr.exists()):
            continue  # a shunt-voltage channel: no current, no rail
        enable = hwmon / f"in{n}_enable"
        if enable.exists():
            try:
                if _read_text(enable) == "0":
                    continue  # disabled channel: reading it fails
            except OSError:
                pass
        rails.append(Rail(label, "hwmon", dev.name, volt_path=volt, curr_path=curr))
    return rails


def _iio_rails(dev: Path, iio: Path) -> list[Rail]:
    rails = []
    names = []
    for f in iio.glob("rail_name_*"):
        m = re.fullmatch(r"rail_name_(\d+)", f.name)
        if m:
            names.append((int(m.group(1)), f))
    for n, f in sorted(names):
        label = _read_text(f)
        if not label or is_not_connected(label) or is_aggregate(label):
            continue
        power = iio / f"in_power{n}_input"
        volt, curr = iio / f"in_voltage{n}_input", iio / f"in_current{n}_input"
        if power.exists():
            rails.append(Rail(label, "iio", dev.name, power_path=power))
        elif volt.exists() and curr.exists():
            rails.append(Rail(label, "iio", dev.name, volt_path=volt, curr_path=curr))
    return rails


def find_rails(root: str | Path = "/") -> tuple[list[Rail], list[str]]:
    """Every connected INA3221 rail under `root`, and the i2c devices that hold an INA3221.

    Raises PermissionError when a directory or label cannot be read.
    """
    base = Path(root) / I2C_DEVICES
    if not base.is_dir():
        return [], []
    rails: list[Rail] = []
    devices: list[str] = []
    for dev in sorted(base.iterdir()):
        found = False
        for hwmon in sorted(dev.glob("hwmon/hwmon*")):
            if hwmon.is_dir() and _is_ina3221(dev / "name", hwmon / "name") and any(
                    hwmon.glob("in*_label")):
                found = True
                rails += _hwmon_rails(dev, hwmon)
        iios = sorted(dev.glob("iio:device*")) + ([dev / "iio_device"]
                                                   if (dev / "iio_device").is_dir() else [])
        for iio in iios:
            if iio.is_dir() and _is_ina3221(dev / "name", iio / "name") and any(
                    iio.glob("rail_name_*")):
                found = True
                rails += _iio_rails(dev, iio)
        if found:
            devices.append(dev.name)
    # Two monitors may use the same label: keep both, the second named after its device.
    seen: set[str] = set()
    unique = []
    for r in rails:
        if r.name in seen:
            r = Rail(f"{r.name}@{r.device}", r.layout, r.device, r.volt_path, r.curr_path,
                     r.power_path)
        seen.add(r.name)
        unique.append(r)
    return unique, devices


def read_rails_w(rails: list[Rail]) -> dict[str, float]:
    """Instantaneous watts of every rail (raises OSError / ValueError on a failed read)."""
    return {r.name: r.read_w() for r in rails}


def _permission_reason(path) -> str:
    return (f"permission denied reading {path}: run as root or make the INA3221 nodes readable "
            "(e.g. a udev rule)")


class Ina3221Profiler(PollingProfiler):
    """INA3221 rails from sysfs, polled every `interval_s` (default 50 ms).

    `read()` gives the module total (input rail, else the sum of rails; see the module docstring)
    and every rail in watts. `root` relocates sysfs (tests build fake trees under tmp dirs).
    """

    name = "ina3221"

    def __init__(self, interval_s: float = 0.05, root: str | Path = "/", **options):
        super().__init__(interval_s, **options)
        self.root = Path(root)
        self._rails: list[Rail] | None = None

    @classmethod
    def available(cls, root: str | Path = "/", **_options) -> tuple[bool, str]:
        base = Path(root) / I2C_DEVICES
        try:
            rails, devices = find_rails(root)
        except PermissionError as e:
            return False, _permission_reason(e.filename or base)
        except OSError as e:
            return False, f"cannot read {e.filename or base}: {e.strerror or e}"
        if not devices:
            return False, (f"no INA3221 power monitor found under /{I2C_DEVICES} (not a Jetson, "
                           "or its kernel exposes no ina3221 hwmon/iio node)")
        if not rails:
            return False, (f"INA3221 found ({', '.join(devices)}) but no connected rail "
                           "(every channel NC, disabled or a sum)")
        for rail in rails:
            for path in rail.files:
                try:
                    _read_number(path)
                except PermissionError:
                    return False, _permission_reason(path)
                except OSError as e:
                    return False, f"cannot read {path}: {e.strerror or e}"
                except ValueError:
                    return False, f"unexpected content in {path} (not a number)"
        return True, (f"INA3221 {rails[0].layout} rails: {', '.join(r.name for r in rails)}")

    def rails(self) -> list[Rail]:
        if self._rails is None:
            try:
                rails, _ = find_rails(self.root)
            except OSError as e:
                raise EdgerobError(f"cannot list INA3221 rails: {e}") from e
            if not rails:
                raise EdgerobError(f"no INA3221 rail found under {self.root / I2C_DEVICES}")
            self._rails = rails
        return self._rails

    def start(self) -> None:
        self.rails()  # discover before the window opens, and fail with a clear line
        super().start()

    def read(self) -> Reading:
        rails_w: dict[str, float] = {}
        for rail in self.rails():
            try:
                rails_w[rail.name] = rail.read_w()
            except (OSError, ValueError):
                # A partial sum would under-report: drop the whole sample, keep the rails read.
                return Reading(None, rails_w)
        return Reading(module_total_w(rails_w), rails_w)
