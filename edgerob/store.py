"""The results store: SQLAlchemy, a SQLite file by default, PostgreSQL for a fleet.

Column names follow DESIGN.md's store schema (a contract other tools read). Each sweep cell is
written in one transaction, and a unique key per cell means a resumed or repeated sweep can never
hold the same cell twice.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from edgerob.errors import EdgerobError

DEFAULT_URL = "sqlite:///edgerob.db"

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
    sa.Column("resume_key", sa.String(64), index=True),
)

CELL_KEY = ("runtime", "precision", "batch_size", "input_set")

measurements = sa.Table(
    "measurements", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("target", sa.String, nullable=False),
    sa.Column("runtime", sa.String, nullable=False),
    sa.Column("precision", sa.String(8), nullable=False),
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
    # adversarial input set vs clean, same run/precision/batch size (NULL for clean rows)
    sa.Column("latency_vs_clean_ratio", sa.Float),  # p50 ratio
    sa.Column("latency_vs_clean_p", sa.Float),  # Mann-Whitney U, two-sided
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
    sa.UniqueConstraint("run_id", *CELL_KEY, name="one_row_per_cell"),
)

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
    sa.UniqueConstraint("run_id", "precision", "batch_size", "attack", "eps", "sample_id",
                        name="one_row_per_attacked_sample"),
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    """Open (and create if needed) the results database at `url`."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        try:
            parsed = sa.engine.make_url(url)
            if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "",
                                                                                   ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(parsed)
            metadata.create_all(self.engine)
        except (ArgumentError, NoSuchModuleError, SQLAlchemyError, OSError, ValueError) as e:
            reason = str(getattr(e, "orig", None) or e).splitlines()[0]
            raise EdgerobError(f"cannot open store {url!r}: {reason}") from None

    # --- runs ------------------------------------------------------------------------------

    def begin_run(self, *, target: str, profile: str, model: str, model_sha256: str,
                  runtime: str, host: str, versions: dict, new: bool = False) -> tuple[str, bool]:
        """Resume the latest run with the same target, profile, model, runtime and host (unless
        `new`), else start one. Returns (run_id, resumed)."""
        key = f"{target}|{profile}|{model_sha256}|{runtime}|{host}"
        with self.engine.begin() as c:
            if not new:
                row = c.execute(sa.select(runs.c.run_id).where(runs.c.resume_key == key)
                                .order_by(runs.c.started_at.desc()).limit(1)).first()
                if row:
                    c.execute(runs.update().where(runs.c.run_id == row.run_id)
                              .values(status="running", finished_at=None))
                    return row.run_id, True
            run_id = uuid.uuid4().hex
            c.execute(runs.insert().values(
                run_id=run_id, target=target, profile=profile, model=model,
                model_sha256=model_sha256, runtime=runtime, host=host, status="running",
                started_at=now(), versions=json.dumps(versions), resume_key=key))
        return run_id, False

    def finish_run(self, run_id: str, status: str = "done") -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id)
                      .values(status=status, finished_at=now()))

    def upsert_run(self, run: dict) -> int:
        """Insert a run copied from elsewhere (a device's bundle), or update its status and end
        time if this store already has it. Returns 1 if inserted."""
        with self.engine.begin() as c:
            if c.execute(sa.select(runs.c.run_id).where(runs.c.run_id == run["run_id"])).first():
                c.execute(runs.update().where(runs.c.run_id == run["run_id"]).values(
                    status=run["status"], finished_at=run["finished_at"]))
                return 0
            c.execute(runs.insert().values(**run))
            return 1

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
        row = {**row, "created_at": row.get("created_at") or now()}
        for k in ("fingerprint", "latencies_ms", "clocks_start", "clocks_end"):
            if k in row and not isinstance(row[k], (str, type(None))):
                row[k] = json.dumps(row[k])
        try:
            with self.engine.begin() as c:
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
        cols = [failures.c[k] for k in ("precision", "batch_size", "attack", "eps")]
        with self.engine.connect() as c:
            return {tuple(r) for r in c.execute(sa.select(*cols).distinct()
                                                .where(failures.c.run_id == run_id))}

    def add_failures(self, rows: list[dict]) -> bool:
        """Insert one cell's failure records in one transaction; False if already stored."""
        stamp = now()
        try:
            with self.engine.begin() as c:
                c.execute(failures.insert(),
                          [{**r, "created_at": r.get("created_at") or stamp} for r in rows])
        except IntegrityError:
            return False
        return True

    def failures(self, run_id: str | None = None) -> list[dict]:
        q = failures.select().order_by(failures.c.id)
        if run_id:
            q = q.where(failures.c.run_id == run_id)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]
