"""Typed SQLAlchemy 2 models. Every change here comes with an Alembic migration."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class UserStatus(enum.StrEnum):
    PENDING = "pending"  # registration mode "approval": waits for an admin
    ACTIVE = "active"
    REJECTED = "rejected"
    DISABLED = "disabled"


class MemberRole(enum.StrEnum):
    FACILITATOR = "facilitator"  # posts, edits, answers followers
    ADMIN = "admin"  # the assembly's admin: also its profile and its facilitators


class MediaPurpose(enum.StrEnum):
    ATTACHMENT = "attachment"
    AVATAR = "avatar"
    HEADER = "header"


class FollowerStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"


class InboxItemStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for a worker (or for its next try)
    REJECTED = "rejected"  # processed and refused (the activity was bad): kept with the reason
    PARKED = "parked"  # failed every try: kept with its error until an admin retries it


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due, retrying, or held while its host is failing
    DELIVERED = "delivered"
    FAILED = "failed"  # refused, out of attempts, or its domain is blocked
    SKIPPED = "skipped"  # never attempted: its host was unavailable (see DeliveryHost)


class HostState(enum.StrEnum):
    AVAILABLE = "available"  # delivered to as usual
    FAILING = "failing"  # held: only a probe now and then, until one succeeds
    UNAVAILABLE = "unavailable"  # failing for days: new deliveries are skipped


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
    header_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    place: Mapped[str] = mapped_column(String(200), default="")
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    rejection_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    manually_approves_followers: Mapped[bool] = mapped_column(default=False)
    discoverable: Mapped[bool] = mapped_column(default=True)
    # Whether the followers and following collections list their members; by default they
    # give only their totals (who follows an assembly can endanger them).
    publish_social_graph: Mapped[bool] = mapped_column(default=False)
    # Moving (server/moving.py): the assembly's other identities (actor ids), as its actor's
    # alsoKnownAs; and, once it has moved, where to (its actor's movedTo) and when.
    also_known_as: Mapped[list[str]] = mapped_column(JSON, default=list)
    moved_to: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    moved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key_pem: Mapped[str] = mapped_column(Text)
    # The Ed25519 key of the assembly's FEP-8b32 integrity proofs (PKCS#8 PEM), published as
    # a Multikey under its actor's assertionMethod (server/activitypub/proofs.py).
    ed25519_private_key_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class User(Base):
    """A person who signs in: facilitator of assemblies, or instance admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, PHC string
    is_admin: Mapped[bool] = mapped_column(default=False)
    status: Mapped[UserStatus] = mapped_column(
        _enum(UserStatus, "user_status"), default=UserStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the person showed the address is theirs (a link mailed to it); None: not yet.
    # Notices are mailed only to confirmed addresses (server/mail.py).
    email_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # An address asked for, waiting for its confirmation before it replaces ``email``.
    pending_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # The language of its pages and e-mail (server/i18n.py); None: as the browser asks.
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="raise")


