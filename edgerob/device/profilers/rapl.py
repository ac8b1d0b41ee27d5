"""RAPL: x86 CPU package and DRAM energy from the Linux powercap sysfs tree.

Layout (`/sys/class/powercap`, the root is configurable for tests):

    intel-rapl:0/      name=package-0, energy_uj, max_energy_range_uj
    intel-rapl:0:0/    name=core      (inside the package: not added to the total)
    intel-rapl:0:1/    name=dram      (outside the package: added to the total)
    intel-rapl:1/      name=package-1 (second socket), intel-rapl:1:1 its dram
    intel-rapl:2/      name=psys      (client platforms: includes the packages, so skipped)

AMD Zen CPUs appear under the same `intel-rapl:*` names (kernel 5.11+, package and core only);
an `amd-rapl:*` prefix is accepted as well. `intel-rapl-mmio:*` duplicates package-0 through
MMIO and is not read.

`energy_uj` is a counter in microjoules that wraps to 0 after `max_energy_range_uj`. Every read
(the sampler thread's, and the window's start and end) adds the delta since the previous read to a
per-domain accumulator, adding the range when the counter went down; this is exact as long as
the counter wraps at most once between two reads, which the sampler interval guarantees (a wrap
takes minutes even at 1 kW). The window's energy is the accumulator's difference (the
`energy_counter_j` path of `PollingProfiler`), and each reading's watts are its energy delta over
its time delta. Total = packages + DRAM.

The counters update about every millisecond, not on every read (every RAPL energy MSR: Khan et
al., "RAPL in Action", TOMPECS 2018, as cited in HongyuHe/energat#4). The period is measured once
per process on the first package's counter, when a window first starts or `resolution_s()` is
first asked, and is recorded in `note` and `identity`.

Since the CVE-2020-8694 fix (Linux 5.10, and backports) `energy_uj` is readable by root only.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PollingProfiler, Reading, counter_period_s

DEFAULT_ROOT = "/sys/class/powercap"
PREFIXES = ("intel-rapl", "amd-rapl")
_ZONE = re.compile(r"^(?:intel-rapl|amd-rapl):(\d+)(?::(\d+))?$")
# A ceiling on one domain's power, used only to bound the sampler interval below the wrap time.
_MAX_DOMAIN_W = 1000.0
# energy_uj path -> (update period in s or None, how it was found), measured once per process.
_COUNTER_PERIODS: dict[Path, tuple[float | None, str]] = {}


@dataclass(frozen=True)
class RaplDomain:
    rail: str  # "package-0", "dram-0", ...
    path: Path  # the zone folder
    max_range_uj: int


def counter_delta(prev_uj: int, cur_uj: int, max_range_uj: int) -> int:
    """Microjoules between two reads of one counter; a counter that went down wrapped once."""
    delta = cur_uj - prev_uj
    if delta < 0:
        delta += max_range_uj
    return delta


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _permission_reason(root: Path, path) -> str:
    return (f"RAPL energy counters are readable only by root ({path or root}: permission denied; "
            f"restricted since the CVE-2020-8694 fix). Run as root, or "
            f"`sudo chmod a+r {root}/intel-rapl:*/energy_uj` (reset at boot: make it permanent "
            f"with a udev rule or a tmpfiles.d `z` line); that re-exposes the side channel to "
            f"local users")


def discover(root: str | Path = DEFAULT_ROOT) -> list[RaplDomain]:
    """The package domains and their DRAM subdomains under `root`, in package order.

    Raises PermissionError (from reading `max_energy_range_uj` or `name`) only where those are
    unreadable; `energy_uj` is not read here.
    """
    root = Path(root)
    zones = {}
    for prefix in PREFIXES:
        for path in root.glob(f"{prefix}:*"):
            m = _ZONE.match(path.name)
            if m and (path / "energy_uj").exists():
                zones[(int(m[1]), -1 if m[2] is None else int(m[2]))] = path
    names = {key: path.joinpath("name").read_text().strip() if path.joinpath("name").exists()
             else path.name for key, path in zones.items()}
    domains = []
    for key in sorted(zones):
        pkg, sub = key
        name = names[key]
        if sub == -1:
            if not name.startswith("package"):
                continue  # psys and anything else at the top level would double-count
            rail = name
        else:
            parent = names.get((pkg, -1), "")
            if name != "dram" or not parent.startswith("package"):
                continue  # core / uncore are inside the package's own counter
            suffix = parent[len("package-"):] if parent.startswith("package-") else str(pkg)
            rail = f"dram-{suffix}"
        domains.append(RaplDomain(rail, zones[key], _read_int(zones[key] / "max_energy_range_uj")))
    return domains


class RaplCounters:
    """Per-domain accumulated microjoules across counter wraparounds, from a baseline read."""

    def __init__(self, domains: list[RaplDomain]):
        if not domains:
            raise ValueError("no RAPL domains")
        self.domains = domains
        self._lock = threading.Lock()
        self._last = {d.rail: _read_int(d.path / "energy_uj") for d in domains}
        self.total_uj = {d.rail: 0 for d in domains}

    def poll(self) -> dict[str, int]:
        """Read every counter, accumulate, and return a copy of the accumulated microjoules."""
        with self._lock:
            for d in self.domains:
                cur = _read_int(d.path / "energy_uj")
                self.total_uj[d.rail] += counter_delta(self._last[d.rail], cur, d.max_range_uj)
                self._last[d.rail] = cur
            return dict(self.total_uj)


class RaplProfiler(PollingProfiler):
    """CPU package + DRAM power from RAPL; energy from the counters (wraparound handled)."""

    name = "rapl"
    # A reading spanning less than this is skipped (the counters update about every 1 ms, so a
    # shorter span gives noise); the next reading then spans from the last one kept.
    min_read_span_s = 0.01

    def __init__(self, interval_s: float = 0.05, root: str | Path = DEFAULT_ROOT,
                 clock=time.perf_counter, sleep=time.sleep, **options):
        super().__init__(interval_s=interval_s, **options)
        self.root = Path(root)
        self._clock, self._sleep = clock, sleep
        self._counters: RaplCounters | None = None
        self.rails: list[str] = []
        self.counter_period_s: float | None = None  # measured; None: not yet, or unknown
        self.note: str | None = None
        self.identity: dict = {}  # energy_counter_period_s, for the measurement's fingerprint

    @classmethod
    def available(cls, root: str | Path = DEFAULT_ROOT, **_options) -> tuple[bool, str]:
        """Whether RAPL counters under `root` can be read; other profiler options ignored."""
        try:
            domains = discover(root)
        except PermissionError as e:
            return False, _permission_reason(Path(root), e.filename)
        except (OSError, ValueError) as e:
            return False, f"RAPL domains under {root} could not be read: {e}"
        if not domains:
            return False, (f"no RAPL domains under {root} (not an x86 host, or not exposed in "
                           f"this VM/container)")
        for d in domains:
            path = d.path / "energy_uj"
            try:
                _read_int(path)
            except PermissionError:
                return False, _permission_reason(Path(root), path)
            except (OSError, ValueError) as e:
                return False, f"RAPL counter {path} could not be read: {e}"
        return True, f"RAPL: {', '.join(d.rail for d in domains)}"

    def start(self) -> None:
        try:
            domains = discover(self.root)
            if not domains:
                raise EdgerobError(f"no RAPL domains under {self.root}")
            wrap_s = min(d.max_range_uj for d in domains) / 1e6 / _MAX_DOMAIN_W
            if self.interval_s > wrap_s / 2:
                raise ValueError(f"interval_s {self.interval_s} is too long: a RAPL counter can "
                                 f"wrap in {wrap_s:.0f} s; sample at least every {wrap_s / 2:.0f} s")
            self._counters = RaplCounters(domains)
            self._measure_period(domains)
        except PermissionError as e:
            raise EdgerobError(_permission_reason(self.root, e.filename)) from e
        self.rails = [d.rail for d in domains]
        self._last_read = (self._clock(), dict(self._counters.total_uj))
        super().start()

    def _measure_period(self, domains: list[RaplDomain]) -> None:
        """Measure the counters' update period (once per process) and record it."""
        path = domains[0].path / "energy_uj"
        if path not in _COUNTER_PERIODS:
            # polled every 0.1 ms, well inside the ~1 ms update; 0.2 s is 200 updates
            _COUNTER_PERIODS[path] = counter_period_s(lambda: _read_int(path), self._clock,
                                                      self._sleep, poll_s=1e-4, timeout_s=0.2)
        self.counter_period_s, how = _COUNTER_PERIODS[path]
        self.note = f"RAPL {how}"
        self.identity = {"energy_counter_period_s": self.counter_period_s}

    def resolution_s(self) -> float | None:
        """The counters' measured update period (the window's energy is their difference); None
        where it could not be measured."""
        if not self.identity:
            try:
                domains = discover(self.root)
                if domains:
                    self._measure_period(domains)
            except PermissionError as e:
                raise EdgerobError(_permission_reason(self.root, e.filename)) from e
        return self.counter_period_s

    def energy_counter_j(self) -> float | None:
        if self._counters is None:
            return None
        return sum(self._counters.poll().values()) / 1e6

    def read(self) -> Reading:
        acc = self._counters.poll()
        now = self._clock()
        t_prev, acc_prev = self._last_read
        span = now - t_prev
        if span < self.min_read_span_s:
            return Reading(total_w=None)
        self._last_read = (now, acc)
        delta_uj = {rail: acc[rail] - acc_prev[rail] for rail in self.rails}
        return Reading(total_w=sum(delta_uj.values()) / 1e6 / span,
                       rails_w={rail: uj / 1e6 / span for rail, uj in delta_uj.items()})
