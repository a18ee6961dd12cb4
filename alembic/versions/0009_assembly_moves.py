"""an assembly's other identities (alsoKnownAs), where it moved (movedTo), and where a remote
actor moved

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assemblies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("also_known_as", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(sa.Column("moved_to", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("remote_actors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moved_to", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("remote_actors", schema=None) as batch_op:
        batch_op.drop_column("moved_to")
    with op.batch_alter_table("assemblies", schema=None) as batch_op:
        batch_op.drop_column("moved_at")
        batch_op.drop_column("moved_to")
        batch_op.drop_column("also_known_as")
