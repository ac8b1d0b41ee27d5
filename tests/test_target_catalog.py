"""The shipped device catalog (targets/*.yaml): every entry loads, the families the design names
are present, profilers and runtimes fit the device, spec sheets and prices are filled in with a
source comment on every number, and `detect` recognises each board without collisions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import edgerob
from edgerob.catalog import list_names
from edgerob.catalog.targets import load_target, matching_targets

CATALOG = Path(edgerob.__file__).resolve().parent.parent / "targets"

JETSONS = ["jetson-nano", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano",
           "jetson-orin-nx", "jetson-agx-orin"]
GPUS = ["rtx-4090", "l4", "a100", "h100"]
FAMILIES = ["cpu", *JETSONS, *GPUS]

# A price left null because no public source for it could be verified; each YAML says why.
# The test below fails once one of these gains a price, so the list only ever shrinks.
UNPRICED = {"jetson-agx-xavier"}

# Realistic /proc/device-tree/model strings (trailing NUL stripped, as machine_facts does).
DEVICE_MODELS = {
    "jetson-nano": ["NVIDIA Jetson Nano Developer Kit", "NVIDIA Jetson Nano 2GB Developer Kit"],
    "jetson-xavier-nx": ["NVIDIA Jetson Xavier NX Developer Kit"],
    # L4T 32.2 and later print "Jetson-AGX" on the AGX Xavier developer kit
    "jetson-agx-xavier": ["Jetson-AGX"],
    "jetson-orin-nano": ["NVIDIA Jetson Orin Nano Developer Kit",
                         "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"],
    "jetson-orin-nx": ["NVIDIA Jetson Orin NX Engineering Reference Developer Kit"],
    "jetson-agx-orin": ["NVIDIA Jetson AGX Orin Developer Kit", "Jetson AGX Orin"],
}

# NVML device names.
GPU_NAMES = {
    "rtx-4090": ["NVIDIA GeForce RTX 4090"],
    "l4": ["NVIDIA L4"],
    "a100": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe"],
    "h100": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"],
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
    assert target.profiler_options == {"gpu_index": 0, "interval_s": 0.05}
    assert target.detect is not None and target.detect.gpu_name
    assert target.detect.device_model is None


# --- specs and prices ------------------------------------------------------------------------

@pytest.mark.parametrize("name", JETSONS + GPUS)
def test_specs_filled_in(shipped_only, name):
    specs = load_target(name).specs
    assert specs.tdp_w is not None
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


@pytest.mark.parametrize("name", ["l4", "a100", "h100"])
def test_data_centre_gpus_have_cloud_price(shipped_only, name):
    assert load_target(name).price.cloud_usd_per_h is not None


def test_cpu_stays_generic(shipped_only):
    target = load_target("cpu")
    assert target.detect is None
    assert target.specs.tdp_w is None and target.price.purchase_usd is None


_NUMBER = re.compile(r"\d")


def _unsourced_lines(text: str, nulls: bool = True) -> list[str]:
    """Lines under specs:/price: whose value is a number (or, with `nulls`, null: the comment
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
        if section in ("specs", "price") and ":" in body and line[0].isspace():
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
            "detect:\n  device_model: Orin Nano\n")
    assert _unsourced_lines(text) == ["    int8: 40", "  tdp_w: 15", "  cloud_usd_per_h: null"]
    assert _unsourced_lines(text, nulls=False) == ["    int8: 40", "  tdp_w: 15"]


# --- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,model",
                         [(n, m) for n, models in DEVICE_MODELS.items() for m in models])
def test_jetson_detected_without_collision(shipped_only, name, model):
    facts = {"device_model": model, "gpu_names": []}
    assert matching_targets(facts)[0].name == name
    assert _specific(facts) == [name], f"{model!r} matched {_specific(facts)}"


@pytest.mark.parametrize("name,gpu", [(n, g) for n, gpus in GPU_NAMES.items() for g in gpus])
def test_gpu_detected_without_collision(shipped_only, name, gpu):
    facts = {"device_model": None, "gpu_names": [gpu]}
    assert matching_targets(facts)[0].name == name
    assert _specific(facts) == [name], f"{gpu!r} matched {_specific(facts)}"


def test_every_device_has_a_detection_case():
    assert set(DEVICE_MODELS) == set(JETSONS)
    assert set(GPU_NAMES) == set(GPUS)


def test_unknown_machine_falls_back_to_cpu(shipped_only):
    facts = {"device_model": "Raspberry Pi 5 Model B Rev 1.0", "gpu_names": ["NVIDIA T4"]}
    assert _specific(facts) == []
    assert matching_targets(facts)[0].name == "cpu"


def test_l40s_not_taken_for_l4(shipped_only):
    assert "l4" not in _specific({"device_model": None, "gpu_names": ["NVIDIA L40S"]})
