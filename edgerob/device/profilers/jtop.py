"""jtop (jetson-stats): per-rail power from the jtop service, polled by a sampler thread.

jetson-stats is an optional extra, imported lazily: this module imports without it.

What is read: ``jetson.power`` (jtop >= 4.2: ``{"rail": {NAME: {"volt", "curr", "power", "avg",
...}}, "tot": {...}}`` in mV/mA/mW; jtop 3.x: a ``(total, rails)`` tuple of ``{"cur", "avg"}``).
Only the instantaneous ``power`` (``cur`` on 3.x) is used, never ``avg``: it is a running mean
kept by the service, and integrating it smears every step in power.

The total is computed here, not taken from jtop: the module input rail (VDD_IN, POM_5V_IN) where
present, else the sum of the rails. jtop's own total has been wrong on Nano (#51: POM_5V_IN added
to the rails inside it) and AGX Orin (#344). jtop >= 4.2 moves the input rail out of ``rail`` into
``tot`` (with ``tot["name"]``); it is put back among the rails so traces show it.

The service runs as systemd unit ``jtop.service`` with a socket at /run/jtop.sock for group
``jtop``; `available()` turns each way that connection fails into a reason that says what to do.
"""

from __future__ import annotations

import importlib
import math
import os
import weakref

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PollingProfiler, Reading
from edgerob.device.profilers.ina3221 import is_not_connected, module_total_w

SOCKET = "/run/jtop.sock"


def _import_jtop():
    """The jtop module (raises ImportError when jetson-stats is not installed)."""
    return importlib.import_module("jtop")


def _mw_to_w(value) -> float | None:
    try:
        w = float(value) / 1e3
    except (TypeError, ValueError):
        return None
    return w if math.isfinite(w) else None


def _rail_w(entry) -> float | None:
    """Instantaneous watts of one jtop rail entry; never its `avg`."""
    if not isinstance(entry, dict):
        return _mw_to_w(entry)
    if entry.get("online") is False:
        return None
    for key in ("power", "cur"):  # jtop >= 4.2, jtop 3.x
        if key in entry:
            return _mw_to_w(entry[key])
    if "volt" in entry and "curr" in entry:  # mV * mA
        try:
            return float(entry["volt"]) * float(entry["curr"]) / 1e6
        except (TypeError, ValueError):
            return None
    return None


def power_reading(power) -> Reading:
    """A `Reading` from jtop's ``.power`` (any of its shapes; see the module docstring)."""
    if isinstance(power, (tuple, list)) and len(power) == 2:  # jtop 3.x: (total, rails)
        tot, rails = power
    elif isinstance(power, dict):
        tot, rails = power.get("tot") or {}, power.get("rail") or {}
    else:
        return Reading(None)
    rails_w: dict[str, float] = {}
    for name, entry in dict(rails).items():
        w = _rail_w(entry)
        if w is not None and not is_not_connected(str(name)):
            rails_w[str(name)] = w
    if isinstance(tot, dict) and tot.get("name"):  # jtop >= 4.2: the input rail lives in "tot"
        w = _rail_w(tot)
        if w is not None:
            rails_w.setdefault(str(tot["name"]), w)
    return Reading(module_total_w(rails_w), rails_w)


def _reason(exc: BaseException, socket_path: str) -> str:
    """Why jtop cannot be used, from what its client raised."""
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else type(exc).__name__
    low = msg.lower()
    if "mismatch" in low and "version" in low and "python" not in low:
        return (f"jetson-stats client and jtop service versions differ ({first}): reinstall "
                "jetson-stats system-wide (sudo pip3 install -U jetson-stats) and run "
                "sudo systemctl restart jtop.service")
    if isinstance(exc, PermissionError) or "permission" in low or "can't access" in low \
            or "cannot access" in low:
        return (f"permission denied on {socket_path}: this user is not in group 'jtop' "
                "(sudo usermod -aG jtop $USER, then log out and in)")
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)) or "not active" in low:
        where = ("no " + socket_path) if not os.path.exists(socket_path) else \
            f"{socket_path} refuses connections"
        return (f"the jtop service is not running ({where}): "
                "sudo systemctl restart jtop.service")
    if "mismatch" in low:
        return f"jetson-stats client and service do not match ({first})"
    return f"jtop failed: {first}"


