"""an assembly publishes its followers and following lists only if it chooses to

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assemblies", schema=None) as batch_op:
        # The server default fills the existing rows: every assembly starts private.
        batch_op.add_column(
            sa.Column(
                "publish_social_graph", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("assemblies", schema=None) as batch_op:
        batch_op.drop_column("publish_social_graph")
