"""scheduled exports: an assembly's encrypted archives kept by the instance (the key derived
from the passphrase, never the passphrase)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assembly_export_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assembly_id", sa.Integer(), nullable=False),
        sa.Column("keep", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("scrypt_log2_n", sa.Integer(), nullable=False),
        sa.Column("scrypt_r", sa.Integer(), nullable=False),
        sa.Column("scrypt_p", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_export_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_export_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["assembly_id"], ["assemblies.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assembly_id"),
    )
    with op.batch_alter_table("assembly_export_schedules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assembly_export_schedules_due", ["next_export_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("assembly_export_schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_assembly_export_schedules_due")
    op.drop_table("assembly_export_schedules")
