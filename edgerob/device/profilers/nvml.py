"""NVML (nvidia-ml-py, imported as `pynvml`): power, energy, clocks and throttling of one GPU.

Energy: `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded, Volta and newer) is the
window's energy counter; where the GPU has none (NotSupported), the energy is the integral of the
power readings. The counter updates at a coarse interval that NVML does not document (tens of ms;
PETSc's docs give 20-100 ms on newer GPUs, pynvml PR #18 saw about 10 ms), so it is measured, once
per GPU per process (`counter_period_s`), when a session first finds the counter. It is
`resolution_s()`, and goes into `identity` (`energy_counter_period_s`, so into the measurement's
fingerprint) and into `note`.

Power readings: the instantaneous field `NVML_FI_DEV_POWER_INSTANT` through
`nvmlDeviceGetFieldValues` where the driver has it; otherwise `nvmlDeviceGetPowerUsage` (mW), which
is a 1-second average on Ampere (except GA100) and newer GPUs and instantaneous on older ones.
`power_source`, `energy_source` and `note` on the profiler say which were used (set by `start()`
or `state()`).

Which GPU: the one the runtime runs on. The sweep passes the runtime's device as `gpu_uuid` or
`pci_bus_id` (torch and TensorRT report them) or as `cuda_device`, CUDA's ordinal (onnxruntime's
device_id), which `resolve_gpu` maps to the physical GPU the way CUDA does: through
CUDA_VISIBLE_DEVICES (indices or GPU-UUIDs, stopping at the first invalid entry) over the devices
in PCI bus order, which is CUDA's order only with CUDA_DEVICE_ORDER=PCI_BUS_ID (the sweep sets it;
CUDA's default, fastest first, leaves the order of several GPUs unspecified, so an ordinal is
refused then). `gpu_index` is NVML's own index; given with one of the others, both must name the
same GPU. The GPU's UUID, name and PCI bus id are recorded (`identity`, and in `state()`).

Throttling: the clock-event reason bits are read at both ends of a window, and where the driver
has them the cumulative violation counters (`nvmlDeviceGetViolationStatus`: ns spent held down by
the power cap, thermal limit, sync boost, board limit or reliability) go into `throttle_counts`, so
a limit hit inside the window and gone by its end still flags the cell.

NVML is initialised for each window (`start()`) and each `state()` call and shut down after it;
nvmlInit/nvmlShutdown are reference-counted by the library, so windows and other NVML users in the
same process do not disturb each other.
"""

from __future__ import annotations

import os
import re
import threading
import time

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PollingProfiler, Reading, counter_period_s

NVML_FI_DEV_POWER_INSTANT = 186  # the field's id where an old nvidia-ml-py lacks the constant
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0

# nvmlClocksEventReasons (formerly nvmlClocksThrottleReasons) bits, stable across NVML versions.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that lower clocks without a power or thermal limit: not throttling for a measurement.
BENIGN_REASONS = frozenset({"gpu_idle", "applications_clocks_setting", "display_clock_setting"})

POWER_SOURCES = {
    "instant": "NVML_FI_DEV_POWER_INSTANT (instantaneous)",
    "average": ("nvmlDeviceGetPowerUsage: a 1-second average on Ampere (except GA100) and newer "
                "GPUs, instantaneous on older ones"),
}

# nvmlPerfPolicyType_t values whose violation time means the clocks were held down by a limit
# (LOW_UTILIZATION, 4, is idleness; TOTAL_APP_CLOCKS/TOTAL_BASE_CLOCKS, 10/11, are settings).
VIOLATION_POLICIES = {"power": 0, "thermal": 1, "sync_boost": 2, "board_limit": 3,
                      "reliability": 5}

_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}

# GPU UUID -> (energy counter period in s or None, how it was found): measured once per process,
# since polling the counter takes up to a few hundred ms and the period is the GPU's.
_COUNTER_PERIODS: dict[str, tuple[float | None, str]] = {}


