"""delivery by host: each delivery's host, the health of every host, skipped deliveries

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_key(uri: str) -> str:
    # As server.activitypub.delivery.host_key computes it; copied so that this migration
    # keeps working whatever that module becomes.
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").strip().lower().rstrip(".")
        port = parts.port
    except ValueError:
        return ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{port}"[:300]
    return host[:300]


def upgrade() -> None:
    op.create_table(
        "delivery_hosts",
        sa.Column("host", sa.String(length=300), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "available",
                "failing",
                "unavailable",
                name="host_state",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_probe_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unavailable_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("host"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("host", sa.String(length=300), nullable=False, server_default="")
        )
    deliveries = sa.table(
        "deliveries", sa.column("id", sa.Integer()), sa.column("inbox_uri"), sa.column("host")
    )
    bind = op.get_bind()
    inboxes = bind.execute(sa.select(deliveries.c.inbox_uri).distinct()).scalars().all()
    for inbox in inboxes:
        bind.execute(
            deliveries.update()
            .where(deliveries.c.inbox_uri == inbox)
            .values(host=_host_key(inbox))
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("host", server_default=None)
        batch_op.create_index("ix_deliveries_host", ["host", "status"], unique=False)
    # The admin overview counts the failed attempts of the last 24 hours.
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delivery_attempts_attempted_at", ["attempted_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_attempts_attempted_at")
    op.execute("UPDATE deliveries SET status = 'failed' WHERE status = 'skipped'")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_host")
        batch_op.drop_column("host")
    op.drop_table("delivery_hosts")
