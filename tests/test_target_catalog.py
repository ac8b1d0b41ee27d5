"""The shipped device catalog (targets/*.yaml): every entry loads, the families the design names
are present, profilers and runtimes fit the device, spec sheets and prices are filled in with a
source comment on every number, `detect` recognises each board without collisions, and the
per-mode figures (`modes:`) are those of NVIDIA's nvpmodel.conf files (tests/data/jetson/nvpmodel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edgerob
from edgerob.catalog import list_names
from edgerob.catalog.targets import load_target, matching_targets
from edgerob.device.power_mode import conf_modes

CATALOG = Path(edgerob.__file__).resolve().parent.parent / "targets"

ORINS = ["jetson-orin-nano-4gb", "jetson-orin-nano-8gb", "jetson-orin-nx-8gb",
         "jetson-orin-nx-16gb", "jetson-agx-orin-32gb", "jetson-agx-orin-64gb",
         "jetson-agx-orin-devkit-32gb"]
JETSONS = ["jetson-nano", "jetson-xavier-nx", "jetson-agx-xavier", *ORINS]
GPUS = ["rtx-4090", "l4", "a100-sxm", "a100-pcie", "h100-sxm", "h100-pcie"]
FAMILIES = ["cpu", *JETSONS, *GPUS]

# A price left null because no dated public source for it could be verified; each YAML says
# why. The test below fails once one of these gains a price, so the list only ever shrinks.
UNPRICED = {"jetson-agx-xavier", "jetson-agx-orin-32gb", "jetson-orin-nx-8gb",
            "jetson-orin-nx-16gb", "a100-pcie", "h100-pcie"}

# Realistic /proc/device-tree/model strings (trailing NUL stripped, as machine_facts does), with
# MemTotal in GiB: a few percent under the nominal size (firmware carve-outs).
DEVICE_MODELS = {
    "jetson-nano": [("NVIDIA Jetson Nano Developer Kit", 3.9),
                    ("NVIDIA Jetson Nano 2GB Developer Kit", 1.9)],
    "jetson-xavier-nx": [("NVIDIA Jetson Xavier NX Developer Kit", 7.6)],
    # L4T 32.2 and later print "Jetson-AGX" on the AGX Xavier developer kit
    "jetson-agx-xavier": [("Jetson-AGX", 31.0)],
    "jetson-orin-nano-8gb": [("NVIDIA Jetson Orin Nano Developer Kit", 7.4),
                             ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                              7.4),
                             ("Jetson Orin Nano Super Developer Kit", 7.4)],
    "jetson-orin-nano-4gb": [("NVIDIA Jetson Orin Nano Developer Kit", 3.4)],
    "jetson-orin-nx-16gb": [("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15.3)],
    "jetson-orin-nx-8gb": [("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7.4)],
    "jetson-agx-orin-64gb": [("NVIDIA Jetson AGX Orin Developer Kit", 61.4),
                             ("Jetson AGX Orin", 61.4)],
    "jetson-agx-orin-32gb": [("Jetson AGX Orin", 30.6)],
    "jetson-agx-orin-devkit-32gb": [("NVIDIA Jetson AGX Orin Developer Kit", 30.6)],
}
# The module part number each board's device-tree compatible carries (the half after '+'),
# where its entry lists one; the 32 GB AGX Orin modules can be told apart only by it
# (/work/shared/samples/jetson/SOURCES.md, jetson-stats' module table).
MODULES = {"jetson-xavier-nx": "p3668-0000", "jetson-orin-nano-8gb": "p3767-0005",
           "jetson-orin-nano-4gb": "p3767-0004", "jetson-orin-nx-16gb": "p3767-0000",
           "jetson-orin-nx-8gb": "p3767-0001", "jetson-agx-orin-64gb": "p3701-0005",
           "jetson-agx-orin-32gb": "p3701-0004", "jetson-agx-orin-devkit-32gb": "p3701-0000"}

# NVML device names with total memory (GiB).
GPU_NAMES = {
    "rtx-4090": [("NVIDIA GeForce RTX 4090", 23.99)],
    "l4": [("NVIDIA L4", 22.5)],
    "a100-sxm": [("NVIDIA A100-SXM4-80GB", 80.0)],
    "a100-pcie": [("NVIDIA A100 80GB PCIe", 80.0)],
    "h100-sxm": [("NVIDIA H100 80GB HBM3", 79.6)],
    "h100-pcie": [("NVIDIA H100 PCIe", 79.6)],
}


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    """Run from an empty folder, so only the shipped catalog is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _specific(facts: dict) -> list[str]:
    """Names of the non-generic targets that match `facts`, most specific first."""
    return [t.name for t in matching_targets(facts) if t.detect is not None]


