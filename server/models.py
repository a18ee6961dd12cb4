"""Typed SQLAlchemy 2 models. Every change here comes with an Alembic migration."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class AssemblyStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    SUSPENDED = "suspended"


class FollowerStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Assembly(Base):
    __tablename__ = "assemblies"

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(String(30), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[AssemblyStatus] = mapped_column(
        _enum(AssemblyStatus, "assembly_status"), default=AssemblyStatus.PENDING
    )
    icon_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    manually_approves_followers: Mapped[bool] = mapped_column(default=False)
    discoverable: Mapped[bool] = mapped_column(default=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InstanceKey(Base):
    """The instance actor's key pair: signs fetches made on no assembly's behalf."""

    __tablename__ = "instance_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RemoteActor(Base):
    __tablename__ = "remote_actors"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    domain: Mapped[str] = mapped_column(String(255), index=True)
    type: Mapped[str] = mapped_column(String(40), default="Person")
    preferred_username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    inbox_uri: Mapped[str] = mapped_column(String(2048))
    shared_inbox_uri: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def delivery_inbox(self) -> str:
        return self.shared_inbox_uri or self.inbox_uri


class RemoteKey(Base):
    """Cache of remote public keys by key id (a key may be a separate document)."""

    __tablename__ = "remote_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(2048), unique=True)
    owner_uri: Mapped[str] = mapped_column(String(2048), index=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Follower(Base):
    __tablename__ = "followers"
    __table_args__ = (UniqueConstraint("assembly_id", "actor_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(ForeignKey("assemblies.id", ondelete="CASCADE"))
    actor_id: Mapped[int] = mapped_column(
        ForeignKey("remote_actors.id", ondelete="CASCADE"), index=True
    )
    follow_uri: Mapped[str] = mapped_column(String(2048))
    status: Mapped[FollowerStatus] = mapped_column(
        _enum(FollowerStatus, "follower_status"), default=FollowerStatus.ACCEPTED
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    actor: Mapped[RemoteActor] = relationship(lazy="raise")


class Communique(Base):
    __tablename__ = "communiques"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    assembly_id: Mapped[int] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16), default="en")
    hashtags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"name": "@user@host", "href": actor id, "inbox": …, "url": …}] resolved at writing time
    mentions: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    assembly: Mapped[Assembly] = relationship(lazy="raise")


class Activity(Base):
    """An activity we published (Create, Update, Delete, Accept…), kept as sent."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_outbox", "assembly_id", "type", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    assembly_id: Mapped[int | None] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"), nullable=True
    )
    communique_id: Mapped[int | None] = mapped_column(
        ForeignKey("communiques.id", ondelete="CASCADE"), nullable=True, index=True
    )
    type: Mapped[str] = mapped_column(String(40))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    public: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(Base):
    """One row per (activity, inbox): the unit of durable, retried delivery."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("activity_id", "inbox_uri"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    inbox_uri: Mapped[str] = mapped_column(String(2048))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    activity: Mapped[Activity] = relationship(lazy="raise")


class DeliveryAttempt(Base):
    """The history of one delivery: every attempt, its outcome, and what was scheduled next."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboxActivity(Base):
    """Every accepted incoming activity, by id: the dedupe record and the audit trail."""

    __tablename__ = "inbox_activities"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2048), index=True)
    type: Mapped[str] = mapped_column(String(40))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Reply(Base):
    """A remote Note that answers one of our communiqués (content sanitised on arrival)."""

    __tablename__ = "replies"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    communique_id: Mapped[int] = mapped_column(
        ForeignKey("communiques.id", ondelete="CASCADE"), index=True
    )
    actor_uri: Mapped[str] = mapped_column(String(2048), index=True)
    content_html: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
