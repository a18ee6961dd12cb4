"""communiqués that prove their own origin: an Ed25519 key per assembly (FEP-8b32 proofs,
published as a Multikey under assertionMethod), made here for the assemblies that exist; and
how each queued activity and each co-signature was verified (which key, which scheme)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _new_key_pem() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


def upgrade() -> None:
    with op.batch_alter_table("assemblies") as batch:
        batch.add_column(sa.Column("ed25519_private_key_pem", sa.Text(), nullable=True))
    assemblies = sa.table(
        "assemblies",
        sa.column("id", sa.Integer()),
        sa.column("ed25519_private_key_pem", sa.Text()),
    )
    connection = op.get_bind()
    ids = connection.execute(
        sa.select(assemblies.c.id).where(assemblies.c.ed25519_private_key_pem.is_(None))
    ).scalars()
    for assembly_id in list(ids):
        connection.execute(
            assemblies.update()
            .where(assemblies.c.id == assembly_id)
            .values(ed25519_private_key_pem=_new_key_pem())
        )
    for table in ("inbox_queue", "shares"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("verified_by", sa.String(length=2048), nullable=True))
            batch.add_column(sa.Column("verified_with", sa.String(length=40), nullable=True))


def downgrade() -> None:
    for table in ("shares", "inbox_queue"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("verified_with")
            batch.drop_column("verified_by")
    with op.batch_alter_table("assemblies") as batch:
        batch.drop_column("ed25519_private_key_pem")
