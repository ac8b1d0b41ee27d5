import json

import pytest

from edgerob.errors import EdgerobError
from edgerob.store import Store


def row(run_id, precision="fp32", batch=1, **extra):
    return {"run_id": run_id, "target": "cpu", "runtime": "onnxruntime", "precision": precision,
            "batch_size": batch, "input_set": "clean", "latency_p50_ms": 1.0,
            "fingerprint": {"host": "h"}, "latencies_ms": [1.0, 2.0], **extra}


def begin(store, **kw):
    args = dict(target="cpu", profile="quick", model="m", model_sha256="abc",
                runtime="onnxruntime", host="h", versions={"edgerob": "0"})
    return store.begin_run(**{**args, **kw})


def test_resume_same_key_new_run_otherwise(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/r.db")
    run, resumed = begin(s)
    assert not resumed
    assert begin(s) == (run, True)
    other, resumed = begin(s, model_sha256="def")
    assert other != run and not resumed
    fresh, resumed = begin(s, new=True)
    assert fresh != run and not resumed
    assert {r["run_id"] for r in s.runs()} == {run, other, fresh}


def test_one_row_per_cell(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/r.db")
    run, _ = begin(s)
    assert s.add_measurement(row(run))
    assert not s.add_measurement(row(run))  # duplicate cell refused
    assert s.add_measurement(row(run, batch=8))
    rows = s.measurements(run)
    assert len(rows) == 2
    assert json.loads(rows[0]["fingerprint"]) == {"host": "h"}
    assert s.measured_cells(run) == {("onnxruntime", "fp32", 1, "clean"),
                                     ("onnxruntime", "fp32", 8, "clean")}


def test_status_and_timestamps(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/r.db")
    run, _ = begin(s)
    assert s.runs()[0]["status"] == "running" and s.runs()[0]["finished_at"] is None
    s.finish_run(run, "failed")
    assert s.runs()[0]["status"] == "failed"
    begin(s)  # resuming marks it running again
    assert s.runs()[0]["status"] == "running"


def test_schema_columns_are_the_contract(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/r.db")
    run, _ = begin(s)
    s.add_measurement(row(run))
    cols = set(s.measurements()[0])
    contract = """run_id target runtime precision batch_size input_set n_samples iterations
        duration_s latency_mean_ms latency_p50_ms latency_p90_ms latency_p95_ms latency_p99_ms
        latency_std_ms throughput_sps accuracy profiler power_samples power_mean_w power_idle_w
        energy_per_inference_j artifact_sha256 created_at""".split()
    assert set(contract) <= cols
    assert {"run_id", "target", "profile", "model", "host", "status", "started_at",
            "finished_at", "versions"} <= set(s.runs()[0])


@pytest.mark.parametrize("url", ["foo://nowhere", "not a url", "sqlite:////proc/no/such/dir/x.db"])
def test_unusable_url_is_a_user_error(url):
    with pytest.raises(EdgerobError, match="cannot open store"):
        Store(url)


def test_creates_parent_folder(tmp_path):
    Store(f"sqlite:///{tmp_path}/deep/er/r.db")
    assert (tmp_path / "deep/er/r.db").is_file()