class LoginFailure(Base):
    """A failed sign-in under one of its limiter keys (server.accounts.limiter_keys: keyed
    hashes of the e-mail and client addresses, never the addresses): the rate limiter's
    memory, deleted once outside its window."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "attempted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceSetting(Base):
    """Instance settings an admin edits in the browser (name, description, rules…)."""

    __tablename__ = "instance_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("assembly_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(ForeignKey("assemblies.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[MemberRole] = mapped_column(
        _enum(MemberRole, "member_role"), default=MemberRole.FACILITATOR
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="raise")
    assembly: Mapped[Assembly] = relationship(lazy="raise")


class Invitation(Base):
    """An invitation to facilitate an assembly, addressed to an e-mail address."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(254), index=True)
    role: Mapped[MemberRole] = mapped_column(
        _enum(MemberRole, "member_role"), default=MemberRole.FACILITATOR
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Media(Base):
    """An uploaded file (image or PDF), checked by content, stored under the media directory."""

    __tablename__ = "media"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    assembly_id: Mapped[int] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"), index=True
    )
    communique_id: Mapped[int | None] = mapped_column(
        ForeignKey("communiques.id", ondelete="SET NULL"), nullable=True, index=True
    )
    purpose: Mapped[MediaPurpose] = mapped_column(
        _enum(MediaPurpose, "media_purpose"), default=MediaPurpose.ATTACHMENT
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    media_type: Mapped[str] = mapped_column(String(100))
    file_name: Mapped[str] = mapped_column(String(100), unique=True)  # name on disk
    original_name: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    alt_text: Mapped[str] = mapped_column(Text, default="")
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DomainBlock(Base):
    """A remote domain we neither accept activities from nor deliver to."""

    __tablename__ = "domain_blocks"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Report(Base):
    """A Flag activity received: someone reports one of our actors or communiqués."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2048))
    targets: Mapped[list[str]] = mapped_column(JSON, default=list)
    comment: Mapped[str] = mapped_column(Text, default="")
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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
    # Set by a verified Move (server/moving.py): the identity this actor moved to.
    moved_to: Mapped[str | None] = mapped_column(String(2048), nullable=True)

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
    # The instance's follow-approval mode holds a request for an admin before the assembly.
    held_for_admin: Mapped[bool] = mapped_column(default=False)
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
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)  # content warning
    hashtags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"name": "@user@host", "href": actor id, "inbox": …, "url": …}] resolved at writing time
    mentions: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How the assembly decided it (server.ratification): date, place, process, votes, minutes.
    ratification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # A straw poll (published as a Question): {"choices": [...], "closes_at": iso, ...}.
    poll: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    poll_closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pinned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    assembly: Mapped[Assembly] = relationship(lazy="raise")


class FollowStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Following(Base):
    """An actor one of our assemblies follows (another assembly, a person, a relay)."""

    __tablename__ = "followings"
    __table_args__ = (UniqueConstraint("assembly_id", "target_uri"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int | None] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"),
        nullable=True,  # None: the instance
    )
    target_uri: Mapped[str] = mapped_column(String(2048), index=True)
    inbox_uri: Mapped[str] = mapped_column(String(2048))
    follow_uri: Mapped[str] = mapped_column(String(2048), unique=True)
    status: Mapped[FollowStatus] = mapped_column(
        _enum(FollowStatus, "follow_status"), default=FollowStatus.PENDING
    )
    is_relay: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RemotePost(Base):
    """A post by someone else (followed actor, correspondent), content sanitised on arrival."""

    __tablename__ = "remote_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2048), index=True)
    type: Mapped[str] = mapped_column(String(40), default="Note")
    content_html: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(2048), nullable=True, index=True)
    public: Mapped[bool] = mapped_column(default=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TimelineEntry(Base):
    """A post on an assembly's dashboard timeline: written or announced by an actor it follows."""

    __tablename__ = "timeline_entries"
    __table_args__ = (
        UniqueConstraint("assembly_id", "activity_uri"),
        Index("ix_timeline_assembly_at", "assembly_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(ForeignKey("assemblies.id", ondelete="CASCADE"))
    post_uri: Mapped[str] = mapped_column(String(2048))
    activity_uri: Mapped[str] = mapped_column(String(2048))
    announced_by: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Letter(Base):
    """Correspondence: a non-public Note to or from one of our assemblies (or a mention)."""

    __tablename__ = "letters"
    __table_args__ = (
        UniqueConstraint("assembly_id", "uri"),
        Index("ix_letters_assembly_at", "assembly_id", "published_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(ForeignKey("assemblies.id", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(String(2048))
    outgoing: Mapped[bool] = mapped_column(default=False)
    actor_uri: Mapped[str] = mapped_column(String(2048))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    content_html: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    thread: Mapped[str] = mapped_column(String(2048), index=True)  # the first letter's uri
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)


class Share(Base):
    """An Announce of one of our communiqués: a co-signature when it comes from an assembly."""

    __tablename__ = "shares"
    __table_args__ = (UniqueConstraint("communique_id", "actor_uri"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    communique_id: Mapped[int] = mapped_column(
        ForeignKey("communiques.id", ondelete="CASCADE"), index=True
    )
    actor_uri: Mapped[str] = mapped_column(String(2048))
    announce_uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    actor_type: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # How the Announce was shown to be the actor's (proofs.Provenance): the key that
    # verified it and the scheme (an HTTP signature, a proof, a Linked Data signature).
    verified_by: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    verified_with: Mapped[str | None] = mapped_column(String(40), nullable=True)


class PollVote(Base):
    """One actor's vote in a straw poll (a Note with ``name`` = a choice, inReplyTo the poll)."""

    __tablename__ = "poll_votes"
    __table_args__ = (UniqueConstraint("communique_id", "actor_uri"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    communique_id: Mapped[int] = mapped_column(
        ForeignKey("communiques.id", ondelete="CASCADE"), index=True
    )
    actor_uri: Mapped[str] = mapped_column(String(2048))
    choice: Mapped[str] = mapped_column(String(500))
    vote_uri: Mapped[str] = mapped_column(String(2048), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
        Index("ix_deliveries_host", "host", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    inbox_uri: Mapped[str] = mapped_column(String(2048))
    # The inbox's server (delivery.host_key): what the per-host cap and host health key on.
    host: Mapped[str] = mapped_column(String(300), default="")
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
    __table_args__ = (Index("ix_delivery_attempts_attempted_at", "attempted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeliveryHost(Base):
    """The health of one server we deliver to (server/activitypub/hosts.py).

    ``failures`` counts consecutive failed attempts (no answer, or a 5xx); at the threshold
    the host is FAILING: its deliveries are held and one probe is sent when ``next_probe_at``
    comes. A success makes it AVAILABLE again and releases what was held. Failing for days,
    it is UNAVAILABLE: new deliveries to it are recorded as skipped.
    """

    __tablename__ = "delivery_hosts"

    host: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[HostState] = mapped_column(
        _enum(HostState, "host_state"), default=HostState.AVAILABLE
    )
    failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unavailable_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboxActivity(Base):
    """Every accepted incoming activity, by id: the dedupe record and the audit trail."""

    __tablename__ = "inbox_activities"

    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2048), index=True)
    type: Mapped[str] = mapped_column(String(40))
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboxItem(Base):
    """An activity accepted by an inbox and waiting to be processed (accept fast, process later).

    The request verified its signature and stored the body as it arrived; a worker claims the
    row (a lease, like deliveries), processes it and deletes it in the same transaction that
    applies its effects, so an activity is applied exactly once however often workers die.
    Rows of one actor are processed in arrival order (only the oldest pending one of each
    actor can be claimed). ``activity_uri`` is unique: a second copy is a duplicate.
    """

    __tablename__ = "inbox_queue"
    __table_args__ = (
        Index("ix_inbox_queue_due", "status", "next_attempt_at"),
        Index("ix_inbox_queue_actor", "actor_uri", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_uri: Mapped[str] = mapped_column(String(2048), unique=True)
    actor_uri: Mapped[str] = mapped_column(String(2048))
    type: Mapped[str] = mapped_column(String(40))
    # The handle of the assembly whose inbox received it; None for the shared inbox.
    inbox_handle: Mapped[str | None] = mapped_column(String(64), nullable=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    status: Mapped[InboxItemStatus] = mapped_column(
        _enum(InboxItemStatus, "inbox_item_status"), default=InboxItemStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # How the request proved the actor's authorship (proofs.Provenance): the key, the scheme.
    verified_by: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    verified_with: Mapped[str | None] = mapped_column(String(40), nullable=True)


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


class ExportSchedule(Base):
    """An assembly's scheduled exports (server/exports.py): the worker writes an encrypted
    archive of it every ``INTEROCC_EXPORT_INTERVAL_HOURS`` and keeps the latest ``keep``.

    The passphrase is not stored: the key scrypt derived from it is, with the salt and
    parameters every archive's header names (docs/archive.md), so the archives open with
    the passphrase. A worker claims a due row (a lease, as deliveries are claimed), so two
    workers never export one assembly at once.
    """

    __tablename__ = "assembly_export_schedules"
    __table_args__ = (Index("ix_assembly_export_schedules_due", "next_export_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assembly_id: Mapped[int] = mapped_column(
        ForeignKey("assemblies.id", ondelete="CASCADE"), unique=True
    )
    keep: Mapped[int] = mapped_column(Integer)
    key: Mapped[bytes] = mapped_column(LargeBinary)  # 32 bytes: as secret as the archives
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    scrypt_log2_n: Mapped[int] = mapped_column(Integer)
    scrypt_r: Mapped[int] = mapped_column(Integer)
    scrypt_p: Mapped[int] = mapped_column(Integer)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_export_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_export_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)


class MailStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for the worker (or for its next try)
    SENT = "sent"  # handed to the SMTP server
    PARKED = "parked"  # failed every try, or refused for good: kept with its error
    DROPPED = "dropped"  # nothing left to send (no such account, invitation withdrawn…)


class MailMessage(Base):
    """A message waiting to be mailed by the worker (server/mail.py), queued in the same
    transaction as what causes it.

    The row says what to write and to whom (``kind``, ``params`` of ids), never the text:
    the worker writes the message when it sends it, and a link with a token (password
    reset, address confirmation, invitation) is minted then, its hash stored only once the
    message has left. So no row ever holds a secret, and a sent row is kept a few days
    (who, what, when) for the record, then deleted.
    """

    __tablename__ = "mail_queue"
    __table_args__ = (Index("ix_mail_queue_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(254))
    # The account it concerns; its rows go with it when it is deleted.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[MailStatus] = mapped_column(
        _enum(MailStatus, "mail_status"), default=MailStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AccountToken(Base):
    """A single-use link sent to an account's address: a password reset, or the
    confirmation of an address (``email``: the address it confirms). Only the SHA-256 of
    the link's secret is stored; the link names the row by its id."""

    __tablename__ = "account_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(254))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class RequestMark(Base):
    """A request counted by a rate limiter (password reset and confirmation mails), under
    a keyed hash of what it is counted by (an address, a client): deleted once outside
    its window."""

    __tablename__ = "request_marks"
    __table_args__ = (Index("ix_request_marks_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeliveryFailureNotice(Base):
    """A communiqué whose facilitators were told that some of its deliveries failed for
    good: one summary each, ever (server/mail.py)."""

    __tablename__ = "delivery_failure_notices"

    communique_id: Mapped[int] = mapped_column(
        ForeignKey("communiques.id", ondelete="CASCADE"), primary_key=True
    )
    failed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
