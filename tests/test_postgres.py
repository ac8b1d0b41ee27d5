"""The results store on a real PostgreSQL server (tests/pg.py starts one per session): the same
behaviour as on SQLite, every command with --store postgresql://..., and concurrent writers that
lose nothing and duplicate nothing."""

from __future__ import annotations


import pytest
from typer.testing import CliRunner

import pg
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.store import Store, normalize_url

WRITERS = 4


@pytest.fixture
def pg_url():
    return pg.database_url()  # a fresh database; skips with the reason where none can start


def _row(run_id, precision="fp32", batch=1, input_set="clean", **extra):
    return {"run_id": run_id, "target": "cpu", "runtime": "onnxruntime", "precision": precision,
            "batch_size": batch, "input_set": input_set, "latency_p50_ms": 1.0,
            "throttled": None, "fingerprint": {"host": "h"}, "latencies_ms": [1.0, 2.0],
            **extra}


def _failures(run_id, precision="fp32", batch=1, n=3):
    return [{"run_id": run_id, "target": "cpu", "precision": precision, "batch_size": batch,
             "attack": "square", "eps": 0.15, "sample_id": i, "queries": 10 + i,
             "budget_queries": 50, "duration_s": 0.01 * (i + 1), "energy_j": None,
             "event": i % 2, "label": i} for i in range(n)]


def _begin(store, host="h", **kw):
    return store.begin_run(target="cpu", profile="quick", model="m", model_sha256="abc",
                           runtime="onnxruntime", host=host, versions={"edgerob": "0"}, **kw)


def test_store_behaves_as_on_sqlite(pg_url):
    s = Store(pg_url)
    run, resumed = _begin(s)
    assert not resumed and _begin(s) == (run, True)
    assert s.add_measurement(_row(run)) and not s.add_measurement(_row(run))
    assert s.add_measurement(_row(run, batch=8, throttled=True))
    assert s.add_failures(_failures(run)) and not s.add_failures(_failures(run))
    assert s.measured_cells(run) == {("onnxruntime", "fp32", 1, "clean", None),
                                     ("onnxruntime", "fp32", 8, "clean", None)}
    maxn = [{**f, "power_mode": "MAXN"} for f in _failures(run)]  # another mode: another cell
    assert s.add_failures(maxn) and not s.add_failures(maxn)
    assert s.failure_cells(run) == {("fp32", 1, "square", 0.15, m) for m in (None, "MAXN")}
    assert [r["throttled"] for r in s.measurements(run)] == [None, True]
    s.finish_run(run, "done")
    assert s.runs()[0]["status"] == "done" and s.runs()[0]["finished_at"]
    # a copied run: inserted once, then only its status is updated
    copied = {**s.runs()[0], "run_id": "f" * 32, "status": "running", "finished_at": None}
    assert s.upsert_run(copied) == 1
    assert s.upsert_run({**copied, "status": "done", "finished_at": "x"}) == 0
    assert {r["run_id"]: r["status"] for r in s.runs()}["f" * 32] == "done"
    # the schema is created once and reopened as it is
    assert len(Store(pg_url).measurements()) == 2


def test_plain_postgresql_url_uses_the_installed_driver(pg_url):
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    assert normalize_url(plain).startswith("postgresql+psycopg") or _has_psycopg2()
    assert Store(plain).runs() == []
    assert normalize_url("postgres://u@h/db").startswith("postgresql")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def _has_psycopg2() -> bool:
    import importlib.util

    return importlib.util.find_spec("psycopg2") is not None


def test_unreachable_server_is_a_user_error(tmp_path):
    pg.server()  # only where PostgreSQL can run at all
    with pytest.raises(EdgerobError, match="cannot open store"):
        Store(f"postgresql+psycopg://postgres@/nope?host={tmp_path}&port=1")


def _writer(url: str, worker: int, barrier, results) -> None:
    """One of several processes writing to the same store at once: the schema, a shared resume
    key, shared (duplicated) cells and cells of its own."""
    barrier.wait(timeout=60)  # a sibling that died breaks the barrier: no one waits forever
    s = Store(url)  # every writer creates the schema at the same moment
    barrier.wait(timeout=60)
    shared_run, resumed = _begin(s)  # the same resume key in every writer
    own_run, _ = _begin(s, host=f"worker-{worker}")
    barrier.wait(timeout=60)
    added = []
    for batch in (1, 2, 4, 8, 16):
        added.append(("m", shared_run, batch, s.add_measurement(_row(shared_run, batch=batch))))
        added.append(("f", shared_run, batch,
                      s.add_failures(_failures(shared_run, batch=batch, n=5))))
    for batch in (1, 2, 3):
        added.append(("m", own_run, batch, s.add_measurement(_row(own_run, batch=batch))))
        added.append(("f", own_run, batch, s.add_failures(_failures(own_run, batch=batch))))
    results.put((worker, shared_run, resumed, own_run, added))