# --- loading and families --------------------------------------------------------------------

def test_required_families_present(shipped_only):
    names = set(list_names("targets"))
    assert set(FAMILIES) <= names, f"missing: {sorted(set(FAMILIES) - names)}"


@pytest.mark.parametrize("name", FAMILIES)
def test_every_target_loads(shipped_only, name):
    target = load_target(name)
    assert target.name == name
    assert target.host == "local"
    assert (CATALOG / f"{name}.yaml").is_file()


def test_every_shipped_file_loads(shipped_only):
    for path in sorted(CATALOG.glob("*.yaml")):
        assert load_target(path.stem).name == path.stem


# --- runtimes and profilers ------------------------------------------------------------------

@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_devices_prefer_tensorrt_with_onnxruntime_fallback(shipped_only, name):
    target = load_target(name)
    assert target.runtime == "tensorrt"
    assert target.fallback_runtimes == ["onnxruntime"]


@pytest.mark.parametrize("name", JETSONS)
def test_jetsons_use_tegrastats(shipped_only, name):
    target = load_target(name)
    assert target.profiler == "tegrastats"
    assert target.profiler_options == {"interval_s": 0.1}
    assert target.power_modes, "a Jetson lists its nvpmodel power modes"
    assert target.detect is not None and target.detect.device_model
    assert target.detect.gpu_name is None


@pytest.mark.parametrize("name", GPUS)
def test_gpus_use_nvml(shipped_only, name):
    target = load_target(name)
    assert target.profiler == "nvml"
    # no gpu_index: the sensor follows the runtime's device (same physical GPU, by UUID/PCI id)
    assert target.profiler_options == {"interval_s": 0.05}
    assert target.detect is not None and target.detect.gpu_name
    assert target.detect.device_model is None


# --- specs and prices ------------------------------------------------------------------------

# No data sheet gives the power rating of the developer-kit module p3701-0000: its TDP stays
# null rather than borrowing the 64GB module's 60 W.
TDP_UNSOURCED = {"jetson-agx-orin-devkit-32gb"}


@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_specs_filled_in(shipped_only, name):
    specs = load_target(name).specs
    assert (specs.tdp_w is None) == (name in TDP_UNSOURCED)
    assert specs.memory_bandwidth_gbs is not None
    assert specs.memory_gb is not None
    assert specs.peak_tops, "at least one peak throughput figure"
    tops = specs.peak_tops
    # dense figures: lower precision is never slower on the same device
    if "fp32" in tops and "fp16" in tops:
        assert tops["fp32"] <= tops["fp16"]
    if "fp16" in tops and "int8" in tops:
        assert tops["fp16"] <= tops["int8"]
    if "tf32" in tops and "fp16" in tops:
        assert tops["tf32"] <= tops["fp16"]


@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_priced(shipped_only, name):
    price = load_target(name).price
    has_price = price.purchase_usd is not None or price.cloud_usd_per_h is not None
    if name in UNPRICED:
        assert not has_price, f"{name} now has a price: remove it from UNPRICED"
    else:
        assert has_price, f"{name} has neither a purchase nor a cloud price"


@pytest.mark.parametrize("name", ["l4", "a100-sxm", "h100-sxm"])
def test_data_centre_gpus_have_cloud_price(shipped_only, name):
    assert load_target(name).price.cloud_usd_per_h is not None


def test_cpu_stays_generic(shipped_only):
    target = load_target("cpu")
    assert target.detect is None
    assert target.specs.tdp_w is None and target.price.purchase_usd is None


_NUMBER = re.compile(r"\d")


def _unsourced_lines(text: str, nulls: bool = True) -> list[str]:
    """Lines under specs:/price:/modes: whose value is a number (or, with `nulls`, null: the comment
    then says why) and which carry no `#` comment on the line itself nor directly above it."""
    bad = []
    section = None
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            previous = ""
            continue
        if not line[0].isspace() and not stripped.startswith("#"):
            section = stripped.split(":", 1)[0]
        body, _, comment = line.partition("#")
        if section in ("specs", "price", "modes") and ":" in body and line[0].isspace():
            value = body.split(":", 1)[1].strip()
            if value and (_NUMBER.search(value) or (nulls and value == "null")):
                sourced = comment.strip() or previous.startswith("#")
                if not sourced:
                    bad.append(line)
        previous = stripped
    return bad


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_figure_has_a_source_comment(path):
    # cpu.yaml describes an arbitrary host: its header explains why all of its figures are null
    bad = _unsourced_lines(path.read_text(encoding="utf-8"), nulls=path.stem != "cpu")
    assert not bad, f"{path.name}: figures without a source comment:\n" + "\n".join(bad)


