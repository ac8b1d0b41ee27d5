from typer.testing import CliRunner

from edgerob.cli import app
from edgerob.catalog.targets import matching_targets

H100 = """\
name: h100-test
runtime: onnxruntime
profiler: nvml
detect: {gpu_name: ZX-9000}
"""
ORIN = """\
name: orin-test
profiler: tegrastats
detect: {device_model: Zeta Board}
"""


def test_matching_targets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets/h100-test.yaml").write_text(H100)
    (tmp_path / "targets/orin-test.yaml").write_text(ORIN)
    names = lambda facts: [t.name for t in matching_targets(facts)]
    gpu = names({"device_model": None, "gpu_names": ["Acme ZX-9000 80GB"]})
    assert gpu[0] == "h100-test" and "orin-test" not in gpu and "cpu" in gpu
    jetson = names({"device_model": "Acme Zeta Board Developer Kit", "gpu_names": []})
    assert jetson[0] == "orin-test"
    assert names({"device_model": None, "gpu_names": []})[0] == "cpu"


def test_doctor_lists_every_plugin():
    r = CliRunner().invoke(app, ["doctor"])
    assert r.exit_code == 0, r.output
    for name in ("onnxruntime", "tegrastats", "jtop", "ina3221", "nvml", "rapl", "none"):
        assert name in r.output
    assert "edgerob profile --target cpu" in r.output
