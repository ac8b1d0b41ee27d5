"""Published results: MLPerf Inference result files as a reference fleet.

Reads a checkout of an MLCommons results repository (inference_results_vX.Y) or any folder
under it, laid out as DIVISION/SUBMITTER/results/SYSTEM/BENCHMARK/SCENARIO/performance/run_1/
with DIVISION/SUBMITTER/systems/SYSTEM.json, and stores each VALID performance result of every
benchmark and scenario as one run (source "mlperf", model "mlperf:BENCHMARK": a benchmark is its
own workload, its samples its own unit) with one measurement. Every stored number is the file's
number; the only conversions are ns -> ms and, labelled so, throughput per accelerator. What the
numbers mean (REFERENCES.md, "MLPerf Inference results"), and the log formats since v0.5 (the
v0.5/v0.7 files spell scenarios "Single Stream"/"Multi Stream" and the mode "Performance"):

- SingleStream: one sample per query (batch_size 1); latency percentiles per query; throughput
  = "QPS w/ loadgen overhead" (samples/s, since a query is one sample). The result line is
  the 90.00 percentile itself; from v2.0 the summary also gives loadgen's early-stopping
  estimate of it, which MLPerf publishes: stored beside it (latency_early_stopping_ms).
- MultiStream from v2.0: 8 samples per query (batch_size 8); latency percentiles per query, the
  result line the 99.00 percentile, the early-stopping p99 estimate beside it; no throughput
  (loadgen reports queries/s, and samples/s would be our arithmetic). Before v2.0 MultiStream
  was another test: the result is "Samples per query", the most streams (samples per query)
  served within a per-query latency bound; batch_size is that number, the per-query latency
  percentiles are stored, and min/max/mean are not (the file gives them per sample only).
- Offline: throughput = "Samples per second"; its latency lines describe one huge query and are
  not stored; batch_size is the file's samples_per_query (the whole run is one query).
- Server: throughput = "Completed samples per second" (the v4.1 result line; earlier result
  lines are "Scheduled samples per second", the rate loadgen issued, kept in the fingerprint);
  latency percentiles per sample (one sample per query, p99 is the bound).
- An Offline folder holding a SingleStream (or MultiStream) log: the Offline result is
  inferred from it as MLPerf's submission checker does (INFERRED_OFFLINE), labelled so in the
  fingerprint (inferred_from, inferred_rule).
- A CPU-only system (no accelerator in its JSON) is a reference-only device named from its
  processors ("ref:2x-intel-xeon-platinum-8380"), the sockets counted as its accelerators.
Offline and Server throughput is the whole system's; divided by its accelerators it is stored
as throughput_per_accelerator_sps.

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

Power mode (measurements.power_mode): MaxQ/MaxP is MLPerf's category, not a device setting, so a
row gets a mode only where its system description (system_name, hw_notes, sw_notes,
power_management) states one: a name from the target's nvpmodel modes (a bare wattage name such
as "15W" only beside "nvpmodel" or "power mode"), or a GPU power limit ("power limit 250 W",
"nvidia-smi -pl 250") as "250W-limit". Else NULL and the reason in the fingerprint: NVIDIA's
Jetson MaxQ runs set a custom nvpmodel mode their harness writes and the system JSONs do not
name, and "TGP 700W" is the board's rating (in the MaxP and MaxQ files alike), not a limit set.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from edgerob.catalog.targets import load_target
from edgerob.errors import EdgerobError
from edgerob.store import measurements, now, runs

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
SCENARIOS = ("SingleStream", "MultiStream", "Offline", "Server")
# v0.5's benchmark folders (mlcommons/inference_results_v0.5 closed/NVIDIA/results/T4x8/: resnet,
# mobilenet, ssd-small, ssd-large, gnmt) -> the names later rounds give the same benchmarks
BENCHMARK_ALIASES = {"resnet": "resnet50", "ssd-small": "ssd-mobilenet",
                     "ssd-large": "ssd-resnet34"}
# (submitter, benchmark) -> precision, where the submitter states it: NVIDIA's closed ResNet-50
# submissions run INT8 (their measurements/ say so). Nothing else in a summary or system JSON
# states precision, so every other result is stored with precision NULL and a note.
PRECISION = {("NVIDIA", "resnet50"): "int8"}
NO_PRECISION = ("precision not stated in the summary or the system description "
                "(edgerob.fleet.mlperf.PRECISION): unknown, not guessed")
_TIME = "%m-%d-%Y %H:%M:%S.%f"  # loadgen's power_begin/end and spl.txt's timestamps
_NS_KEYS = {"latency_min_ms": "Min latency (ns)", "latency_max_ms": "Max latency (ns)",
            "latency_mean_ms": "Mean latency (ns)",
            "latency_p50_ms": "50.00 percentile latency (ns)",
            "latency_p90_ms": "90.00 percentile latency (ns)",
            "latency_p95_ms": "95.00 percentile latency (ns)",
            "latency_p99_ms": "99.00 percentile latency (ns)"}
_PER_SAMPLE = ("latency_min_ms", "latency_max_ms", "latency_mean_ms")  # old MultiStream: no
_OLD_MULTISTREAM = "Samples per query"  # before v2.0, the MultiStream result line
_METRIC = {"SingleStream": "90th percentile latency (ns)",
           "MultiStream": "99th percentile latency (ns)", "Offline": "Samples per second"}
_SERVER = ("Completed samples per second", "Scheduled samples per second")
# An Offline folder may hold a SingleStream or MultiStream log: MLPerf's submission checker
# (mlcommons/inference tools/submission/submission_checker.py, get_inferred_result) then infers
# the Offline result from it, and so does the import, with the checker's own formulas.
INFERRED_OFFLINE = {
    "SingleStream": lambda kv: float(kv["QPS w/o loadgen overhead"]),
    "MultiStream": lambda kv: float(kv["samples_per_query"]) * 1e9 / float(kv["Mean latency (ns)"]),
}
INFERRED_RULE = {
    "SingleStream": "Offline samples/s = SingleStream 'QPS w/o loadgen overhead' (MLPerf "
                    "submission checker, get_inferred_result)",
    "MultiStream": "Offline samples/s = samples_per_query / mean query latency (MLPerf "
                   "submission checker, get_inferred_result)",
}
_EARLY = re.compile(r"Early stopping (\d+)th percentile estimate: (\d+)")


# (accelerator name in systems/SYSTEM.json, memory in GB: the accelerator's, or the host's where
# it is "Shared with host" as on Jetsons) -> the catalog's name for that exact device. Variants
# are different devices (clocks, TDP, bandwidth), so each has its own key and its own entry.
# An accelerator not here is kept as a reference-only device, "ref:" + a slug of its name
# (`describe_device`). AGX Orin with 32 GB is told apart by AGX_ORIN_BY_CORES below.
TARGET_MAP: dict[tuple[str, int], str] = {
    ("nvidia jetson agx orin", 64): "jetson-agx-orin-64gb",
    ("nvidia orin nx", 16): "jetson-orin-nx-16gb",
    ("nvidia jetson xavier nx", 8): "jetson-xavier-nx",
    ("nvidia xavier nx", 8): "jetson-xavier-nx",  # v2.0's spelling
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
# AGX Orin with 32 GB is two devices. The production 32GB module has an 8-core CPU and a
# 1792-core GPU (targets/jetson-agx-orin-32gb.yaml); the 2022-23 developer kit with 32 GB, which
# NVIDIA submitted in v2.0-v3.0, has the 64GB module's 12-core CPU and full 2048-core GPU. The
# system JSON does not describe the GPU, so the CPU core count (`host_processor_core_count`: 12
# in those JSONs, "12-core ... Cortex-A78" in host_processor_model_name) tells them apart. The
# kit (module p3701-0000) is its own catalog device: the 64GB module's CPU and GPU, 32 GB.
AGX_ORIN = ("nvidia jetson agx orin", "nvidia orin")  # v2.0/v2.1 spell it "NVIDIA Orin"
AGX_ORIN_BY_CORES = {12: "jetson-agx-orin-devkit-32gb", 8: "jetson-agx-orin-32gb"}
DEVKIT_NOTE = ("AGX Orin developer kit with 32 GB: 12-core CPU and 2048-core GPU of the 64GB "
               "module (host_processor_core_count 12), stored as jetson-agx-orin-devkit-32gb")
# Systems whose results folder has no systems/SYSTEM.json (e.g. a partial copy): NVIDIA's
# system folder name -> catalog target; each is one accelerator. v2.0-v3.0's Orin was the
# 32 GB developer kit (DEVKIT_NOTE).
SYSTEM_FOLDERS: dict[str, str] = {
    "Orin_TRT": "jetson-agx-orin-devkit-32gb", "Orin_TRT_MaxQ": "jetson-agx-orin-devkit-32gb",
    "Orin_NX_TRT": "jetson-orin-nx-16gb", "Orin_NX_TRT_MaxQ": "jetson-orin-nx-16gb",
    "Xavier_NX_TRT": "jetson-xavier-nx", "Xavier_NX_TRT_MaxQ": "jetson-xavier-nx",
    "AGX_Xavier_TRT": "jetson-agx-xavier", "A100-PCIe-80GBx1_TRT": "a100-pcie",
    "DGX-A100_A100-SXM-80GBx1_TRT": "a100-sxm", "H100-PCIe-80GBx1_TRT": "h100-pcie",
    "DGX-H100_H100-SXM-80GBx1_TRT": "h100-sxm", "L4x1_TRT": "l4", "A30x1_TRT": "a30",
    "A2x1_TRT": "a2", "T4x1_TRT": "t4", "A10x1_TRT": "a10",
}
# Jetsons whose DLAs NVIDIA uses: which benchmarks and scenario run on GPU + both DLAs is in the
# system JSON's hw_notes ("GPU and both DLAs are used in resnet50 and Retinanet, in Offline
# scenario"); without a JSON, ResNet-50 Offline, which every such note from v2.0 to v3.1 lists
DLA_BOARDS = {"nvidia jetson agx orin", "nvidia orin", "nvidia orin nx",
              "nvidia jetson xavier nx", "nvidia xavier nx", "nvidia jetson agx xavier"}
_DLA_NOTE = re.compile(r"both DLAs are used in (.+?),? in (\w+) scenario", re.I)


@dataclass
class Imported:
    """What one ingest found: rows to store and one line per file that was not imported."""

    results: list[dict] = field(default_factory=list)  # {"run": ..., "measurement": ...}
    invalid: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- reading the files ---------------------------------------------------------------------------

def parse_summary(text: str, path: Path | str = SUMMARY) -> dict[str, str]:
    """`key : value` lines of an mlperf_log_summary.txt (the first of a repeated key: old
    MultiStream summaries give per-query percentiles before per-sample ones), the scenario spelt
    as from v1.0 on ("SingleStream"), and loadgen's early-stopping estimates under
    "early_stopping_pNN_ns"; EdgerobError where it is not a whole performance summary."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("*"):
            k, v = line.split(":", 1)
            kv.setdefault(k.strip(), v.strip())
    for pct, ns in _EARLY.findall(text):  # " * Early stopping 90th percentile estimate: N"
        kv.setdefault(f"early_stopping_p{pct}_ns", ns)
    if "Scenario" not in kv:
        raise EdgerobError(f"{path}: not an MLPerf summary (no 'Scenario' line)")
    sc = kv["Scenario"] = kv["Scenario"].replace(" ", "")  # v0.5/v0.7: "Single Stream"
    if sc not in SCENARIOS:
        raise EdgerobError(f"{path}: unknown scenario {sc!r} (known: {', '.join(SCENARIOS)})")
    if kv.get("Mode") not in ("PerformanceOnly", "Performance"):  # "Performance" to v0.7
        raise EdgerobError(f"{path}: mode {kv.get('Mode')!r} is not a performance run")
    need = ["Result is", "samples_per_query"]
    if sc == "Server":
        need += [next((k for k in _SERVER if k in kv), _SERVER[0]), *_NS_KEYS.values()]
    elif sc == "MultiStream" and _OLD_MULTISTREAM in kv:
        need += [_OLD_MULTISTREAM] + [v for k, v in _NS_KEYS.items() if k not in _PER_SAMPLE]
    else:
        need += [_METRIC[sc]] + (list(_NS_KEYS.values()) if sc != "Offline" else [])
    need += ["QPS w/ loadgen overhead"] if sc == "SingleStream" else []
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


