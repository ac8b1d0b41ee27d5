"""Failure records and query-attack cells carry their power mode, part of their key (issue 22):
a sweep over power modes attacks each cell once per mode, as it measures each measurement cell.
`power_mode` (nullable, the label `read_power_mode` gives, as on measurements) is added to
`failures` and `attack_cells`, and their unique constraints become unique indexes that add
COALESCE(power_mode, '') as 0006 did for measurements, so a cell without a mode still counts
once. Rows stored before keep NULL (the mode they ran in was not recorded, and is not guessed
here; compare derives it from the run's measurements where those name one mode); they were
unique without the mode, so they are unique with it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# table -> (its old constraint, its new index, the cell's columns before the mode)
KEYS = {
    "failures": ("one_row_per_attacked_sample", "one_row_per_attacked_sample_and_mode",
                 ["run_id", "precision", "batch_size", "attack", "eps", "sample_id"]),
    "attack_cells": ("one_row_per_attack_cell", "one_row_per_attack_cell_and_mode",
                     ["run_id", "precision", "batch_size", "attack", "eps"]),
}


def upgrade() -> None:
    for table, (constraint, index, columns) in KEYS.items():
        with op.batch_alter_table(table) as t:
            t.add_column(sa.Column("power_mode", sa.String))
            t.drop_constraint(constraint, type_="unique")
        op.create_index(index, table, [*columns, sa.text("coalesce(power_mode, '')")],
                        unique=True)
