"""edgerob 0.3.0: input sets compared with clean in alternating rounds of one session, and
failure energy net of idle.

Rows stored before compared an input set with a clean cell measured minutes earlier; they keep
their figures, labelled `vs_clean_method = 'sequential cells'` so no table takes them for paired
ones. Failure records stored before hold gross energy (idle was not measured): it moves to
`energy_gross_j` / `energy_share_gross_j`, so `energy_j` is net of idle in every row that has it
and the two bases are never summed together.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements") as t:
        for name in ("latency_vs_clean_low", "latency_vs_clean_high", "latency_vs_clean_effect",
                     "energy_vs_clean_low", "energy_vs_clean_high", "vs_clean_confidence"):
            t.add_column(sa.Column(name, sa.Float))
        t.add_column(sa.Column("vs_clean_rounds", sa.Integer))
        t.add_column(sa.Column("vs_clean_method", sa.String))
        t.add_column(sa.Column("rounds", sa.Text))
    op.execute("UPDATE measurements SET vs_clean_method = 'sequential cells' "
               "WHERE latency_vs_clean_ratio IS NOT NULL")
    with op.batch_alter_table("failures") as t:
        t.add_column(sa.Column("energy_gross_j", sa.Float))
        t.add_column(sa.Column("energy_share_gross_j", sa.Float))
    op.execute("UPDATE failures SET energy_gross_j = energy_j, "
               "energy_share_gross_j = energy_share_j, energy_j = NULL, energy_share_j = NULL")
    with op.batch_alter_table("attack_cells") as t:
        t.add_column(sa.Column("power_idle_w", sa.Float))
        t.add_column(sa.Column("power_note", sa.Text))
