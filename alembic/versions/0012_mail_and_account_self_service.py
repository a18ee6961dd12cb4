"""mail and account self-service: the mail queue (what to write and to whom, never the
text), single-use account links (password reset, address confirmation; hashes only), the
rate limiter's marks, one delivery-failure summary per communiqué, and each account's
confirmed and pending address

Existing accounts start unconfirmed: nobody checked that their addresses were theirs.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pending_email", sa.String(length=254), nullable=True))

    op.create_table(
        "mail_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sent",
                "parked",
                "dropped",
                name="mail_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mail_queue") as batch:
        batch.create_index("ix_mail_queue_due", ["status", "next_attempt_at"], unique=False)
        batch.create_index("ix_mail_queue_user_id", ["user_id"], unique=False)

    op.create_table(
        "account_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("account_tokens") as batch:
        batch.create_index("ix_account_tokens_user_id", ["user_id"], unique=False)
        batch.create_index("ix_account_tokens_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "request_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_marks") as batch:
        batch.create_index("ix_request_marks_key_at", ["key", "at"], unique=False)

    op.create_table(
        "delivery_failure_notices",
        sa.Column("communique_id", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["communique_id"], ["communiques.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("communique_id"),
    )


def downgrade() -> None:
    op.drop_table("delivery_failure_notices")
    with op.batch_alter_table("request_marks") as batch:
        batch.drop_index("ix_request_marks_key_at")
    op.drop_table("request_marks")
    with op.batch_alter_table("account_tokens") as batch:
        batch.drop_index("ix_account_tokens_expires_at")
        batch.drop_index("ix_account_tokens_user_id")
    op.drop_table("account_tokens")
    with op.batch_alter_table("mail_queue") as batch:
        batch.drop_index("ix_mail_queue_user_id")
        batch.drop_index("ix_mail_queue_due")
    op.drop_table("mail_queue")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("pending_email")
        batch.drop_column("email_confirmed_at")
