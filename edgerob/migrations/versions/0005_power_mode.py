"""The power mode of each measurement: a readable label (MODE_30W, MAXN, 250W-limit, default).

Rows stored before keep NULL: the mode they ran in was not recorded, and is not guessed.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements") as t:
        t.add_column(sa.Column("power_mode", sa.String))

