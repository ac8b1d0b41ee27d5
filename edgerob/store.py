"""The results store: SQLAlchemy, a SQLite file by default, PostgreSQL for a fleet.

Column names follow DESIGN.md's store schema (a contract other tools read). Each sweep cell is
written in one transaction, and a unique key per cell means a resumed or repeated sweep can never
hold the same cell twice.

Schema versions: Alembic revisions in edgerob/migrations, recorded in the table
`edgerob_schema_version`. Opening a store creates a new one at the newest revision and upgrades an
older one in place, in one transaction (a store of edgerob 0.1.0, which has no version table, is
first stamped 0001). A database that holds other tables than edgerob's, or a revision this
edgerob does not know (written by a newer one), is refused before anything is written.

Many writers at once (a fleet writing to one PostgreSQL database, or processes sharing a SQLite
file): the schema is created or upgraded by one writer at a time (a PostgreSQL advisory lock;
SQLite's write lock, taken by BEGIN IMMEDIATE), a duplicated cell is refused by the unique keys
whoever writes it first, and `begin_run` takes a lock on its resume key before it reads, so two
writers resuming the same key get the same run, never two.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from edgerob import __version__
from edgerob.errors import EdgerobError

DEFAULT_URL = "sqlite:///edgerob.db"
# PostgreSQL advisory lock (a bigint) held while one writer creates or upgrades the tables.
_SCHEMA_LOCK = 0x6564676572_6F62  # "edgerob"
# The version table: not Alembic's default `alembic_version`, which an Optuna study sharing the
# database (edgerob optimize's default storage is the store's file) uses for its own schema.
VERSION_TABLE = "edgerob_schema_version"
BASELINE = "0001"  # edgerob 0.1.0's schema; its stores have no version table
_LEGACY = "0.1.0"  # _schema_revision's answer for such a store

metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("target", sa.String, nullable=False),
    sa.Column("profile", sa.String, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("model_sha256", sa.String(64)),
    sa.Column("runtime", sa.String),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running / done / failed
    sa.Column("started_at", sa.String, nullable=False),
    sa.Column("finished_at", sa.String),
    sa.Column("versions", sa.Text),  # JSON
    # target|profile|model_sha256|runtime|host: longer than 64 characters (a sha256 alone is
    # 64), which PostgreSQL enforces and SQLite does not, so no length limit
    sa.Column("resume_key", sa.String, index=True),
    # True: measured with --force-target on a machine its `detect` rules did not match (NULL:
    # stored before verification existed); target_facts: JSON, the machine's facts and mismatch
    sa.Column("forced_target", sa.Boolean),
    sa.Column("target_facts", sa.Text),
    # provenance (NULL = measured here): "mlperf" for imported published results, the file it
    # came from, its MLPerf version and scenario, the submitter's system folder name, and which
    # engines ran ("GPU", or "GPU + 2 DLA" for NVIDIA's Jetson Offline runs)
    sa.Column("source", sa.String(16)),
    sa.Column("source_path", sa.Text),
    sa.Column("mlperf_version", sa.String(16)),
    sa.Column("scenario", sa.String(16)),
    sa.Column("system_name", sa.String),
    sa.Column("accelerators", sa.String),
    # revision 0004 (published results): how many accelerators the system ran on (0: none, a
    # CPU-only system) and which configuration of the device it was, e.g. "MaxP, GPU",
    # "MaxQ, GPU + 2 DLA", "MaxP, GPU, Triton", "MaxP, GPU, MIG 1x1g.10gb" (NULL: measured here)
    sa.Column("n_accelerators", sa.Integer),
    sa.Column("configuration", sa.String),
)

# A cell of a run; its power mode is part of it (0006): a sweep over modes stores each cell once
# per mode, and NULL (no mode readable, or a row stored before 0005) is one mode of its own
CELL_KEY = ("runtime", "precision", "batch_size", "input_set", "power_mode")


measurements = sa.Table(
    "measurements", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("target", sa.String, nullable=False),
    sa.Column("runtime", sa.String, nullable=False),
    # NULL only in imported rows whose source does not state it (precision_note says so)
    sa.Column("precision", sa.String(8)),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("input_set", sa.String, nullable=False),
    sa.Column("n_samples", sa.Integer),
    sa.Column("iterations", sa.Integer),
    sa.Column("duration_s", sa.Float),
    *(sa.Column(f"latency_{s}_ms", sa.Float)
      for s in ("mean", "p50", "p90", "p95", "p99", "std", "min", "max")),
    sa.Column("throughput_sps", sa.Float),
    sa.Column("accuracy", sa.Float),
    sa.Column("profiler", sa.String),
    sa.Column("power_samples", sa.Integer),
    sa.Column("power_mean_w", sa.Float),
    sa.Column("power_idle_w", sa.Float),
    sa.Column("energy_j", sa.Float),
    sa.Column("energy_per_inference_j", sa.Float),
    sa.Column("power_note", sa.Text),  # why power is NULL or flagged
    # An input set vs clean, same run/precision/batch size (NULL for clean rows). Since 0.3.0
    # measured interleaved in one session (edgerob.device.paired; vs_clean_method says how): the
    # paired ratio of per-round medians, its interval, the signed-rank p over rounds and the
    # rank-biserial effect. Rows from 0.2.0 compared sequential cells: Mann-Whitney p over
    # iterations and Cliff's delta (latency_vs_clean_cliffs_delta, NULL since).
    sa.Column("latency_vs_clean_ratio", sa.Float),
    sa.Column("latency_vs_clean_p", sa.Float),
    sa.Column("latency_vs_clean_cliffs_delta", sa.Float),
    sa.Column("energy_vs_clean_ratio", sa.Float),  # energy per inference ratio
    sa.Column("throttled", sa.Boolean),  # NULL: nothing readable could tell
    sa.Column("throttle_note", sa.Text),
    sa.Column("clocks_start", sa.Text),  # JSON: clocks, temperatures, throttle counters
    sa.Column("clocks_end", sa.Text),
    sa.Column("artifact_sha256", sa.String(64)),
    sa.Column("fingerprint", sa.Text),  # JSON: host, versions, clocks, threads ...
    sa.Column("latencies_ms", sa.Text),  # JSON list, for tests between input sets
    sa.Column("created_at", sa.String, nullable=False),
    # a sequential input set (issue 17): the host's fp32 robust accuracy over n_available
    # samples, estimated from the n_samples attacked, and its anytime-valid interval
    sa.Column("seq_n_available", sa.Integer),
    sa.Column("seq_estimate", sa.Float),
    sa.Column("seq_ci_low", sa.Float),
    sa.Column("seq_ci_high", sa.Float),
    sa.Column("seq_rule", sa.Text),  # JSON: half_width, confidence, max_samples, stopped_by ...
    # revision 0003: the paired comparison's interval, effect, rounds and method
    sa.Column("latency_vs_clean_low", sa.Float),
    sa.Column("latency_vs_clean_high", sa.Float),
    sa.Column("latency_vs_clean_effect", sa.Float),  # matched-pairs rank-biserial
    sa.Column("energy_vs_clean_low", sa.Float),
    sa.Column("energy_vs_clean_high", sa.Float),
    sa.Column("vs_clean_rounds", sa.Integer),  # pairs (rounds) behind the comparison
    sa.Column("vs_clean_confidence", sa.Float),  # the interval's exact coverage
    sa.Column("vs_clean_method", sa.String),
    sa.Column("rounds", sa.Text),  # JSON: per round p50_ms, iterations, wall_s, energy
    # revision 0004 (published results): why precision is NULL; Offline/Server throughput
    # divided by runs.n_accelerators (derived, the only figure that is not the file's); the
    # loadgen early-stopping estimate of the scenario's percentile (p90 SingleStream, p99
    # MultiStream), which MLPerf publishes from v2.0 on
    sa.Column("precision_note", sa.Text),
    sa.Column("throughput_per_accelerator_sps", sa.Float),
    sa.Column("latency_early_stopping_ms", sa.Float),
    # revision 0005: the operating point the row was measured in (nvpmodel mode, GPU power
    # limit ...), a readable label; its details are the fingerprint's power_mode_facts. NULL:
    # nothing readable said (the reason is in the facts), or a row stored before 0005
    sa.Column("power_mode", sa.String),
)
# One row per cell and power mode. An index on an expression, not a UNIQUE constraint: SQL
# counts NULLs as distinct, so a constraint would let a cell without a mode be stored twice;
# COALESCE makes NULL one value here (and only here: the column itself stays NULL).
sa.Index("one_row_per_cell_and_mode", measurements.c.run_id,
         *(measurements.c[k] for k in CELL_KEY[:-1]),
         sa.func.coalesce(measurements.c.power_mode, ""), unique=True)

failures = sa.Table(
    "failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("target", sa.String, nullable=False),
    sa.Column("precision", sa.String(8), nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("attack", sa.String, nullable=False),
    sa.Column("eps", sa.Float, nullable=False),
    sa.Column("sample_id", sa.Integer, nullable=False),
    sa.Column("queries", sa.Integer, nullable=False),
    sa.Column("budget_queries", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("energy_j", sa.Float),
    sa.Column("event", sa.Integer, nullable=False),  # 1 misclassified within budget, 0 censored
    sa.Column("label", sa.Integer),
    sa.Column("created_at", sa.String),
    # the sample's share of the same queries (each query / samples attacked in it): what a
    # failure costs (edgerob.device.failures); NULL in records written before these columns
    sa.Column("duration_share_s", sa.Float),
    sa.Column("energy_share_j", sa.Float),
    # energy_j and energy_share_j are net of the target's idle power since 0.3.0; records stored
    # before hold their gross energy here instead (idle was not measured), never beside net
    sa.Column("energy_gross_j", sa.Float),
    sa.Column("energy_share_gross_j", sa.Float),
    # revision 0007: the power mode the record was measured in, as on measurements (NULL: not
    # readable, or a record stored before 0007, whose mode compare derives from its run)
    sa.Column("power_mode", sa.String),
)

attack_cells = sa.Table(
    "attack_cells", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("target", sa.String, nullable=False),
    sa.Column("precision", sa.String(8), nullable=False),
    sa.Column("batch_size", sa.Integer, nullable=False),
    sa.Column("attack", sa.String, nullable=False),
    sa.Column("eps", sa.Float, nullable=False),
    sa.Column("n_available", sa.Integer, nullable=False),  # samples in the input set
    sa.Column("n_clean_wrong", sa.Integer, nullable=False),  # misclassified clean: not attacked
    sa.Column("n_attacked", sa.Integer, nullable=False),  # clean-correct samples attacked
    # sequential estimation (issue 17); NULL stop_*: every sample was attacked
    sa.Column("n_sampled", sa.Integer),  # drawn in the random order: attacked + clean wrong
    sa.Column("stop_half_width", sa.Float),
    sa.Column("stop_confidence", sa.Float),
    sa.Column("stop_max_samples", sa.Integer),
    sa.Column("stopped_by", sa.String(16)),  # half_width / max_samples / exhausted
    sa.Column("failure_rate", sa.Float),  # failed within the budget (clean wrong count as failed)
    sa.Column("failure_ci_low", sa.Float),  # anytime-valid interval at the stopping point
    sa.Column("failure_ci_high", sa.Float),
    sa.Column("ci_method", sa.String(32)),
    sa.Column("km_median_s", sa.Float),  # Kaplan-Meier median time to failure
    sa.Column("km_median_low_s", sa.Float),  # Brookmeyer-Crowley, fixed-sample at the stop
    sa.Column("km_median_high_s", sa.Float),
    sa.Column("attack_wall_s", sa.Float),  # measured time in the attack calls
    sa.Column("projected_saved_s", sa.Float),  # samples not drawn x measured time per sample
    sa.Column("created_at", sa.String),
    sa.Column("power_idle_w", sa.Float),  # settled idle power subtracted from failure energy
    sa.Column("power_note", sa.Text),
    sa.Column("power_mode", sa.String),  # revision 0007, as failures.power_mode
)

# A query-attack cell of a run; its power mode is part of it (0007), NULL one mode of its own
# (COALESCE, as measurements' key)
ATTACK_KEY = ("precision", "batch_size", "attack", "eps", "power_mode")
sa.Index("one_row_per_attacked_sample_and_mode", failures.c.run_id,
         *(failures.c[k] for k in ATTACK_KEY[:-1]), failures.c.sample_id,
         sa.func.coalesce(failures.c.power_mode, ""), unique=True)
sa.Index("one_row_per_attack_cell_and_mode", attack_cells.c.run_id,
         *(attack_cells.c[k] for k in ATTACK_KEY[:-1]),
         sa.func.coalesce(attack_cells.c.power_mode, ""), unique=True)


def now(timespec: str = "seconds") -> str:
    """UTC now, ISO 8601 ("microseconds": a measurement window's edges)."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def normalize_url(url: str) -> str:
    """A database URL SQLAlchemy can open with the drivers installed here: `postgres://` is
    spelled `postgresql://`, and a PostgreSQL URL without a driver uses psycopg (3) where
    psycopg2 (SQLAlchemy's default) is absent. Other URLs are returned as they are."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        if (importlib.util.find_spec("psycopg2") is None
                and importlib.util.find_spec("psycopg") is not None):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def include_name(name, type_, parent_names) -> bool:
    """Alembic looks only at edgerob's tables: other tools' tables may share the database."""
    return type_ != "table" or name in metadata.tables


def _alembic(connection=None) -> Config:
    """Alembic's configuration, in code: the revisions ship inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", "edgerob:migrations")
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _baseline_columns() -> dict[str, set[str]]:
    """The tables and columns of revision 0001 (edgerob 0.1.0), read from a scratch database the
    revision itself builds, so the recognised layout can never drift from the revision."""
    with sa.create_engine("sqlite://").begin() as c:
        command.upgrade(_alembic(c), BASELINE)
        return _columns(c, set(sa.inspect(c).get_table_names()) - {VERSION_TABLE})


def _columns(c, tables) -> dict[str, set[str]]:
    inspector = sa.inspect(c)
    return {t: {col["name"] for col in inspector.get_columns(t)} for t in tables}


def _schema_revision(c, script: ScriptDirectory) -> str | None:
    """The store's schema revision: None for an empty database, _LEGACY for an edgerob 0.1.0
    store. Raises for a database that is not an edgerob store or is newer than this edgerob."""
    context = MigrationContext.configure(c, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    if heads:
        known = {r.revision for r in script.walk_revisions()}
        unknown = [h for h in heads if h not in known]
        if unknown:
            raise EdgerobError(
                f"schema revision {unknown[0]} is newer than this edgerob ({__version__}, "
                f"revisions up to {script.get_current_head()}): upgrade edgerob to open it")
        return heads[0]
    tables = set(sa.inspect(c).get_table_names())
    ours = tables & set(metadata.tables)
    if not ours:
        # An Optuna storage may share the file (edgerob optimize's default storage is the
        # store's); any other tables and none of ours: someone else's database.
        others = set() if {"studies", "version_info"} <= tables else tables
        if others:
            raise EdgerobError(f"not an edgerob results store: it holds other tables "
                               f"({', '.join(sorted(others)[:5])}); choose another --store")
        return None
    found, baseline = _columns(c, ours), _baseline_columns()
    if found != baseline:
        bad = sorted(t for t in ours | set(baseline) if found.get(t) != baseline.get(t))
        raise EdgerobError(f"not an edgerob results store: table(s) {', '.join(bad)} are missing "
                           f"or have other columns than edgerob's; choose another --store")
    return _LEGACY


def _open_schema(engine) -> None:
    """Bring the store's schema to the newest revision (see the module docstring)."""
    script = ScriptDirectory.from_config(_alembic())
    with engine.connect() as c:  # the usual case, already current: read only, no lock
        try:
            if _schema_revision(c, script) == script.get_current_head():
                return
        except EdgerobError:
            # Not conclusive without the lock: another writer may have committed the schema
            # between this check's reads (no version table yet, then the new tables). The
            # check under the lock below decides, and raises if the store really is foreign.
            pass
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as c, c.begin():
        if c.dialect.name == "postgresql":
            c.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        revision = _schema_revision(c, script)  # again: another writer may have been first
        if revision == _LEGACY:
            command.stamp(_alembic(c), BASELINE)
        command.upgrade(_alembic(c), "head")


def _sqlite_transactions(engine) -> None:
    """Make pysqlite's transactions SQLite's own: BEGIN when SQLAlchemy begins (pysqlite's
    implicit BEGIN skips DDL, which then commits statement by statement, so an interrupted
    upgrade would be half done), IMMEDIATE where asked (the write lock before the first read)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(c):
        c.exec_driver_sql(f"BEGIN {c.get_execution_options().get('sqlite_begin', '')}")


class Store:
    """Open (and create if needed) the results database at `url`."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        try:
            parsed = sa.engine.make_url(normalize_url(url))
            if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "",
                                                                                   ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # pre-ping: a fleet's long-lived connection to a server that restarted is replaced
            self.engine = sa.create_engine(
                parsed, pool_pre_ping=not parsed.drivername.startswith("sqlite"))
            if parsed.drivername.startswith("sqlite"):
                _sqlite_transactions(self.engine)
            _open_schema(self.engine)
        except EdgerobError as e:
            raise EdgerobError(f"cannot open store {url!r}: {e}") from None
        except ImportError as e:
            raise EdgerobError(f"cannot open store {url!r}: its database driver is not "
                               f"installed ({e}); for PostgreSQL: pip install "
                               f"'edgerob[postgres]'") from None
        except (ArgumentError, NoSuchModuleError, SQLAlchemyError, OSError, ValueError) as e:
            reason = str(getattr(e, "orig", None) or e).splitlines()[0]
            raise EdgerobError(f"cannot open store {url!r}: {reason}") from None

    @staticmethod
    def _lock_resume_key(c, key: str) -> None:
        """Serialise `begin_run` for one resume key until the transaction ends, so that the
        read-then-insert cannot run twice at once: a PostgreSQL advisory lock on the key; on
        SQLite, a write statement first, which takes the database's write lock before the read
        (it changes nothing)."""
        if c.dialect.name == "postgresql":
            c.execute(sa.select(sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended(key, 0))))
        elif c.dialect.name == "sqlite":
            c.execute(runs.update().where(runs.c.resume_key == key)
                      .values(resume_key=runs.c.resume_key))

    # --- runs ------------------------------------------------------------------------------

    def begin_run(self, *, target: str, profile: str, model: str, model_sha256: str,
                  runtime: str, host: str, versions: dict, new: bool = False,
                  forced_target: bool | None = None, target_facts: dict | None = None,
                  ) -> tuple[str, bool]:
        """Resume the latest run with the same target, profile, model, runtime and host (unless
        `new`), else start one. Returns (run_id, resumed).

        A run is resumed only by a sweep as forced as it (`forced_target`: measured with
        --force-target on a machine that is not the target): a forced sweep never adds its cells
        to a verified run, nor a verified sweep to a forced one (whose rows are left out of
        decisions); each starts a run of its own instead. A resume keeps the run's flag and
        facts as they were when it started (NULL, stored before verification, counts as not
        forced)."""
        key = f"{target}|{profile}|{model_sha256}|{runtime}|{host}"
        check = {"forced_target": forced_target,
                 "target_facts": None if target_facts is None else json.dumps(target_facts)}
        with self.engine.begin() as c:
            if not new:
                self._lock_resume_key(c, key)
                same_kind = sa.func.coalesce(runs.c.forced_target, False) == bool(forced_target)
                row = c.execute(sa.select(runs.c.run_id)
                                .where(runs.c.resume_key == key, same_kind)
                                .order_by(runs.c.started_at.desc()).limit(1)).first()
                if row:
                    c.execute(runs.update().where(runs.c.run_id == row.run_id)
                              .values(status="running", finished_at=None))
                    return row.run_id, True
            run_id = uuid.uuid4().hex
            c.execute(runs.insert().values(
                run_id=run_id, target=target, profile=profile, model=model,
                model_sha256=model_sha256, runtime=runtime, host=host, status="running",
                started_at=now(), versions=json.dumps(versions), resume_key=key, **check))
        return run_id, False

    def finish_run(self, run_id: str, status: str = "done") -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id)
                      .values(status=status, finished_at=now()))

    def upsert_run(self, run: dict) -> int:
        """Insert a run copied from elsewhere (a device's bundle), or update its status and end
        time if this store already has it. Returns 1 if inserted."""

        def update(c) -> int:
            c.execute(runs.update().where(runs.c.run_id == run["run_id"]).values(
                status=run["status"], finished_at=run["finished_at"]))
            return 0

        try:
            with self.engine.begin() as c:
                if c.execute(sa.select(runs.c.run_id)
                             .where(runs.c.run_id == run["run_id"])).first():
                    return update(c)
                c.execute(runs.insert().values(**run))
                return 1
        except IntegrityError:  # another writer inserted it between our read and insert?
            with self.engine.begin() as c:
                if not c.execute(sa.select(runs.c.run_id)
                                 .where(runs.c.run_id == run["run_id"])).first():
                    raise  # no: the row itself is bad
                return update(c)

    def runs(self) -> list[dict]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(runs.select().order_by(runs.c.started_at))]

    # --- measurements ----------------------------------------------------------------------

    def measured_cells(self, run_id: str) -> set[tuple]:
        cols = [measurements.c[k] for k in CELL_KEY]
        with self.engine.connect() as c:
            return {tuple(r) for r in c.execute(sa.select(*cols)
                                                .where(measurements.c.run_id == run_id))}

    def add_measurement(self, row: dict) -> bool:
        """Insert one cell in its own transaction; False if that cell is already stored."""
        return self.add_measurements([row])

    def add_measurements(self, rows: list[dict]) -> bool:
        """Insert cells measured together (one precision and batch size, interleaved) in one
        transaction, so a resumed sweep finds all of them or none; False (nothing inserted)
        if one is already stored."""
        stamp = now()
        rows = [{**r, "created_at": r.get("created_at") or stamp} for r in rows]
        for row in rows:
            for k in ("fingerprint", "latencies_ms", "clocks_start", "clocks_end", "seq_rule",
                      "rounds"):
                if k in row and not isinstance(row[k], (str, type(None))):
                    row[k] = json.dumps(row[k])
        try:
            with self.engine.begin() as c:
                for row in rows:
                    c.execute(measurements.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def measurements(self, run_id: str | None = None, target: str | None = None) -> list[dict]:
        q = measurements.select().order_by(measurements.c.id)
        if run_id:
            q = q.where(measurements.c.run_id == run_id)
        if target:
            q = q.where(measurements.c.target == target)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    # --- failure records -------------------------------------------------------------------

    def failure_cells(self, run_id: str) -> set[tuple]:
        """(precision, batch_size, attack, eps, power_mode) of the query-attack cells stored for
        the run: those with an `attack_cells` row (even with no sample attacked) or with
        records."""
        out = set()
        with self.engine.connect() as c:
            for table in (failures, attack_cells):
                cols = [table.c[k] for k in ATTACK_KEY]
                out |= {tuple(r) for r in c.execute(sa.select(*cols).distinct()
                                                    .where(table.c.run_id == run_id))}
        return out

    def add_failures(self, rows: list[dict], cell: dict | None = None) -> bool:
        """Insert one cell's failure records, and its `attack_cells` row when given, in one
        transaction; False if already stored."""
        stamp = now()
        try:
            with self.engine.begin() as c:
                if cell is not None:
                    c.execute(attack_cells.insert().values(
                        **{**cell, "created_at": cell.get("created_at") or stamp}))
                if rows:
                    c.execute(failures.insert(),
                              [{**r, "created_at": r.get("created_at") or stamp} for r in rows])
        except IntegrityError:
            return False
        return True

    def add_attack_cell(self, row: dict) -> bool:
        """Insert one query-attack cell's row in its own transaction; False if already stored."""
        return self.add_failures([], cell=row)

    def attack_cells(self, **filters) -> list[dict]:
        """`attack_cells` rows, e.g. attack_cells(run_id=..., precision="int8"); a filter of
        None is no filter."""
        q = attack_cells.select().order_by(attack_cells.c.id)
        for k, v in filters.items():
            if k not in attack_cells.c:
                raise EdgerobError(f"attack_cells has no column {k!r}")
            if v is not None:
                q = q.where(attack_cells.c[k] == v)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def failures(self, run_id: str | None = None) -> list[dict]:
        q = failures.select().order_by(failures.c.id)
        if run_id:
            q = q.where(failures.c.run_id == run_id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]
