"""The only place our URIs are minted. Routes are declared with the same path templates."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

ACTOR = "/actors/{handle}"
ACTOR_INBOX = "/actors/{handle}/inbox"
ACTOR_OUTBOX = "/actors/{handle}/outbox"
ACTOR_FOLLOWERS = "/actors/{handle}/followers"
ACTOR_FOLLOWING = "/actors/{handle}/following"
ACTOR_FEATURED = "/actors/{handle}/featured"
COMMUNIQUE = "/actors/{handle}/communiques/{public_id}"
COMMUNIQUE_SHARES = "/actors/{handle}/communiques/{public_id}/shares"
LETTER = "/actors/{handle}/letters/{public_id}"
ACTIVITY = "/activities/{public_id}"
SHARED_INBOX = "/inbox"
INSTANCE_ACTOR = "/actor"
TAG = "/tags/{tag}"
INSTANCE_FEED = "/feed.atom"
ACTOR_FEED = "/actors/{handle}/feed.atom"


class Urls:
    """Absolute URLs for one instance (``base`` is INTEROCC_BASE_URL, no trailing slash)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc

    def _abs(self, path: str) -> str:
        return self.base + path

    def actor(self, handle: str) -> str:
        return self._abs(ACTOR.format(handle=handle))

    def key_id(self, handle: str) -> str:
        return self.actor(handle) + "#main-key"

    def assertion_key_id(self, handle: str) -> str:
        """The assembly's Ed25519 key, a Multikey under its actor's assertionMethod."""
        return self.actor(handle) + "#ed25519-key"

    def inbox(self, handle: str) -> str:
        return self._abs(ACTOR_INBOX.format(handle=handle))

    def outbox(self, handle: str) -> str:
        return self._abs(ACTOR_OUTBOX.format(handle=handle))

    def followers(self, handle: str) -> str:
        return self._abs(ACTOR_FOLLOWERS.format(handle=handle))

    def following(self, handle: str) -> str:
        return self._abs(ACTOR_FOLLOWING.format(handle=handle))

    def featured(self, handle: str) -> str:
        return self._abs(ACTOR_FEATURED.format(handle=handle))

    def communique(self, handle: str, public_id: str) -> str:
        return self._abs(COMMUNIQUE.format(handle=handle, public_id=public_id))

    def shares(self, handle: str, public_id: str) -> str:
        return self._abs(COMMUNIQUE_SHARES.format(handle=handle, public_id=public_id))

    def letter(self, handle: str, public_id: str) -> str:
        return self._abs(LETTER.format(handle=handle, public_id=public_id))

    def activity(self, public_id: str) -> str:
        return self._abs(ACTIVITY.format(public_id=public_id))

    def shared_inbox(self) -> str:
        return self._abs(SHARED_INBOX)

    def instance_actor(self) -> str:
        return self._abs(INSTANCE_ACTOR)

    def instance_key_id(self) -> str:
        return self.instance_actor() + "#main-key"

    def tag(self, tag: str) -> str:
        return self._abs(TAG.format(tag=tag.lower()))

    def feed(self) -> str:
        return self._abs(INSTANCE_FEED)

    def actor_feed(self, handle: str) -> str:
        return self._abs(ACTOR_FEED.format(handle=handle))

    def acct(self, handle: str) -> str:
        return f"acct:{handle}@{self.host}"

    def is_local(self, uri: str) -> bool:
        return uri == self.base or uri.startswith(self.base + "/")

    def local_path(self, uri: str) -> str | None:
        """The path of one of our URIs, or None for a remote one."""
        if not self.is_local(uri):
            return None
        return urlsplit(uri).path


def new_public_id() -> str:
    """A short unguessable id for a new communiqué or activity URL."""
    return secrets.token_urlsafe(12)