def test_source_comment_check_catches_a_bare_number():
    text = ("specs:\n  peak_tops:\n    int8: 40\n  tdp_w: 15\n  memory_gb: 8  # data sheet\n"
            "price:\n  # launch price\n  purchase_usd: 99\n  cloud_usd_per_h: null\n"
            "modes:\n  15W: {gpu_max_mhz: 612}  # conf\n  7W: {gpu_max_mhz: 408}\n"
            "detect:\n  device_model: Orin Nano\n")
    assert _unsourced_lines(text) == ["    int8: 40", "  tdp_w: 15", "  cloud_usd_per_h: null",
                                      "  7W: {gpu_max_mhz: 408}"]
    assert _unsourced_lines(text, nulls=False) == ["    int8: 40", "  tdp_w: 15",
                                                   "  7W: {gpu_max_mhz: 408}"]


# --- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,model,gib",
                         [(n, m, g) for n, models in DEVICE_MODELS.items() for m, g in models])
def test_jetson_detected_without_collision(shipped_only, name, model, gib):
    facts = {"device_model": model, "memory_gib": gib, "gpus": [], "module": MODULES.get(name)}
    assert matching_targets(facts)[0].name == name
    assert _specific(facts) == [name], f"{model!r} matched {_specific(facts)}"


@pytest.mark.parametrize("name,gpu,gib",
                         [(n, g, m) for n, gpus in GPU_NAMES.items() for g, m in gpus])
def test_gpu_detected_without_collision(shipped_only, name, gpu, gib):
    facts = {"device_model": None, "gpus": [{"name": gpu, "memory_gib": gib}]}
    assert matching_targets(facts)[0].name == name
    assert _specific(facts) == [name], f"{gpu!r} matched {_specific(facts)}"


@pytest.mark.parametrize("gpu,gib", [("NVIDIA A100-SXM4-40GB", 40.0),
                                     ("NVIDIA A100-PCIE-40GB", 40.0),
                                     ("NVIDIA H100 NVL", 93.6)])
def test_variants_without_an_entry_match_nothing(shipped_only, gpu, gib):
    # their bandwidth and TDP differ from every entry's: no entry's figures may be borrowed
    assert _specific({"device_model": None, "gpus": [{"name": gpu, "memory_gib": gib}]}) == []


def test_memory_unknown_matches_no_sized_variant(shipped_only):
    # an Orin whose MemTotal could not be read is not assumed to be any one module
    assert _specific({"device_model": "Jetson AGX Orin", "memory_gib": None, "gpus": []}) == []


def test_every_device_has_a_detection_case():
    assert set(DEVICE_MODELS) == set(JETSONS)
    assert set(GPU_NAMES) == set(GPUS)


def test_unknown_machine_falls_back_to_cpu(shipped_only):
    facts = {"device_model": "Raspberry Pi 5 Model B Rev 1.0", "memory_gib": 7.8,
             "gpu_names": ["NVIDIA T4"]}
    assert _specific(facts) == []
    assert matching_targets(facts)[0].name == "cpu"


def test_l40s_not_taken_for_l4(shipped_only):
    assert "l4" not in _specific({"device_model": None, "gpu_names": ["NVIDIA L40S"]})


# --- one definition of peak figures: dense, GPU only, tensor cores, at the tdp_w mode -----------

# GPU-only dense INT8 from NVIDIA data sheets (sparse halved, DLAs left out): REFERENCES.md
# "Peak figures". The DLA-inclusive or sparse headline figures (AGX Orin 275/137.5, Orin NX 157/78,
# AGX Xavier 32) must not reappear.
GPU_ONLY_DENSE_INT8 = {"jetson-agx-orin-64gb": 85, "jetson-orin-nx-16gb": 38.5,
                       "jetson-orin-nano-8gb": 33, "jetson-orin-nano-4gb": 10,
                       "jetson-agx-xavier": 22}
TENSOR_CORE_JETSONS = [n for n in JETSONS if n != "jetson-nano"]  # Maxwell: no tensor cores


