"""Tests for edgerob.catalog: the YAML look-up, targets and profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgerob
from edgerob.device.bench import TimingRules
from edgerob.catalog import catalog_dirs, find_yaml, list_names
from edgerob.errors import EdgerobError
from edgerob.catalog.profiles import Profile, load_profile
from edgerob.catalog.targets import Target, load_target

REPO = Path(edgerob.__file__).resolve().parent.parent


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from an empty folder, so only the shipped catalog is found."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the shipped catalog ---------------------------------------------------------------------

def test_load_shipped_cpu_target(elsewhere):
    target = load_target("cpu")
    assert isinstance(target, Target)
    assert target.name == "cpu"
    assert target.runtime == "onnxruntime"
    assert target.profiler == "rapl"
    assert target.host == "local" and target.is_local
    assert target.threads is None
    assert target.runtime_options == {"providers": ["CPUExecutionProvider"]}
    assert target.specs.peak_tops == {} and target.specs.tdp_w is None
    assert target.price.purchase_usd is None


def test_load_shipped_quick_profile(elsewhere):
    profile = load_profile("quick")
    assert isinstance(profile, Profile)
    assert profile.name == "quick"
    assert profile.precisions == ["fp32", "fp16", "int8"]
    assert {1, 8, 32} <= set(profile.batch_sizes)
    # the default demo measures an adversarial set and produces failure records (issue 3)
    assert profile.input_sets[0] == "clean" and len(profile.input_sets) >= 2
    assert profile.query_attack is not None and profile.query_attack.budget_queries >= 2
    assert profile.samples is None
    assert isinstance(profile.timing, TimingRules)
    assert profile.timing.min_duration_s == 1.0
    assert profile.timing.min_iterations == 10


def test_shipped_names_listed(elsewhere):
    assert "cpu" in list_names("targets")
    assert "quick" in list_names("profiles")
    assert find_yaml("targets", "cpu") == REPO / "targets" / "cpu.yaml"


# --- by path ---------------------------------------------------------------------------------

def test_target_by_path(tmp_path, elsewhere):
    path = write(tmp_path / "my-board.yaml", "description: a board\nthreads: 2\n"
                 "power_modes: [MAXN, 15W]\nspecs: {peak_tops: {int8: 40}, tdp_w: 15}\n"
                 "price: {purchase_usd: 499}\n")
    target = load_target(str(path))
    assert target.name == "my-board"  # defaults to the file's stem
    assert target.description == "a board"
    assert target.threads == 2
    assert target.power_modes == ["MAXN", "15W"]
    assert target.specs.peak_tops == {"int8": 40.0}
    assert target.price.purchase_usd == 499.0
    assert target.runtime == "onnxruntime"  # default


def test_target_by_path_to_shipped_file(elsewhere):
    target = load_target(str(REPO / "targets" / "cpu.yaml"))
    assert target.name == "cpu"


def test_explicit_name_in_yaml_wins_over_stem(tmp_path):
    path = write(tmp_path / "file.yaml", "name: board-x\n")
    assert load_target(str(path)).name == "board-x"


def test_profile_by_path_with_defaults(tmp_path):
    path = write(tmp_path / "tiny.yml", "precisions: [int8]\nbatch_sizes: [4]\n")
    profile = load_profile(str(path))
    assert profile.name == "tiny"
    assert profile.precisions == ["int8"] and profile.batch_sizes == [4]
    assert profile.input_sets == ["clean"]
    assert profile.timing == TimingRules()


@pytest.mark.parametrize("loader,kind", [(load_target, "target"), (load_profile, "profile")])
def test_missing_path(tmp_path, loader, kind):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(EdgerobError, match="does not exist") as err:
        loader(str(missing))
    assert str(missing) in str(err.value)
    assert kind in str(err.value)


# --- unknown names ---------------------------------------------------------------------------

def test_unknown_target_lists_known(elsewhere):
    with pytest.raises(EdgerobError, match="unknown target 'jetson-nope'") as err:
        load_target("jetson-nope")
    assert "known:" in str(err.value) and "cpu" in str(err.value)


def test_unknown_profile_lists_known(elsewhere):
    with pytest.raises(EdgerobError, match="unknown profile 'slow'") as err:
        load_profile("slow")
    assert "quick" in str(err.value)


def test_unknown_name_lists_local_additions(elsewhere):
    write(elsewhere / "targets" / "my-gpu.yaml", "description: x\n")
    with pytest.raises(EdgerobError) as err:
        load_target("nope")
    assert "my-gpu" in str(err.value) and "cpu" in str(err.value)


# --- malformed files -------------------------------------------------------------------------

@pytest.mark.parametrize("loader", [load_target, load_profile])
@pytest.mark.parametrize("text,line", [("description: [unclosed\nthreads: 2\n", None),
                                       ("a: 1\nb: 2\n  c: 3\n", 3),
                                       ("a: 1\n\tb: 2\n", 2)])
def test_malformed_yaml(tmp_path, loader, text, line):
    path = write(tmp_path / "broken.yaml", text)
    with pytest.raises(EdgerobError, match="malformed YAML") as err:
        loader(str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert "line" in msg
    if line is not None:
        assert f"line {line}" in msg


@pytest.mark.parametrize("text", ["- cpu\n- gpu\n", "just a string\n", "42\n", ""])
@pytest.mark.parametrize("loader", [load_target, load_profile])
def test_yaml_not_a_mapping(tmp_path, loader, text):
    path = write(tmp_path / "notmap.yaml", text)
    with pytest.raises(EdgerobError, match="expected a mapping") as err:
        loader(str(path))
    assert str(path) in str(err.value)


def test_path_is_a_directory(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(EdgerobError):
        load_target(str(tmp_path / "dir.yaml"))


PROFILE_BASE = "precisions: [fp32]\nbatch_sizes: [1]\n"


@pytest.mark.parametrize("text,field,hint", [
    ("runtime: tensorflow\n", "runtime", "onnxruntime"),
    ("profiler: rapl-ish\n", "profiler", "allowed"),
    ("threads: 0\n", "threads", None),
    ("thread: 4\n", "thread", None),
    ("specs: {tdp_w: -5}\n", "specs.tdp_w", None),
    ("specs: {tdp: 5}\n", "specs.tdp", None),
    ("price: {purchase_usd: free}\n", "price.purchase_usd", None),
    ("power_modes: MAXN\n", "power_modes", None),
])
def test_target_bad_field(tmp_path, text, field, hint):
    path = write(tmp_path / "bad-target.yaml", text)
    with pytest.raises(EdgerobError) as err:
        load_target(str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert f"field '{field}'" in msg
    if hint:
        assert hint in msg


@pytest.mark.parametrize("text,field,hint", [
    ("precisions: [fp32]\nbatch_sizes: [0]\n", "batch_sizes.0", "greater than 0"),
    ("precisions: [fp32]\nbatch_sizes: [1, -8]\n", "batch_sizes.1", None),
    ("precisions: [fp8]\nbatch_sizes: [1]\n", "precisions.0", "fp16"),
    ("precisions: []\nbatch_sizes: [1]\n", "precisions", None),
    ("precisions: [fp32, fp32]\nbatch_sizes: [1]\n", "precisions", "unique"),
    ("precisions: [fp32]\nbatch_sizes: [1, 1]\n", "batch_sizes", "unique"),
    ("batch_sizes: [1]\n", "precisions", "required"),
    (PROFILE_BASE + "attacks: [{attack: nope, eps: [0.1]}]\n", "attacks.0.attack", "pgd"),
    (PROFILE_BASE + "attacks: [{attack: pgd, eps: [1.5]}]\n", "attacks.0.eps.0", None),
    (PROFILE_BASE + "query_attack: {eps: [0.1], budget_queries: 1}\n",
     "query_attack.budget_queries", None),
    (PROFILE_BASE + "samples: 0\n", "samples", None),
    (PROFILE_BASE + "repeats: 3\n", "repeats", None),
    (PROFILE_BASE + "timing: {min_duration: 2}\n", "timing.min_duration", None),
    (PROFILE_BASE + "timing: {min_duration_s: -1}\n", "timing", "min_duration_s"),
    (PROFILE_BASE + "timing: {min_duration_s: 0}\n", "timing", "min_duration_s"),
    (PROFILE_BASE + "timing: {warmup_s: -0.1}\n", "timing", "warmup_s"),
    (PROFILE_BASE + "timing: {min_iterations: 0}\n", "timing", "min_iterations"),
    (PROFILE_BASE + "timing: {min_iterations: many}\n", "timing.min_iterations", None),
    (PROFILE_BASE + "timing: 5\n", "timing", None),
])
def test_profile_bad_field(tmp_path, text, field, hint):
    path = write(tmp_path / "bad-profile.yaml", text)
    with pytest.raises(EdgerobError) as err:
        load_profile(str(path))
    msg = str(err.value)
    assert str(path) in msg
    assert f"field '{field}'" in msg
    if hint:
        assert hint in msg


def test_several_errors_are_counted(tmp_path):
    path = write(tmp_path / "p.yaml", "precisions: [fp8]\nbatch_sizes: [0]\nextra: 1\n")
    with pytest.raises(EdgerobError, match=r"and 2 more"):
        load_profile(str(path))


def test_yaml_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(EdgerobError):
        load_target(str(path))


# --- ./targets and ./profiles override the catalog -------------------------------------------

def test_cwd_target_overrides_catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "targets" / "cpu.yaml", "description: my own cpu\nthreads: 3\n")
    assert catalog_dirs("targets")[0] == tmp_path / "targets"
    target = load_target("cpu")
    assert target.description == "my own cpu"
    assert target.threads == 3
    assert target.name == "cpu"
    assert find_yaml("targets", "cpu") == tmp_path / "targets" / "cpu.yaml"


def test_cwd_profile_overrides_catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "profiles" / "quick.yaml", "precisions: [fp16]\nbatch_sizes: [2]\n")
    profile = load_profile("quick")
    assert profile.precisions == ["fp16"] and profile.batch_sizes == [2]


def test_cwd_adds_new_names_and_keeps_catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "targets" / "lab-box.yaml", "description: lab\n")
    assert load_target("lab-box").description == "lab"
    assert load_target("cpu").description.startswith("The local CPU")  # catalog still found
    assert {"cpu", "lab-box"} <= set(list_names("targets"))


def test_cwd_override_errors_name_the_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = write(tmp_path / "targets" / "cpu.yaml", "runtime: tensorflow\n")
    with pytest.raises(EdgerobError, match="field 'runtime'") as err:
        load_target("cpu")
    assert str(local) in str(err.value)
