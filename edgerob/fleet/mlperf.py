"""Published results: MLPerf Inference result files as a reference fleet.

Reads a checkout of an MLCommons results repository (inference_results_vX.Y) or any folder
under it, laid out as DIVISION/SUBMITTER/results/SYSTEM/BENCHMARK/SCENARIO/performance/run_1/
with DIVISION/SUBMITTER/systems/SYSTEM.json, and stores each VALID performance result as one
run (source "mlperf") with one measurement. Every stored number is the file's number; the only
conversion is ns -> ms. What the numbers mean (REFERENCES.md, "MLPerf Inference results"):

- SingleStream: one sample per query (batch_size 1); latency percentiles per query; throughput
  = "QPS w/ loadgen overhead" (samples/s, since a query is one sample).
- MultiStream: 8 samples per query (batch_size 8); latency percentiles per query of 8; no
  throughput is stored (loadgen reports queries/s, and samples/s would be our arithmetic).
- Offline: throughput = "Samples per second"; its latency lines describe one huge query and are
  not stored; batch_size is the file's samples_per_query (the whole run is one query).

Power (MaxQ runs with power logs): the analyser's samples in run_1/spl.txt are averaged over
loadgen's run window (power_begin < t < power_end in run_1/mlperf_log_detail.txt), as the MLPerf
submission checker does. Both timestamps are UTC wall-clock strings: loadgen's from the system
under test, spl.txt's from the power director; the MLPerf power client and server synchronise
both machines to the same NTP server before the run (power/client.log prints the offset, 0.000 s
in NVIDIA's v3.1 logs), so they are compared as they are, with no shift (power/*.json's
"timezone" is the machine's local zone, not an offset applied to the logs: with it the v3.1
window would fall 7 h outside the samples). The analyser's samples must span the whole window,
else no power. Energy = mean power x window length; per inference = / (result_query_count x
samples_per_query). It is wall power of the whole system (board, host, fans), not GPU power, and
idle is not subtracted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from edgerob.errors import EdgerobError
from edgerob.store import measurements, now, runs

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
SCENARIOS = ("SingleStream", "MultiStream", "Offline")
NOT_IMPORTED_SCENARIOS = ("Server",)  # a latency-bounded QPS: nothing of ours compares to it
MODELS = {"resnet50": "resnet50"}  # MLPerf benchmark folder -> edgerob model name
PRECISION = "int8"  # NVIDIA's closed ResNet-50 submissions run INT8 (their measurements/ say so)
_TIME = "%m-%d-%Y %H:%M:%S.%f"  # loadgen's power_begin/end and spl.txt's timestamps
_NS_KEYS = {"latency_min_ms": "Min latency (ns)", "latency_max_ms": "Max latency (ns)",
            "latency_mean_ms": "Mean latency (ns)",
            "latency_p50_ms": "50.00 percentile latency (ns)",
            "latency_p90_ms": "90.00 percentile latency (ns)",
            "latency_p95_ms": "95.00 percentile latency (ns)",
            "latency_p99_ms": "99.00 percentile latency (ns)"}
_METRIC = {"SingleStream": "90th percentile latency (ns)",
           "MultiStream": "99th percentile latency (ns)", "Offline": "Samples per second"}


# (accelerator name in systems/SYSTEM.json, memory in GB: the accelerator's, or the host's where
# it is "Shared with host" as on Jetsons) -> the catalog's name for that exact device. Variants
# are different devices (clocks, TDP, bandwidth), so each has its own key and its own entry.
TARGET_MAP: dict[tuple[str, int], str] = {
    ("nvidia jetson agx orin", 32): "jetson-agx-orin-32gb",
    ("nvidia jetson agx orin", 64): "jetson-agx-orin-64gb",
    ("nvidia orin nx", 16): "jetson-orin-nx-16gb",
    ("nvidia jetson xavier nx", 8): "jetson-xavier-nx",
    ("nvidia jetson agx xavier", 32): "jetson-agx-xavier",
    ("nvidia a100-pcie-80gb", 80): "a100-pcie",
    ("nvidia a100-sxm-80gb", 80): "a100-sxm",
    ("nvidia h100-pcie-80gb", 80): "h100-pcie",
    ("nvidia h100-sxm-80gb", 80): "h100-sxm",
    ("nvidia l4", 24): "l4",
    ("nvidia a30", 24): "a30",
    ("nvidia a2", 16): "a2",
    ("nvidia t4", 16): "t4",
    ("nvidia a10", 24): "a10",
}
# Systems whose results folder has no systems/SYSTEM.json (e.g. a partial copy): NVIDIA's
# system folder name -> the (accelerator, memory) key above. v2.0's Orin was the 32GB kit.
SYSTEM_FOLDERS: dict[str, tuple[str, int]] = {
    "Orin_TRT": ("nvidia jetson agx orin", 32),
    "Orin_TRT_MaxQ": ("nvidia jetson agx orin", 32),
    "Orin_NX_TRT": ("nvidia orin nx", 16),
    "Xavier_NX_TRT": ("nvidia jetson xavier nx", 8),
    "Xavier_NX_TRT_MaxQ": ("nvidia jetson xavier nx", 8),
    "AGX_Xavier_TRT": ("nvidia jetson agx xavier", 32),
    "A100-PCIe-80GBx1_TRT": ("nvidia a100-pcie-80gb", 80),
    "DGX-A100_A100-SXM-80GBx1_TRT": ("nvidia a100-sxm-80gb", 80),
    "H100-PCIe-80GBx1_TRT": ("nvidia h100-pcie-80gb", 80),
    "DGX-H100_H100-SXM-80GBx1_TRT": ("nvidia h100-sxm-80gb", 80),
    "L4x1_TRT": ("nvidia l4", 24),
    "A30x1_TRT": ("nvidia a30", 24),
    "A2x1_TRT": ("nvidia a2", 16),
    "T4x1_TRT": ("nvidia t4", 16),
    "A10x1_TRT": ("nvidia a10", 24),
}
# NVIDIA's Jetson Offline runs use the GPU and both DLAs (their system notes; REFERENCES.md)
DLA_BOARDS = {"nvidia jetson agx orin", "nvidia orin nx", "nvidia jetson xavier nx",
              "nvidia jetson agx xavier"}


@dataclass
class Imported:
    """What one ingest found: rows to store and one line per file that was not imported."""

    results: list[dict] = field(default_factory=list)  # {"run": ..., "measurement": ...}
    invalid: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- reading the files ---------------------------------------------------------------------------

def parse_summary(text: str, path: Path | str = SUMMARY) -> dict[str, str]:
    """`key : value` lines of an mlperf_log_summary.txt; EdgerobError where it is not a whole
    performance summary of a scenario edgerob imports."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("*"):
            k, v = line.split(":", 1)
            kv.setdefault(k.strip(), v.strip())
    if "Scenario" not in kv:
        raise EdgerobError(f"{path}: not an MLPerf summary (no 'Scenario' line)")
    sc = kv["Scenario"]
    if sc in NOT_IMPORTED_SCENARIOS:
        raise EdgerobError(f"{path}: scenario {sc} is not imported (only "
                           f"{', '.join(SCENARIOS)})")
    if sc not in SCENARIOS:
        raise EdgerobError(f"{path}: unknown scenario {sc!r} (known: {', '.join(SCENARIOS)})")
    if kv.get("Mode") != "PerformanceOnly":
        raise EdgerobError(f"{path}: mode {kv.get('Mode')!r} is not a performance run")
    need = ["Result is", _METRIC[sc], "samples_per_query"]
    need += ["QPS w/ loadgen overhead"] if sc == "SingleStream" else []
    need += list(_NS_KEYS.values()) if sc != "Offline" else []
    missing = [k for k in need if k not in kv]
    if missing:
        raise EdgerobError(f"{path}: truncated or incomplete summary (no '{missing[0]}' line)")
    for k in need[1:]:
        try:
            float(kv[k])
        except ValueError:
            raise EdgerobError(f"{path}: '{k}' is not a number: {kv[k]!r}") from None
    return kv


