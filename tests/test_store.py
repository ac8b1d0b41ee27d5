import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

import edgerob.store as store_module
from edgerob.analysis import survival as sv
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.store import (BASELINE, VERSION_TABLE, Store, _alembic, failures, include_name,
                           metadata)


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
    assert s.measured_cells(run) == {("onnxruntime", "fp32", 1, "clean", None),
                                     ("onnxruntime", "fp32", 8, "clean", None)}


@pytest.mark.parametrize("start", ["new", "0.1.0"])
def test_one_row_per_cell_and_power_mode(tmp_path, start):
    """Since 0006 the mode is part of a cell's key; a cell without a mode (NULL) is still stored
    once, on a new store and on one upgraded from 0.1.0 (whose constraint had no mode)."""
    url = v010_store(tmp_path / "r.db") if start == "0.1.0" else f"sqlite:///{tmp_path}/r.db"
    s = Store(url)
    run, _ = begin(s)
    assert s.add_measurement(row(run))
    assert not s.add_measurement(row(run))  # NULL mode: one mode, not distinct NULLs
    assert s.add_measurement(row(run, power_mode="MAXN"))
    assert s.add_measurement(row(run, power_mode="MODE_30W"))
    assert not s.add_measurement(row(run, power_mode="MAXN"))
    assert s.measured_cells(run) == {("onnxruntime", "fp32", 1, "clean", m)
                                     for m in (None, "MAXN", "MODE_30W")}


def record(run_id, sample_id=0, **extra):
    return {"run_id": run_id, "target": "cpu", "precision": "fp32", "batch_size": 1,
            "attack": "square", "eps": 0.1, "sample_id": sample_id, "queries": 3,
            "budget_queries": 10, "duration_s": 0.1, "event": 1, **extra}


@pytest.mark.parametrize("start", ["new", "0.1.0"])
def test_one_failure_cell_per_power_mode(tmp_path, start):
    """Since 0007 the mode is part of a query-attack cell's key (records and attack_cells):
    each mode's cell is stored once, a cell without a mode (NULL, as the 0.1.0 store's records
    are after the upgrade) once too."""
    url = v010_store(tmp_path / "r.db") if start == "0.1.0" else f"sqlite:///{tmp_path}/r.db"
    s = Store(url)
    old = {(f["run_id"], f["precision"], f["batch_size"], f["attack"], f["eps"], None)
           for f in s.failures()}
    assert all(f["power_mode"] is None for f in s.failures()) and len(old) == (start != "new")
    run, _ = begin(s, new=True)
    cell = {k: v for k, v in record(run).items()
            if k in ("run_id", "target", "precision", "batch_size", "attack", "eps")}
    counts = {"n_available": 2, "n_clean_wrong": 0, "n_attacked": 2}
    assert s.add_failures([record(run), record(run, 1)], cell={**cell, **counts})
    assert not s.add_failures([record(run)])  # NULL mode: one mode, not distinct NULLs
    assert not s.add_attack_cell({**cell, **counts})
    for mode in ("MAXN", "MODE_30W"):
        assert s.add_failures([record(run, power_mode=mode), record(run, 1, power_mode=mode)],
                              cell={**cell, **counts, "power_mode": mode})
    assert not s.add_failures([record(run, power_mode="MAXN")])
    assert not s.add_attack_cell({**cell, **counts, "power_mode": "MAXN"})
    assert s.failure_cells(run) == {("fp32", 1, "square", 0.1, m)
                                    for m in (None, "MAXN", "MODE_30W")}
    assert len(s.failures(run)) == 6 and len(s.attack_cells(run_id=run)) == 3
    assert {(f["run_id"], f["precision"], f["batch_size"], f["attack"], f["eps"], None)
            for f in s.failures() if f["run_id"] != run} == old  # the old rows, as they were


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


# --- schema versions (edgerob/migrations) --------------------------------------------------

