"""the inbox queue: activities accepted by an inbox, processed by workers

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("activity_uri", sa.String(length=2048), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("inbox_handle", sa.String(length=64), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "rejected",
                "parked",
                name="inbox_item_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("activity_uri"),
    )
    with op.batch_alter_table("inbox_queue", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_queue_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            "ix_inbox_queue_actor", ["actor_uri", "status", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_queue_actor")
        batch_op.drop_index("ix_inbox_queue_due")
    op.drop_table("inbox_queue")