def read_detail(path: Path) -> dict:
    """key -> value of the `:::MLLOG {json}` lines of an mlperf_log_detail.txt (first wins)."""
    out: dict = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        i = line.find(":::MLLOG ")
        if i < 0:
            continue
        try:
            rec = json.loads(line[i + 9:])
        except json.JSONDecodeError:
            continue
        out.setdefault(rec.get("key"), rec.get("value"))
    return out


def read_system(path: Path) -> dict | None:
    """systems/SYSTEM.json, or None where the file is absent; EdgerobError if it is not JSON."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgerobError(f"{path}: system description is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise EdgerobError(f"{path}: system description is not a JSON object")
    return data


def _memory_gb(text) -> int | None:
    m = re.search(r"([\d.]+)\s*(TB|GB)", str(text or ""), re.I)
    if not m:
        return None
    return round(float(m.group(1)) * (1024 if m.group(2).upper() == "TB" else 1))


def device_key(system_name: str, system: dict | None) -> tuple[str, int] | None:
    """(accelerator name, memory GB) of a system, from its JSON or else its folder name."""
    if system is None:
        return SYSTEM_FOLDERS.get(system_name)
    # spelling drifts between versions: "Orin NX 16G", "A100-SXM4-80GB", "AGX Xavier 32GB"
    acc = str(system.get("accelerator_model_name") or "").strip().lower()
    acc = re.sub(r"\s+\d+\s*gb?$", "", re.sub(r"-sxm\d", "-sxm", acc))
    mem = system.get("accelerator_memory_capacity")
    gb = _memory_gb(system.get("host_memory_capacity") if "shared" in str(mem).lower() else mem)
    return (acc, gb) if acc and gb else None


def power_from_logs(run_dir: Path, samples_per_query: int) -> dict:
    """Mean wall power over loadgen's run window and energy per inference, from run_1/spl.txt
    and run_1/mlperf_log_detail.txt (module docstring: how clocks are aligned). Without logs
    every figure is None and power_note says why."""
    spl, detail = run_dir / "spl.txt", run_dir / DETAIL
    none = {"power_mean_w": None, "power_samples": None, "energy_j": None,
            "energy_per_inference_j": None, "profiler": None}
    if not spl.is_file():
        return {**none, "power_note": "no power logs (spl.txt) in this MLPerf result: no power"}
    if not detail.is_file():
        return {**none, "power_note": f"spl.txt without {DETAIL}: no run window, no power"}
    d = read_detail(detail)
    try:
        begin = datetime.strptime(d["power_begin"], _TIME)
        end = datetime.strptime(d["power_end"], _TIME)
        queries = int(d["result_query_count"])
    except (KeyError, ValueError, TypeError) as e:
        return {**none, "power_note": f"{detail}: no usable power_begin/power_end/"
                                      f"result_query_count ({e}): no power"}
    watts, times = [], []
    for line in spl.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split(",")
        try:
            t = datetime.strptime(parts[1], _TIME)
            w = float(parts[3])
        except (IndexError, ValueError):
            continue
        times.append(t)
        if begin < t < end:  # strictly inside, as the submission checker
            watts.append(w)
    if not watts or end <= begin or queries <= 0:
        return {**none, "power_note": "no power sample inside loadgen's run window: no power"}
    if min(times) > begin or max(times) < end:
        return {**none, "power_note": "the analyser's samples do not cover loadgen's whole run "
                                      "window: no power"}
    mean = sum(watts) / len(watts)
    energy = mean * (end - begin).total_seconds()
    return {"power_mean_w": mean, "power_samples": len(watts), "energy_j": energy,
            "energy_per_inference_j": energy / (queries * samples_per_query),
            "profiler": "mlperf-power (wall)",
            "power_note": "wall power of the whole system (MLPerf Power analyser), not GPU "
                          "power; idle not subtracted"}


# --- finding results -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ResultPath:
    root: Path  # DIVISION/SUBMITTER folder (holds results/ and systems/)
    division: str
    submitter: str
    system: str
    benchmark: str
    scenario: str
    summary: Path


def _locate(summary: Path) -> ResultPath | None:
    """Split .../DIV/SUBMITTER/results/SYSTEM/BENCH/SCENARIO/performance/run_N/summary."""
    p = summary.resolve().parts
    try:
        i = len(p) - 1 - p[::-1].index("results")
    except ValueError:
        return None
    rest = p[i + 1:]
    if len(rest) != 6 or rest[3] != "performance" or not rest[4].startswith("run_") or i < 2:
        return None
    return ResultPath(Path(*p[:i]), p[i - 2], p[i - 1], rest[0], rest[1], rest[2], summary)


def mlperf_version(path: Path) -> str | None:
    """vX.Y from the repository folder's name (inference_results_vX.Y), else from loadgen's
    version in the detail log next to the summary."""
    for part in reversed(path.resolve().parts):
        m = re.fullmatch(r"inference_results_(v\d+(?:\.\d+)*)", part)
        if m:
            return m.group(1)
    detail = path.parent / DETAIL
    if detail.is_file():
        m = re.match(r"(\d+\.\d+)", str(read_detail(detail).get("loadgen_version") or ""))
        if m:
            return f"v{m.group(1)}"
    return None


def _run_id(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def collect(path: str | Path) -> Imported:
    """Every performance result under `path`, parsed, mapped and checked; nothing is written."""
    root = Path(path)
    if not root.exists():
        raise EdgerobError(f"{root} does not exist")
    found = [root] if root.is_file() else sorted(root.rglob(SUMMARY))
    imp = Imported()
    if not found:
        imp.problems.append(f"{root}: no {SUMMARY} under this folder")
    for summary in found:
        try:
            rec = _one_result(summary)
        except EdgerobError as e:
            imp.problems.append(str(e))
            continue
        except OSError as e:
            imp.problems.append(f"{summary}: cannot read ({e.strerror})")
            continue
        if rec is None:
            continue
        if rec["measurement"] is None:
            imp.invalid.append(f"{summary}: result is {rec['validity']}, skipped")
        else:
            imp.results.append(rec)
    return imp


def _one_result(summary: Path) -> dict | None:
    loc = _locate(summary)
    if loc is None:
        raise EdgerobError(f"{summary}: not in an MLPerf results layout (DIVISION/SUBMITTER/"
                           f"results/SYSTEM/BENCHMARK/SCENARIO/performance/run_N/)")
    if loc.benchmark not in MODELS:
        return None  # other benchmarks (bert, retinanet ...) are not ours
    kv = parse_summary(summary.read_text(encoding="utf-8", errors="replace"), summary)
    if kv["Scenario"] != loc.scenario:
        raise EdgerobError(f"{summary}: says scenario {kv['Scenario']} in folder {loc.scenario}")
    validity = kv["Result is"]
    if validity != "VALID":
        return {"validity": validity, "measurement": None}
    system = read_system(loc.root / "systems" / f"{loc.system}.json")
    per_node = (system or {}).get("accelerators_per_node", 1)
    if str(per_node) != "1" or str((system or {}).get("number_of_nodes", 1)) != "1":
        raise EdgerobError(f"{summary}: {per_node} accelerators per node: edgerob's targets "
                           f"are single devices, so multi-accelerator results are not imported")
    key = device_key(loc.system, system)
    if key not in TARGET_MAP:
        why = (f"accelerator {key[0]!r} with {key[1]} GB" if key else
               "no systems/%s.json and an unknown system folder" % loc.system)
        raise EdgerobError(f"{summary}: {why} is not in edgerob.fleet.mlperf.TARGET_MAP; add it "
                           f"with its catalog target")
    target = TARGET_MAP[key]
    version = mlperf_version(summary)
    if version is None:
        raise EdgerobError(f"{summary}: no MLPerf version (not under inference_results_vX.Y "
                           f"and no loadgen_version in {DETAIL})")
    sc = kv["Scenario"]
    spq = int(float(kv["samples_per_query"]))
    framework = str((system or {}).get("framework") or "")
    runtime = "tensorrt" if "TensorRT" in framework or "_TRT" in loc.system else "other"
    uses_dla = sc == "Offline" and key[0] in DLA_BOARDS
    m = {"runtime": runtime, "precision": PRECISION, "batch_size": spq, "input_set": "clean",
         "n_samples": None, "iterations": None, "accuracy": None, "latencies_ms": None}
    for col, k in _NS_KEYS.items():
        m[col] = float(kv[k]) / 1e6 if sc != "Offline" else None
    tput_key = {"SingleStream": "QPS w/ loadgen overhead", "Offline": "Samples per second"}
    m["throughput_sps"] = float(kv[tput_key[sc]]) if sc in tput_key else None
    m.update(power_from_logs(summary.parent, spq))
    detail = read_detail(summary.parent / DETAIL) if (summary.parent / DETAIL).is_file() else {}
    m["iterations"] = detail.get("result_query_count")
    m["fingerprint"] = {"mlperf_summary": kv, "system": system,
                        "source_file": str(summary.resolve())}
    run_id = _run_id("mlperf", version, loc.division, loc.submitter, loc.system, loc.benchmark,
                     sc)
    m["run_id"], m["target"] = run_id, target
    run = {"run_id": run_id, "target": target, "profile": f"mlperf-{loc.division}",
           "model": MODELS[loc.benchmark], "model_sha256": None, "runtime": runtime,
           "host": str((system or {}).get("system_name") or loc.system), "status": "done",
           "started_at": str(detail.get("test_datetime") or f"mlperf {version}"),
           "finished_at": None,
           "versions": json.dumps({"framework": framework or None,
                                   "software": (system or {}).get("other_software_stack"),
                                   "loadgen": detail.get("loadgen_version"),
                                   "submitter": loc.submitter,
                                   "hw_notes": (system or {}).get("hw_notes")}),
           "resume_key": None, "source": "mlperf", "source_path": str(summary.resolve()),
           "mlperf_version": version, "scenario": sc, "system_name": loc.system,
           "accelerators": "GPU + 2 DLA" if uses_dla else "GPU"}
    return {"validity": validity, "run": run, "measurement": m}


def ingest_mlperf(path: str | Path, store, on_skip=None) -> dict:
    """Store every VALID ResNet-50 performance result under `path` in one transaction; results
    already stored (same version, division, submitter, system, benchmark, scenario) are skipped.
    `on_skip(line)` is called once per file not imported (unreadable or INVALID), before
    anything is written. EdgerobError (nothing written) when nothing could be imported."""
    imp = collect(path)
    for line in imp.problems + imp.invalid:
        if on_skip:
            on_skip(line)
    if not imp.results:
        lines = imp.problems + imp.invalid
        raise EdgerobError(f"nothing imported from {path}: {len(imp.problems)} file(s) "
                           f"unreadable, {len(imp.invalid)} INVALID"
                           + (f" ({lines[0]})" if len(lines) == 1 else ""))
    added = skipped = 0
    with store.engine.begin() as c:  # all or nothing
        have = {r[0] for r in c.execute(sa.select(runs.c.run_id).where(
            runs.c.run_id.in_([r["run"]["run_id"] for r in imp.results])))}
        for rec in imp.results:
            if rec["run"]["run_id"] in have:
                skipped += 1
                continue
            have.add(rec["run"]["run_id"])
            m = {**rec["measurement"], "created_at": now()}
            m["fingerprint"] = json.dumps(m["fingerprint"])
            c.execute(runs.insert().values(**rec["run"]))
            c.execute(measurements.insert().values(**m))
            added += 1
    return {"imported": added, "already_stored": skipped, "invalid": imp.invalid,
            "problems": imp.problems,
            "targets": sorted({r["run"]["target"] for r in imp.results})}
