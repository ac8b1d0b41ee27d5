"""Cost: total cost of ownership for a workload, USD and kWh per million inferences, and the
attacker's side (USD and joules the target spends before a failure) and the TRASH score
(`trash`, the one definition, which `edgerob.analysis.survival` uses too).

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

from edgerob.analysis.compare import TargetCache, single_device_resnet50
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


def trash(train_time_s: float | None, n_train_samples: int | None,
          expected_time_s: float | None) -> dict:
    """The TRASH score, edgerob's one definition (Meyers et al. 2024, as their code deckard
    computes it: `train_time_per_sample` = fit time / len(X_train), deckard/base/model/model.py):

        TRASH = (train_time_s / n_train_samples) / E[T]

    training time per training sample over the expected time to failure per attacked sample (a
    failure record is one attacked sample; its duration_s is the attacker's time on the target).
    Above 1: a sample is cheaper to break than to build. Returns {train_time_per_sample_s, trash,
    cheaper_to_break, note}: trash None and a note saying why where it is not estimable (no train
    time, no sample count, no E[T], or an infinite E[T]: a fitted distribution without a finite
    mean, e.g. log-logistic with shape <= 1, where TRASH would be 0 for any training cost)."""
    out = {"train_time_per_sample_s": None, "trash": None, "cheaper_to_break": None,
           "note": None}
    if train_time_s is None:
        out["note"] = "TRASH not estimable: no train time (model.json train_time_s)"
        return out
    if not _ok(train_time_s) or train_time_s <= 0:
        raise EdgerobError(f"train time must be a positive number of seconds, got "
                           f"{train_time_s!r}")
    if n_train_samples is None:
        out["note"] = ("TRASH not estimable: no number of training samples (the model card "
                       "lacks n_train_samples)")
        return out
    if isinstance(n_train_samples, bool) or not isinstance(n_train_samples, int) \
            or n_train_samples < 1:
        raise EdgerobError(f"the number of training samples must be a positive integer, got "
                           f"{n_train_samples!r}")
    out["train_time_per_sample_s"] = per_sample = train_time_s / n_train_samples
    if expected_time_s is None or (isinstance(expected_time_s, float)
                                   and math.isnan(expected_time_s)):
        out["note"] = "TRASH not estimable: no expected time to failure"
    elif expected_time_s == math.inf:
        out["note"] = ("TRASH not estimable: the expected time to failure is infinite (the "
                       "fitted distribution has no finite mean, e.g. log-logistic with shape "
                       "<= 1)")
    elif not expected_time_s > 0:
        out["note"] = f"TRASH not estimable: expected time to failure {expected_time_s:g} s"
    else:
        out["trash"] = per_sample / float(expected_time_s)
        out["cheaper_to_break"] = out["trash"] > 1
    return out


def _load(target):
    if isinstance(target, str):
        return load_target(target)
    return target


def _ok(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def tco(target, row: dict, workload: Workload, train_time_s: float | None = None,
        pricing: str = "auto", n_train_samples: int | None = None) -> dict:
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
        "target": target.name, "power_mode": row.get("power_mode"), "runtime": row.get("runtime"),
        "precision": row.get("precision"), "batch_size": row.get("batch_size"),
        "pricing": pricing,
        "purchase_usd_per_device": price.purchase_usd, "cloud_usd_per_h": price.cloud_usd_per_h,
        "workload_inferences_per_s": w.inferences_per_s, "utilisation": w.utilisation,
        "service_h": w.service_h, "inferences_total": w.inferences,
        "electricity_usd_per_kwh": w.electricity_usd_per_kwh,
        "throughput_sps": row.get("throughput_sps"),
        "source_label": row.get("source_label") or "measured",  # or e.g. "MLPerf v3.0 ..."
        "source": row.get("source") or "measured", "mlperf_version": row.get("mlperf_version"),
        "scenario": row.get("scenario"), "samples_per_query": row.get("samples_per_query"),
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

        # One basis for every device, measured, imported or predicted: energy per inference x
        # inferences served. Power x hours would charge load power for every service hour
        # whatever the demand, and a prediction has no power to multiply.
        epi = row.get("energy_per_inference_j")
        if _ok(epi) and epi > 0:
            out["energy_kwh"] = joules_to_kwh(epi * w.inferences)
            out["energy_basis"] = "energy_per_inference_j x inferences: " + (
                "MLPerf wall power of the whole system, idle included"
                if row.get("source") == "mlperf" else
                "net of idle (a lower bound: idle draw between inferences is not counted)")
        elif _ok(row.get("power_mean_w")):
            notes.append("power measured but no energy per inference: energy is not on the "
                         "common basis (energy per inference x inferences) and is left out")
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

    out.update(attacker_side(target, row, w, train_time_s, n_train_samples))
    out["notes"] = notes + out.pop("attacker_notes")
    return out


def attacker_side(target, row: dict, workload: Workload, train_time_s: float | None = None,
                  n_train_samples: int | None = None) -> dict:
    """What a failure costs the target, from the failure records in `row`. Time and energy are
    both the per-sample share (edgerob.device.failures: each query's time and energy divided among the
    samples attacked in it), so USD and joules are on one basis whatever the batch size:

    - attacker_s_to_failure: Kaplan-Meier median time share on the target until a sample fails;
    - attacker_usd_to_failure: that time / 3600 x cloud_usd_per_h (an attacker rents the same
      device), or for a device that is only bought, the purchase price amortised per second of
      service life (purchase_usd / service seconds) x that time;
    - attacker_j_to_failure, attacker_kwh_to_failure: Kaplan-Meier median energy share the
      target spent (J; / 3.6e6 for kWh), and its price at the workload's electricity rate;
    - trash_score: `trash`, with E[T] the restricted mean time share to failure per attacked
      sample (area under the Kaplan-Meier curve of duration_share_s up to the attack budget);
      above 1: cheaper to break than to build.
      Where samples survive the budget E[T] is underestimated, so TRASH is an upper bound.
    """
    target = _load(target)
    price = target.price
    notes = []
    t = row.get("median_time_share_to_failure_s")
    j = row.get("median_energy_share_to_failure_j")
    out = {"failure_attack": row.get("failure_attack"), "attacker_s_to_failure": t,
           "attacker_usd_to_failure": None, "attacker_usd_basis": None,
           "attacker_j_to_failure": j, "attacker_kwh_to_failure": None,
           "attacker_energy_usd_to_failure": None,
           "attacker_basis": "per-sample share of the queries (each query / samples in it)",
           "expected_time_to_failure_s": row.get("mean_time_share_to_failure_restricted_s"),
           "train_time_s": train_time_s, "trash_score": None,
           "cheaper_to_break_than_build": None}
    if t is None and row.get("median_time_to_failure_s") is not None:
        notes.append("no per-sample time share to failure (records written before it was "
                     "recorded, or a prediction): no attacker cost")
    elif t is None and not row.get("failure_records"):
        notes.append("no failure records for this configuration: no attacker cost")
    elif t is None:
        notes.append("over half the attacked samples survive the budget: no median time to "
                     "failure (the attacker's cost is above what was measured)")
    if t is not None:
        if price.cloud_usd_per_h:
            out["attacker_usd_to_failure"] = usd_for_seconds(t, price.cloud_usd_per_h)
            out["attacker_usd_basis"] = "median s share to failure / 3600 x cloud_usd_per_h"
        elif price.purchase_usd:
            out["attacker_usd_to_failure"] = price.purchase_usd / workload.service_s * t
            out["attacker_usd_basis"] = ("purchase_usd / service seconds x median s share to "
                                         "failure (amortised device time)")
        else:
            notes.append(f"no price in targets/{target.name}.yaml: no attacker USD")
    if _ok(j):
        out["attacker_kwh_to_failure"] = joules_to_kwh(j)
        out["attacker_energy_usd_to_failure"] = (out["attacker_kwh_to_failure"]
                                                 * workload.electricity_usd_per_kwh)
    elif row.get("failure_records") and t is not None:
        notes.append("no energy in the failure records (no sensor): no attacker joules")
    score = trash(train_time_s, n_train_samples, out["expected_time_to_failure_s"])
    out.update(n_train_samples=n_train_samples,
               train_time_per_sample_s=score["train_time_per_sample_s"],
               trash_score=score["trash"], cheaper_to_break_than_build=score["cheaper_to_break"])
    if score["note"] and train_time_s is not None and row.get("failure_records"):
        notes.append(score["note"])
    elif score["trash"] is not None and row.get("failure_censored"):
        notes.append("E[T] is restricted to the attack budget (some samples survived it): "
                     "TRASH is an upper bound")
    out["attacker_notes"] = notes
    return out


def cost_table(rows: list[dict], workload: Workload, train_time_s: float | None = None,
               pricing: str = "auto", n_train_samples: int | None = None,
               include_forced: bool = False) -> list[dict]:
    """`tco` for every fleet row that has a clean measurement, one per power mode of a target
    (fleet rows keep modes apart; published rows: ResNet-50 on
    one accelerator, `single_device_resnet50`, as a catalog price is per device); a target
    whose YAML cannot be loaded gives a row with only a note. A row marked `forced` (measured
    on a machine that is not its target) is priced only with `include_forced`: build the rows with
    `fleet_table(store, include_forced=False)` so that a cell's verified rows stand in."""
    cache = TargetCache()
    out = []
    for r in rows:
        if r.get("throughput_sps") is None and not r.get("failure_records"):
            continue
        if r.get("forced") and not include_forced:
            continue
        if not single_device_resnet50(r):  # one device's price; published rows: ResNet-50
            continue
        tgt = cache.get(r["target"])
        if tgt is None:
            out.append({"target": r["target"], "power_mode": r.get("power_mode"),
                        "runtime": r.get("runtime"),
                        "precision": r.get("precision"), "batch_size": r.get("batch_size"),
                        **{k: r.get(k) for k in ("source", "source_label", "mlperf_version",
                                                 "scenario", "samples_per_query")},
                        "notes": [cache.notes[r["target"]]]})
            continue
        out.append(tco(tgt, r, workload, train_time_s, pricing, n_train_samples))
    return out


def workload_dict(workload: Workload) -> dict:
    return {**asdict(workload), "service_h": workload.service_h,
            "inferences_total": workload.inferences}


def candidate_costs(predictions: list[dict], candidate, workload: Workload,
                    pricing: str = "auto") -> list[dict]:
    """`tco` of a candidate device from `edgerob.analysis.predict.predict_candidate` rows: each
    prediction with its cost under "cost" (point estimates from the predicted throughput, energy
    per inference and time to failure; energy per inference x inferences, the basis `tco` uses
    for every device). Predictions without a throughput get no cost."""
    candidate = _load(candidate)
    out = []
    for p in predictions:
        if p.get("throughput_sps") is None:
            out.append({**p, "cost": None})
            continue
        row = {"runtime": None, "precision": p["precision"], "batch_size": p["batch_size"],
               "source": p.get("source"),
               "throughput_sps": p["throughput_sps"],
               "energy_per_inference_j": p.get("energy_per_inference_j"),
               "median_time_to_failure_s": p.get("median_time_to_failure_s"),
               "failure_attack": p.get("failure_attack")}
        c = tco(candidate, row, workload, pricing=pricing)
        c["notes"].append("from predicted values, not measurements")
        out.append({**p, "cost": c})
    return out
