"""The schema of edgerob 0.1.0, written out as it was (never generated from today's tables).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LATENCY = ("mean", "p50", "p90", "p95", "p99", "std", "min", "max")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("target", sa.String, nullable=False),
        sa.Column("profile", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("runtime", sa.String),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.String, nullable=False),
        sa.Column("finished_at", sa.String),
        sa.Column("versions", sa.Text),
        sa.Column("resume_key", sa.String),
    )
    op.create_index("ix_runs_resume_key", "runs", ["resume_key"])
    op.create_table(
        "measurements",
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
        *(sa.Column(f"latency_{s}_ms", sa.Float) for s in LATENCY),
        sa.Column("throughput_sps", sa.Float),
        sa.Column("accuracy", sa.Float),
        sa.Column("profiler", sa.String),
        sa.Column("power_samples", sa.Integer),
        sa.Column("power_mean_w", sa.Float),
        sa.Column("power_idle_w", sa.Float),
        sa.Column("energy_j", sa.Float),
        sa.Column("energy_per_inference_j", sa.Float),
        sa.Column("power_note", sa.Text),
        sa.Column("latency_vs_clean_ratio", sa.Float),
        sa.Column("latency_vs_clean_p", sa.Float),
        sa.Column("latency_vs_clean_cliffs_delta", sa.Float),
        sa.Column("energy_vs_clean_ratio", sa.Float),
        sa.Column("throttled", sa.Boolean),
        sa.Column("throttle_note", sa.Text),
        sa.Column("clocks_start", sa.Text),
        sa.Column("clocks_end", sa.Text),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("fingerprint", sa.Text),
        sa.Column("latencies_ms", sa.Text),
        sa.Column("created_at", sa.String, nullable=False),
        sa.UniqueConstraint("run_id", "runtime", "precision", "batch_size", "input_set",
                            name="one_row_per_cell"),
    )
    op.create_table(
        "failures",
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
        sa.Column("event", sa.Integer, nullable=False),
        sa.Column("label", sa.Integer),
        sa.Column("created_at", sa.String),
        sa.UniqueConstraint("run_id", "precision", "batch_size", "attack", "eps", "sample_id",
                            name="one_row_per_attacked_sample"),
    )


def downgrade() -> None:
    op.drop_table("failures")
    op.drop_table("measurements")
    op.drop_index("ix_runs_resume_key", "runs")
    op.drop_table("runs")
