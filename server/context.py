"""Everything a request handler, the worker or the CLI needs, built once at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.activitypub.client import FederationClient, SignatureAuth, utc_now
from server.activitypub.limits import NegativeCache, RateLimiter
from server.activitypub.signatures import PrivateKey, generate_private_key_pem, load_private_key
from server.config import Settings
from server.db import Sessions, create_engine, create_sessions
from server.models import InstanceKey
from server.urls import Urls


@dataclass
class InboxGuards:
    """The inbox's per-process limits (server/activitypub/limits.py), built from settings."""

    per_actor: RateLimiter
    per_host: RateLimiter
    key_fetches: RateLimiter
    failed_keys: NegativeCache

    @classmethod
    def from_settings(cls, settings: Settings) -> InboxGuards:
        return cls(
            per_actor=RateLimiter(settings.inbox_per_actor),
            per_host=RateLimiter(settings.inbox_per_host),
            key_fetches=RateLimiter(settings.key_fetches_per_host),
            failed_keys=NegativeCache(settings.key_failure_ttl.total_seconds()),
        )


@dataclass
class Context:
    settings: Settings
    urls: Urls
    engine: AsyncEngine
    sessions: Sessions
    client: FederationClient
    instance_public_key_pem: str
    instance_private_key: PrivateKey
    clock: Callable[[], datetime] = utc_now
    # Set when a delivery is queued, so an in-process worker starts at once.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when an inbox queues an activity, so an in-process worker processes it at once.
    inbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _private_keys: dict[str, PrivateKey] = field(default_factory=dict)
    guards: InboxGuards = field(init=False)

    def __post_init__(self) -> None:
        self.guards = InboxGuards.from_settings(self.settings)

    def private_key(self, pem: str) -> PrivateKey:
        """Parsed private keys, cached by PEM (parsing RSA keys costs milliseconds)."""
        key = self._private_keys.get(pem)
        if key is None:
            if len(self._private_keys) > 1000:
                self._private_keys.clear()
            key = self._private_keys[pem] = load_private_key(pem)
        return key

    def instance_auth(self) -> SignatureAuth:
        """Signs GETs on behalf of the instance (servers with authorized fetch need it)."""
        return SignatureAuth(self.urls.instance_key_id(), self.instance_private_key, self.clock)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.engine.dispose()


async def instance_key(sessions: Sessions) -> InstanceKey:
    """The instance's key pair, made on first use (two processes starting together agree)."""
    query = select(InstanceKey).order_by(InstanceKey.id).limit(1)
    async with sessions() as session, session.begin():
        if (await session.scalars(query)).first() is None:
            private_pem, public_pem = generate_private_key_pem()
            session.add(InstanceKey(private_key_pem=private_pem, public_key_pem=public_pem))
    # Read back the oldest row: two processes starting together both insert, but both then
    # use the same key.
    async with sessions() as session:
        row = (await session.scalars(query)).one()
        return row


async def create_context(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Context:
    engine = create_engine(settings.database_url)
    sessions = create_sessions(engine)
    try:
        key = await instance_key(sessions)
    except Exception:
        await engine.dispose()
        raise
    client = FederationClient(
        user_agent=settings.user_agent,
        allow_private=settings.allow_private_addresses,
        timeout=settings.fetch_timeout,
        max_bytes=settings.fetch_max_bytes,
        delivery_timeout=settings.delivery_timeout,
        delivery_connect_timeout=settings.delivery_connect_timeout,
        # Every delivery slot and every request waiting aside, and room for fetches.
        max_connections=settings.delivery_concurrency + settings.delivery_slow_max + 100,
    )
    return Context(
        settings=settings,
        urls=Urls(settings.base_url),
        engine=engine,
        sessions=sessions,
        client=client,
        instance_public_key_pem=key.public_key_pem,
        instance_private_key=load_private_key(key.private_key_pem),
        clock=clock,
    )
