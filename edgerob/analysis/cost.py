"""Cost: total cost of ownership for a workload, USD and kWh per million inferences, and the
attacker's side (USD and joules the target spends before a failure, the TRASH score).

Every key carries its unit. Conversions are spelled out once, here, and pinned by tests:

- seconds -> hours: / 3600 (deckard multiplied seconds by USD/hour without it);
- joules -> kWh: / 3.6e6 (1 kWh = 1000 W x 3600 s); watts x hours / 1000 -> kWh;
- hours of service = hours_per_day x 365 x years.

Cloud devices are paid per hour of service (billed whether or not an inference runs), and their
electricity is in the hourly price; bought devices are paid once and their electricity is ours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgerob.analysis.compare import TargetCache
from edgerob.catalog.targets import load_target
from edgerob.errors import EdgerobError

SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
DAYS_PER_YEAR = 365.0


def seconds_to_hours(s: float) -> float:
    return s / SECONDS_PER_HOUR


def joules_to_kwh(j: float) -> float:
    return j / JOULES_PER_KWH


def usd_for_seconds(seconds: float, usd_per_h: float) -> float:
    """What `seconds` of a resource billed at `usd_per_h` costs: seconds / 3600 x USD/h."""
    return seconds_to_hours(seconds) * usd_per_h


@dataclass(frozen=True)
class Workload:
    """What the deployment must serve. The defaults are an example, not a recommendation."""

    inferences_per_s: float = 100.0  # sustained demand (samples/s)
    hours_per_day: float = 24.0
    years: float = 3.0
    electricity_usd_per_kwh: float = 0.15
    utilisation: float = 0.7  # fraction of a device's measured throughput we plan to use

    def __post_init__(self):
        checks = [("inferences_per_s", self.inferences_per_s > 0, "> 0"),
                  ("hours_per_day", 0 < self.hours_per_day <= 24, "in (0, 24]"),
                  ("years", self.years > 0, "> 0"),
                  ("electricity_usd_per_kwh", self.electricity_usd_per_kwh >= 0, ">= 0"),
                  ("utilisation", 0 < self.utilisation <= 1, "in (0, 1]")]
        for name, ok, allowed in checks:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not ok:
                raise EdgerobError(f"workload {name} must be {allowed}, got {value!r}")

    @property
    def service_h(self) -> float:
        """Hours of service over the whole life: hours_per_day x 365 x years."""
        return self.hours_per_day * DAYS_PER_YEAR * self.years

    @property
    def service_s(self) -> float:
        return self.service_h * SECONDS_PER_HOUR

    @property
    def inferences(self) -> float:
        """Inferences served over the whole life."""
        return self.inferences_per_s * self.service_s


def _load(target):
    if isinstance(target, str):
        return load_target(target)
    return target


def _ok(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def tco(target, row: dict, workload: Workload, train_time_s: float | None = None,
        pricing: str = "auto") -> dict:
    """Total cost of ownership of serving `workload` with the configuration in `row` (a fleet row
    from `edgerob.analysis.compare.fleet_table`, or a prediction) on `target` (a Target or its name).

    pricing: "purchase" (buy devices), "cloud" (rent them per hour), or "auto" (purchase where
    the target has a purchase price, else cloud). Missing figures give None and a note.
    """
    target = _load(target)
    if pricing not in ("auto", "purchase", "cloud"):
        raise EdgerobError(f"pricing must be auto, purchase or cloud, got {pricing!r}")
    price = target.price
    if pricing == "auto":
        pricing = ("purchase" if price.purchase_usd else "cloud" if price.cloud_usd_per_h
                   else None)
    notes = []
    w = workload
    out = {
        "target": target.name, "runtime": row.get("runtime"), "precision": row.get("precision"),
        "batch_size": row.get("batch_size"), "pricing": pricing,
        "purchase_usd_per_device": price.purchase_usd, "cloud_usd_per_h": price.cloud_usd_per_h,
        "workload_inferences_per_s": w.inferences_per_s, "utilisation": w.utilisation,
        "service_h": w.service_h, "inferences_total": w.inferences,
        "electricity_usd_per_kwh": w.electricity_usd_per_kwh,
        "throughput_sps": row.get("throughput_sps"),
    }
    for k in ("devices_needed", "capital_usd", "energy_kwh", "energy_usd", "total_usd",
              "usd_per_million_inferences", "kwh_per_million_inferences"):
        out[k] = None
    out["capital_basis"] = out["energy_basis"] = None

    thr = row.get("throughput_sps")
    if _ok(thr) and thr > 0:
        # ceil of required / usable throughput per device; the tiny relative slack keeps a ratio
        # that is an integer in exact arithmetic (e.g. 4.000000000000001) from rounding up
        need = w.inferences_per_s / (thr * w.utilisation)
        out["devices_needed"] = max(1, math.ceil(need * (1 - 1e-12)))
    else:
        notes.append("no measured throughput: devices, capital and energy cannot be computed")
    n = out["devices_needed"]

    if n is not None:
        if pricing == "purchase" and price.purchase_usd:
            out["capital_usd"] = price.purchase_usd * n
            out["capital_basis"] = f"purchase_usd x {n} device(s)"
        elif pricing == "cloud" and price.cloud_usd_per_h:
            out["capital_usd"] = price.cloud_usd_per_h * w.service_h * n
            out["capital_basis"] = (f"cloud_usd_per_h x {w.service_h:g} service hours x {n} "
                                    f"device(s) (rented per hour of service, not per second of "
                                    f"inference)")
        else:
            notes.append(f"no {'price' if pricing is None else pricing + ' price'} in "
                         f"targets/{target.name}.yaml: no capital or total cost")

        power, epi = row.get("power_mean_w"), row.get("energy_per_inference_j")
        if _ok(power) and power > 0:
            out["energy_kwh"] = power * n * w.service_h / 1000.0  # W x h / 1000 = kWh
            out["energy_basis"] = ("power_mean_w x devices x service hours (measured power under "
                                   "load for every service hour: an upper bound)")
        elif _ok(epi) and epi > 0:
            out["energy_kwh"] = joules_to_kwh(epi * w.inferences)
            out["energy_basis"] = ("energy_per_inference_j x inferences (net of idle: a lower "
                                   "bound; no mean power stored)")
        else:
            notes.append("no power or energy measured (no sensor): energy is unknown")
    if n is not None and pricing == "cloud":
        out["energy_usd"] = 0.0
        notes.append("cloud: electricity is included in the hourly price (energy_usd 0); "
                     "energy_kwh is still the energy the devices use")
    elif out["energy_kwh"] is not None:
        out["energy_usd"] = out["energy_kwh"] * w.electricity_usd_per_kwh
    if out["energy_kwh"] is not None:
        out["kwh_per_million_inferences"] = out["energy_kwh"] / w.inferences * 1e6
    if out["capital_usd"] is not None and out["energy_usd"] is not None:
        out["total_usd"] = out["capital_usd"] + out["energy_usd"]
    elif out["capital_usd"] is not None:
        notes.append("total cost leaves out energy (unknown)")
        out["total_usd"] = None
    if out["total_usd"] is not None:
        out["usd_per_million_inferences"] = out["total_usd"] / w.inferences * 1e6

    out.update(attacker_side(target, row, w, train_time_s))
    out["notes"] = notes + out.pop("attacker_notes")
    return out


def attacker_side(target, row: dict, workload: Workload,
                  train_time_s: float | None = None) -> dict:
    """What a failure costs the target, from the failure records in `row`:

    - attacker_s_to_failure: Kaplan-Meier median wall time on the target until a sample fails;
    - attacker_usd_to_failure: that time / 3600 x cloud_usd_per_h (an attacker rents the same
      device), or for a device that is only bought, the purchase price amortised per second of
      service life (purchase_usd / service seconds) x that time;
    - attacker_j_to_failure: Kaplan-Meier median energy the target spent (J), and its price at the
      workload's electricity rate (J / 3.6e6 x USD/kWh);
    - trash_score: train_time_s / E[T], E[T] the restricted mean time to failure (area under the
      Kaplan-Meier curve up to the attack budget); above 1: cheaper to break than to build.
      Where samples survive the budget E[T] is underestimated, so TRASH is an upper bound.
    """
    target = _load(target)
    price = target.price
    notes = []
    t = row.get("median_time_to_failure_s")
    j = row.get("median_energy_to_failure_j")
    out = {"failure_attack": row.get("failure_attack"), "attacker_s_to_failure": t,
           "attacker_usd_to_failure": None, "attacker_usd_basis": None,
           "attacker_j_to_failure": j, "attacker_energy_usd_to_failure": None,
           "expected_time_to_failure_s": row.get("mean_time_to_failure_restricted_s"),
           "train_time_s": train_time_s, "trash_score": None,
           "cheaper_to_break_than_build": None}
    if t is None and not row.get("failure_records"):
        notes.append("no failure records for this configuration: no attacker cost")
    elif t is None:
        notes.append("over half the attacked samples survive the budget: no median time to "
                     "failure (the attacker's cost is above what was measured)")
    if t is not None:
        if price.cloud_usd_per_h:
            out["attacker_usd_to_failure"] = usd_for_seconds(t, price.cloud_usd_per_h)
            out["attacker_usd_basis"] = "median s to failure / 3600 x cloud_usd_per_h"
        elif price.purchase_usd:
            out["attacker_usd_to_failure"] = price.purchase_usd / workload.service_s * t
            out["attacker_usd_basis"] = ("purchase_usd / service seconds x median s to failure "
                                         "(amortised device time)")
        else:
            notes.append(f"no price in targets/{target.name}.yaml: no attacker USD")
    if _ok(j):
        out["attacker_energy_usd_to_failure"] = (joules_to_kwh(j)
                                                 * workload.electricity_usd_per_kwh)
    elif row.get("failure_records") and t is not None:
        notes.append("no energy in the failure records (no sensor): no attacker joules")
    et = out["expected_time_to_failure_s"]
    if train_time_s is not None and _ok(et) and et > 0:
        out["trash_score"] = train_time_s / et
        out["cheaper_to_break_than_build"] = out["trash_score"] > 1
        if row.get("failure_censored"):
            notes.append("E[T] is restricted to the attack budget (some samples survived it): "
                         "TRASH is an upper bound")
    out["attacker_notes"] = notes
    return out


def cost_table(rows: list[dict], workload: Workload, train_time_s: float | None = None,
               pricing: str = "auto") -> list[dict]:
    """`tco` for every fleet row that has a clean measurement; a target whose YAML cannot be
    loaded gives a row with only a note."""
    cache = TargetCache()
    out = []
    for r in rows:
        if r.get("throughput_sps") is None and not r.get("failure_records"):
            continue
        tgt = cache.get(r["target"])
        if tgt is None:
            out.append({"target": r["target"], "runtime": r.get("runtime"),
                        "precision": r.get("precision"), "batch_size": r.get("batch_size"),
                        "notes": [cache.notes[r["target"]]]})
            continue
        out.append(tco(tgt, r, workload, train_time_s, pricing))
    return out


def workload_dict(workload: Workload) -> dict:
    return {**asdict(workload), "service_h": workload.service_h,
            "inferences_total": workload.inferences}


def candidate_costs(predictions: list[dict], candidate, workload: Workload,
                    pricing: str = "auto") -> list[dict]:
    """`tco` of a candidate device from `edgerob.analysis.compare.predict_candidate` output: each
    prediction with its cost under "cost" (point estimates from the predicted throughput, energy
    per inference and time to failure; no power is predicted, so energy is energy per inference
    x inferences). Predictions without a latency get no cost."""
    candidate = _load(candidate)
    out = []
    for p in predictions:
        if p.get("latency_p50_ms") is None:
            out.append({**p, "cost": None})
            continue
        row = {"runtime": None, "precision": p["precision"], "batch_size": p["batch_size"],
               "throughput_sps": p["throughput_sps"],
               "energy_per_inference_j": p.get("energy_per_inference_j"),
               "median_time_to_failure_s": p.get("median_time_to_failure_s"),
               "failure_attack": p.get("failure_attack")}
        c = tco(candidate, row, workload, pricing=pricing)
        c["notes"].append("from predicted values, not measurements")
        out.append({**p, "cost": c})
    return out
