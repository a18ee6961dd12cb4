"""committees of correspondence

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remote_posts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("content_html", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("in_reply_to", sa.String(length=2048), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uri"),
    )
    with op.batch_alter_table("remote_posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_remote_posts_actor_uri"), ["actor_uri"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_remote_posts_in_reply_to"), ["in_reply_to"], unique=False
        )

    op.create_table(
        "followings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assembly_id", sa.Integer(), nullable=True),
        sa.Column("target_uri", sa.String(length=2048), nullable=False),
        sa.Column("inbox_uri", sa.String(length=2048), nullable=False),
        sa.Column("follow_uri", sa.String(length=2048), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "accepted",
                "rejected",
                name="follow_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("is_relay", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["assembly_id"], ["assemblies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assembly_id", "target_uri"),
        sa.UniqueConstraint("follow_uri"),
    )
    with op.batch_alter_table("followings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_followings_target_uri"), ["target_uri"], unique=False)

    op.create_table(
        "letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assembly_id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("outgoing", sa.Boolean(), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("content_html", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.String(length=2048), nullable=True),
        sa.Column("thread", sa.String(length=2048), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["assembly_id"], ["assemblies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assembly_id", "uri"),
    )
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.create_index(
            "ix_letters_assembly_at", ["assembly_id", "published_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_letters_thread"), ["thread"], unique=False)

    op.create_table(
        "timeline_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assembly_id", sa.Integer(), nullable=False),
        sa.Column("post_uri", sa.String(length=2048), nullable=False),
        sa.Column("activity_uri", sa.String(length=2048), nullable=False),
        sa.Column("announced_by", sa.String(length=2048), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["assembly_id"], ["assemblies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assembly_id", "activity_uri"),
    )
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_timeline_assembly_at", ["assembly_id", "created_at"], unique=False
        )

    op.create_table(
        "poll_votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("communique_id", sa.Integer(), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("choice", sa.String(length=500), nullable=False),
        sa.Column("vote_uri", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["communique_id"], ["communiques.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("communique_id", "actor_uri"),
        sa.UniqueConstraint("vote_uri"),
    )
    with op.batch_alter_table("poll_votes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_poll_votes_communique_id"), ["communique_id"], unique=False
        )

    op.create_table(
        "shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("communique_id", sa.Integer(), nullable=False),
        sa.Column("actor_uri", sa.String(length=2048), nullable=False),
        sa.Column("announce_uri", sa.String(length=2048), nullable=False),
        sa.Column("actor_name", sa.String(length=500), nullable=True),
        sa.Column("actor_type", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["communique_id"], ["communiques.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("announce_uri"),
        sa.UniqueConstraint("communique_id", "actor_uri"),
    )
    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shares_communique_id"), ["communique_id"], unique=False
        )

    with op.batch_alter_table("communiques", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ratification", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("poll", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("poll_closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("communiques", schema=None) as batch_op:
        batch_op.drop_column("pinned_at")
        batch_op.drop_column("poll_closed_at")
        batch_op.drop_column("poll")
        batch_op.drop_column("ratification")

    with op.batch_alter_table("shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shares_communique_id"))

    op.drop_table("shares")
    with op.batch_alter_table("poll_votes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_poll_votes_communique_id"))

    op.drop_table("poll_votes")
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_timeline_assembly_at")

    op.drop_table("timeline_entries")
    with op.batch_alter_table("letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_letters_thread"))
        batch_op.drop_index("ix_letters_assembly_at")

    op.drop_table("letters")
    with op.batch_alter_table("followings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_followings_target_uri"))

    op.drop_table("followings")
    with op.batch_alter_table("remote_posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_posts_in_reply_to"))
        batch_op.drop_index(batch_op.f("ix_remote_posts_actor_uri"))

    op.drop_table("remote_posts")