@pytest.mark.parametrize("name,int8", GPU_ONLY_DENSE_INT8.items())
def test_jetson_int8_is_the_gpu_only_dense_figure(shipped_only, name, int8):
    assert load_target(name).specs.peak_tops["int8"] == pytest.approx(int8)


@pytest.mark.parametrize("name", TENSOR_CORE_JETSONS)
def test_jetson_fp16_and_int8_are_tensor_core_rates(shipped_only, name):
    tops = load_target(name).specs.peak_tops
    # Volta/Ampere tensor cores run dense INT8 at twice their FP16 rate (AGX Orin 85 / 42.5,
    # AGX Xavier 22 / 11); FP16 on tensor cores is ~8x the CUDA-core FP32 rate, where the
    # CUDA-core FP16 rate (which the catalog listed before) is only 2x
    assert tops["int8"] == pytest.approx(2 * tops["fp16"], rel=0.01)
    assert tops["fp16"] >= 4 * tops["fp32"]


@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_memory_ranges_hold_the_nominal_size_only(shipped_only, name):
    t = load_target(name)
    lo, hi = t.detect.memory_gib_min, t.detect.memory_gib_max
    if lo is None and hi is None:  # one size only; collisions are tested with detection above
        return
    size = t.specs.memory_gb
    # the OS reports 90-100% of the nominal size; the next size down or up (half, double) is out
    for reported in (0.9 * size, 0.97 * size, size):
        assert lo <= reported < hi, (reported, lo, hi)
    assert not lo <= size / 2 < hi and not lo <= 0.9 * 2 * size < hi


@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_every_price_is_dated_and_says_what_it_buys(shipped_only, name):
    p = load_target(name).price
    if p.purchase_usd is not None:
        assert p.purchase_as_of and p.purchase_kind in ("kit", "module", "card")
    if p.cloud_usd_per_h is not None:
        assert p.cloud_as_of and p.cloud_instance


# --- per-mode figures, against NVIDIA's nvpmodel.conf files ----------------------------------

# Excerpts of NVIDIA's nvpmodel.conf files (each names its source repository, path and commit):
# every POWER_MODEL header with its TPC_PG_MASK and GPU MAX_FREQ lines.
NVPMODEL = Path(__file__).parent / "data/jetson/nvpmodel"
# The files each entry's power_modes and modes come from; where two name a mode, the first
# gives its figures (the one matching the JetPack the entry's peak figures are for).
MODE_CONFS = {
    "jetson-agx-orin-32gb": ["nvpmodel_p3701_0004.conf"],
    "jetson-agx-orin-devkit-32gb": ["nvpmodel_p3701_0000.conf"],
    "jetson-orin-nx-16gb": ["nvpmodel_p3767_0000_super.conf", "nvpmodel_p3767_0000.conf"],
    "jetson-orin-nx-8gb": ["nvpmodel_p3767_0001.conf", "nvpmodel_p3767_0001_super.conf"],
    "jetson-orin-nano-8gb": ["nvpmodel_p3767_0003_super.conf", "nvpmodel_p3767_0003.conf"],
    "jetson-orin-nano-4gb": ["nvpmodel_p3767_0004.conf", "nvpmodel_p3767_0004_super.conf"],
    "jetson-agx-xavier": ["nvpmodel_t194.conf"],
    "jetson-xavier-nx": ["nvpmodel_t194_p3668.conf"],
}
# MAX_FREQ -1 leaves the GPU uncapped: its own max, from the data sheet the entry cites (MHz).
# An uncapped mode not listed here must have no gpu_max_mhz.
UNCAPPED_MHZ = {
    ("jetson-agx-orin-32gb", "MAXN"): 930, ("jetson-agx-orin-devkit-32gb", "MAXN"): 1300,
    ("jetson-orin-nx-16gb", "MAXN"): 918, ("jetson-orin-nx-16gb", "MAXN_SUPER"): 1173,
    ("jetson-orin-nx-8gb", "MAXN"): 765, ("jetson-orin-nano-8gb", "MAXN_SUPER"): 1020,
    ("jetson-orin-nano-4gb", "10W"): 625, ("jetson-agx-xavier", "MAXN"): 1377,
}
# CUDA cores (data sheets), cores per TPC (2 SMs of 128 on Ampere, of 64 on Volta) and the TPC
# slots TPC_PG_MASK covers (8 on Orin's GA10B, 4 on Xavier's GV11B)
GPUS_OF = {"jetson-agx-orin-32gb": (1792, 256, 8), "jetson-agx-orin-devkit-32gb": (2048, 256, 8),
           "jetson-orin-nx-16gb": (1024, 256, 8), "jetson-orin-nx-8gb": (1024, 256, 8),
           "jetson-orin-nano-8gb": (1024, 256, 8), "jetson-orin-nano-4gb": (512, 256, 8),
           "jetson-agx-xavier": (512, 128, 4), "jetson-xavier-nx": (384, 128, 4)}
