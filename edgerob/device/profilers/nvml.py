"""NVML (nvidia-ml-py, imported as `pynvml`): power, energy, clocks and throttling of one GPU.

Energy: `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded, Volta and newer) is the
window's energy counter; where the GPU has none (NotSupported), the energy is the integral of the
power readings.

Power readings: the instantaneous field `NVML_FI_DEV_POWER_INSTANT` through
`nvmlDeviceGetFieldValues` where the driver has it; otherwise `nvmlDeviceGetPowerUsage` (mW), which
is a 1-second average on Ampere (except GA100) and newer GPUs and instantaneous on older ones.
`power_source`, `energy_source` and `note` on the profiler say which were used (set by `start()`
or `state()`).

`gpu_index` is NVML's index (PCI bus order), which is not CUDA's device order unless
CUDA_DEVICE_ORDER=PCI_BUS_ID, and ignores CUDA_VISIBLE_DEVICES.

NVML is initialised for each window (`start()`) and each `state()` call and shut down after it;
nvmlInit/nvmlShutdown are reference-counted by the library, so windows and other NVML users in the
same process do not disturb each other.
"""

from __future__ import annotations

import threading

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PollingProfiler, Reading

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

_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}


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


def _import_pynvml():
    import pynvml

    return pynvml


class NvmlProfiler(PollingProfiler):
    """One NVIDIA GPU through NVML: energy counter where there is one, instantaneous power."""

    name = "nvml"

    def __init__(self, interval_s: float = 0.05, gpu_index: int = 0, **options):
        super().__init__(interval_s=interval_s, **options)
        if int(gpu_index) != gpu_index or gpu_index < 0:
            raise ValueError(f"gpu_index must be a non-negative integer, not {gpu_index!r}")
        self.gpu_index = int(gpu_index)
        self.power_source: str | None = None  # "instant", "average", or None: no power reading
        self.energy_source: str | None = None  # "counter" or "integrated"
        self.note: str | None = None  # what was used, and why, in words
        self.gpu_name: str | None = None
        self.read_errors = 0  # readings that raised NVMLError in the window (not in the trace)
        self._nvml = None
        self._handle = None
        self._mj_base = None
        self._opened = 0
        self._open_lock = threading.Lock()

    # -- availability ---------------------------------------------------------------------------

    @classmethod
    def available(cls, gpu_index: int = 0, **_options) -> tuple[bool, str]:
        """Whether GPU `gpu_index` gives power or energy here; other profiler options ignored."""
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
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                return False, "NVML sees no GPU"
            if not 0 <= gpu_index < count:
                return False, (f"gpu_index {gpu_index} is out of range: NVML sees {count} "
                               f"GPU(s), indices 0..{count - 1}")
            handle = nvml.nvmlDeviceGetHandleByIndex(gpu_index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            energy, power, why = _probe(nvml, handle)
            if energy is None and power is None:
                return False, f"GPU {gpu_index} ({name}) gives no power or energy reading: {why}"
            return True, f"GPU {gpu_index} ({name}): {_describe(energy, power, why)}"
        except nvml.NVMLError as e:
            return False, f"NVML error on GPU {gpu_index}: {e}"
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
                    self._handle = nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
                    self.gpu_name = _text(nvml.nvmlDeviceGetName(self._handle))
                    mj, self.power_source, why = _probe(nvml, self._handle)
                except nvml.NVMLError as e:
                    nvml.nvmlShutdown()
                    raise EdgerobError(f"NVML GPU {self.gpu_index}: {e}") from e
                except BaseException:
                    nvml.nvmlShutdown()
                    raise
                self._nvml = nvml
                self._mj_base = mj
                self.energy_source = "counter" if mj is not None else "integrated"
                self.note = _describe(mj, self.power_source, why)
            self._opened += 1

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
                "gpu_name": self.gpu_name,
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