def _count(value, default: int) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Device:
    target: str  # catalog target, or "ref:NAME" for an accelerator the catalog lacks
    n_accelerators: int
    engines: str  # runs.accelerators: "GPU", "GPU + 2 DLA", or the accelerator's name
    configuration: str  # runs.configuration, e.g. "MaxQ, GPU + 2 DLA", "MaxP, GPU, Triton"
    note: str | None = None


def _engines(acc: str, raw: str, system: dict, benchmark: str, scenario: str) -> str:
    if acc in DLA_BOARDS:
        m = _DLA_NOTE.search(str(system.get("hw_notes") or ""))
        if m and m.group(2).lower() == scenario.lower():
            used = {b.strip().lower() for b in re.split(r",|\band\b", m.group(1))}
            if benchmark in used:
                return "GPU + 2 DLA"
    return "GPU" if raw.lower().startswith("nvidia") else raw


def describe_device(system_name: str, system: dict | None, benchmark: str,
                    scenario: str, where: Path | str = "") -> Device:
    """The device a result ran on, from systems/SYSTEM.json (else the folder name, SYSTEM_FOLDERS):
    catalog target or reference-only name, accelerator count and configuration. EdgerobError
    where the system has no accelerator or cannot be named."""
    folder = system_name.lower()
    sysname = str((system or {}).get("system_name") or "")
    power = "MaxQ" if "maxq" in folder or "maxq" in sysname.lower() else "MaxP"
    extras = [x for x in ("Triton", "HeteroMultiUse") if x.lower() in folder]
    if system is None:
        if system_name not in SYSTEM_FOLDERS:
            raise EdgerobError(f"{where}: no systems/{system_name}.json and an unknown system "
                               f"folder (edgerob.fleet.mlperf.SYSTEM_FOLDERS): no device")
        target = SYSTEM_FOLDERS[system_name]
        dla = target.startswith("jetson-") and scenario == "Offline" and benchmark == "resnet50"
        engines = "GPU + 2 DLA" if dla else "GPU"
        return Device(target, 1, engines, ", ".join([power, engines, *extras]),
                      DEVKIT_NOTE if system_name.startswith("Orin_TRT") else None)
    raw = str(system.get("accelerator_model_name") or "").strip()
    n = _count(system.get("accelerators_per_node"), 1)
    nodes = _count(system.get("number_of_nodes"), 1)
    if not raw or raw.upper() == "N/A" or n == 0:  # a CPU-only system: its processors
        cpu = str(system.get("host_processor_model_name") or "").strip()
        sockets = _count(system.get("host_processors_per_node"), 1)
        if not cpu or not sockets or nodes is None:
            raise EdgerobError(f"{where}: neither an accelerator nor a host processor named in "
                               f"systems/{system_name}.json: no device")
        name = re.sub(r"\(r\)|\(tm\)|\bcpu\b|@.*$", "", cpu, flags=re.I)
        return Device("ref:" + _slug(f"{sockets}x {name}"), sockets * nodes, "CPU",
                      ", ".join([power, "CPU", *extras]),
                      f"CPU-only system: {sockets} x {cpu} per node, counted as the "
                      f"accelerators")
    if n is None or nodes is None:
        raise EdgerobError(f"{where}: accelerators_per_node/number_of_nodes in systems/"
                           f"{system_name}.json are not numbers")
    mig = re.search(r"\((\S+) MIG\)", raw)  # "NVIDIA A30 (1x1g.6gb MIG)": a MIG slice
    extras = ([f"MIG {mig.group(1)}"] if mig else []) + extras
    base = re.sub(r"\s*\(.*\)", "", raw)
    # spelling drifts between versions: "Orin NX 16G", "A100-SXM4-80GB", "AGX Xavier 32GB"
    acc = re.sub(r"\s+\d+\s*gb?$", "", re.sub(r"-sxm\d", "-sxm", base.lower()))
    mem = system.get("accelerator_memory_capacity")
    shared = "shared" in str(mem).lower()
    gb = _memory_gb(system.get("host_memory_capacity") if shared else mem)
    note = None
    if acc in AGX_ORIN and gb == 32:
        cores = _count(system.get("host_processor_core_count"), 0)
        target = AGX_ORIN_BY_CORES.get(cores)
        note = DEVKIT_NOTE if cores == 12 else None
    else:
        target = TARGET_MAP.get((acc, gb))
    if target is None:  # kept as a reference-only device: results need no spec sheet
        target = "ref:" + _slug(base + (f" {gb}gb" if shared and gb else ""))
    engines = _engines(acc, base, system, benchmark, scenario)
    return Device(target, n * nodes, engines, ", ".join([power, engines, *extras]), note)