def _run_writers(url: str) -> list:
    return pg.run_processes(_writer, lambda i: (url, i), WRITERS)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_concurrent_writers_lose_and_duplicate_nothing(backend, tmp_path, request):
    url = (request.getfixturevalue("pg_url") if backend == "postgresql"
           else f"sqlite:///{tmp_path}/shared.db")
    out = _run_writers(url)
    s = Store(url)
    shared = {o[1] for o in out}
    assert len(shared) == 1, "writers resuming one key at once made more than one run"
    assert sorted(o[2] for o in out) == [False] + [True] * (WRITERS - 1)
    runs = s.runs()
    assert len(runs) == 1 + WRITERS  # the shared run and one per writer, no duplicate
    (shared_run,) = shared
    # every duplicated cell was stored by exactly one writer; every other writer was refused
    for kind in ("m", "f"):
        for batch in (1, 2, 4, 8, 16):
            wins = [ok for o in out for k, r, b, ok in o[4] if (k, r, b) == (kind, shared_run,
                                                                            batch)]
            assert sorted(wins) == [False] * (WRITERS - 1) + [True]
    rows = s.measurements()
    cells = [(r["run_id"], r["batch_size"]) for r in rows]
    assert len(cells) == len(set(cells)) == 5 + 3 * WRITERS
    recs = s.failures()
    keys = [(r["run_id"], r["batch_size"], r["sample_id"]) for r in recs]
    assert len(keys) == len(set(keys)) == 5 * 5 + 3 * 3 * WRITERS
    for o in out:  # each writer's own cells are all there
        assert {b for r, b in cells if r == o[3]} == {1, 2, 3}


# --- every command with --store on PostgreSQL ----------------------------------------------------

PROFILE = """
precisions: [fp32]
batch_sizes: [1, 8]
samples: 48
timing: {warmup_s: 0.01, min_duration_s: 0.05, min_iterations: 5, idle_s: 0.05,
         min_power_samples: 2}
attacks:
  - attack: pgd
    eps: [0.1]
    params: {steps: 5}
query_attack:
  eps: [0.15]
  budget_queries: 40
  samples: 12
  batch_sizes: [8]
"""


def test_every_command_with_a_postgresql_store(pg_url, tiny_model, tmp_path):
    prof = tmp_path / "pgtiny.yaml"
    prof.write_text(PROFILE)
    cli = CliRunner()

    def ok(*args):
        r = cli.invoke(app, [*args, "--store", pg_url])
        assert r.exit_code == 0, r.output + repr(r.exception)
        return r.output

    ok("profile", "--target", "cpu", "--profile", str(prof), "--model", str(tiny_model))
    s = Store(pg_url)
    assert {r["input_set"] for r in s.measurements()} == {"clean", "pgd@0.1"}
    assert len(s.failures()) == 12
    ok("profile", "--target", "cpu", "--profile", str(prof), "--model", str(tiny_model))
    assert len(s.measurements()) == 4 and len(s.runs()) == 1  # resumed, nothing twice
    assert "pgd@0.1" in ok("results")
    ok("compare", "--json")
    ok("cost", "--json")
    fit = cli.invoke(app, ["fit", "--store", pg_url, "--families", "weibull", "--out",
                           str(tmp_path / "fit")])
    # 12 records may be too few to fit: what matters is that the store was read
    assert fit.exit_code == 0 or "no failure records" not in fit.output, fit.output
    ok("report", "--out", str(tmp_path / "r.html"))
    assert (tmp_path / "r.html").stat().st_size > 1000
    # ingest a device's SQLite results into the PostgreSQL store: new rows once, then skipped
    dev = f"sqlite:///{tmp_path}/device.db"
    d = Store(dev)
    run, _ = _begin(d, host="jetson")
    d.add_measurement(_row(run))
    d.add_failures(_failures(run))
    first = ok("ingest", str(tmp_path / "device.db"))
    assert "1 new runs, 1 measurements, 3 failure records" in first
    assert "0 new runs, 0 measurements, 0 failure records; 4 rows already stored" in ok(
        "ingest", str(tmp_path / "device.db"))