def decode_reasons(mask: int) -> list[str]:
    """Names of the clock-event reason bits set in `mask`; unknown bits as `unknown_0x...`."""
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(CLOCK_EVENT_REASONS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return names


def _field_value(v):
    """The number in a c_nvmlFieldValue_t, by its valueType."""
    return getattr(v.value, _VALUE_FIELDS.get(v.valueType, "uiVal"))


def _text(s) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def _uuid(text) -> str:
    """A GPU UUID compared the same whatever the source: lower case, no 'GPU-' prefix."""
    u = _text(text).strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def _pci(text) -> tuple[int, int, int] | None:
    """(domain, bus, device) of a PCI bus id ('00000000:65:00.0' from NVML, '0000:65:00.0')."""
    m = re.fullmatch(r"([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)(?:\.[0-9a-f]+)?",
                     _text(text).strip().lower())
    return tuple(int(g, 16) for g in m.groups()) if m else None


def gpus(nvml) -> list[dict]:
    """Every GPU NVML sees, in PCI bus order: nvml_index, handle, uuid, name, pci_bus_id."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        out.append({"nvml_index": i, "handle": h, "uuid": _text(nvml.nvmlDeviceGetUUID(h)),
                    "name": _text(nvml.nvmlDeviceGetName(h)),
                    "pci_bus_id": _text(nvml.nvmlDeviceGetPciInfo(h).busId)})
    return sorted(out, key=lambda g: _pci(g["pci_bus_id"]) or (1 << 32,))


def cuda_visible(devices: list[dict], env=os.environ) -> list[dict]:
    """The GPUs CUDA numbers 0, 1, ... in this process, from `devices` (PCI order)."""
    order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    listed = env.get("CUDA_VISIBLE_DEVICES")
    tokens = None if listed is None else [t.strip() for t in listed.split(",")]
    by_ordinal = tokens is None or any(re.fullmatch(r"-?\d+", t) for t in tokens)
    if order != "PCI_BUS_ID" and len(devices) > 1 and by_ordinal:
        raise EdgerobError(f"CUDA_DEVICE_ORDER is {order}: CUDA numbers these {len(devices)} "
                           f"GPUs fastest first in an unspecified order, so a CUDA ordinal "
                           f"cannot be matched to its power sensor; set "
                           f"CUDA_DEVICE_ORDER=PCI_BUS_ID")
    if tokens is None:
        return list(devices)
    visible = []
    for t in tokens:  # CUDA stops at the first entry it cannot use
        if t.upper().startswith("MIG-"):
            raise EdgerobError(f"CUDA_VISIBLE_DEVICES names a MIG instance ({t}): NVML reports "
                               f"power for the whole GPU, not for one instance")
        if re.fullmatch(r"-?\d+", t):
            found = [devices[int(t)]] if 0 <= int(t) < len(devices) else []
        else:
            want = _uuid(t)
            found = [d for d in devices if want and _uuid(d["uuid"]).startswith(want)]
        if len(found) != 1 or found[0] in visible:
            break
        visible.append(found[0])
    return visible


def resolve_gpu(nvml, *, gpu_index: int | None = None, cuda_device: int | None = None,
                gpu_uuid: str | None = None, pci_bus_id: str | None = None,
                env=os.environ) -> dict:
    """The GPU (a `gpus()` entry) named by the runtime's device (UUID, PCI bus id or CUDA
    ordinal) and/or NVML's index; refused when two of them name different GPUs."""
    devices = gpus(nvml)
    if not devices:
        raise EdgerobError("NVML sees no GPU")
    picks = []
    if gpu_uuid is not None:
        found = [d for d in devices if _uuid(d["uuid"]) == _uuid(gpu_uuid)]
        if not found:
            raise EdgerobError(f"NVML sees no GPU with UUID {gpu_uuid}")
        picks.append((f"UUID {gpu_uuid}", found[0]))
    if pci_bus_id is not None:
        found = [d for d in devices if _pci(d["pci_bus_id"]) == _pci(pci_bus_id)]
        if not found:
            raise EdgerobError(f"NVML sees no GPU at PCI bus id {pci_bus_id}")
        picks.append((f"PCI bus id {pci_bus_id}", found[0]))
    if cuda_device is not None:
        visible = cuda_visible(devices, env)
        if not 0 <= cuda_device < len(visible):
            raise EdgerobError(f"CUDA device {cuda_device} does not exist here: "
                               f"{len(visible)} visible (CUDA_VISIBLE_DEVICES="
                               f"{env.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        picks.append((f"CUDA device {cuda_device}", visible[cuda_device]))
    if gpu_index is not None or not picks:
        index = 0 if gpu_index is None else gpu_index
        found = [d for d in devices if d["nvml_index"] == index]
        if not found:
            raise EdgerobError(f"gpu_index {index} is out of range: NVML sees {len(devices)} "
                               f"GPU(s), indices 0..{len(devices) - 1}")
        picks.append((f"NVML gpu_index {index}", found[0]))
    (first, gpu), *others = picks
    for what, other in others:
        if other["uuid"] != gpu["uuid"]:
            raise EdgerobError(f"{first} is {gpu['name']} at {gpu['pci_bus_id']}, but {what} is "
                               f"{other['name']} at {other['pci_bus_id']}: the power sensor "
                               f"must read the GPU the runtime runs on")
    return gpu


def _import_pynvml():
    import pynvml

    return pynvml


class NvmlProfiler(PollingProfiler):
    """One NVIDIA GPU through NVML: energy counter where there is one, instantaneous power."""

    name = "nvml"

    def __init__(self, interval_s: float = 0.05, gpu_index: int | None = None,
                 cuda_device: int | None = None, gpu_uuid: str | None = None,
                 pci_bus_id: str | None = None, clock=time.perf_counter, sleep=time.sleep,
                 **options):
        super().__init__(interval_s=interval_s, **options)
        for name, value in (("gpu_index", gpu_index), ("cuda_device", cuda_device)):
            if value is not None and (int(value) != value or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        self.selector = {"gpu_index": gpu_index, "cuda_device": cuda_device,
                         "gpu_uuid": gpu_uuid, "pci_bus_id": pci_bus_id}
        self.gpu_index: int | None = None  # NVML's index, once resolved
        # the GPU read (uuid, name, pci_bus_id, nvml_index) and its energy_counter_period_s
        self.identity: dict = {}
        self.power_source: str | None = None  # "instant", "average", or None: no power reading
        self.energy_source: str | None = None  # "counter" or "integrated"
        self.counter_period_s: float | None = None  # measured; None: no counter, or unknown
        self.note: str | None = None  # what was used, and why, in words
        self.gpu_name: str | None = None
        self.read_errors = 0  # readings that raised NVMLError in the window (not in the trace)
        self._nvml = None
        self._handle = None
        self._mj_base = None
        self._opened = 0
        self._open_lock = threading.Lock()
        self._clock, self._sleep = clock, sleep  # for measuring the counter's period

    # -- availability ---------------------------------------------------------------------------

    @classmethod
    def available(cls, gpu_index: int | None = None, cuda_device: int | None = None,
                  gpu_uuid: str | None = None, pci_bus_id: str | None = None,
                  **_options) -> tuple[bool, str]:
        """Whether the GPU named gives power or energy here; other profiler options ignored."""
        try:
            nvml = _import_pynvml()
        except ImportError:
            return False, ("nvidia-ml-py is not installed (pip install nvidia-ml-py; it provides "
                           "the pynvml module)")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            return False, (f"NVML could not initialise ({e}): no NVIDIA driver loaded, or "
                           f"libnvidia-ml not found")
        try:
            try:
                gpu = resolve_gpu(nvml, gpu_index=gpu_index, cuda_device=cuda_device,
                                  gpu_uuid=gpu_uuid, pci_bus_id=pci_bus_id)
            except EdgerobError as e:
                return False, str(e)
            index, name = gpu["nvml_index"], gpu["name"]
            energy, power, why = _probe(nvml, gpu["handle"])
            if energy is None and power is None:
                return False, f"GPU {index} ({name}) gives no power or energy reading: {why}"
            return True, f"GPU {index} ({name}): {_describe(energy, power, why)}"
        except nvml.NVMLError as e:
            return False, f"NVML error: {e}"
        finally:
            nvml.nvmlShutdown()

    # -- NVML session ---------------------------------------------------------------------------

    def _open(self) -> None:
        with self._open_lock:
            if self._opened == 0:
                nvml = _import_pynvml()
                try:
                    nvml.nvmlInit()
                except nvml.NVMLError as e:
                    raise EdgerobError(f"NVML could not initialise: {e}") from e
                try:
                    gpu = resolve_gpu(nvml, **self.selector)
                    self._handle, self.gpu_index, self.gpu_name = (gpu["handle"],
                                                                   gpu["nvml_index"], gpu["name"])
                    mj, self.power_source, why = _probe(nvml, self._handle)
                    period, how = (None, None) if mj is None else self._counter_period(
                        nvml, gpu["uuid"])
                    self.identity = {"gpu_uuid": gpu["uuid"], "gpu_name": gpu["name"],
                                     "gpu_pci_bus_id": gpu["pci_bus_id"],
                                     "nvml_index": gpu["nvml_index"],
                                     "energy_counter_period_s": period}
                except nvml.NVMLError as e:
                    nvml.nvmlShutdown()
                    raise EdgerobError(f"NVML GPU {self.selector}: {e}") from e
                except BaseException:
                    nvml.nvmlShutdown()
                    raise
                self._nvml = nvml
                self._mj_base = mj
                self.energy_source = "counter" if mj is not None else "integrated"
                self.counter_period_s = period
                self.note = "; ".join(filter(None, [_describe(mj, self.power_source, why), how]))
            self._opened += 1

    def _counter_period(self, nvml, uuid) -> tuple[float | None, str]:
        """The energy counter's update period on this GPU, measured on first use in this
        process."""
        if uuid not in _COUNTER_PERIODS:
            _COUNTER_PERIODS[uuid] = counter_period_s(
                lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle), self._clock,
                self._sleep)
        return _COUNTER_PERIODS[uuid]

    def _close(self) -> None:
        with self._open_lock:
            if self._opened == 0:
                return
            self._opened -= 1
            if self._opened == 0:
                nvml, self._nvml, self._handle = self._nvml, None, None
                nvml.nvmlShutdown()

    def start(self) -> None:
        self._open()
        self.read_errors = 0
        try:
            super().start()
        except BaseException:
            self._close()
            raise

    def stop(self):
        try:
            trace = super().stop()
        finally:
            self._close()
        return trace

    def resolution_s(self) -> float | None:
        """The energy counter's measured update period where the window's energy comes from it
        (None where it could not be measured), else the polling interval of the readings
        integrated. Opens NVML for it outside a window, as `state()` does."""
        self._open()
        self._close()
        if self.energy_source == "counter":
            return self.counter_period_s
        return self.interval_s if self.power_source else None

    # -- readings -------------------------------------------------------------------------------

    def energy_counter_j(self) -> float | None:
        if self._nvml is None or self._mj_base is None:
            return None
        try:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError:
            return None  # the window falls back to integrating the readings
        return (mj - self._mj_base) / 1000.0  # integer mJ difference first: exact

    def read(self) -> Reading:
        nvml = self._nvml
        try:
            if self.power_source == "instant":
                mw = _instant_mw(nvml, self._handle)
            elif self.power_source == "average":
                mw = nvml.nvmlDeviceGetPowerUsage(self._handle)
            else:
                return Reading(total_w=None)
        except nvml.NVMLError:
            self.read_errors += 1
            return Reading(total_w=None)
        return Reading(total_w=mw / 1000.0)

    # -- clocks and throttling ------------------------------------------------------------------

    def state(self) -> dict:
        """Clocks (MHz), temperature (C), power limit (W) and clock-event reasons, now.

        Each value is None where the GPU does not report it. `clock_event_reasons` lists every
        reason bit set; `throttle_reasons` only those that mean throttling (see `throttled`), and
        is absent where the reasons cannot be read, so `edgerob.device.clocks.throttled_between` says
        unknown rather than not throttled.
        """
        self._open()
        try:
            nvml, h = self._nvml, self._handle

            def get(fn_name, *args):
                fn = getattr(nvml, fn_name, None)
                if fn is None:
                    return None
                try:
                    return fn(h, *args)
                except nvml.NVMLError:
                    return None

            limit_mw = get("nvmlDeviceGetEnforcedPowerLimit")
            out = {
                "gpu_index": self.gpu_index,
                **self.identity,
                "sm_clock_mhz": get("nvmlDeviceGetClockInfo",
                                    getattr(nvml, "NVML_CLOCK_SM", NVML_CLOCK_SM)),
                "mem_clock_mhz": get("nvmlDeviceGetClockInfo",
                                     getattr(nvml, "NVML_CLOCK_MEM", NVML_CLOCK_MEM)),
                "temperature_c": get("nvmlDeviceGetTemperature",
                                     getattr(nvml, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)),
                "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
                "power_source": self.power_source,
                "energy_source": self.energy_source,
                "power_note": self.note,
            }
            mask = get("nvmlDeviceGetCurrentClocksEventReasons")
            if mask is None:  # nvidia-ml-py before 12.535, or drivers before R535
                mask = get("nvmlDeviceGetCurrentClocksThrottleReasons")
            out["clock_event_mask"] = mask
            out["clock_event_reasons"] = decode_reasons(mask) if mask is not None else None
            if mask is not None:
                out["throttle_reasons"] = [r for r in out["clock_event_reasons"]
                                           if r not in BENIGN_REASONS]
            # cumulative ns held down by each limit: their growth over a window is throttling
            # even when the reason bits are clear at both ends
            counts = {}
            for policy, value in VIOLATION_POLICIES.items():
                v = get("nvmlDeviceGetViolationStatus", value)
                if v is not None:
                    counts[f"gpu:{policy}_violation_ns"] = int(v.violationTime)
            if counts:
                out["throttle_counts"] = counts
            return out
        finally:
            self._close()

    @staticmethod
    def throttled(reason_names) -> bool:
        """Whether any reason is throttling: power caps, thermal or hardware slowdowns, sync boost
        and unknown bits count; GPU idle, applications clocks and display clocks do not."""
        return any(r not in BENIGN_REASONS for r in reason_names or ())


def _instant_mw(nvml, handle):
    field = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", NVML_FI_DEV_POWER_INSTANT)
    v = nvml.nvmlDeviceGetFieldValues(handle, [field])[0]
    if v.nvmlReturn != getattr(nvml, "NVML_SUCCESS", 0):
        raise nvml.NVMLError(v.nvmlReturn)
    return _field_value(v)


def _probe(nvml, handle):
    """(energy counter mJ or None, power source or None, why a source was not used)."""
    why = []
    try:
        mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except AttributeError:
        mj = None
        why.append("this nvidia-ml-py has no nvmlDeviceGetTotalEnergyConsumption")
    except nvml.NVMLError as e:
        mj = None
        why.append(f"no total-energy counter ({e}; Volta and newer have one)")
    power = None
    try:
        if getattr(nvml, "nvmlDeviceGetFieldValues", None) is None:
            raise AttributeError("this nvidia-ml-py has no nvmlDeviceGetFieldValues")
        _instant_mw(nvml, handle)
        power = "instant"
    except (AttributeError, nvml.NVMLError) as e:
        why.append(f"no instantaneous power field ({e})")
        try:
            nvml.nvmlDeviceGetPowerUsage(handle)
            power = "average"
        except nvml.NVMLError as e2:
            why.append(f"no power usage reading ({e2})")
    return mj, power, "; ".join(why)


def _describe(mj, power, why) -> str:
    energy = ("energy from the total-energy counter" if mj is not None
              else "energy integrated from the power readings")
    parts = [f"power from {POWER_SOURCES[power]}" if power else "no power readings", energy]
    if why:
        parts.append(why)
    return "; ".join(parts)