def _connect(interval_s: float):
    """A started jtop client; raises what jtop raises."""
    mod = _import_jtop()
    client = mod.jtop(interval=interval_s)
    client.start()
    return client


def _close(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing a dead connection must not mask the result
        pass


class JtopProfiler(PollingProfiler):
    """Rail power from the jtop service, polled every `interval_s` (default 200 ms).

    jtop's service runs at one interval for all its clients: when another client set a slower
    one, sampling follows the service's (`sensor_period_s` says which). The connection opens on
    the first `start()` and stays open across windows; `close()` or garbage collection ends it.
    """

    name = "jtop"
    socket_path = SOCKET

    def __init__(self, interval_s: float = 0.2, **options):
        super().__init__(interval_s, **options)
        self.requested_interval_s = self.interval_s
        self._client = None
        self._finalizer = None
        self.last_error: str | None = None

    @classmethod
    def available(cls, **_options) -> tuple[bool, str]:
        try:
            mod = _import_jtop()
        except ImportError:
            return False, "jetson-stats is not installed (pip install jetson-stats)"
        except Exception as e:  # noqa: BLE001 - a broken install is a reason, not a crash
            return False, f"jetson-stats failed to import: {e}"
        if not hasattr(mod, "jtop"):
            return False, "the installed 'jtop' module is not jetson-stats (no jtop class)"
        try:
            client = _connect(0.5)
        except Exception as e:  # noqa: BLE001 - JtopException and OS errors become the reason
            return False, _reason(e, cls.socket_path)
        try:
            reading = power_reading(client.power)
        except Exception as e:  # noqa: BLE001
            return False, f"jtop gives no power readings: {e}"
        finally:
            _close(client)
        if reading.total_w is None:
            return False, "jtop is running but reports no power rails on this board"
        return True, f"jtop service, rails: {', '.join(reading.rails_w)}"

    def _ensure_client(self):
        if self._client is None:
            try:
                client = _connect(self.requested_interval_s)
            except ImportError as e:
                raise EdgerobError("jetson-stats is not installed (pip install jetson-stats)") \
                    from e
            except Exception as e:  # noqa: BLE001
                raise EdgerobError(_reason(e, self.socket_path)) from e
            self._client = client
            self._finalizer = weakref.finalize(self, _close, client)
            service = getattr(client, "interval", None)
            try:
                service = float(service) if service is not None else None
            except (TypeError, ValueError):
                service = None
            # Polling faster than the service updates would only repeat its last value.
            self.interval_s = max(self.requested_interval_s, service or 0.0)
        return self._client

    def start(self) -> None:
        self._ensure_client()
        super().start()  # the trace's sensor_period_s is the effective interval

    def resolution_s(self) -> float:
        """The effective interval: the service's where it is slower than the one asked for (so
        this connects to it, as a window would)."""
        self._ensure_client()
        return self.interval_s

    def read(self) -> Reading:
        client = self._client
        if client is None:
            return Reading(None)
        try:
            ok = getattr(client, "ok", None)
            if ok is not None:
                try:
                    running = ok(spin=True)  # non-blocking; re-raises the client thread's error
                except TypeError:  # a client whose ok() takes no `spin`
                    running = True
                if not running:
                    self.last_error = "jtop connection closed"
                    return Reading(None)
            return power_reading(client.power)
        except Exception as e:  # noqa: BLE001 - a lost service ends sampling, not the sweep
            self.last_error = str(e) or type(e).__name__
            return Reading(None)

    def close(self) -> None:
        """Close the jtop connection (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._client = None
