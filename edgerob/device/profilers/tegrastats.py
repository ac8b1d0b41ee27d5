"""tegrastats: NVIDIA's Jetson statistics tool, run as a subprocess and parsed line by line.

Every line format in the wild is parsed by `parse_line` (real samples in
../shared/samples/tegrastats.txt, more in tests/test_profilers_jetson.py):

- an optional timestamp prefix (``07-09-2024 13:31:31``, JetPack 5+);
- power rails as ``NAME cur/avg`` in mW without a unit (JetPack 4), ``NAME curmW/avgmW``
  (JetPack 5/6) or ``NAME curmW/avgmW/peakmW`` (JetPack 7). Only the first value, the
  instantaneous reading, is used: the others are a running average and a peak, and integrating
  them would smear or inflate energy. Rail names may be lower-case and hold digits/underscores;
  ``NC`` (not connected) rails are dropped;
- GPU as ``GR3D_FREQ 0%`` (no clock), ``0%@76``, ``0%@[114]``, ``12%@[1300,1300]`` (one clock per
  GPC: the reported clock is the highest, the utilisation is the percent, already aggregated over
  GPCs by tegrastats), ``GR3D_FREQ off`` (GPU power-gated: utilisation 0, clock None), or the
  older ``GR3D 0%@76``;
- temperatures ``GPU@39C``, ``gpu@47.6C/47.6C`` (first value kept), ``-256C`` for an absent
  sensor (dropped);
- fields missing when run without root (no rails at all: ``total_w`` is None).

The total is the module input rail (VDD_IN, POM_5V_IN) where the board has one, else the sum of
the other rails (AGX Xavier, AGX Orin); see `edgerob.device.profilers.ina3221` for the rules, shared by
all three Jetson adapters.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PowerTrace, Profiler, integrate_power
from edgerob.device.profilers.ina3221 import input_rail, is_not_connected, module_total_w

# Where tegrastats lives when it is not on PATH (it is in /usr/bin on every JetPack).
FALLBACK_PATHS = ("/usr/bin/tegrastats",)


@dataclass
class TegrastatsSample:
    """One tegrastats line. Watts are the instantaneous (first) value of each rail."""

    rails_w: dict[str, float] = field(default_factory=dict)
    total_w: float | None = None
    gpu_util: float | None = None  # percent
    gpu_freq_mhz: float | None = None
    ram_used_mb: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    timestamp: str | None = None
    ram_total_mb: float | None = None
    input_rail: str | None = None  # the rail taken as the total; None when the rails were summed


_NUM = r"\d+(?:\.\d+)?"
_TIMESTAMP = re.compile(
    r"^\s*(\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}[ T]\d{1,2}:\d{2}:\d{2}(?:\.\d+)?)(?=\s)")
_RAM = re.compile(rf"\bRAM ({_NUM})/({_NUM}) ?([kMG]B)\b")
_CPU = re.compile(r"\bCPU \[", re.IGNORECASE)
_GPU = re.compile(
    rf"\bGR3D(?:_FREQ)? +(?:(off)\b|({_NUM})%(?:@(?:\[([\d.,\s]*)\]|({_NUM})))?)",
    re.IGNORECASE)
# A temperature: NAME@VALUEC, optionally /VALUEC after it (JetPack 7: two readings).
_TEMP = re.compile(rf"(?<![\w@.%/\[,-])([A-Za-z][\w]*)@(-?{_NUM})C(?:/-?{_NUM}C)?(?![\w])")
# A rail: NAME cur[/avg[/peak]], each value optionally with a mW or W unit.
_VAL = rf"({_NUM})(?: ?(mW|W))?"
_RAIL = re.compile(rf"(?<![\w@.%/\[,(-])([A-Za-z][A-Za-z0-9_]*) +{_VAL}"
                   rf"((?:/{_NUM}(?: ?(?:mW|W))?){{0,2}})(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB", "CACHED", "EMC", "EMC_FREQ", "GR3D", "GR3D_FREQ",
              "APE", "MTS", "VIC", "VIC_FREQ", "NVENC", "NVDEC", "NVJPG", "AVP", "VDE", "MSENC",
              "EDP", "LIMIT"}
_ABSENT_C = -256.0  # tegrastats's reading for a sensor that is not there


def _mb(value: str, unit: str) -> float:
    return float(value) * {"kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[unit]


def parse_line(line: str) -> TegrastatsSample:
    """Parse one tegrastats line. Raises ValueError for a line that is not tegrastats output
    (no RAM, CPU or GR3D field: an error message, a blank line, a banner)."""
    text = line.strip()
    ram = _RAM.search(text)
    gpu = _GPU.search(text)
    if not (ram or gpu or _CPU.search(text)):
        raise ValueError(f"not a tegrastats line: {text[:80]!r}")
    s = TegrastatsSample()
    ts = _TIMESTAMP.match(text)
    if ts:
        s.timestamp = ts.group(1)
        text = text[ts.end():]
    if ram:
        s.ram_used_mb = _mb(ram.group(1), ram.group(3))
        s.ram_total_mb = _mb(ram.group(2), ram.group(3))
    if gpu:
        if gpu.group(1):  # "off": the GPU is power-gated, so nothing runs on it
            s.gpu_util, s.gpu_freq_mhz = 0.0, None
        else:
            s.gpu_util = float(gpu.group(2))
            clocks = [float(c) for c in re.split(r"[,\s]+", gpu.group(3) or gpu.group(4) or "")
                      if c]
            s.gpu_freq_mhz = max(clocks) if clocks else None
    for m in _TEMP.finditer(text):
        value = float(m.group(2))
        if value > _ABSENT_C:
            s.temps_c[m.group(1)] = value
    rails_mw: dict[str, float] = {}
    for m in _RAIL.finditer(text):
        name, value, unit, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        if name.upper() in _NOT_RAILS or is_not_connected(name):
            continue
        if unit is None and not rest:
            continue  # a bare number ("APE 150", "VIC_FREQ 115") is not a rail
        rails_mw[name] = float(value) * (1000.0 if unit == "W" else 1.0)
    s.rails_w = {name: mw / 1000.0 for name, mw in rails_mw.items()}
    s.input_rail = input_rail(s.rails_w)
    s.total_w = module_total_w(s.rails_w)
    return s


def find_tegrastats() -> str | None:
    """The tegrastats executable: on PATH, else in /usr/bin; None when there is none."""
    found = shutil.which("tegrastats")
    if found:
        return found
    for path in FALLBACK_PATHS:
        if os.path.isfile(path):
            return path
    return None


class _Session:
    """One running tegrastats process and the thread that reads its lines.

    Kept apart from the profiler so that a profiler that is dropped without `close()` is still
    garbage-collected, and its finalizer stops the process.
    """

    def __init__(self, argv: list[str]):
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                         errors="replace")
        except OSError as e:
            raise EdgerobError(f"cannot run {' '.join(argv)}: {e.strerror or e}") from e
        self.argv = argv
        self.lock = threading.Lock()
        self.first = threading.Event()  # a line was parsed, or the output ended
        self.eof = threading.Event()  # the process closed its output (it exited, or is exiting)
        self.latest: TegrastatsSample | None = None
        self.window: list | None = None  # [(perf_counter time, sample)] while a window is open
        self.window_t0 = 0.0
        self.lines = 0
        self.other = collections.deque(maxlen=5)  # the last lines that did not parse
        self.thread = threading.Thread(target=self._pump, name="edgerob-tegrastats", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        stream = self.proc.stdout
        try:
            for raw in iter(stream.readline, ""):
                t = time.perf_counter()
                try:
                    sample = parse_line(raw)
                except ValueError:
                    if raw.strip():
                        self.other.append(raw.strip())
                    continue
                self._push(t, sample)
        except (OSError, ValueError):
            pass  # the pipe was closed under us by close()
        finally:
            self.eof.set()
            self.first.set()

    def _push(self, t: float, sample: TegrastatsSample) -> None:
        with self.lock:
            self.latest = sample
            self.lines += 1
            if self.window is not None and sample.total_w is not None:
                if t < self.window_t0:
                    # Read just before the window opened, so newer than its seed: it becomes
                    # the reading that holds from the window's start.
                    self.window = [(self.window_t0, sample)]
                else:
                    self.window.append((t, sample))
        self.first.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def open_window(self, t0: float) -> None:
        with self.lock:
            self.window_t0 = t0
            # Sample-and-hold: the latest reading is the power at t0 until the next one arrives.
            seed = self.latest
            self.window = [(t0, seed)] if seed is not None and seed.total_w is not None else []

    def close_window(self) -> list:
        with self.lock:
            items, self.window = self.window or [], None
        return items

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2)
        self.thread.join(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class TegrastatsProfiler(Profiler):
    """Power from ``tegrastats --interval MS``, a line every `interval_s` (default 100 ms).

    The tool pushes lines rather than being polled: a reader thread stamps each line with
    `time.perf_counter()` as it arrives. The process starts on the first `start()` and keeps
    running across windows (bench.py opens an idle window and then the timed one; the query
    attack opens one per batch), so no window waits for tegrastats to start; `close()`, or the
    profiler being garbage-collected, stops it. A window holds the latest reading at its start
    (sample-and-hold, as `integrate_power`), then every line that arrives before `stop()`.

    `command` replaces the executable (a list of arguments, never a shell string), e.g.
    ``["sudo", "-n", "/usr/bin/tegrastats"]`` or a fake for tests; ``--interval MS`` is appended.
    """

    name = "tegrastats"

    def __init__(self, interval_s: float = 0.1, command: list[str] | None = None,
                 ready_timeout_s: float | None = None, **options):
        super().__init__(**options)
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if command is not None and (isinstance(command, (str, bytes)) or not command
                                    or not all(isinstance(a, str) for a in command)):
            raise ValueError("command must be a non-empty list of arguments, not a shell string")
        self.interval_s = float(interval_s)
        self.command = list(command) if command is not None else None
        self.ready_timeout_s = (ready_timeout_s if ready_timeout_s is not None
                                else max(3.0, 10 * self.interval_s))
        self._session: _Session | None = None
        self._finalizer = None
        self._t0: float | None = None

    @classmethod
    def available(cls, **_options) -> tuple[bool, str]:
        path = find_tegrastats()
        if path is None:
            return False, "not a Jetson, or tegrastats not on PATH (nor in /usr/bin)"
        if not os.access(path, os.X_OK):
            return False, f"{path} is not executable by this user"
        return True, f"tegrastats at {path}"

    def argv(self) -> list[str]:
        if self.command is not None:
            base = self.command
        else:
            path = find_tegrastats()
            if path is None:
                raise EdgerobError("not a Jetson, or tegrastats not on PATH (nor in /usr/bin)")
            base = [path]
        return [*base, "--interval", str(max(1, round(self.interval_s * 1000)))]

    def _ensure_running(self) -> _Session:
        s = self._session
        if s is None or not s.alive():
            if s is not None:
                self.close()
            s = self._session = _Session(self.argv())
            self._finalizer = weakref.finalize(self, s.close)
        if not s.first.wait(self.ready_timeout_s):
            return s  # no line yet: the window starts empty and the trace says so (0 samples)
        if s.latest is None and s.eof.is_set():
            try:
                s.proc.wait(timeout=2)  # output closed: collect the exit code
            except subprocess.TimeoutExpired:
                pass
            out = "; ".join(s.other) or "no output"
            self.close()
            raise EdgerobError(f"tegrastats exited with code {s.proc.returncode} before printing "
                               f"a reading ({' '.join(s.argv)}): {out}")
        return s

    def start(self) -> None:
        s = self._ensure_running()
        self._t0 = time.perf_counter()
        s.open_window(self._t0)

    def stop(self) -> PowerTrace:
        if self._t0 is None or self._session is None:
            raise RuntimeError("stop() called without start()")
        end_abs = time.perf_counter()
        items = self._session.close_window()
        t0, self._t0 = self._t0, None
        trace = PowerTrace(sensor_period_s=self.interval_s, duration_s=end_abs - t0)
        for t, sample in items:
            if t > end_abs:
                break
            trace.timestamps_s.append(max(0.0, t - t0))
            trace.total_w.append(sample.total_w)
            for rail, w in sample.rails_w.items():
                trace.rails_w.setdefault(rail, []).append(w)
        if trace.total_w:
            trace.energy_j = integrate_power(trace.timestamps_s, trace.total_w, trace.duration_s,
                                             start_s=0.0)
        return trace

    def resolution_s(self) -> float:
        """The line interval: the integrated readings' granularity."""
        return self.interval_s

    def latest(self) -> TegrastatsSample | None:
        """The most recent parsed line (GPU load, clocks, temperatures), or None."""
        return self._session.latest if self._session is not None else None

    def close(self) -> None:
        """Stop the tegrastats process (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _Session.close once
            self._finalizer = None
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
