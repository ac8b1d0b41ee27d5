"""Issue 21, every published MLPerf result: a run's device configuration and accelerator
count, throughput per accelerator, the early-stopping latency estimate, and a precision that
may be unknown.

Imported rows of every benchmark and scenario share the tables with own measurements: a run
says which configuration of its device ran (`configuration`, e.g. "MaxQ, GPU + 2 DLA") on how
many accelerators (`n_accelerators`); `measurements.precision` becomes nullable because not
every published result states its precision (`precision_note` says why it is NULL). Rows stored
before keep their values. Runs imported before by the ResNet-50-only importer are named like
the new ones (`model` "mlperf:resnet50") and described from what they hold: that importer
refused multi-accelerator systems (`n_accelerators` 1), and their power class and engines are in
`system_name` and `accelerators`; Offline throughput per accelerator is their throughput; their
other new columns stay NULL.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as t:
        t.add_column(sa.Column("n_accelerators", sa.Integer))
        t.add_column(sa.Column("configuration", sa.String))
    with op.batch_alter_table("measurements") as t:
        t.alter_column("precision", existing_type=sa.String(8), nullable=True)
        t.add_column(sa.Column("precision_note", sa.Text))
        t.add_column(sa.Column("throughput_per_accelerator_sps", sa.Float))
        t.add_column(sa.Column("latency_early_stopping_ms", sa.Float))
    # the previous importer stored model "resnet50" and took MaxQ/Triton from the system folder
    op.execute("UPDATE runs SET model = 'mlperf:' || model, n_accelerators = 1, "
               "configuration = (CASE WHEN system_name LIKE '%MaxQ%' THEN 'MaxQ' ELSE 'MaxP' "
               "END) || ', ' || accelerators || (CASE WHEN system_name LIKE '%Triton%' "
               "THEN ', Triton' ELSE '' END) WHERE source = 'mlperf'")
    op.execute("UPDATE measurements SET throughput_per_accelerator_sps = throughput_sps "
               "WHERE run_id IN (SELECT run_id FROM runs WHERE source = 'mlperf' "
               "AND scenario = 'Offline')")