_CONF_FIGURES = re.compile(r"NAME=(\S+?)\s*>\s*\nTPC_POWER_GATING TPC_PG_MASK (\d+)\s*\n"
                           r"GPU MAX_FREQ (-?\d+)")


def _conf_figures(conf: str) -> dict[str, tuple[int, int]]:
    """Mode name -> (TPC_PG_MASK, GPU MAX_FREQ in Hz) from a recorded conf excerpt."""
    text = (NVPMODEL / f"{conf}.excerpt").read_text()
    found = {name: (int(mask), int(hz)) for name, mask, hz in _CONF_FIGURES.findall(text)}
    assert set(found) == set(conf_modes(text).values()), f"{conf}: a mode without its lines"
    return found


def _mode_mismatches(target) -> list[str]:
    """Where `target`'s power_modes and modes differ from its nvpmodel.conf files."""
    figures = {}
    for conf in reversed(MODE_CONFS[target.name]):  # the first file to name a mode wins
        figures.update(_conf_figures(conf))
    bad = []
    if sorted(target.power_modes) != sorted(figures):
        bad.append(f"power_modes {target.power_modes} != the confs' {sorted(figures)}")
    if set(target.modes) != set(figures):
        bad.append(f"modes {sorted(target.modes)} != the confs' {sorted(figures)}")
    slots = GPUS_OF[target.name][2]
    for mode, (mask, hz) in figures.items():
        named = re.fullmatch(r"(?:MODE_)?(\d+)W(_\w+)?", mode)  # 15W, MODE_30W_ALL, 7W_AI
        want = (hz / 1e6 if hz != -1 else UNCAPPED_MHZ.get((target.name, mode)),
                slots - bin(mask).count("1"), int(named.group(1)) if named else None)
        spec = target.modes.get(mode)
        got = (spec.gpu_max_mhz, spec.gpu_tpcs, spec.power_w) if spec else None
        if got != want:
            bad.append(f"{mode}: (gpu_max_mhz, gpu_tpcs, power_w) {got} != the conf's {want}")
    return bad


@pytest.mark.parametrize("name", JETSONS)
def test_mode_figures_are_the_nvpmodel_confs(shipped_only, name):
    target = load_target(name)
    if name not in MODE_CONFS:  # no NVIDIA conf read for it: no figures rather than borrowed ones
        assert not target.modes and target.peak_mode is None
        return
    assert _mode_mismatches(target) == []


@pytest.mark.parametrize("name", MODE_CONFS)
def test_peak_mode_is_the_mode_of_the_peak_figures(shipped_only, name):
    target = load_target(name)
    cores, per_tpc, _ = GPUS_OF[name]
    peak = target.modes[target.peak_mode]
    # the peak mode runs the whole GPU at the clock of the CUDA-core FP32 figure
    assert peak.gpu_tpcs * per_tpc == cores
    assert target.specs.peak_tops["fp32"] == pytest.approx(cores * 2 * peak.gpu_max_mhz / 1e6,
                                                           rel=0.01)
    assert target.mode_scale(target.peak_mode) == 1.0
    for mode, spec in target.modes.items():
        if spec.gpu_max_mhz and spec.gpu_max_mhz < peak.gpu_max_mhz:
            assert target.mode_scale(mode) < 1.0, mode


def test_mode_check_catches_a_wrong_entry(shipped_only):
    orin = load_target("jetson-agx-orin-32gb")
    assert _mode_mismatches(orin) == []
    wrong = orin.model_copy(update={"modes": {**orin.modes, "MODE_30W": orin.modes["MODE_40W"]}})
    assert _mode_mismatches(wrong) == [
        "MODE_30W: (gpu_max_mhz, gpu_tpcs, power_w) (816.0, 7, 40.0) != the conf's (612.0, 4, 30)"]
    fewer = orin.model_copy(update={"power_modes": ["MAXN", "MODE_30W"]})
    assert _mode_mismatches(fewer)[0].startswith("power_modes ['MAXN', 'MODE_30W'] != ")