V010_DUMP = Path(__file__).parent / "data" / "store-0.1.0.sql"  # written by edgerob 0.1.0's Store


def v010_store(path: Path) -> str:
    """A store exactly as edgerob 0.1.0 wrote it: its schema, no version table, some rows."""
    con = sqlite3.connect(path)
    con.executescript(V010_DUMP.read_text())
    con.close()
    return f"sqlite:///{path}"


def revision(url: str):
    with sa.create_engine(url).connect() as c:
        return MigrationContext.configure(c, opts={"version_table": VERSION_TABLE}) \
            .get_current_heads()


def rows(url: str) -> dict:
    with sa.create_engine(url).connect() as c:
        return {t: sorted(tuple(r) for r in c.execute(sa.text(f"SELECT * FROM {t}")))
                for t in ("runs", "measurements", "failures")}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def head() -> str:
    return ScriptDirectory.from_config(_alembic()).get_current_head()


def test_new_store_is_created_at_the_newest_revision(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    Store(url)
    assert revision(url) == (head(),)
    Store(url)  # reopening changes nothing
    assert revision(url) == (head(),)


@pytest.mark.parametrize("start", ["empty", "0.1.0"])
def test_migrated_schema_is_store_metadata(tmp_path, start):
    """The migrations build exactly the tables store.py defines: a column added to store.py
    without a revision (or a revision that differs from it) fails here, listing the difference."""
    url = (v010_store(tmp_path / "r.db") if start == "0.1.0" else f"sqlite:///{tmp_path}/r.db")
    Store(url)
    with sa.create_engine(url).connect() as c:
        diff = compare_metadata(MigrationContext.configure(
            c, opts={"include_name": include_name}), metadata)
    assert diff == [], f"the migrations and store.py differ: {diff}"


def test_revision_0001_is_the_0_1_0_schema(tmp_path):
    """Revision 0001, written out by hand, builds what edgerob 0.1.0's Store built."""
    old = sa.create_engine(v010_store(tmp_path / "old.db"))
    new = sa.create_engine(f"sqlite:///{tmp_path}/new.db")
    with new.begin() as c:
        command.upgrade(_alembic(c), BASELINE)

    def layout(engine):
        i = sa.inspect(engine)
        return {t: ([(col["name"], str(col["type"]), col["nullable"])
                     for col in i.get_columns(t)], i.get_pk_constraint(t)["constrained_columns"],
                    i.get_indexes(t), i.get_unique_constraints(t), i.get_foreign_keys(t))
                for t in ("runs", "measurements", "failures")}

    assert layout(new) == layout(old)


def test_0_1_0_store_upgraded_in_place_keeps_every_row(tmp_path):
    url = v010_store(tmp_path / "r.db")
    before = rows(url)
    assert revision(url) == () and len(before["failures"]) == 3
    s = Store(url)
    assert revision(url) == (head(),)
    assert {t: [r[:len(before[t][0])] for r in v] for t, v in rows(url).items()} == before
    assert len(s.measurements()) == 2 and len(s.failures()) == 3
    assert s.runs()[0]["status"] == "done"


def test_0_1_0_failure_energy_is_put_on_the_0_2_0_basis(tmp_path):
    """0.1.0 divided a record's energy among the batch; 0.2.0 stores the queries' energy whole
    (the basis of duration_s), so the upgrade multiplies it back by the batch size."""
    path = tmp_path / "r.db"
    url = v010_store(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE failures SET energy_j = 0.5, batch_size = 4 WHERE sample_id = 1")
    con.execute("UPDATE failures SET energy_j = 0.25 WHERE sample_id = 2")  # batch size 1
    con.commit()
    con.close()
    got = {r["sample_id"]: r for r in Store(url).failures()}
    # ... and 0.3.0 moves that gross energy (idle not measured) beside the net column
    assert got[1]["energy_gross_j"] == 2.0 and got[2]["energy_gross_j"] == 0.25
    assert got[0]["energy_gross_j"] is None and got[1]["energy_share_gross_j"] is None
    assert all(r["energy_j"] is None and r["energy_share_j"] is None for r in got.values())


def test_0_2_0_rows_are_labelled_sequential_and_failure_energy_moves_to_gross(tmp_path):
    """0.2.0 compared input sets measured minutes apart and stored failure energy gross of idle:
    the 0.3.0 upgrade labels the comparisons and moves the energy, keeping every value."""
    url = f"sqlite:///{tmp_path}/r.db"
    with sa.create_engine(url).begin() as c:
        command.upgrade(_alembic(c), "0002")
        c.execute(sa.text("INSERT INTO runs (run_id, target, profile, model, host, status, "
                          "started_at) VALUES ('r', 'cpu', 'q', 'm', 'h', 'done', 't')"))
        for s, ratio in (("clean", None), ("pgd@0.1", 1.4)):
            c.execute(sa.text(
                "INSERT INTO measurements (run_id, target, runtime, precision, batch_size, "
                "input_set, latency_vs_clean_ratio, latency_vs_clean_cliffs_delta, created_at) "
                "VALUES ('r', 'cpu', 'onnxruntime', 'fp32', 1, :s, :ratio, :d, 't')"),
                {"s": s, "ratio": ratio, "d": None if ratio is None else 0.8})
        c.execute(sa.text(
            "INSERT INTO failures (run_id, target, precision, batch_size, attack, eps, "
            "sample_id, queries, budget_queries, duration_s, energy_j, energy_share_j, event) "
            "VALUES ('r', 'cpu', 'fp32', 1, 'square', 0.1, 0, 3, 10, 0.5, 7.0, 7.0, 1)"))
    store = Store(url)
    assert revision(url) == (head(),)
    m = {r["input_set"]: r for r in store.measurements()}
    assert m["pgd@0.1"]["vs_clean_method"] == "sequential cells"
    assert m["pgd@0.1"]["latency_vs_clean_ratio"] == 1.4
    assert m["pgd@0.1"]["latency_vs_clean_cliffs_delta"] == 0.8
    assert m["clean"]["vs_clean_method"] is None
    [f] = store.failures()
    assert (f["energy_gross_j"], f["energy_share_gross_j"]) == (7.0, 7.0)
    assert f["energy_j"] is None and f["energy_share_j"] is None


def test_upgrade_is_one_transaction(tmp_path, monkeypatch):
    """A failure after the stamp (or half-way through the DDL) leaves the store as it was."""
    url = v010_store(tmp_path / "r.db")
    before = rows(url)

    def broken(cfg, target):
        real_upgrade(cfg, target)
        raise RuntimeError("interrupted")

    real_upgrade = command.upgrade
    monkeypatch.setattr(store_module.command, "upgrade", broken)
    with pytest.raises(RuntimeError):
        Store(url)
    assert revision(url) == () and rows(url) == before
    fresh = tmp_path / "fresh.db"
    with pytest.raises(RuntimeError):
        Store(f"sqlite:///{fresh}")
    assert sa.inspect(sa.create_engine(f"sqlite:///{fresh}")).get_table_names() == []


def _foreign(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.commit()


def _wrong_columns(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, owner TEXT)")
    con.commit()


def _newer(path: Path) -> None:
    Store(f"sqlite:///{path}")
    con = sqlite3.connect(path)
    con.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    con.commit()


@pytest.mark.parametrize("make, message", [
    (_foreign, "not an edgerob results store: it holds other tables (users)"),
    (_wrong_columns, "not an edgerob results store: table(s) failures, measurements, runs"),
    (_newer, "schema revision 9999 is newer than this edgerob"),
])
def test_foreign_or_newer_database_refused_and_unchanged(tmp_path, make, message):
    db = tmp_path / "x.db"
    make(db)
    before = sha(db)
    res = CliRunner().invoke(app, ["results", "--store", f"sqlite:///{db}"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr, res.stderr
    assert sha(db) == before
    assert not [p for p in tmp_path.iterdir() if p.name != "x.db"]  # no journal left behind


@pytest.mark.parametrize("first", ["optuna", "edgerob"])
def test_an_optuna_study_may_share_the_store(tmp_path, first):
    """edgerob optimize's default storage is the store's file: Optuna's tables are neighbours,
    and its `alembic_version` is not ours, whoever created the file."""
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path}/shared.db"
    if first == "optuna":
        optuna.storages.RDBStorage(url)
    Store(url)
    optuna.create_study(storage=url, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1),
                                                              n_trials=1)
    assert Store(url).runs() == [] and revision(url) == (head(),)
    assert len(optuna.load_study(storage=url, study_name="s").trials) == 1


def test_every_command_opens_a_0_1_0_store(tmp_path):
    """results, fit, compare and report on a store written by edgerob 0.1.0 (plus enough
    simulated failure records, inserted as 0.1.0 would, for fit)."""
    url = v010_store(tmp_path / "r.db")
    df = sv.simulate_failures(360, "weibull", targets=("cpu",), precisions=("fp32", "int8"),
                              batch_sizes=(1, 8), seed=3)
    with sa.create_engine(url).begin() as c:
        run_id = c.execute(sa.text("SELECT run_id FROM runs")).scalar()
        c.execute(failures.insert(), [
            {"run_id": run_id, "target": r.target, "precision": r.precision,
             "batch_size": int(r.batch_size), "attack": r.attack, "eps": float(r.eps),
             "sample_id": 100 + i, "queries": int(r.queries),
             "budget_queries": int(r.budget_queries), "duration_s": float(r.duration_s),
             "event": int(r.event)} for i, r in enumerate(df.itertuples())])
    before = rows(url)
    cli = CliRunner()

    def ok(*args):
        res = cli.invoke(app, [*args, "--store", url])
        assert res.exit_code == 0, res.output + repr(res.exception)
        return res.output

    assert "cpu" in ok("results")
    assert revision(url) == (head(),)
    ok("fit", "--families", "weibull", "--out", str(tmp_path / "fit"))
    ok("compare", "--json")
    ok("report", "--out", str(tmp_path / "r.html"))
    assert (tmp_path / "r.html").stat().st_size > 1000
    after = rows(url)
    assert {t: [r[:len(before[t][0])] for r in v] for t, v in after.items()} == before


def test_postgresql_0_1_0_store_upgraded_in_place_and_newer_refused():
    """The same on a real PostgreSQL server (tests/pg.py; skips where none can start): a 0.1.0
    store (revision 0001's tables, no version table, rows) is upgraded keeping every row, the
    result is store.py's schema, and a newer revision is refused without a change."""
    import pg

    url = pg.database_url()
    engine = sa.create_engine(url)
    with engine.begin() as c:
        command.upgrade(_alembic(c), BASELINE)
        c.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    with engine.begin() as c, sqlite3.connect(":memory:") as dump:
        dump.executescript(V010_DUMP.read_text())
        for t in ("runs", "measurements", "failures"):
            cur = dump.execute(f"SELECT * FROM {t}")
            names = [d[0] for d in cur.description]
            c.execute(metadata.tables[t].insert(), [dict(zip(names, r)) for r in cur])
    before = rows(url)
    s = Store(url)
    assert revision(url) == (head(),)
    after = rows(url)
    assert {t: [r[:len(before[t][0])] for r in v] for t, v in after.items()} == before
    assert len(s.failures()) == 3
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(
            c, opts={"include_name": include_name}), metadata)
    assert diff == [], f"the migrations and store.py differ on PostgreSQL: {diff}"
    with engine.begin() as c:
        c.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(EdgerobError, match="schema revision 9999 is newer"):
        Store(url)
    assert revision(url) == ("9999",) and rows(url) == after