MODE_FIELDS = ("system_name", "hw_notes", "sw_notes", "power_management")
_LIMIT = re.compile(r"power[ -]limit(?:ed)?(?: of| to| at|:)?\s*(\d+(?:\.\d+)?)\s*W\b"
                    r"|(\d+(?:\.\d+)?)\s*W\s+power[ -]limit|nvidia-smi\b[^|]*?\s-pl\s+"
                    r"(\d+(?:\.\d+)?)", re.I)
_MODE_CONTEXT = re.compile(r"nvpmodel|power[ _-]mode", re.I)


def stated_power_mode(system: dict | None, target: str) -> tuple[str | None, str]:
    """The power mode a system description states for `target` (module docstring), and where
    it says so; (None, reason) where it states none or several."""
    text = " | ".join(str((system or {}).get(k) or "") for k in MODE_FIELDS)
    found: set[str] = set()
    try:
        names = [] if target.startswith("ref:") else load_target(target).power_modes
    except EdgerobError:
        names = []
    for name in names:
        if re.fullmatch(r"\d+W", name) and not _MODE_CONTEXT.search(text):
            continue  # "30W" alone may be a power supply's rating, not a mode
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.I):
            found.add(name)
    found |= {f"{float(next(g for g in m.groups() if g)):g}W-limit"
              for m in _LIMIT.finditer(text)}
    if len(found) == 1:
        mode = found.pop()
        return mode, f"stated in the system description ({', '.join(MODE_FIELDS)})"
    if found:
        return None, f"the system description names several modes ({', '.join(sorted(found))})"
    return None, (f"the system description ({', '.join(MODE_FIELDS)}) states no power mode or "
                  f"power limit; MaxQ/MaxP is MLPerf's category, not a mode")


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
    kv = parse_summary(summary.read_text(encoding="utf-8", errors="replace"), summary)
    inferred = None
    if kv["Scenario"] != loc.scenario:
        if loc.scenario != "Offline" or kv["Scenario"] not in INFERRED_OFFLINE:
            raise EdgerobError(f"{summary}: says scenario {kv['Scenario']} in folder "
                               f"{loc.scenario}")
        inferred = kv["Scenario"]  # an Offline result inferred from it (INFERRED_OFFLINE)
    validity = kv["Result is"]
    if validity != "VALID":
        return {"validity": validity, "measurement": None}
    benchmark = BENCHMARK_ALIASES.get(loc.benchmark, loc.benchmark)
    sc = loc.scenario
    system = read_system(loc.root / "systems" / f"{loc.system}.json")
    dev = describe_device(loc.system, system, benchmark, sc, summary)
    version = mlperf_version(summary)
    if version is None:
        raise EdgerobError(f"{summary}: no MLPerf version (not under inference_results_vX.Y "
                           f"and no loadgen_version in {DETAIL})")
    spq = int(float(kv["samples_per_query"]))
    framework = str((system or {}).get("framework") or "")
    runtime = "tensorrt" if "TensorRT" in framework or "_TRT" in loc.system else "other"
    precision = PRECISION.get((loc.submitter, benchmark))
    m = {"runtime": runtime, "precision": precision, "batch_size": spq, "input_set": "clean",
         "precision_note": None if precision else NO_PRECISION,
         "n_samples": None, "iterations": None, "accuracy": None, "latencies_ms": None}
    old_ms = kv["Scenario"] == "MultiStream" and _OLD_MULTISTREAM in kv
    for col, k in _NS_KEYS.items():
        stored = sc != "Offline" and not (old_ms and col in _PER_SAMPLE)
        m[col] = float(kv[k]) / 1e6 if stored else None
    pct = {"SingleStream": "90", "MultiStream": "99"}.get(sc)
    es = kv.get(f"early_stopping_p{pct}_ns")
    m["latency_early_stopping_ms"] = float(es) / 1e6 if es else None
    tput_key = {"SingleStream": "QPS w/ loadgen overhead", "Offline": "Samples per second",
                "Server": next((k for k in _SERVER if k in kv), None)}.get(sc)
    m["throughput_sps"] = float(kv[tput_key]) if tput_key and not inferred else None
    if inferred:
        try:
            m["throughput_sps"] = INFERRED_OFFLINE[inferred](kv)
        except (KeyError, ValueError, ZeroDivisionError):
            raise EdgerobError(f"{summary}: a {inferred} log in an Offline folder, but its "
                               f"lines do not give the Offline result ({INFERRED_RULE[inferred]})"
                               ) from None
    m["throughput_per_accelerator_sps"] = (m["throughput_sps"] / dev.n_accelerators
                                           if sc in ("Offline", "Server") else None)
    m.update(power_from_logs(summary.parent, spq))
    detail = read_detail(summary.parent / DETAIL) if (summary.parent / DETAIL).is_file() else {}
    m["iterations"] = detail.get("result_query_count")
    mode, why = stated_power_mode(system, dev.target)
    m["power_mode"] = mode
    m["fingerprint"] = {"mlperf_summary": kv, "system": system,
                        "source_file": str(summary.resolve()),
                        "power_mode_facts": {"source": why} if mode else {"reason": why},
                        **({"inferred_from": inferred, "inferred_rule": INFERRED_RULE[inferred]}
                           if inferred else {})}
    run_id = _run_id("mlperf", version, loc.division, loc.submitter, loc.system, loc.benchmark,
                     sc)
    m["run_id"], m["target"] = run_id, dev.target
    run = {"run_id": run_id, "target": dev.target, "profile": f"mlperf-{loc.division}",
           "model": f"mlperf:{benchmark}", "model_sha256": None, "runtime": runtime,
           "host": str((system or {}).get("system_name") or loc.system), "status": "done",
           "started_at": str(detail.get("test_datetime") or f"mlperf {version}"),
           "finished_at": None,
           "versions": json.dumps({"framework": framework or None,
                                   "software": (system or {}).get("other_software_stack"),
                                   "loadgen": detail.get("loadgen_version"),
                                   "submitter": loc.submitter,
                                   "hw_notes": (system or {}).get("hw_notes"),
                                   "device_note": dev.note}),
           "resume_key": None, "source": "mlperf", "source_path": str(summary.resolve()),
           "mlperf_version": version, "scenario": sc, "system_name": loc.system,
           "accelerators": dev.engines, "n_accelerators": dev.n_accelerators,
           "configuration": dev.configuration}
    return {"validity": validity, "run": run, "measurement": m}


def ingest_mlperf(path: str | Path, store, on_skip=None) -> dict:
    """Store every VALID performance result under `path` in one transaction; results
    already stored (same version, division, submitter, system, benchmark, scenario) are skipped.
    `on_skip(line)` is called once per file not imported (unreadable, no device, INVALID), before
    anything is written. EdgerobError (nothing written) when nothing could be imported."""
    imp = collect(path)
    for line in imp.problems + imp.invalid:
        if on_skip:
            on_skip(line)
    if not imp.results:
        lines = imp.problems + imp.invalid
        raise EdgerobError(f"nothing imported from {path}: {len(imp.problems)} file(s) "
                           f"not imported, {len(imp.invalid)} INVALID"
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
