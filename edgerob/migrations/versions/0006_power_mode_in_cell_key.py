"""The power mode is part of a cell's key: a sweep over power modes stores each cell once per
mode (issue 22). The unique constraint on (run, runtime, precision, batch size, input set)
becomes a unique index that adds COALESCE(power_mode, ''), so rows without a mode (NULL: not
readable, or stored before 0005) still count as one mode and cannot be stored twice. Every row
stays as it is: rows stored before were unique without the mode, so they are unique with it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements") as t:
        t.drop_constraint("one_row_per_cell", type_="unique")
    op.create_index("one_row_per_cell_and_mode", "measurements",
                    ["run_id", "runtime", "precision", "batch_size", "input_set",
                     sa.text("coalesce(power_mode, '')")], unique=True)
