"""edgerob 0.2.0: forced targets, imported results' provenance, per-sample shares of failure
time and energy, sequential estimates, and one row per query-attack cell.

Records written by 0.1.0 stored `failures.energy_j` as the energy of the queries a sample took
part in divided by the batch size; 0.2.0 stores that energy whole (the basis of `duration_s`,
edgerob.device.failures) and the per-sample share apart. The upgrade multiplies the old values back
by the batch size, so old and new records are on one basis; their shares stay NULL (they cannot
be rebuilt from what was stored).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as t:
        t.add_column(sa.Column("forced_target", sa.Boolean))
        t.add_column(sa.Column("target_facts", sa.Text))
        t.add_column(sa.Column("source", sa.String(16)))
        t.add_column(sa.Column("source_path", sa.Text))
        t.add_column(sa.Column("mlperf_version", sa.String(16)))
        t.add_column(sa.Column("scenario", sa.String(16)))
        t.add_column(sa.Column("system_name", sa.String))
        t.add_column(sa.Column("accelerators", sa.String))
    with op.batch_alter_table("measurements") as t:
        t.add_column(sa.Column("seq_n_available", sa.Integer))
        t.add_column(sa.Column("seq_estimate", sa.Float))
        t.add_column(sa.Column("seq_ci_low", sa.Float))
        t.add_column(sa.Column("seq_ci_high", sa.Float))
        t.add_column(sa.Column("seq_rule", sa.Text))
    with op.batch_alter_table("failures") as t:
        t.add_column(sa.Column("duration_share_s", sa.Float))
        t.add_column(sa.Column("energy_share_j", sa.Float))
    op.execute("UPDATE failures SET energy_j = energy_j * batch_size WHERE energy_j IS NOT NULL")
    op.create_table(
        "attack_cells",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("target", sa.String, nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("attack", sa.String, nullable=False),
        sa.Column("eps", sa.Float, nullable=False),
        sa.Column("n_available", sa.Integer, nullable=False),
        sa.Column("n_clean_wrong", sa.Integer, nullable=False),
        sa.Column("n_attacked", sa.Integer, nullable=False),
        sa.Column("n_sampled", sa.Integer),
        sa.Column("stop_half_width", sa.Float),
        sa.Column("stop_confidence", sa.Float),
        sa.Column("stop_max_samples", sa.Integer),
        sa.Column("stopped_by", sa.String(16)),
        sa.Column("failure_rate", sa.Float),
        sa.Column("failure_ci_low", sa.Float),
        sa.Column("failure_ci_high", sa.Float),
        sa.Column("ci_method", sa.String(32)),
        sa.Column("km_median_s", sa.Float),
        sa.Column("km_median_low_s", sa.Float),
        sa.Column("km_median_high_s", sa.Float),
        sa.Column("attack_wall_s", sa.Float),
        sa.Column("projected_saved_s", sa.Float),
        sa.Column("created_at", sa.String),
        sa.UniqueConstraint("run_id", "precision", "batch_size", "attack", "eps",
                            name="one_row_per_attack_cell"),
    )
